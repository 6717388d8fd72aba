"""LiT vs DiT (softmax attention through SDPA): denoising-step time and peak memory against resolution.

Random weights, class-conditional XL/2 layout (28 blocks, width 1152, patch 2, SD-VAE latents = pixels / 8).
Both models are timed on one classifier-free-guidance step (batch 2: conditional + null label) in inference
mode, and on one training step (forward + backward, batch 1). DiT is diffusers' ``DiTTransformer2DModel``, whose
attention runs ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on the GPU).

LiT's linear attention uses the fewest heads whose head dim fits the fused Triton kernel (<= 256): LiT's
guideline 2 is "fewer heads" (the paper's ablation model is a 2-head LiT-S/2, head dim 192); at XL width 1152
that is 6 heads (head dim 192). ``--linear-heads`` overrides it; a head dim above 256 runs on the PyTorch
reference path, which the table then says.

Both models stay on the device and the sizes are measured in increasing order, LiT and DiT side by side, so a
run cut short still has both models at every size it reached. ``--time-budget`` (seconds from the start) skips
the measurements that would not finish in time, predicted from the previous size; skipped and out-of-memory
rows are marked as such. The table and JSON are rewritten after every size.

    python benchmarks/lit.py                         # GPU: 256..4096 px within --time-budget (75 s)
    python benchmarks/lit.py --quick --out /tmp/b    # 256..1024 px, fewer repeats
    python benchmarks/lit.py --quick --device cpu --model S --layers 1 --sizes 64 128 --no-docs   # CPU smoke test

Writes ``docs/benchmarks/lit.md`` (table) and ``docs/benchmarks/lit.png`` (plot), plus ``lit.json``; with
``--out DIR`` the same files also go to DIR.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "benchmarks"

# DiT sizes (width = heads x 72 ... as in the DiT paper: S 384/6, B 768/12, L 1024/16, XL 1152/16).
MODELS = {
    "S": dict(num_attention_heads=6, attention_head_dim=64, num_layers=12),
    "B": dict(num_attention_heads=12, attention_head_dim=64, num_layers=12),
    "L": dict(num_attention_heads=16, attention_head_dim=64, num_layers=24),
    "XL": dict(num_attention_heads=16, attention_head_dim=72, num_layers=28),
}
MAX_FUSED_HEAD_DIM = 256  # linzoo.kernels.linear_attention runs the fused Triton kernel up to this head dim
KINDS = ("lit", "dit")
MODES = ("infer", "train")


def width(model: str) -> int:
    return MODELS[model]["num_attention_heads"] * MODELS[model]["attention_head_dim"]


def default_linear_heads(model: str) -> int:
    """The fewest heads dividing the width with head dim <= 256 (LiT guideline 2: few heads; fused kernel limit)."""
    dim = width(model)
    return next(h for h in range(1, dim + 1) if dim % h == 0 and dim // h <= MAX_FUSED_HEAD_DIM)


def build(kind: str, model: str, layers: int | None, linear_heads: int, device: str, dtype: torch.dtype) -> Any:
    from diffusers import DiTTransformer2DModel

    from linzoo.diffusion.models import LiTTransformer2DModel

    cfg = dict(MODELS[model], in_channels=4, out_channels=8, sample_size=32, patch_size=2)
    if layers is not None:
        cfg["num_layers"] = layers
    with torch.device(device):  # initialise on the device: a CPU init of XL/2 takes seconds on a slow host
        if kind == "dit":
            net = DiTTransformer2DModel(**cfg, num_embeds_ada_norm=1000)
        else:
            net = LiTTransformer2DModel(**cfg, num_classes=1000, num_linear_heads=linear_heads)
    return net.to(device=device, dtype=dtype)  # also any buffer a constructor built on the CPU


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _param_gib(net: torch.nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in net.parameters()) / 2**30


def measure(net: Any, pixels: int, mode: str, device: str, dtype: torch.dtype, repeats: int) -> dict[str, Any]:
    """Median seconds per step and peak memory (GiB, CUDA only) of one inference (CFG) or training step.

    The peak is this model's weights plus the largest extra allocation during its steps, so the other model,
    also resident, is not counted. A step slower than 1 s is timed once.
    """
    side = pixels // 8
    batch = 2 if mode == "infer" else 1
    x = torch.randn(batch, 4, side, side, device=device, dtype=dtype)
    t = torch.full((batch,), 500, device=device, dtype=torch.long)
    y = torch.tensor([207, 1000][:batch], device=device)

    def step() -> None:
        if mode == "infer":
            with torch.inference_mode():
                net(x, timestep=t, class_labels=y)
        else:
            net.zero_grad(set_to_none=True)
            net(x, timestep=t, class_labels=y).sample.float().square().mean().backward()

    cuda = device.startswith("cuda")
    net.train(mode == "train")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    start = time.perf_counter()
    step()  # warm-up (kernel selection, Triton compilation)
    _sync(device)
    warm = time.perf_counter() - start
    times: list[float] = []
    while not times or (len(times) < repeats and times[-1] < 1.0):  # one repeat of a step slower than 1 s
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    mem = (torch.cuda.max_memory_allocated() - base) / 2**30 + _param_gib(net) if cuda else float("nan")
    net.zero_grad(set_to_none=True)
    return {"seconds": sorted(times)[len(times) // 2], "peak_gib": mem, "warmup_s": warm, "repeats": len(times)}


def _predict(rows: list[dict[str, Any]], kind: str, mode: str, pixels: int) -> float | None:
    """Seconds the next (warm-up + timed) measurement should take, extrapolated from the previous sizes."""
    done = [r for r in rows if r["model"] == kind and r["mode"] == mode and r["status"] == "ok"]
    if not done:
        return None
    last = done[-1]
    tokens_ratio = (pixels / last["pixels"]) ** 2
    growth = tokens_ratio  # linear in tokens
    if len(done) >= 2:  # the observed growth per token ratio, e.g. quadratic for softmax attention
        prev = done[-2]
        seen = last["seconds"] / prev["seconds"]
        seen_tokens = (last["pixels"] / prev["pixels"]) ** 2
        exponent = max(1.0, min(2.0, math.log(max(seen, 1.0)) / math.log(seen_tokens)))
        growth = tokens_ratio**exponent
    step = 2.0 * last["seconds"] * growth  # safety factor 2: softmax attention's share of the step keeps growing
    return step * (1 + (1 if step > 1.0 else last["repeats"]))


def run(args: argparse.Namespace, start: float, on_update=None) -> dict[str, Any]:
    from linzoo.kernels import resolve_backend

    dtype = getattr(torch, args.dtype)
    head_dim = width(args.model) // args.linear_heads
    backend = resolve_backend(
        "auto", torch.device(args.device), triton_supported=head_dim <= MAX_FUSED_HEAD_DIM and args.device != "cpu"
    )
    results: dict[str, Any] = {
        "model": args.model,
        "layers": args.layers or MODELS[args.model]["num_layers"],
        "width": width(args.model),
        "linear_heads": args.linear_heads,
        "linear_head_dim": head_dim,
        "lit_kernel_backend": backend,
        "dtype": args.dtype,
        "device_type": torch.device(args.device).type,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "time_budget_s": args.time_budget,
        "rows": [],
    }
    nets = {kind: build(kind, args.model, args.layers, args.linear_heads, args.device, dtype) for kind in KINDS}
    results["params_m"] = {kind: round(sum(p.numel() for p in net.parameters()) / 1e6, 1) for kind, net in nets.items()}
    print(json.dumps({k: v for k, v in results.items() if k != "rows"}), flush=True)
    for pixels in args.sizes:
        for mode in args.modes:
            for kind in KINDS:
                row: dict[str, Any] = {"model": kind, "pixels": pixels, "tokens": (pixels // 16) ** 2, "mode": mode}
                left = args.time_budget - (time.perf_counter() - start) if args.time_budget else float("inf")
                predicted = _predict(results["rows"], kind, mode, pixels)
                if left <= 0 or (predicted is not None and predicted > left):
                    reason = f"time budget: needs ~{predicted or 0:.0f} s, {max(left, 0):.0f} s left"
                    row.update(status="skipped", reason=reason)
                else:
                    try:
                        row.update(measure(nets[kind], pixels, mode, args.device, dtype, args.repeats), status="ok")
                    except (torch.OutOfMemoryError, RuntimeError) as err:
                        if not isinstance(err, torch.OutOfMemoryError) and "out of memory" not in str(err).lower():
                            raise
                        row.update(status="OOM")
                        del err
                        gc.collect()
                    finally:
                        nets[kind].zero_grad(set_to_none=True)
                        if args.device.startswith("cuda"):
                            torch.cuda.empty_cache()
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
        results["wall_s"] = round(time.perf_counter() - start, 1)
        if on_update is not None:
            on_update(results)
    return results


def _cell(row: dict[str, Any] | None, key: str, spec: str) -> str:
    if row is None:
        return "not run"
    if row["status"] == "OOM":
        return "**OOM**"
    if row["status"] == "skipped":
        return "skipped†"
    value = row[key]
    return "n/a" if value != value else format(value, spec)  # NaN: memory is measured on CUDA only


def write_markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    backend = results["lit_kernel_backend"]
    lines = [
        "# LiT vs DiT: step time and peak memory against resolution",
        "",
        f"Produced by `python benchmarks/lit.py`. Random weights, {results['model']}/2 layout with "
        f"{results['layers']} blocks (width {results['width']}; LiT {results['params_m']['lit']} M, DiT "
        f"{results['params_m']['dit']} M parameters). LiT: {results['linear_heads']} linear-attention heads of dim "
        f"{results['linear_head_dim']} + 5x5 DWC, attention through `linzoo.kernels.linear_attention` (backend "
        f"`{backend}`); DiT: diffusers `DiTTransformer2DModel` (SDPA). {results['dtype']} on {results['device']}, "
        f"torch {results['torch']}.",
        "",
        "infer = one CFG denoising step (batch 2) under `torch.inference_mode()`; train = forward + backward "
        "(batch 1). Median of the timed repeats after one warm-up (one repeat for steps slower than 1 s). Peak "
        "GiB = the model's weights + its steps' largest extra allocation (`torch.cuda.max_memory_allocated`).",
    ]
    if results["device_type"] == "cuda" and backend != "triton":
        lines += ["", f"**Note:** LiT's attention ran on the `{backend}` backend, not the fused Triton kernel."]
    lines += [
        "",
        "| mode | pixels | tokens | LiT s/step | DiT s/step | LiT / DiT time | LiT peak GiB | DiT peak GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    skipped = []
    for mode in [m for m in MODES if any(r["mode"] == m for r in rows)]:
        for px in sorted({r["pixels"] for r in rows}):
            lit = next((r for r in rows if r["model"] == "lit" and r["pixels"] == px and r["mode"] == mode), None)
            dit = next((r for r in rows if r["model"] == "dit" and r["pixels"] == px and r["mode"] == mode), None)
            if lit is None and dit is None:
                continue
            ok = lit is not None and dit is not None and lit["status"] == dit["status"] == "ok"
            if not ok and dit is not None and dit["status"] == "OOM" and lit is not None and lit["status"] == "ok":
                ratio = "DiT OOM"
            else:
                ratio = f"{lit['seconds'] / dit['seconds']:.2f}" if ok else "—"
            skipped += [r for r in (lit, dit) if r is not None and r["status"] == "skipped"]
            lines.append(
                f"| {mode} | {px} | {(px // 16) ** 2:,} | {_cell(lit, 'seconds', '.4f')} "
                f"| {_cell(dit, 'seconds', '.4f')} | {ratio} | {_cell(lit, 'peak_gib', '.2f')} "
                f"| {_cell(dit, 'peak_gib', '.2f')} |"
            )
    if skipped:
        lines += ["", f"† skipped to stay within the {results['time_budget_s']} s time budget of the run:"]
        lines += [f"- {r['model'].upper()} {r['mode']} {r['pixels']} px: {r['reason']}" for r in skipped]
    if any(r["status"] == "OOM" for r in rows):
        lines += ["", "**OOM**: `torch.OutOfMemoryError` on this device."]
    lines += ["", f"Wall time of the run: {results.get('wall_s', 'n/a')} s."]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    missing: dict[int, list[str]] = {}  # pixels -> "DIT train OOM", ...: crosses + one label per size
    for mode in [m for m in MODES if any(r["mode"] == m for r in rows)]:
        for kind, style in (("lit", "-o"), ("dit", "--s")):
            sel = sorted((r for r in rows if r["model"] == kind and r["mode"] == mode), key=lambda r: r["pixels"])
            ok = [r for r in sel if r["status"] == "ok"]
            label = f"{kind.upper()} {mode}"
            line = axes[0].plot([r["pixels"] for r in ok], [r["seconds"] for r in ok], style, label=label)[0]
            axes[1].plot([r["pixels"] for r in ok], [r["peak_gib"] for r in ok], style, label=label)
            for r in sel:
                if r["status"] != "ok":
                    missing.setdefault(r["pixels"], []).append(f"{label} {r['status']}")
                    for ax in axes:
                        ax.plot(r["pixels"], 0.98, "x", color=line.get_color(), transform=ax.get_xaxis_transform())
    for pixels, labels in missing.items():
        for ax in axes:
            ax.annotate(
                "\n".join(labels),
                (pixels, 0.95),
                xycoords=ax.get_xaxis_transform(),
                rotation=90,
                va="top",
                ha="right",
                fontsize=7,
                color="tab:red",
            )
    has_memory = any(r["status"] == "ok" and r["peak_gib"] == r["peak_gib"] for r in rows)
    if not has_memory:
        axes[1].text(0.5, 0.5, "peak memory is measured on CUDA only", ha="center", transform=axes[1].transAxes)
    has_times = any(r["status"] == "ok" for r in rows)
    if not has_times:
        axes[0].text(0.5, 0.5, "no measured rows", ha="center", transform=axes[0].transAxes)
    for ax, title, logy in zip(axes, ("seconds per step", "peak memory (GiB)"), (has_times, has_memory)):
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
            ax.legend(fontsize=8)
        ax.set_xlabel("image side (pixels)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(
        f"LiT ({results['linear_heads']} heads x {results['linear_head_dim']}) vs DiT (SDPA), {results['model']}/2, "
        f"{results['dtype']}, {results['device']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: dict[str, Any], folders: list[Path], with_plot: bool = True) -> str:
    md = write_markdown(results)
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "lit.md").write_text(md)
        (folder / "lit.json").write_text(json.dumps(results, indent=2) + "\n")
        if with_plot:
            plot(results, folder / "lit.png")
    return md


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", default=None, choices=["float32", "float16", "bfloat16"], help="default: bf16 on GPU"
    )
    parser.add_argument("--model", default="XL", choices=sorted(MODELS))
    parser.add_argument("--layers", type=int, default=None, help="override the number of blocks")
    parser.add_argument(
        "--linear-heads", type=int, default=None, help="LiT heads (default: the fewest with head dim <= 256)"
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="image sides in pixels (multiples of 16)")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--time-budget", type=float, default=75.0, help="seconds; 0 = no limit")
    parser.add_argument("--quick", action="store_true", help="256..1024 px and 2 repeats")
    parser.add_argument("--out", default=None, help="also write lit.md / lit.png / lit.json here")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks/")
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.sizes = args.sizes or ([256, 512, 1024] if args.quick else [256, 512, 1024, 2048, 4096])
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.linear_heads = args.linear_heads or default_linear_heads(args.model)
    bad = [s for s in args.sizes if s % 16]
    if bad:
        parser.error(f"--sizes must be multiples of 16 (VAE 8 x patch 2), got {bad}")
    if width(args.model) % args.linear_heads:
        parser.error(f"--linear-heads must divide the width {width(args.model)}, got {args.linear_heads}")
    args.sizes = sorted(args.sizes)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    start = time.perf_counter()
    args = parse_args(argv)
    torch.manual_seed(0)
    folders = [] if args.no_docs else [DOCS]
    if args.out:
        folders.append(Path(args.out))
    results = run(args, start, on_update=lambda res: write(res, folders, with_plot=False))
    results["wall_s"] = round(time.perf_counter() - start, 1)
    print(write(results, folders))
    return results


if __name__ == "__main__":
    main()
