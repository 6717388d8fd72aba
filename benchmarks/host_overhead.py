"""Host (CPU) cost of one call of linzoo's kernels against their GPU time, on the GPU machine.

At 224-px backbone shapes the fused kernels run for tens of microseconds, so what a model pays per call is the
Python and launch work on the host. For each case this measures, in one process:

- *GPU µs*: the call replayed in a CUDA graph (no host work at all);
- *host µs*: wall time per call while the GPU is kept busy by a queued ``torch.cuda._sleep``, so the host never
  waits for the device (what eager mode pays per call when it is launch-bound);
- the same for the PyTorch reference, and for one bare Triton launch of a ~40-argument kernel through
  ``JITFunction.run`` (``kernel[grid](...)``) against its ``CompiledKernel`` runner;
- a cProfile of the triton calls, top functions by own time, to show where the host time goes.

Writes ``host_overhead.md`` and ``host_overhead.json`` under ``--out``. GPU only.

    python benchmarks/host_overhead.py --out results
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from collections.abc import Callable
from pathlib import Path

import torch

# (label, kind, shape, options)
LA_CASES = [
    ("RAVLT s1 @224 rala+rope", (64, 1, 3136, 64), dict(feature_map="elu+1", normalizer="rala", rope=True)),
    ("RAVLT s2 @224 rala+rope", (64, 2, 784, 64), dict(feature_map="elu+1", normalizer="rala", rope=True)),
    ("RAVLT s3 @224 rala+rope", (64, 5, 196, 64), dict(feature_map="elu+1", normalizer="rala", rope=True)),
    ("elu+1 standard s2 @224", (64, 2, 784, 32), dict(feature_map="elu+1", normalizer="standard", rope=False)),
]
NA_CASES = [("NAT s1 @224 k7", (64, 2, 56, 56, 32), 7)]


def gpu_us(fn: Callable[[], object], reps: int = 20) -> float:
    """Median GPU time of ``fn`` replayed in a CUDA graph (µs)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3)
    return sorted(times)[len(times) // 2]


def host_us(fn: Callable[[], object], calls: int = 20) -> float:
    """Wall µs per call with the GPU busy (a queued sleep), i.e. the host's own cost per call.

    Few calls per measurement: once the driver's launch queue is full (~1,000 pending kernels) the host blocks
    behind the sleep and the figure turns into GPU time (a first run with 100 calls showed that).
    """
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(3):
        torch.cuda._sleep(int(3e8))  # ~0.2 s of GPU spin: the launches below only queue
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls * 1e6)
        torch.cuda.synchronize()
    return best


def profile_top(fn: Callable[[], object], calls: int = 20, top: int = 22) -> str:
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(int(1.5e9))
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        fn()
    prof.disable()
    torch.cuda.synchronize()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    text = buf.getvalue()
    return text[text.find("ncalls") :] if "ncalls" in text else text


def _la_case(label: str, shape: tuple, opts: dict, profiles: dict) -> dict:
    from linzoo.kernels import linear_attention, rope_2d, rope_2d_frequencies

    b, h, n, d = shape
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    qg, kg, vg = (t.detach().clone().requires_grad_() for t in (q, k, v))
    grad = torch.randn_like(v)
    side = int(round(n**0.5))
    rope = rope_2d(side, side, rope_2d_frequencies(d), device="cuda") if opts["rope"] else None
    kw = dict(feature_map=opts["feature_map"], normalizer=opts["normalizer"], rope=rope)
    row = {"case": label}
    for backend in ("triton", "torch"):

        def fwd(backend=backend):
            with torch.no_grad():
                return linear_attention(q, k, v, backend=backend, **kw)

        def fwd_bwd(backend=backend):
            linear_attention(qg, kg, vg, backend=backend, **kw).backward(grad)

        row[f"{backend} fwd GPU µs"] = gpu_us(fwd)
        row[f"{backend} fwd host µs"] = host_us(fwd)
        row[f"{backend} fwd+bwd host µs"] = host_us(fwd_bwd, calls=10)
        if backend == "triton" and label.startswith("RAVLT s1"):
            profiles[f"{label}: triton forward (no_grad), 20 calls"] = profile_top(fwd)
            profiles[f"{label}: triton forward+backward, 20 calls"] = profile_top(fwd_bwd)
    return row


def la_cases(results: list, profiles: dict) -> None:
    for label, shape, opts in LA_CASES:
        results.append(_la_case(label, shape, opts, profiles))
        print(results[-1], flush=True)


def _na_case(label: str, shape: tuple, ks: int, profiles: dict) -> dict:
    from linzoo.kernels import neighborhood_attention_2d

    torch.manual_seed(0)
    q, k, v = (torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    qg, kg, vg = (t.detach().clone().requires_grad_() for t in (q, k, v))
    grad = torch.randn_like(v)

    def fwd():
        with torch.no_grad():
            return neighborhood_attention_2d(q, k, v, ks)

    def fwd_bwd():
        neighborhood_attention_2d(qg, kg, vg, ks).backward(grad)

    row = {
        "case": label,
        "triton fwd GPU µs": gpu_us(fwd),
        "triton fwd host µs": host_us(fwd),
        "triton fwd+bwd host µs": host_us(fwd_bwd, calls=10),
    }
    profiles[f"{label}: forward+backward, 20 calls"] = profile_top(fwd_bwd)
    return row


def na_cases(results: list, profiles: dict) -> None:
    for label, shape, ks in NA_CASES:
        results.append(_na_case(label, shape, ks, profiles))
        print(results[-1], flush=True)


def bare_launch(results: list, profiles: dict) -> None:
    """One launch of a 40-argument kernel (like the linear-attention passes) through each Triton entry point."""
    import triton
    import triton.language as tl

    @triton.jit
    def many_args(
        x, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, b0, b1, b2, b3, b4, b5, b6, b7, b8, b9,
        c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, d0, d1, d2, d3, f0, f1,
        K0: tl.constexpr, K1: tl.constexpr, K2: tl.constexpr, K3: tl.constexpr, K4: tl.constexpr,
    ):  # fmt: skip
        tl.store(x + tl.program_id(0), a0 + b0 + c0 + d0 + K0)

    x = torch.zeros(64, device="cuda", dtype=torch.int32)
    ints = list(range(32, 32 + 34))
    consts = dict(K0=1, K1=2, K2=3, K3=4, K4=5)

    def jit_launch():
        many_args[(8,)](x, *ints, 0.5, 1.5, **consts)

    compiled = many_args[(8,)](x, *ints, 0.5, 1.5, **consts)
    runner = compiled[(8, 1, 1)]
    n_sig = len([p for p in many_args.params if not p.is_constexpr])
    import inspect

    sig_len = len(inspect.signature(many_args.fn).parameters)
    args = [x, *ints, 0.5, 1.5, *consts.values()]

    def runner_launch():
        runner(*args)

    row = {"case": f"bare launch, {n_sig} runtime + 5 constexpr args ({sig_len})"}
    row["JITFunction.run host µs"] = host_us(jit_launch, calls=200)
    try:
        runner_launch()
        torch.cuda.synchronize()
        row["CompiledKernel runner host µs"] = host_us(runner_launch, calls=200)
    except Exception as err:  # the runner's argument convention differs between Triton versions
        row["CompiledKernel runner host µs"] = f"error: {type(err).__name__}: {str(err)[:100]}"
    from linzoo.kernels._launch import launch

    def cached_launch():
        launch(many_args, (8,), x, *ints, 0.5, 1.5, **consts)

    cached_launch()
    row["linzoo launch() host µs"] = host_us(cached_launch, calls=200)
    row["torch.empty(64) host µs"] = host_us(lambda: torch.empty(64, device="cuda"), calls=200)
    results.append(row)
    print(row, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("host_overhead.py needs a CUDA device")
    import linzoo.vision  # noqa: F401  (imports the kernels the way a model does)

    results: list = []
    profiles: dict = {}
    for step in (bare_launch, la_cases, na_cases):
        try:
            step(results, profiles)
        except Exception as err:  # one failing part must not lose the others
            results.append({"case": step.__name__, "error": f"{type(err).__name__}: {str(err)[:300]}"})
            print(results[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "host_overhead.json").write_text(json.dumps({"results": results, "profiles": profiles}, indent=1))
    lines = [f"# Host cost per call vs GPU time ({torch.cuda.get_device_name()}, torch {torch.__version__})", ""]
    for row in results:
        lines.append("- " + ", ".join(f"{k}: {v:.1f}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items()))
    for name, text in profiles.items():
        lines += ["", f"## {name}", "", "```", text.rstrip(), "```"]
    (args.out / "host_overhead.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
