"""Benchmark of non-causal linear attention: linzoo's fused Triton op against its peers, in one process.

Peers: the PyTorch reference (eager and ``torch.compile``), softmax SDPA with each backend forced (flash,
efficient, cuDNN: "what linear attention replaces") and flash-bidirectional-linear-attention's op when
``flash_bla`` is importable. Shapes follow ../shared/research/kernels.md §6.2 (backbone stages at 224 px with
batch 64, high resolution, DiT and SD shapes with d = 40/80/160); bf16 and fp32; forward (inference mode)
and forward+backward; medians of ``triton.testing.do_bench`` (L2 cleared between runs), and CUDA-graph
replays (``do_bench_cudagraph``) of ours and the compiled reference where they run under 3 ms.

Writes ``docs/benchmarks/linear_attention.{md,json,png}`` (and the same under ``--out DIR``).
The memory floor is the compulsory HBM traffic (kernels.md §5.2: fwd e·BHN(2dk+2dv), bwd
e·BHN(4dk+3dv) + 4·BHN) over the copy bandwidth measured in the same run.

    python benchmarks/linear_attention.py [--quick] [--out DIR] [--tune] [--cases 0,3,5-8] [--resume JSON]
    python benchmarks/linear_attention.py --render docs/benchmarks/linear_attention.json   # md + png only
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _kernel_bench import bandwidth, generated_marker, kept_notes, plot_sweep, runner, time_op

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
PEERS = ("ours", "eager", "compiled", "sdpa_flash", "sdpa_efficient", "sdpa_cudnn", "flash_bla")

# (label, B, H, N, dk, dv, feature_map, normalizer, rope)
CASES = [  # in order of priority (a run cut short keeps the first rows)
    ("DiT @2048", 4, 16, 16384, 64, 64, "elu+1", "standard", False),
    ("RAVLT s1 @224", 64, 1, 3136, 64, 64, "elu+1", "rala", True),
    ("LA s1 @224 (elu+1)", 64, 1, 3136, 64, 64, "elu+1", "standard", False),
    ("SD-1.5 @512 s1 d40", 8, 8, 4096, 40, 40, "elu+1", "standard", False),
    ("DiT @2048 RALA", 4, 16, 16384, 64, 64, "elu+1", "rala", True),
    ("InLine-Swin-T s1 @224", 64, 3, 3136, 32, 32, "identity", "injective", False),
    ("s2 @224", 64, 2, 784, 64, 64, "elu+1", "standard", False),
    ("ViG-S @224 dk32 dv64", 64, 6, 196, 32, 64, "elu+1", "standard", False),
    ("SD-1.5 @512 s2 d80", 8, 8, 1024, 80, 80, "elu+1", "standard", False),
    ("SD-1.5 @512 s3 d160", 8, 8, 256, 160, 160, "elu+1", "standard", False),
    ("FLUX-like d128", 2, 24, 4096, 128, 128, "elu+1", "standard", False),
    ("s2 @1024", 8, 2, 16384, 64, 64, "elu+1", "standard", False),
    ("RAVLT s1 @1024", 8, 1, 65536, 64, 64, "elu+1", "rala", True),
    ("DiT @4096", 1, 16, 65536, 64, 64, "elu+1", "standard", False),
]
FP32_CASES = ("LA s1 @224 (elu+1)", "DiT @2048")
QUICK_CASES = ("RAVLT s1 @224", "LA s1 @224 (elu+1)", "DiT @2048", "SD-1.5 @512 s1 d40")
SWEEP_N = (1024, 4096, 16384, 65536)


def _floor_bytes(b, h, n, dk, dv, elem, mode):
    fwd = elem * b * h * n * (2 * dk + 2 * dv)
    bwd = elem * b * h * n * (4 * dk + 3 * dv) + 4 * b * h * n
    return fwd if mode == "fwd" else fwd + bwd


def _make_peers(case, dtype, compiled_ref):
    from linzoo.kernels import linear_attention
    from linzoo.kernels.linear_attention.reference import default_scale, linear_attention_reference

    label, b, h, n, dk, dv, fm, norm, rope = case
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(b, h, n, dk, device="cuda", dtype=dtype, generator=g) for _ in range(2))
    if fm == "identity":
        q, k = q.abs() + 0.05, k.abs() + 0.05
    v = torch.randn(b, h, n, dv, device="cuda", dtype=dtype, generator=g)
    cos = sin = None
    if rope:
        ang = torch.rand(n, dk // 2, device="cuda", generator=g) * 6
        cos, sin = ang.cos(), ang.sin()
    scale = default_scale(norm, dk, None)
    ref_args = (fm, norm, 1e-6, scale, 0.0, cos, sin, None)
    peers = {
        "ours": lambda q, k, v: linear_attention(
            q, k, v, feature_map=fm, normalizer=norm, rope=(cos, sin) if rope else None, backend="triton"
        ),
        "eager": lambda q, k, v: linear_attention_reference(q, k, v, *ref_args),
        "compiled": lambda q, k, v: compiled_ref(q, k, v, *ref_args),
    }
    for name, backend in (
        ("sdpa_flash", "FLASH_ATTENTION"),
        ("sdpa_efficient", "EFFICIENT_ATTENTION"),
        ("sdpa_cudnn", "CUDNN_ATTENTION"),
    ):

        def sdpa(q, k, v, _backend=backend):
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(getattr(SDPBackend, _backend)):
                return F.scaled_dot_product_attention(q, k, v)

        peers[name] = sdpa
    try:  # flash-bidirectional-linear-attention (never committed; carried only for a benchmark run)
        # flash_bla has no top-level exports: its op lives in flash_bla.ops.linear_attn.fused
        from flash_bla.ops.linear_attn.fused import linear_attention as fbla  # type: ignore

        peers["flash_bla"] = lambda q, k, v: fbla(F.elu(q) + 1, F.elu(k) + 1, v)
    except Exception as exc:  # any failure just marks the peer n/a
        peers["flash_bla"] = f"n/a (not importable: {type(exc).__name__})"
    return (q, k, v), peers


def run_case(case, dtype, mode, compiled_ref, bw, skip_peers=()):
    label, b, h, n, dk, dv, fm, norm, rope = case
    inputs, peers = _make_peers(case, dtype, compiled_ref)
    row = dict(case=label, B=b, H=h, N=n, dk=dk, dv=dv, feature_map=fm, normalizer=norm, rope=rope)
    row.update(dtype=str(dtype).replace("torch.", ""), mode=mode, ms={}, graph_ms={}, na={})
    # correctness gate: ours vs the eager reference (fp32 math inside) on the same inputs
    try:
        with torch.inference_mode():
            ours, ref = peers["ours"](*inputs).float(), peers["eager"](*inputs).float()
        row["err"] = float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        del ours, ref
    except Exception:  # reported in the row (err = nan) and on stdout; the timings still run
        traceback.print_exc()
        row["err"] = float("nan")
    for name in PEERS:
        peer = peers.get(name)
        if name in skip_peers:
            row["na"][name] = "skipped (this run)"
            continue
        if isinstance(peer, str):
            row["na"][name] = peer
            continue
        if name.startswith("sdpa") and dtype == torch.float32 and name != "sdpa_efficient":
            row["na"][name] = "n/a (no fp32 kernel)"
            continue
        started = time.perf_counter()
        try:
            ms, gms = time_op(peer, inputs, mode, graph_under_ms=3.0 if name in ("ours", "compiled") else 0.0)
            row["ms"][name] = ms
            if gms is not None:
                row["graph_ms"][name] = gms
        except Exception as exc:  # a peer that cannot run is reported, not fatal
            if name == "ours":
                traceback.print_exc()
            row["na"][name] = f"n/a ({type(exc).__name__}: {str(exc).splitlines()[0][:60]})"
        # wall seconds per peer, compilation and autotuning included (what a run's budget goes to)
        row.setdefault("peer_s", {})[name] = round(time.perf_counter() - started, 1)
        torch.cuda.empty_cache()
    elem = torch.finfo(dtype).bits // 8
    row["floor_bytes"] = _floor_bytes(b, h, n, dk, dv, elem, mode)
    if "ours" in row["ms"]:
        t = row["ms"]["ours"] * 1e-3
        row["gbps"] = row["floor_bytes"] / t / 1e9
        row["pct_floor"] = 100.0 * (row["floor_bytes"] / bw) / t
    print(
        f"{label:28s} {row['dtype']:8s} {mode:7s} "
        + " ".join(f"{k}={v:.3f}" for k, v in row["ms"].items())
        + f" err={row['err']:.1e} floor%={row.get('pct_floor', float('nan')):.0f} wall s: {row['peer_s']}",
        flush=True,
    )
    return row


TUNE_CASES = [  # (label, B, H, N, dk, dv, feature_map, normalizer, rope): all take the (64, 64) tiles
    ("DiT @2048", 4, 16, 16384, 64, 64, "elu+1", "standard", False),
    ("RAVLT s1 @224", 64, 1, 3136, 64, 64, "elu+1", "rala", True),
    ("SD-1.5 @512 s1 d40", 8, 8, 4096, 40, 40, "elu+1", "standard", False),
]


def _gpu_ms(fn, inputs, mode) -> float:
    """GPU time of one call (CUDA-graph replay: launch overhead removed), ms."""
    from triton.testing import do_bench_cudagraph

    return do_bench_cudagraph(runner(fn, inputs, mode), rep=30, return_mode="median")


TUNE_KINDS = ("bwd_q", "bwd_kv", "state", "out")
TUNE_CONFIGS = [(bn, w, st) for bn in (64, 32, 128) for w in (4, 8) for st in (2, 3)]


def tune(
    compiled_ref,
    budget_s: float = 150.0,
    out: Path | None = None,
    kinds: tuple[str, ...] = TUNE_KINDS,
    configs: list[tuple[int, int, int]] | None = None,
    step1: bool = True,
) -> dict:
    """Search the launch parameters of the (64, 64)-tile kernels on GPU time (CUDA graphs), one knob at a time.

    1. programs per SM (how finely N is split) × bf16 state dots, at the default tiles (``step1``); then the
       per-pass one-wave split (``triton_fused.WAVES``) on and off, keeping the faster;
    2. then BLOCK_N × warps × stages (``configs``, default ``TUNE_CONFIGS``) per kernel kind of ``kinds``,
       forward kinds on forward time and backward kinds on forward+backward time; a config is scored by the
       geometric mean over TUNE_CASES of its time / the current best. Prints every measurement; returns (and
       writes) the best settings.
    """
    from linzoo.kernels.linear_attention import triton_fused as tf
    from linzoo.kernels.linear_attention import triton_kernels as tk

    t0 = time.time()
    made = [_make_peers(case, torch.bfloat16, compiled_ref) for case in TUNE_CASES]
    log = {"step1": [], "step2": {}}

    def score(mode):
        times = []
        for inputs, peers in made:
            times.append(_gpu_ms(peers["ours"], inputs, mode))
        return times

    def save():
        if out is not None:
            (out / "la_tuning.json").write_text(json.dumps(log, indent=1))

    best_key, best_t = (tk.PROGRAMS_PER_SM, tk.BF16_STATE_DOTS), None
    for pps in (2, 4, 8, 16) if step1 else ():
        for bf16_state in (True, False):
            tk.PROGRAMS_PER_SM, tk.BF16_STATE_DOTS = pps, bf16_state
            t = score("fwd") + score("fwd+bwd")
            log["step1"].append(dict(programs_per_sm=pps, bf16_state=bf16_state, ms=t))
            print(f"tune pps={pps} bf16_state={bf16_state}: " + " ".join(f"{x:.3f}" for x in t), flush=True)
            if best_t is None or math.prod(a / b for a, b in zip(t, best_t)) < 1:
                best_key, best_t = (pps, bf16_state), t
    tk.PROGRAMS_PER_SM, tk.BF16_STATE_DOTS = best_key
    log["best_step1"] = list(best_key)
    save()
    print(f"tune step 1 best: programs_per_sm={best_key[0]} bf16_state={best_key[1]}", flush=True)
    # each pass split into one wave of its own resident blocks (LINZOO_LA_WAVES) against PROGRAMS_PER_SM for all
    times = {}
    for waves in (False, True):
        tf.WAVES = waves
        times[waves] = score("fwd") + score("fwd+bwd")
    rel = math.prod(a / b for a, b in zip(times[True], times[False])) ** (1 / len(times[True]))
    tf.WAVES = rel < 1
    log["waves"] = {"off_ms": times[False], "on_ms": times[True], "on_over_off": rel, "kept": tf.WAVES}
    save()
    print(f"tune waves: on/off {rel:.3f} (" + " ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(*times.values())) + ")")
    configs = TUNE_CONFIGS if configs is None else configs
    for i, kind in enumerate(kinds):
        mode = "fwd" if kind in ("state", "out") else "fwd+bwd"
        kind_deadline = time.time() + (budget_s - (time.time() - t0)) / (len(kinds) - i)
        base = score(mode)
        results = [(1.0, None)]
        for block_n, warps, stages in configs:
            if time.time() > kind_deadline:
                print(f"tune {kind}: budget reached", flush=True)
                break
            tk.TUNING[(kind, 64, 64)] = (block_n, warps, stages)
            try:
                t = score(mode)
            except Exception as exc:  # a config that does not compile (registers, shared memory)
                print("tune", kind, block_n, warps, stages, "failed", type(exc).__name__, flush=True)
                continue
            rel = math.prod(a / b for a, b in zip(t, base)) ** (1 / len(t))
            results.append((rel, (block_n, warps, stages)))
            print(f"tune {kind} {(block_n, warps, stages)}: {rel:.3f} of default " + str(t), flush=True)
        results.sort(key=lambda r: r[0])
        if results[0][1] is None:
            tk.TUNING.pop((kind, 64, 64), None)
        else:
            tk.TUNING[(kind, 64, 64)] = results[0][1]
        log["step2"][kind] = [[r, c] for r, c in results]
        save()
        print(f"tune {kind}: best {results[0]}", flush=True)
    log["TUNING"] = {",".join(map(str, k)): v for k, v in tk.TUNING.items()}
    log["seconds"] = time.time() - t0
    save()
    return log


def breakdown(compiled_ref, bw, out: Path | None = None) -> list[dict]:
    """GPU time of each kernel of one forward+backward (torch.profiler), against its own memory floor.

    The floor of a kernel is the bytes it must move (its tensors of size N; the O(D²) states are
    negligible) over the measured bandwidth, so the row shows which kernel is far from it.
    """
    from torch.profiler import ProfilerActivity, profile

    from linzoo.kernels.linear_attention import triton_fused

    rows = []
    for case in TUNE_CASES:
        label, b, h, n, dk, dv, fm, norm, rope = case
        inputs, peers = _make_peers(case, torch.bfloat16, compiled_ref)
        qg, kg, vg = (t.detach().requires_grad_() for t in inputs)
        do = torch.randn(*qg.shape[:-1], dv, device="cuda", dtype=qg.dtype)

        def step(fn=peers["ours"], leaves=(qg, kg, vg), grad=do):
            return torch.autograd.grad(fn(*leaves), leaves, grad)

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        reps = 10
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                step()
            torch.cuda.synchronize()
        tile = b * h * n * 2  # bytes of one (B, H, N) row of bf16 per channel
        moved = {  # compulsory HBM bytes per kernel: the (B, H, N, ·) tensors it reads and writes
            "_qsum_kernel": tile * dk,
            "_state_kernel": tile * (dk + dv),
            "_out_kernel": tile * (dk + dv),
            "_bwd_q_kernel": tile * (2 * dk + dv),
            "_bwd_kv_kernel": tile * (2 * dk + 2 * dv),
            "_bwd_dq_fix_kernel": tile * 3 * dk,
        }
        for evt in prof.key_averages():
            if evt.device_type is None or "kernel" not in evt.key and "Kernel" not in evt.key:
                continue
            us = evt.device_time_total / reps if hasattr(evt, "device_time_total") else evt.cuda_time_total / reps
            if us <= 0:
                continue
            name = evt.key
            floor_us = moved.get(name, 0) / bw * 1e6
            row = dict(case=label, kernel=name, calls=evt.count // reps, us=us, floor_us=floor_us)
            row["waves"] = triton_fused.WAVES  # the per-pass one-wave split (LINZOO_LA_WAVES) on or off
            row["pct_floor"] = 100 * floor_us / us if floor_us else None
            rows.append(row)
            pct = f"{row['pct_floor']:.0f} %" if floor_us else "-"
            print(f"breakdown {label:22s} {name:28s} x{row['calls']} {us:9.1f} us  floor {floor_us:7.1f} us  {pct}")
    if out is not None:
        (out / "la_breakdown.json").write_text(json.dumps(rows, indent=1))
    return rows


def _fmt(row, name):
    if name in row["ms"]:
        ms = row["ms"][name]
        g = row["graph_ms"].get(name)
        graph = f" [{g:.3f} graph]" if g else ""
        if name == "ours":
            return f"{ms:.3f}{graph}"
        ratio = f" ({ms / row['ms']['ours']:.2f}×)" if "ours" in row["ms"] else ""
        g_ours = row["graph_ms"].get("ours")
        graph_ratio = f" [{g:.3f} graph ({g / g_ours:.2f}×)]" if g and g_ours else graph
        return f"{ms:.3f}{ratio}{graph_ratio}"
    return row["na"].get(name, "n/a")


MARKER = generated_marker("linear_attention.py")


def render(results: dict, out_dirs: list[Path], plot: bool = True) -> None:
    env = results["env"]
    lines = [
        "# Non-causal linear attention: fused Triton op vs peers",
        "",
        f"Measured by `benchmarks/linear_attention.py{' --quick' if env.get('quick') else ''}` on {env['gpu']}"
        f" (torch {env['torch']}, triton {env['triton']}), {env['date']}; measured copy bandwidth"
        f" {env['bandwidth_gbps']:.0f} GB/s.",
        "",
        "Times are medians of `triton.testing.do_bench` in ms (L2 flushed); `(n×)` = peer time / ours (> 1: ours"
        " faster). `[… graph]` = the op replayed in a CUDA graph (launch overhead removed; GPU time)."
        " GB/s and % floor use the compulsory bytes of kernels.md §5.2 (fwd e·BHN(2dk+2dv);"
        " bwd e·BHN(4dk+3dv)+4BHN) over the measured bandwidth."
        " SDPA rows are full softmax attention on the same q, k, v (what linear attention replaces)."
        " `err` = max|ours − reference| / max|reference| of the output.",
        "",
        "| case | B·H·N·dk/dv | φ / normaliser | dtype | mode | ours | eager | compiled | SDPA flash | SDPA efficient"
        " | SDPA cuDNN | flash_bla | ours GB/s | % floor | err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    runs = sorted({r.get("run", "") for r in results["rows"]} - {""})
    if any(r.get("waves") for r in results["rows"]):
        lines[2:2] = ["Rows marked † ran with the per-pass one-wave split of N (`LINZOO_LA_WAVES`).", ""]
    if len(runs) > 1:  # a resumed table: rows of several processes (ratios within a row share one process)
        runs_note = f"Rows from {len(runs)} runs (`--resume`; each row's run in its case cell): {', '.join(runs)}."
        lines[2:2] = [runs_note, ""]
    for r in results["rows"]:
        shape = f"{r['B']}·{r['H']}·{r['N']}·{r['dk']}" + (f"/{r['dv']}" if r["dv"] != r["dk"] else "")
        mode_s = f"{r['feature_map']} / {r['normalizer']}" + (" +rope" if r["rope"] else "")
        cells = [_fmt(r, p) for p in PEERS]
        gbps = f"{r['gbps']:.0f}" if "gbps" in r else "-"
        pct = f"{r['pct_floor']:.0f} %" if "pct_floor" in r else "-"
        label = f"{r['case']} (run {r['run']})" if len(runs) > 1 and r.get("run") else r["case"]
        label += " †" if r.get("waves") else ""
        lines.append(
            f"| {label} | {shape} | {mode_s} | {r['dtype']} | {r['mode']} | "
            + " | ".join(cells)
            + f" | {gbps} | {pct} | {r['err']:.1e} |"
        )
    ratios = {p: [] for p in PEERS[1:]}
    for r in results["rows"]:
        for p in ratios:
            if p in r["ms"] and "ours" in r["ms"]:
                ratios[p].append(r["ms"][p] / r["ms"]["ours"])
    lines += ["", "Geometric mean of peer/ours over the rows where both ran:", ""]
    for p, vals in ratios.items():
        if vals:
            gm = math.exp(sum(math.log(x) for x in vals) / len(vals))
            lines.append(f"- {p}: {gm:.2f}× over {len(vals)} rows (min {min(vals):.2f}×, max {max(vals):.2f}×)")
    if results.get("sweep"):
        lines += ["", "![time vs N](linear_attention.png)", ""]
        lines.append("N sweep (B1·H16·d64, bf16, forward+backward), ms:")
        lines.append("")
        names = [p for p in PEERS if any(p in r["ms"] for r in results["sweep"])]
        lines.append("| N | " + " | ".join(names) + " |")
        lines.append("|---" * (len(names) + 1) + "|")
        for r in results["sweep"]:
            lines.append(
                f"| {r['N']} | " + " | ".join(f"{r['ms'][p]:.3f}" if p in r["ms"] else "-" for p in names) + " |"
            )
    if results.get("tuning"):
        lines += ["", f"Tuned launch configs at DiT @2048 bf16 (BLOCK_N, warps, stages): {results['tuning']}"]
    text = "\n".join(lines) + "\n\n" + MARKER
    for d in out_dirs:
        d.mkdir(parents=True, exist_ok=True)
        md = d / "linear_attention.md"
        md.write_text(text + (kept_notes(md, MARKER) or "\n"))
        (d / "linear_attention.json").write_text(json.dumps(results, indent=1))
        if plot:
            plot_sweep(
                results, d / "linear_attention.png", PEERS, "N", "N (tokens)", "forward+backward time (ms)",
                "linear attention, B1 H16 d64 bf16",
            )  # fmt: skip


def _indices(spec: str, count: int) -> list[int]:
    """``"0,3,5-7"`` -> [0, 3, 5, 6, 7]; every index must be below ``count``."""
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise SystemExit(f"--cases: expected indices or ranges like 0,3,5-7, got {spec!r}")
        out += range(int(lo), int(hi or lo) + 1)
    bad = [i for i in out if i >= count]
    if bad:
        raise SystemExit(f"--cases: indices {bad} out of range (there are {count} cases)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few shapes only")
    parser.add_argument("--out", type=Path, default=None, help="also write the md/json/png here")
    parser.add_argument("--tune", action="store_true", help="search launch configs at the headline shapes first")
    parser.add_argument("--tune-budget", type=float, default=150.0, help="seconds for the config search")
    parser.add_argument("--tune-only", action="store_true", help="stop after the search")
    parser.add_argument(
        "--tune-kinds", default=",".join(TUNE_KINDS), help="comma-separated kernel kinds the search tries"
    )
    parser.add_argument(
        "--tune-configs",
        default=None,
        help="BLOCK_N,warps,stages configs to try, separated by spaces or '/' (default: every TUNE_CONFIGS entry)",
    )
    parser.add_argument("--tune-no-step1", action="store_true", help="keep PROGRAMS_PER_SM / BF16_STATE_DOTS")
    parser.add_argument("--breakdown", action="store_true", help="per-kernel GPU times (torch.profiler) first")
    parser.add_argument("--breakdown-only", action="store_true", help="stop after the breakdown")
    parser.add_argument("--render", type=Path, default=None, help="re-render md/png from a results JSON")
    parser.add_argument("--no-docs", action="store_true", help="do not write into docs/benchmarks")
    parser.add_argument("--cases", default=None, help="comma-separated CASES indices or ranges (e.g. 0,3,5-8)")
    parser.add_argument(
        "--resume", type=Path, default=None, help="JSON of an earlier run: keep its rows and sweep, run the rest"
    )
    parser.add_argument(
        "--skip-peers",
        default="",
        help=f"comma-separated peers not timed in this run (of {', '.join(PEERS[1:])}; their cells say skipped)",
    )
    args = parser.parse_args()
    out_dirs = ([] if args.no_docs else [DOCS]) + ([args.out] if args.out else [])
    skipped = tuple(p for p in args.skip_peers.split(",") if p)
    if not set(skipped) <= set(PEERS[1:]):
        parser.error(f"--skip-peers: expected peers among {', '.join(PEERS[1:])}; got {args.skip_peers!r}")
    kinds = tuple(k for k in args.tune_kinds.split(",") if k)
    if not set(kinds) <= set(TUNE_KINDS):
        parser.error(f"--tune-kinds: expected kinds among {', '.join(TUNE_KINDS)}; got {args.tune_kinds!r}")
    tune_configs = None
    if args.tune_configs:
        try:
            triples = args.tune_configs.replace("/", " ").split()  # "/" as well: no quoting through env vars
            tune_configs = [tuple(int(x) for x in c.split(",")) for c in triples]
        except ValueError:
            tune_configs = []
        if not tune_configs or any(len(c) != 3 for c in tune_configs):
            parser.error(
                f"--tune-configs: expected BLOCK_N,warps,stages triples like '32,4,2 16,8,1'; got {args.tune_configs!r}"
            )
    if args.render:
        render(json.loads(args.render.read_text()), out_dirs)
        return
    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device")
    import torch._dynamo as dynamo
    import triton

    dynamo.config.cache_size_limit = 64
    from linzoo.kernels.linear_attention import triton_fused
    from linzoo.kernels.linear_attention.reference import linear_attention_reference

    # dynamic shapes: one Inductor compile per (dtype, mode, normaliser) instead of one per shape, which
    # keeps a full run within a few minutes; static-shape compiles may be somewhat faster per shape.
    compiled_ref = torch.compile(linear_attention_reference, dynamic=True)
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
    )
    results = dict(env=env, rows=[], sweep=[], tuning=None)
    run_tag = time.strftime("%Y-%m-%dT%H:%M")
    if args.resume is not None:
        previous = json.loads(args.resume.read_text())
        for r in previous["rows"] + previous.get("sweep", []):
            r.setdefault("run", previous["env"].get("date", "earlier"))
        results["rows"], results["sweep"] = previous["rows"], previous.get("sweep", [])
    done = {(r["case"], r["dtype"], r["mode"]) for r in results["rows"]}
    if args.tune:  # before the breakdown, which then times the configs the search chose
        results["tuning"] = tune(
            compiled_ref, args.tune_budget, args.out, kinds, tune_configs, step1=not args.tune_no_step1
        )
    if args.breakdown or args.breakdown_only:
        results["breakdown"] = breakdown(compiled_ref, bw, args.out)
    if args.breakdown_only or args.tune_only:
        return
    cases = [c for c in CASES if not args.quick or c[0] in QUICK_CASES]
    if args.cases:
        cases = [cases[i] for i in _indices(args.cases, len(cases))]

    def run_one(case, dtype, mode):  # re-rendered after every row so a run cut short keeps what it measured
        if (case[0], str(dtype).replace("torch.", ""), mode) in done:
            return
        row = run_case(case, dtype, mode, compiled_ref, bw, skip_peers=skipped)
        row["run"] = run_tag
        row["waves"] = triton_fused.WAVES  # set by LINZOO_LA_WAVES, or by --tune's A/B
        results["rows"].append(row)
        render(results, out_dirs, plot=bool(results["sweep"]))

    for case in cases[:4]:
        for mode in ("fwd", "fwd+bwd"):
            run_one(case, torch.bfloat16, mode)
    fp32_cases = [case for case in cases if case[0] in FP32_CASES]
    for case in fp32_cases:  # early too: the fp32 rows are a separate set of launch configs
        for mode in ("fwd", "fwd+bwd"):
            run_one(case, torch.float32, mode)
    if not results["sweep"] and not args.cases:  # the plot's N sweep, early so a cut run has it
        for n in SWEEP_N if not args.quick else (4096, 16384):
            case = (f"sweep N={n}", 1, 16, n, 64, 64, "elu+1", "standard", False)
            row = run_case(case, torch.bfloat16, "fwd+bwd", compiled_ref, bw, skip_peers=("sdpa_efficient", *skipped))
            row["run"] = run_tag
            results["sweep"].append(row)
        render(results, out_dirs)
    for case in cases[4:]:
        for mode in ("fwd", "fwd+bwd"):
            run_one(case, torch.bfloat16, mode)
    env["seconds"] = time.time() - t0
    render(results, out_dirs)
    print(f"done in {env['seconds']:.0f} s")


if __name__ == "__main__":
    main()
