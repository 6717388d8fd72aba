"""LiT vs DiT (softmax attention through SDPA): denoising-step time and peak memory against resolution.

Random weights, class-conditional XL/2 layout (28 blocks, width 1152, patch 2, SD-VAE latents = pixels / 8).
Both models are timed on one classifier-free-guidance step (batch 2: conditional + null label) in inference
mode, and on one training step (forward + backward, batch 1). DiT is diffusers' ``DiTTransformer2DModel``, whose
attention runs ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels on the GPU).

    python benchmarks/lit.py                         # full run on a GPU (< ~3 min on an H100)
    python benchmarks/lit.py --quick --out /tmp/b    # 256..1024 px, fewer repeats
    python benchmarks/lit.py --quick --device cpu --model S --layers 1 --sizes 64 128   # CPU smoke test

Writes ``docs/benchmarks/lit.md`` (table) and ``docs/benchmarks/lit.png`` (plot), plus ``lit.json``; with
``--out DIR`` the same files also go to DIR.
"""

from __future__ import annotations

import argparse
import json
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


def build(kind: str, model: str, layers: int | None, linear_heads: int, device: str, dtype: torch.dtype) -> Any:
    from diffusers import DiTTransformer2DModel

    from linzoo.diffusion.models import LiTTransformer2DModel

    cfg = dict(MODELS[model], in_channels=4, out_channels=8, sample_size=32, patch_size=2)
    if layers is not None:
        cfg["num_layers"] = layers
    if kind == "dit":
        net = DiTTransformer2DModel(**cfg, num_embeds_ada_norm=1000)
    else:
        net = LiTTransformer2DModel(**cfg, num_classes=1000, num_linear_heads=linear_heads)
    return net.to(device=device, dtype=dtype)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(net: Any, pixels: int, mode: str, device: str, dtype: torch.dtype, repeats: int) -> dict[str, float]:
    """Median seconds per step and peak memory (GiB, CUDA only) of one inference (CFG) or training step."""
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

    net.train(mode == "train")
    step()  # warm-up (kernel selection, Triton autotuning)
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    mem = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    net.zero_grad(set_to_none=True)
    return {"seconds": sorted(times)[len(times) // 2], "peak_gib": mem}


def run(args: argparse.Namespace) -> dict[str, Any]:
    dtype = getattr(torch, args.dtype)
    results: dict[str, Any] = {
        "model": args.model,
        "layers": args.layers or MODELS[args.model]["num_layers"],
        "linear_heads": args.linear_heads,
        "dtype": args.dtype,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "rows": [],
    }
    for kind in ("lit", "dit"):
        net = build(kind, args.model, args.layers, args.linear_heads, args.device, dtype)
        for pixels in args.sizes:
            for mode in args.modes:
                row = {"model": kind, "pixels": pixels, "tokens": (pixels // 16) ** 2, "mode": mode}
                try:
                    row.update(measure(net, pixels, mode, args.device, dtype, args.repeats))
                except torch.OutOfMemoryError:
                    row.update(seconds=float("nan"), peak_gib=float("nan"), oom=True)
                    torch.cuda.empty_cache()
                results["rows"].append(row)
                print(json.dumps(row))
        del net
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return results


def _fmt(value: float, spec: str, oom: bool = False) -> str:
    if oom:
        return "OOM"
    return "n/a" if value != value else format(value, spec)  # NaN: not measured (memory on CPU)


def write_markdown(results: dict[str, Any]) -> str:
    rows = results["rows"]
    lines = [
        "# LiT vs DiT: step time and peak memory against resolution",
        "",
        f"Random weights, {results['model']}/2 layout with {results['layers']} blocks, LiT with "
        f"{results['linear_heads']} linear-attention heads and a 5x5 DWC; DiT = diffusers `DiTTransformer2DModel` "
        f"(SDPA). {results['dtype']} on {results['device']}, torch {results['torch']}. "
        "infer = one CFG denoising step (batch 2), train = forward + backward (batch 1); median of the repeats. "
        "Produced by `python benchmarks/lit.py`.",
        "",
        "| mode | pixels | tokens | LiT s/step | DiT s/step | DiT / LiT | LiT peak GiB | DiT peak GiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for mode in sorted({r["mode"] for r in rows}):
        for px in sorted({r["pixels"] for r in rows}):
            lit = next(r for r in rows if r["model"] == "lit" and r["pixels"] == px and r["mode"] == mode)
            dit = next(r for r in rows if r["model"] == "dit" and r["pixels"] == px and r["mode"] == mode)
            ratio = dit["seconds"] / lit["seconds"]
            lines.append(
                f"| {mode} | {px} | {lit['tokens']} | {_fmt(lit['seconds'], '.4f', lit.get('oom', False))} "
                f"| {_fmt(dit['seconds'], '.4f', dit.get('oom', False))} | {_fmt(ratio, '.2f')} "
                f"| {_fmt(lit['peak_gib'], '.2f', lit.get('oom', False))} "
                f"| {_fmt(dit['peak_gib'], '.2f', dit.get('oom', False))} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    modes = sorted({r["mode"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode in modes:
        for kind, style in (("lit", "-o"), ("dit", "--s")):
            sel = sorted((r for r in rows if r["model"] == kind and r["mode"] == mode), key=lambda r: r["pixels"])
            px = [r["pixels"] for r in sel]
            axes[0].plot(px, [r["seconds"] for r in sel], style, label=f"{kind.upper()} {mode}")
            axes[1].plot(px, [r["peak_gib"] for r in sel], style, label=f"{kind.upper()} {mode}")
    has_memory = any(r["peak_gib"] == r["peak_gib"] for r in rows)  # NaN: not measured (CPU) or OOM
    if not has_memory:
        axes[1].text(0.5, 0.5, "peak memory is measured on CUDA only", ha="center", transform=axes[1].transAxes)
    for ax, title, logy in zip(axes, ("seconds per step", "peak memory (GiB)"), (True, has_memory)):
        ax.set_xscale("log", base=2)
        if logy:
            ax.set_yscale("log")
        ax.set_xlabel("image side (pixels)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if logy:
            ax.legend()
    fig.suptitle(f"LiT vs DiT ({results['model']}/2, {results['dtype']}, {results['device']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--dtype", default=None, choices=["float32", "float16", "bfloat16"], help="default: bf16 on GPU"
    )
    parser.add_argument("--model", default="XL", choices=sorted(MODELS))
    parser.add_argument("--layers", type=int, default=None, help="override the number of blocks")
    parser.add_argument("--linear-heads", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="image sides in pixels (multiples of 16)")
    parser.add_argument("--modes", nargs="+", default=["infer", "train"], choices=["infer", "train"])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="256..1024 px and 3 repeats")
    parser.add_argument("--out", default=None, help="also write lit.md / lit.png / lit.json here")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks/")
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.sizes = args.sizes or ([256, 512, 1024] if args.quick else [256, 512, 1024, 2048, 4096])
    args.repeats = args.repeats or (3 if args.quick else 5)
    bad = [s for s in args.sizes if s % 16]
    if bad:
        parser.error(f"--sizes must be multiples of 16 (VAE 8 x patch 2), got {bad}")
    torch.manual_seed(0)
    results = run(args)
    targets = [] if args.no_docs else [DOCS]
    if args.out:
        targets.append(Path(args.out))
    md = write_markdown(results)
    for folder in targets:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "lit.md").write_text(md)
        (folder / "lit.json").write_text(json.dumps(results, indent=2) + "\n")
        plot(results, folder / "lit.png")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
