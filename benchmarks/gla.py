"""Benchmark of the bidirectional gated linear attention (ViG's token mixer): linzoo's fused Triton op vs peers.

Peers, all in one process on the same inputs:

- ``chunked``: linzoo's chunked PyTorch form (``backend="torch"``, fp32 inside), eager;
- ``compiled``: the same under ``torch.compile`` (static shapes; skipped above ``COMPILE_MAX_L`` tokens, where its
  Python chunk loop unrolls into a graph too large to compile in the run's budget);
- ``official``: ViG's own ``bid_fused_recurrent_gla`` (hustvl/ViG's vendored fla 0.1; what ViG runs in eval;
  forward only: its autograd function saves nothing, so it has no working backward), from the vendored fla that
  ``scripts/fetch_official.sh`` exports to ``.official/vig/fla`` (``--official-dir .official/vig``);
- ``official_pair``: the same file's ``fused_recurrent_gla`` autograd function called twice (forward and
  ``reverse=True``) and added: the official kernels' forward+backward;
- ``fla_chunk``: fla ≥ 0.6 ``chunk_gla`` on the flip-concatenated 2B batch (ViG's training path; the runnable
  peer of kernels.md §6.1) when ``fla`` is importable (carried wheels), flips and the final add included.

Shapes: ViG's stages at 224 px (plain ViG-T/S/B: L = 196, dk/dv 32/64; ViG-H-T: L = 3136/784/196/49, dk/dv 16/32)
and 1024 px, batch 64–128 at 224; bf16 (and fp32 for two rows); forward under inference mode and forward+backward
(the op's five gradients). Medians of ``triton.testing.do_bench`` (L2 cleared between runs) and CUDA-graph
replays of the peers that run under 3 ms (``[… graph]``: launch overhead removed). The memory floor is the
compulsory HBM traffic of a fused op (kernels.md §5.2: forward e·BHL(4dk + 2dv); backward another
e·BHL(8dk + 3dv)) over the copy bandwidth measured in the same run. A row's ``err`` is ours vs the chunked form
in fp32 (max |Δ| / max |reference|), for the output and, in fwd+bwd rows, the worst of the five gradients.

Writes ``docs/benchmarks/gla.{md,json,png}`` (and the same under ``--out DIR``); the png is forward time vs L.

``--tune`` first times every (dv tile, warps) launch of :data:`linzoo.kernels.gla.triton_gla.TUNING`'s keys at the
two headline shapes (CUDA-graph GPU time; forward for the forward kernel, forward+backward for the backward one),
keeps the fastest for the rest of the run and prints the table (also ``gla_tuning.json``).

    python benchmarks/gla.py [--quick] [--tune] [--out DIR] [--official-dir .official/vig] [--cases 0,3,5-8]
    python benchmarks/gla.py --render docs/benchmarks/gla.json   # md + png only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kernel_bench import bandwidth, generated_marker, kept_notes, plot_sweep, runner, time_op

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
PEERS = ("ours", "ours_unsplit", "chunked", "compiled", "official", "official_pair", "fla_chunk")
COMPILE_MAX_L = 4096
GRAPH_UNDER_MS = 3.0
GRAPHED = ("ours", "ours_unsplit", "compiled", "official", "official_pair")  # also replayed in CUDA graphs

# (label, B, H, L, dk, dv): in order of priority (a run cut short keeps the first rows)
CASES = [
    ("ViG-S @224", 64, 6, 196, 32, 64),
    ("ViG-H-T s1 @224", 64, 3, 3136, 16, 32),
    ("ViG-T @224 B128", 128, 3, 196, 32, 64),
    ("ViG-B @224", 64, 12, 196, 32, 64),
    ("ViG-H-T s2 @224", 64, 6, 784, 16, 32),
    ("ViG-H-T s3 @224", 64, 12, 196, 16, 32),
    ("ViG-H-T s4 @224", 64, 24, 49, 16, 32),
    ("ViG-T @1024", 8, 3, 4096, 32, 64),
    ("ViG-S @1024", 8, 6, 4096, 32, 64),
    ("ViG-H-T s2 @1024", 2, 6, 16384, 16, 32),
    ("ViG-H-T s1 @1024", 1, 3, 65536, 16, 32),
]
FP32_CASES = ("ViG-S @224", "ViG-H-T s1 @224")
QUICK_CASES = ("ViG-S @224", "ViG-H-T s1 @224", "ViG-T @1024")
SWEEP = [(8, 6, n, 32, 64) for n in (196, 784, 3136, 12544)]  # (B, H, L, dk, dv): forward time vs L, bf16


def floor_bytes(b: int, h: int, length: int, dk: int, dv: int, elem: int, mode: str) -> int:
    """Compulsory HBM bytes of a fused op: forward reads q, k, two gates (dk each) and v, writes o; the backward
    reads those and dO, writes dq, dk, two gate gradients and dv."""
    fwd = elem * b * h * length * (4 * dk + 2 * dv)
    bwd = elem * b * h * length * (8 * dk + 3 * dv)
    return fwd if mode == "fwd" else fwd + bwd


def load_official(root: Path) -> ModuleType:
    """ViG's ``fla/ops/gla/recurrent_fuse.py`` under ``root`` as a module, its one import
    (``fla.ops.utils.contiguous``) served from ``root/fla/ops/utils.py`` without importing the fla package (the
    name ``fla`` may be fla 0.6, a different package, in the same process)."""
    utils_spec = importlib.util.spec_from_file_location("fla.ops.utils", root / "fla" / "ops" / "utils.py")
    saved = {name: sys.modules.get(name) for name in ("fla", "fla.ops", "fla.ops.utils")}
    try:
        for name in ("fla", "fla.ops"):
            sys.modules[name] = ModuleType(name)
        sys.modules["fla.ops.utils"] = importlib.util.module_from_spec(utils_spec)
        utils_spec.loader.exec_module(sys.modules["fla.ops.utils"])
        spec = importlib.util.spec_from_file_location(
            "vig_official_recurrent_fuse", root / "fla/ops/gla/recurrent_fuse.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return module


def official_source(root: Path) -> str:
    """The provenance line of ViG's fla in ``SOURCES`` beside or above ``root`` (fetch_official.sh's record)."""
    for path in (root / "SOURCES", root.parent / "SOURCES"):
        if path.exists():
            lines = [line for line in path.read_text().splitlines() if "hustvl/ViG" in line and "fla" in line]
            if lines:
                return lines[0]
    return str(root)


def _inputs(b, h, length, dk, dv, dtype):
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(b, h, length, dk, device="cuda", generator=g) for _ in range(2))
    v = torch.randn(b, h, length, dv, device="cuda", generator=g)
    # ViG's gates: logsigmoid(z) / 16
    gates = [F.logsigmoid(2 * torch.randn(b, h, length, dk, device="cuda", generator=g)) / 16 for _ in range(2)]
    return tuple(t.to(dtype) for t in (q, k, v, *gates))


def unsplit(fn):
    """``fn`` with the forward's segment split off (``triton_gla.FORCE_SEGMENT`` = L during the call)."""
    from linzoo.kernels.gla import triton_gla

    def run(*args):
        saved, triton_gla.FORCE_SEGMENT = triton_gla.FORCE_SEGMENT, args[0].shape[2]
        try:
            return fn(*args)
        finally:
            triton_gla.FORCE_SEGMENT = saved

    return run


def make_peers(length: int, official: ModuleType | str | None, compiled, split: bool = False) -> dict:
    """name -> fn(q, k, v, gk_fwd, gk_bwd) returning o^f + o^b (and differentiable where the peer is), or a
    string saying why the peer cannot run. ``split``: our forward cuts this shape into segments (then
    ``ours_unsplit`` times it without, the A/B of the split)."""
    from linzoo.kernels.gla import bidirectional_gla

    ours = lambda *a: bidirectional_gla(*a, backend="triton")
    peers: dict = {
        "ours": ours,
        "ours_unsplit": unsplit(ours) if split else "n/a (no segments at this shape)",
        "chunked": lambda *a: bidirectional_gla(*a, backend="torch"),
    }
    if length > COMPILE_MAX_L:
        peers["compiled"] = f"n/a (L > {COMPILE_MAX_L}: the chunk loop unrolls)"
    else:
        peers["compiled"] = compiled
    if isinstance(official, ModuleType):

        def official_fused(q, k, v, g_fwd, g_bwd):  # its output is (o^f + o^b) / 2 in q's dtype
            return 2 * official.bid_fused_recurrent_gla(q, k, v, torch.cat([g_fwd, g_bwd]), None)[0]

        def official_pair(q, k, v, g_fwd, g_bwd):
            scale = q.shape[-1] ** -0.5
            fn = official.FusedRecurrentGLAFunction.apply
            return (
                fn(q, k, v, g_fwd, None, scale, None, False, False)[0]
                + fn(q, k, v, g_bwd, None, scale, None, False, True)[0]
            )

        peers["official"], peers["official_pair"] = official_fused, official_pair
    else:
        peers["official"] = peers["official_pair"] = official or "n/a (no --official-dir)"
    try:  # fla >= 0.6 (carried wheels): (B, T, H, D) layout, causal only
        from fla.ops.gla import chunk_gla  # type: ignore

        def fla_chunk(q, k, v, g_fwd, g_bwd):
            bsz = q.shape[0]
            both = lambda x, y: torch.cat([x, y.flip(2)]).transpose(1, 2)
            o = chunk_gla(both(q, q), both(k, k), both(v, v), g=both(g_fwd, g_bwd))[0].transpose(1, 2)
            return o[:bsz] + o[bsz:].flip(2)

        peers["fla_chunk"] = fla_chunk
    except Exception as exc:  # any failure marks the peer n/a
        peers["fla_chunk"] = f"n/a (fla not importable: {type(exc).__name__})"
    return peers


TUNE_TILES = (8, 16, 32, 64)
TUNE_WARPS = (1, 2, 4)


def tune_candidates(kind: str, dvp: int) -> list[tuple[int, int]]:
    """(dv tile, warps) pairs tried for a kernel kind (same for both) at a padded dv: tiles up to dv (>= 8: the
    backward's tile is at least one 8-lane group), 1-4 warps."""
    return [(bv, w) for bv in TUNE_TILES if bv <= dvp for w in TUNE_WARPS]


def tune(budget_s: float) -> dict:
    """Time every candidate launch of both kernels at ``CASES[:2]`` (bf16, CUDA-graph GPU time), set
    ``triton_gla.TUNING`` to the fastest per key, and return the log (candidate -> ms)."""
    from triton.testing import do_bench_cudagraph

    from linzoo.kernels._backend import next_pow2
    from linzoo.kernels.gla import bidirectional_gla
    from linzoo.kernels.gla import triton_gla as tg

    ours = lambda *a: bidirectional_gla(*a, backend="triton")
    started, log = time.time(), {}
    for label, b, h, length, dk, dv in CASES[:2]:
        inputs = _inputs(b, h, length, dk, dv, torch.bfloat16)
        dkp, dvp = max(16, next_pow2(dk)), max(16, next_pow2(dv))
        for kind, mode in (("fwd", "fwd"), ("bwd", "fwd+bwd")):
            key, default = (kind, dkp, dvp), tg.TUNING.get((kind, dkp, dvp))
            timed = []
            for bv, warps in tune_candidates(kind, dvp):
                if time.time() - started > budget_s:
                    print("tune: budget reached", flush=True)
                    break
                tg.TUNING[key] = (bv, warps)
                try:
                    ms = do_bench_cudagraph(runner(ours, inputs, mode), rep=30, return_mode="median")
                except Exception as exc:  # a launch that does not compile or run is skipped
                    print(f"tune {label} {kind} BV={bv} warps={warps}: {type(exc).__name__}", flush=True)
                    continue
                timed.append((ms, bv, warps))
                print(f"tune {label} {kind} BV={bv} warps={warps}: {ms:.4f} ms", flush=True)
            timed.sort()
            if timed:
                tg.TUNING[key] = timed[0][1:]
            elif default is None:
                tg.TUNING.pop(key, None)
            else:
                tg.TUNING[key] = default
            log[f"{label} {kind}"] = [list(t) for t in timed]
    print("TUNING = {" + ", ".join(f"{k!r}: {v!r}" for k, v in tg.TUNING.items()) + "}", flush=True)
    return {"TUNING": {",".join(map(str, k)): list(v) for k, v in tg.TUNING.items()}, "log": log}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def _errors(peers, inputs, mode) -> dict:
    """Each runnable peer's error against the chunked form in fp32 (output; in fwd+bwd the worst gradient too)."""
    ref_inputs = [t.float() for t in inputs]
    errs = {}
    if mode == "fwd":
        with torch.inference_mode():
            ref = peers["chunked"](*ref_inputs)
            for name in ("ours", "official", "fla_chunk"):
                if callable(peers.get(name)):
                    errs[name] = rel_err(peers[name](*inputs), ref)
        return errs
    do = torch.randn(*ref_inputs[0].shape[:-1], ref_inputs[2].shape[-1], device="cuda")

    def outputs(fn, tensors):
        leaves = [t.detach().requires_grad_() for t in tensors]
        out = fn(*leaves)
        return (out, *torch.autograd.grad(out, leaves, do.to(out.dtype)))

    want = outputs(peers["chunked"], ref_inputs)
    for name in ("ours", "official_pair", "fla_chunk"):
        if callable(peers.get(name)):
            got = outputs(peers[name], inputs)
            errs[name] = max(rel_err(a, w) for a, w in zip(got, want))
    return errs


def run_case(case, dtype, mode, official, compiled, bw, skip_peers=()):
    label, b, h, length, dk, dv = case
    from linzoo.kernels.gla import triton_gla

    inputs = _inputs(b, h, length, dk, dv, dtype)
    tile = triton_gla.launch_config(dk, dv)["BV"]
    segment = triton_gla.segment_length(b * h * -(-dv // tile), length, inputs[0].device)
    peers = make_peers(length, official, compiled, split=segment < length)
    row = dict(case=label, B=b, H=h, L=length, dk=dk, dv=dv, dtype=str(dtype).replace("torch.", ""), mode=mode)
    row["segment"] = segment
    row.update(ms={}, graph_ms={}, na={}, peer_s={})
    try:
        row["err"] = _errors(peers, inputs, mode)
    except Exception:  # reported on stdout; the timings still run
        traceback.print_exc()
        row["err"] = {}
    for name in PEERS:
        peer = peers.get(name)
        if name in skip_peers:
            row["na"][name] = "skipped (this run)"
            continue
        if isinstance(peer, str):
            row["na"][name] = peer
            continue
        if name == "official" and mode != "fwd":
            row["na"][name] = "n/a (no backward: its autograd function saves nothing)"
            continue
        started = time.perf_counter()
        try:
            ms, gms = time_op(peer, inputs, mode, graph_under_ms=GRAPH_UNDER_MS if name in GRAPHED else 0.0)
            row["ms"][name] = ms
            if gms is not None:
                row["graph_ms"][name] = gms
        except Exception as exc:  # a peer that cannot run is reported, not fatal
            if name == "ours":
                traceback.print_exc()
            row["na"][name] = f"n/a ({type(exc).__name__}: {str(exc).splitlines()[0][:60] if str(exc) else ''})"
        row["peer_s"][name] = round(time.perf_counter() - started, 1)
        torch.cuda.empty_cache()
    row["floor_bytes"] = floor_bytes(b, h, length, dk, dv, torch.finfo(dtype).bits // 8, mode)
    best = min([row["ms"].get("ours", math.inf), row["graph_ms"].get("ours", math.inf)])
    if best < math.inf:
        row["gbps"] = row["floor_bytes"] / (best * 1e-3) / 1e9
        row["pct_floor"] = 100.0 * (row["floor_bytes"] / bw) / (best * 1e-3)
    print(
        f"{label:20s} {row['dtype']:8s} {mode:7s} "
        + " ".join(f"{k}={v:.3f}" for k, v in row["ms"].items())
        + f" err={row['err']} floor%={row.get('pct_floor', float('nan')):.0f} wall s: {row['peer_s']}",
        flush=True,
    )
    return row


def _fmt(row: dict, name: str) -> str:
    if name not in row["ms"]:
        return row["na"].get(name, "n/a")
    ms, g = row["ms"][name], row["graph_ms"].get(name)
    if name == "ours":
        return f"{ms:.3f}" + (f" [{g:.3f} graph]" if g else "")
    ratio = f" ({ms / row['ms']['ours']:.2f}×)" if "ours" in row["ms"] else ""
    g_ours = row["graph_ms"].get("ours")
    graph = f" [{g:.3f} graph ({g / g_ours:.2f}×)]" if g and g_ours else (f" [{g:.3f} graph]" if g else "")
    return f"{ms:.3f}{ratio}{graph}"


MARKER = generated_marker("gla.py")


def render(results: dict, out_dirs: list[Path], plot: bool = True) -> None:
    """``gla.md`` (table, geometric means), ``gla.json`` and ``gla.png`` (the L sweep) in each of ``out_dirs``."""
    env = results["env"]
    lines = [
        "# Bidirectional GLA (ViG): fused Triton op vs peers",
        "",
        f"Measured by `benchmarks/gla.py{' --quick' if env.get('quick') else ''}` on {env['gpu']}"
        f" (torch {env['torch']}, triton {env['triton']}), {env['date']}; measured copy bandwidth"
        f" {env['bandwidth_gbps']:.0f} GB/s. Official kernels: {env.get('official', 'not carried')}.",
        "",
        "Times are medians of `triton.testing.do_bench` in ms (L2 flushed); `(n×)` = peer time / ours (> 1: ours"
        " faster); `[… graph]` = CUDA-graph replay (launch overhead removed). GB/s and % floor: the compulsory"
        " bytes (fwd e·BHL(4dk+2dv), bwd e·BHL(8dk+3dv)) over the measured bandwidth, at ours' best time."
        " `official` = ViG's `bid_fused_recurrent_gla` (forward only), `official pair` = its `fused_recurrent_gla`"
        " forward + reverse; `ours unsplit` = ours with the forward's segment split off (timed where the split"
        " applies: `seg` in the case cell = its segment length); `err` = max|peer − chunked fp32| /"
        " max|chunked fp32| (output, and in fwd+bwd the worst of the five gradients).",
        "",
        "| case | B·H·L·dk/dv | dtype | mode | ours | ours unsplit | chunked | compiled | official | official pair"
        " | fla chunk | ours GB/s | % floor | err ours | err official |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        shape = f"{r['B']}·{r['H']}·{r['L']}·{r['dk']}/{r['dv']}"
        gbps = f"{r['gbps']:.0f}" if "gbps" in r else "-"
        pct = f"{r['pct_floor']:.0f} %" if "pct_floor" in r else "-"
        err = r.get("err", {})
        e_ours = f"{err['ours']:.1e}" if "ours" in err else "-"
        off = err.get("official", err.get("official_pair"))
        e_off = f"{off:.1e}" if off is not None else "-"
        cells = " | ".join(_fmt(r, p) for p in PEERS)
        label = r["case"] + (f" (seg {r['segment']})" if r.get("segment", r["L"]) < r["L"] else "")
        lines.append(
            f"| {label} | {shape} | {r['dtype']} | {r['mode']} | {cells} | {gbps} | {pct} | {e_ours} | {e_off} |"
        )
    lines += ["", "Geometric mean of peer/ours (do_bench medians) over the rows where both ran:", ""]
    for p in PEERS[1:]:
        vals = [r["ms"][p] / r["ms"]["ours"] for r in results["rows"] if p in r["ms"] and "ours" in r["ms"]]
        if vals:
            gm = math.exp(sum(math.log(x) for x in vals) / len(vals))
            lines.append(f"- {p}: {gm:.2f}× over {len(vals)} rows (min {min(vals):.2f}×, max {max(vals):.2f}×)")
    if results.get("sweep"):
        names = [p for p in PEERS if any(p in r["ms"] for r in results["sweep"])]
        lines += ["", "![forward time vs L](gla.png)", "", "L sweep (B8·H6·dk32/dv64, bf16, forward), ms:", ""]
        lines += ["| L | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for r in results["sweep"]:
            lines.append(
                f"| {r['L']} | " + " | ".join(f"{r['ms'][p]:.3f}" if p in r["ms"] else "-" for p in names) + " |"
            )
    if results.get("tuning"):
        table = results["tuning"]["TUNING"]
        lines += [
            "",
            "Launches chosen by `--tune` ((kind, DKP, DVP): (dv tile, warps)) for this run: " + json.dumps(table),
        ]
    text = "\n".join(lines) + "\n\n" + MARKER
    for d in out_dirs:
        d.mkdir(parents=True, exist_ok=True)
        md = d / "gla.md"
        md.write_text(text + (kept_notes(md, MARKER) or "\n"))
        (d / "gla.json").write_text(json.dumps(results, indent=1))
        if plot:
            plot_sweep(
                results, d / "gla.png", PEERS, "L", "L (tokens)", "forward time (ms)",
                "bidirectional GLA, B8 H6 dk32 dv64 bf16",
            )  # fmt: skip


def select_cases(quick: bool, spec: str | None) -> list[tuple]:
    """The cases of a run: all, the quick ones, or ``spec`` indices/ranges (``"0,3,5-7"``) into that list."""
    cases = [c for c in CASES if not quick or c[0] in QUICK_CASES]
    if not spec:
        return cases
    picked: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise SystemExit(f"--cases: expected indices or ranges like 0,3,5-7, got {spec!r}")
        picked += range(int(lo), int(hi or lo) + 1)
    bad = [i for i in picked if i >= len(cases)]
    if bad:
        raise SystemExit(f"--cases: indices {bad} out of range (there are {len(cases)} cases)")
    return [cases[i] for i in picked]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few shapes only")
    parser.add_argument("--out", type=Path, default=None, help="also write the md/json/png here")
    parser.add_argument(
        "--official-dir",
        type=Path,
        default=Path(os.environ.get("LINZOO_GLA_OFFICIAL", ".official/vig")),
        help="the folder holding ViG's vendored fla (fla/ops/utils.py, fla/ops/gla/recurrent_fuse.py); "
        "scripts/fetch_official.sh exports it to .official/vig/fla",
    )
    parser.add_argument("--cases", default=None, help="comma-separated CASES indices or ranges (e.g. 0,3,5-8)")
    parser.add_argument("--skip-peers", default="", help=f"comma-separated peers not timed (of {', '.join(PEERS[1:])})")
    parser.add_argument("--tune", action="store_true", help="search (dv tile, warps) launches first")
    parser.add_argument("--tune-budget", type=float, default=120.0, help="seconds for the search")
    parser.add_argument("--tune-only", action="store_true", help="stop after the search")
    parser.add_argument("--render", type=Path, default=None, help="re-render md/png from a results JSON")
    parser.add_argument("--no-docs", action="store_true", help="do not write into docs/benchmarks")
    args = parser.parse_args()
    out_dirs = ([] if args.no_docs else [DOCS]) + ([args.out] if args.out else [])
    skipped = tuple(p for p in args.skip_peers.split(",") if p)
    if not set(skipped) <= set(PEERS[1:]):
        parser.error(f"--skip-peers: expected peers among {', '.join(PEERS[1:])}; got {args.skip_peers!r}")
    if args.render:
        render(json.loads(args.render.read_text()), out_dirs)
        return
    cases = select_cases(args.quick, args.cases)
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    import torch._dynamo as dynamo
    import triton

    from linzoo.kernels.gla import bidirectional_gla

    dynamo.config.cache_size_limit = 64
    compiled = torch.compile(lambda *a: bidirectional_gla(*a, backend="torch"), dynamic=False)
    official: ModuleType | str
    try:
        official = load_official(args.official_dir)
        official_desc = official_source(args.official_dir)
    except Exception as exc:  # not carried, or does not import: the peer is n/a
        official = f"n/a (official files not loadable: {type(exc).__name__})"
        official_desc = "not carried"
    t0 = time.time()
    bw = bandwidth()
    env = dict(
        gpu=torch.cuda.get_device_name(),
        torch=torch.__version__,
        triton=triton.__version__,
        python=platform.python_version(),
        date=time.strftime("%Y-%m-%d"),
        bandwidth_gbps=bw / 1e9,
        quick=args.quick,
        official=official_desc,
    )
    results = dict(env=env, rows=[], sweep=[])
    if args.tune or args.tune_only:
        results["tuning"] = tune(args.tune_budget)
        for d in out_dirs:
            d.mkdir(parents=True, exist_ok=True)
            (d / "gla_tuning.json").write_text(json.dumps(results["tuning"], indent=1))
        if args.tune_only:
            return

    def run_one(case, dtype, mode):  # re-rendered after every row so a run cut short keeps what it measured
        results["rows"].append(run_case(case, dtype, mode, official, compiled, bw, skip_peers=skipped))
        render(results, out_dirs, plot=bool(results["sweep"]))

    for case in cases[:2]:
        for mode in ("fwd", "fwd+bwd"):
            run_one(case, torch.bfloat16, mode)
    for case in (c for c in cases if c[0] in FP32_CASES):
        for mode in ("fwd", "fwd+bwd"):
            run_one(case, torch.float32, mode)
    if not args.cases:  # the plot's L sweep, early so a cut run has it
        for b, h, n, dk, dv in SWEEP if not args.quick else SWEEP[::2]:
            case = (f"sweep L={n}", b, h, n, dk, dv)
            results["sweep"].append(run_case(case, torch.bfloat16, "fwd", official, compiled, bw, skip_peers=skipped))
        render(results, out_dirs)
    for case in cases[2:]:
        for mode in ("fwd", "fwd+bwd"):
            run_one(case, torch.bfloat16, mode)
    env["seconds"] = time.time() - t0
    render(results, out_dirs)
    print(f"done in {env['seconds']:.0f} s")


if __name__ == "__main__":
    main()
