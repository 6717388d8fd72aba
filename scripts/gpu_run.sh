#!/usr/bin/env bash
# One call on the GPU machine: install the carried wheels, run `pytest -m gpu` and every benchmark,
# and pack the tables/plots into $OUT (the device tool returns at most 8 files, so one tarball + logs).
#
# From this machine (the device tool copies the repo; .whl/ and .official/ are git-ignored, so carry them):
#   scripts/fetch_device_wheels.sh            # once: wheels the device lacks (diffusers, omegaconf, ...)
#   scripts/fetch_device_peers.sh            # optional: benchmark peers (flash_bla) into .peers/
#   scripts/fetch_official.sh                # the official model files benchmarks/models.py compares against
#   scripts/fetch_sla_peer.sh                # optional: the official SLA kernels (peers of the sla step) into .peers/sla/
#   run(command="bash scripts/gpu_run.sh [--quick] [STEP...]", carry=[".whl", ".official", ".peers"], timeout_s=600)
# Then unpack: tar -xzf <files_at>/results.tgz -C docs/benchmarks/
# STEPs (default: all): tests kernels (= la na dwconv) gla sla models profile lit linfusion sla_wan; also host (host_overhead.py), la_old,
# sla (benchmarks/sparse_linear_attention.py; SLA_BUDGET, SLA_ARGS e.g. --cases 0,2 --modes fwd),
# sla_wan (benchmarks/sla_wan.py: Wan-1.3B forward, dense vs SLA; SLA_WAN_BUDGET, SLA_WAN_ARGS e.g. --topk 0.1),
# sweep (models.py --sweep-only: the memory / throughput plots; SWEEP_BUDGET, SWEEP_ARGS e.g. --models ravlt_s --peers)
# Budgets and options by environment: TESTS_BUDGET, TESTS_PATHS (e.g. tests/kernels), TESTS_ARGS (e.g. -n 6), LA_BUDGET, LA_ARGS,
# NA_BUDGET, NA_ARGS (e.g. --budget 200), GLA_BUDGET, GLA_ARGS (e.g. --tune, --cases 0-3, --skip-peers compiled), DWCONV_BUDGET, DWCONV_ARGS (--variants), MODELS_BUDGET, MODELS_ARGS, PROFILE_BUDGET, PROFILE_MODELS, PROFILE_ARGS (--compile), HOST_BUDGET, LIT_BUDGET, LINFUSION_BUDGET.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/linzoo_out}"
mkdir -p "$OUT" results
QUICK=""
STEPS=()
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK="--quick" ;;
    *) STEPS+=("$arg") ;;
  esac
done
[ ${#STEPS[@]} -eq 0 ] && STEPS=(tests kernels gla sla models profile lit linfusion sla_wan)
export PYTHONUNBUFFERED=1
PY="${PYTHON:-python3}"

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# benchmark peers carried for the run only (scripts/fetch_device_peers.sh; never committed)
for d in .peers/*/; do [ -d "$d" ] && export PYTHONPATH="$PWD/${d%/}${PYTHONPATH:+:$PYTHONPATH}"; done
# linzoo.<x> -> <x>/ without installing (an editable install fails there without network for build deps).
mkdir -p /tmp/lz/linzoo
for f in vision diffusion kernels train weights configs; do ln -sfn "$PWD/$f" "/tmp/lz/linzoo/$f"; done
export PYTHONPATH="/tmp/lz${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee results/device.txt
"$PY" -c "import torch, triton, timm; print('torch', torch.__version__, 'triton', triton.__version__, 'timm', timm.__version__)" | tee -a results/device.txt

run_step() {  # name, seconds, command...: a step over its budget is stopped so the others still run
  local name="$1" budget="$2"; shift 2
  echo "=== $name (budget ${budget}s): $*"
  local start=$SECONDS
  timeout -k 10 "$budget" "$@" 2>&1 | tee "results/$name.log"
  echo "=== $name finished in $((SECONDS - start)) s (exit ${PIPESTATUS[0]})"
  tar -czf "$OUT/results.tgz" -C results .  # after every step: a call cut off by its own limit keeps them
}

run_la() {  # LA_ARGS="--tune --tune-budget 120": search launch configs first (results/la_tuning.json)
  run_step bench_linear_attention "${LA_BUDGET:-300}" "$PY" benchmarks/linear_attention.py --out results $QUICK \
    ${LA_ARGS:-}
}
run_sla() {  # the official SLA peers run when carried (.peers/sla/{main,SLA-1}, scripts/fetch_sla_peer.sh)
  run_step bench_sparse_linear_attention "${SLA_BUDGET:-300}" env LINZOO_SLA_PEER_DIR="$PWD/.peers/sla" "$PY" \
    benchmarks/sparse_linear_attention.py --out results $QUICK ${SLA_ARGS:-}
}
run_na() {  # NA_ARGS="--resume results/na_r1/neighborhood_attention.json --time-limit 190": finish a cut table
  run_step bench_neighborhood_attention "${NA_BUDGET:-200}" "$PY" benchmarks/neighborhood_attention.py --out results \
    $QUICK ${NA_ARGS:-}
}

for step in "${STEPS[@]}"; do
  case "$step" in
    tests) LINZOO_PRINT_FAILURES=1 run_step pytest_gpu "${TESTS_BUDGET:-150}" "$PY" -m pytest -m gpu -v -rf \
      -p no:cacheprovider --timeout 90 ${TESTS_ARGS:-} ${TESTS_PATHS:-} ;;
    la) run_la ;;
    na) run_na ;;
    sla) run_sla ;;
    kernels) run_la; run_na; run_step bench_depthwise_conv "${DWCONV_BUDGET:-120}" "$PY" benchmarks/depthwise_conv.py \
      --out results $QUICK ${DWCONV_ARGS:-} ;;
    models) run_step bench_models "${MODELS_BUDGET:-260}" "$PY" benchmarks/models.py --out results --official-dir .official \
      --budget $(( ${MODELS_BUDGET:-260} - 40 )) $QUICK ${MODELS_ARGS:-} ;;
    sweep)  # the resolution sweep alone (models_memory.png, models_throughput.png) into results/sweep/
      mkdir -p results/sweep
      run_step bench_models_sweep "${SWEEP_BUDGET:-200}" "$PY" benchmarks/models.py --out results/sweep \
        --official-dir .official --sweep-only --budget $(( ${SWEEP_BUDGET:-200} - 20 )) $QUICK ${SWEEP_ARGS:-} ;;
    la_old)  # per-kernel breakdown of an older kernels/ (scripts/export_oldrev.sh REV; carry ".oldrev")
      mkdir -p /tmp/lzo/linzoo results/oldrev
      ln -sfn "$PWD/.oldrev/kernels" /tmp/lzo/linzoo/kernels
      cp .oldrev/REV results/oldrev/ 2>/dev/null
      run_step bench_la_oldrev "${LA_OLD_BUDGET:-90}" env PYTHONPATH="/tmp/lzo:$PYTHONPATH" "$PY" \
        benchmarks/linear_attention.py --out results/oldrev --breakdown-only ;;
    gla)  # bidirectional GLA (ViG); the official kernels from .official/vig/fla (scripts/fetch_official.sh)
      run_step bench_gla "${GLA_BUDGET:-240}" "$PY" benchmarks/gla.py --out results --official-dir .official/vig \
        $QUICK ${GLA_ARGS:-} ;;
    dwconv) run_step bench_depthwise_conv "${DWCONV_BUDGET:-120}" "$PY" benchmarks/depthwise_conv.py --out results $QUICK \
      ${DWCONV_ARGS:-} ;;
    host) run_step host_overhead "${HOST_BUDGET:-120}" "$PY" benchmarks/host_overhead.py --out results ;;
    profile) run_step profile "${PROFILE_BUDGET:-60}" "$PY" benchmarks/profile_model.py ${PROFILE_MODELS:-ravlt_s van_b2} --out results ${PROFILE_ARGS:-} ;;
    lit) run_step bench_lit "${LIT_BUDGET:-100}" "$PY" benchmarks/lit.py --out results $QUICK ;;
    linfusion) run_step bench_linfusion "${LINFUSION_BUDGET:-160}" "$PY" benchmarks/linfusion.py --out results $QUICK ;;
    sla_wan) run_step bench_sla_wan "${SLA_WAN_BUDGET:-150}" "$PY" benchmarks/sla_wan.py --out results \
      --time-budget $(( ${SLA_WAN_BUDGET:-150} - 30 )) ${SLA_WAN_ARGS:-} ;;
    *) echo "unknown step $step" ;;
  esac
done
tar -czf "$OUT/results.tgz" -C results .
cp results/pytest_gpu.log "$OUT/" 2>/dev/null || true
ls -la "$OUT"
