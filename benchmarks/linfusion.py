"""LinFusion vs softmax (SDPA) self-attention: UNet step time and peak memory against resolution.

Random-init SD-1.5 and SDXL UNets built from their configs (no weights needed): one UNet forward (batch 1, the
text context of 77 tokens, inference mode) at 512, 1024, 2048 and 4096 px, first with diffusers' default SDPA
processor, then after ``linzoo.diffusion.linearize`` (LinFusion on every self-attention layer). Out-of-memory
is recorded as "OOM".

    python benchmarks/linfusion.py                      # GPU, writes docs/benchmarks/linfusion.{md,png,json}
    python benchmarks/linfusion.py --out /tmp/bench     # also writes the files there
    python benchmarks/linfusion.py --quick              # fewer resolutions and repetitions
    python benchmarks/linfusion.py --tiny --quick --device cpu --out /tmp/bench   # smoke test (no docs written)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "benchmarks"

#: the official UNet configs (diffusers ``unet/config.json`` of the base models, architecture fields only)
UNET_CONFIGS: dict[str, dict[str, Any]] = {
    "sd15": {
        "sample_size": 64,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": [320, 640, 1280, 1280],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "cross_attention_dim": 768,
        "attention_head_dim": 8,
    },
    "sdxl": {
        "sample_size": 128,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "block_out_channels": [320, 640, 1280],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "transformer_layers_per_block": [1, 2, 10],
        "attention_head_dim": [5, 10, 20],
        "cross_attention_dim": 2048,
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
    },
}
MID_DIM_SCALE = {"sd15": None, "sdxl": 16}  # official LinFusion projection widths
RESOLUTIONS = {"sd15": [512, 1024, 2048, 4096], "sdxl": [512, 1024, 2048, 4096]}
QUICK_RESOLUTIONS = {"sd15": [512, 2048], "sdxl": [1024, 2048]}
TINY_RESOLUTIONS = {"sd15": [64, 128], "sdxl": [64, 128]}


def tiny_config(name: str) -> dict[str, Any]:
    """The same block structure with a few channels, for CPU smoke tests."""
    cfg = dict(UNET_CONFIGS[name])
    levels = len(cfg["block_out_channels"])
    cfg.update(block_out_channels=[16, 32, 32, 32][:levels], norm_num_groups=8, layers_per_block=1)
    if name == "sd15":
        cfg.update(cross_attention_dim=16, attention_head_dim=4)
    else:
        cfg.update(
            cross_attention_dim=16,
            attention_head_dim=[2, 4, 4],
            transformer_layers_per_block=[1, 1, 2],
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 16,
        )
    return cfg


def build_unet(cfg: dict[str, Any], device: torch.device, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel

    with torch.device(device):
        unet = UNet2DConditionModel(**cfg)
    return unet.to(dtype).eval().requires_grad_(False)


def unet_inputs(unet, resolution: int, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    cfg = unet.config
    side = resolution // 8
    kwargs: dict[str, Any] = {
        "sample": torch.randn(batch, cfg.in_channels, side, side, device=device, dtype=dtype),
        "timestep": torch.full((batch,), 500, device=device),
        "encoder_hidden_states": torch.randn(batch, 77, cfg.cross_attention_dim, device=device, dtype=dtype),
    }
    if cfg.addition_embed_type == "text_time":
        text_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        time_ids = torch.tensor([resolution, resolution, 0, 0, resolution, resolution], device=device, dtype=dtype)
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, text_dim, device=device, dtype=dtype),
            "time_ids": time_ids.expand(batch, 6),
        }
    return kwargs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def time_step(unet, inputs: dict[str, Any], device: torch.device, reps: int, budget_s: float) -> dict[str, Any]:
    """Median seconds of ``reps`` forwards after one warm-up, and the peak memory (GiB, CUDA only)."""
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            start = time.perf_counter()
            unet(**inputs)
            _sync(device)
            first = time.perf_counter() - start
            times = []
            for _ in range(reps if first * reps < budget_s else 1):
                start = time.perf_counter()
                unet(**inputs)
                _sync(device)
                times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        return {"ms": 1000 * sorted(times)[len(times) // 2], "peak_gib": peak, "status": "ok"}
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _is_oom(err):
            raise
        return {"ms": None, "peak_gib": None, "status": "OOM"}
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def run(args: argparse.Namespace) -> dict[str, Any]:
    from linzoo.diffusion import linearize, unlinearize
    from linzoo.kernels import resolve_backend

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    table = TINY_RESOLUTIONS if args.tiny else QUICK_RESOLUTIONS if args.quick else RESOLUTIONS
    reps = 2 if args.quick else 3
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "dtype": args.dtype,
        "batch": args.batch,
        "kernel_backend": resolve_backend("auto", device),
        "tiny": args.tiny,
        "models": {},
    }
    import diffusers

    results["diffusers"] = diffusers.__version__
    for name in args.models:
        cfg = tiny_config(name) if args.tiny else UNET_CONFIGS[name]
        unet = build_unet(cfg, device, dtype)
        rows = []
        for res in args.resolutions or table[name]:
            row: dict[str, Any] = {"resolution": res, "tokens": (res // 8) ** 2}
            inputs = unet_inputs(unet, res, args.batch, device, dtype)
            row["sdpa"] = time_step(unet, inputs, device, reps, args.budget)
            replaced = linearize(unet, mid_dim_scale=MID_DIM_SCALE[name], keep_originals=False).num_replaced
            row["linfusion"] = time_step(unet, inputs, device, reps, args.budget)
            unlinearize(unet)
            row["layers_replaced"] = replaced
            del inputs
            rows.append(row)
            print(f"{name} {res:>5}px  sdpa {_fmt_ms(row['sdpa'])}  linfusion {_fmt_ms(row['linfusion'])}", flush=True)
        results["models"][name] = rows
        del unet
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return results


def _fmt_ms(entry: dict[str, Any]) -> str:
    return "OOM" if entry["status"] == "OOM" else f"{entry['ms']:.1f} ms"


def _fmt_mem(entry: dict[str, Any]) -> str:
    if entry["status"] == "OOM":
        return "OOM"
    return "n/a" if entry["peak_gib"] is None else f"{entry['peak_gib']:.2f}"


def _ratio(row: dict[str, Any]) -> str:
    s, lf = row["sdpa"], row["linfusion"]
    if lf["status"] != "ok":
        return "—"
    if s["status"] != "ok":
        return "SDPA OOM"
    return f"{lf['ms'] / s['ms']:.2f}×"


def to_markdown(results: dict[str, Any]) -> str:
    lines = [
        "# LinFusion vs SDPA: UNet step time and peak memory",
        "",
        "Generated by `benchmarks/linfusion.py`: one UNet forward of a random-init SD-1.5 / SDXL UNet (official "
        "configs, no weights), batch "
        f"{results['batch']}, 77 text tokens, `torch.inference_mode()`, dtype {results['dtype']}; median of up to "
        "3 timed runs after a warm-up. *SDPA*: diffusers' default `AttnProcessor2_0`; *LinFusion*: after "
        "`linzoo.diffusion.linearize(unet)` (every self-attention layer; SDXL projections at channels/16). Peak "
        "memory is `torch.cuda.max_memory_allocated` (weights included).",
        "",
        f"Device: {results['device']} · torch {results['torch']} · diffusers {results['diffusers']} · "
        f"linear-attention kernel backend: `{results['kernel_backend']}`"
        + (" · **tiny configs (smoke test, not representative)**" if results["tiny"] else ""),
        "",
    ]
    for name, rows in results["models"].items():
        label = {"sd15": "SD-1.5", "sdxl": "SDXL"}[name]
        replaced = rows[0]["layers_replaced"] if rows else 0
        lines += [
            f"## {label} UNet ({replaced} self-attention layers replaced)",
            "",
            "| resolution | latent tokens | SDPA step | SDPA peak GiB | LinFusion step | LinFusion peak GiB | "
            "LinFusion / SDPA time |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in rows:
            lines.append(
                f"| {row['resolution']}² | {row['tokens']:,} | {_fmt_ms(row['sdpa'])} | {_fmt_mem(row['sdpa'])} | "
                f"{_fmt_ms(row['linfusion'])} | {_fmt_mem(row['linfusion'])} | {_ratio(row)} |"
            )
        lines.append("")
    lines += [
        "Targets (issue 11): LinFusion step time ≤ 0.33× SDPA at 2048², and 4096² fits where SDPA does not or "
        "is ≥ 4× slower.",
        "",
    ]
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in results["models"].items():
        for variant, style in (("sdpa", "--"), ("linfusion", "-")):
            ok = [r for r in rows if r[variant]["status"] == "ok"]
            res = [r["resolution"] for r in ok]
            label = f"{name} {'SDPA' if variant == 'sdpa' else 'LinFusion'}"
            axes[0].plot(res, [r[variant]["ms"] for r in ok], style, marker="o", label=label)
            if ok and ok[0][variant]["peak_gib"] is not None:
                axes[1].plot(res, [r[variant]["peak_gib"] for r in ok], style, marker="o", label=label)
            for r in rows:
                if r[variant]["status"] == "OOM":
                    axes[0].axvline(r["resolution"], linestyle=style, color="red", alpha=0.4)
                    axes[0].text(
                        r["resolution"],
                        1.0,
                        f" {label} OOM",
                        transform=axes[0].get_xaxis_transform(),
                        rotation=90,
                        va="top",
                        fontsize=7,
                        color="red",
                    )
    for ax, title in zip(axes, ("UNet step time (ms)", "peak memory (GiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("image side (px)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:  # CPU runs have no CUDA memory statistics
            ax.text(0.5, 0.5, "no data (not CUDA)", transform=ax.transAxes, ha="center")
    fig.suptitle(f"LinFusion vs SDPA — {results['device']}, {results['dtype']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "linfusion.md").write_text(to_markdown(results))
    (folder / "linfusion.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, folder / "linfusion.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="also write linfusion.{md,json,png} here")
    parser.add_argument("--quick", action="store_true", help="two resolutions per model, fewer repetitions")
    parser.add_argument("--tiny", action="store_true", help="tiny UNet configs (CPU smoke test; docs not written)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=["sd15", "sdxl"], choices=sorted(UNET_CONFIGS))
    parser.add_argument("--resolutions", nargs="+", type=int, default=None, help="override the resolution list")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per measurement before cutting reps")
    parser.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks/")
    parser.add_argument(
        "--kernel-backend", default=None, choices=["auto", "triton", "torch"], help="sets LINZOO_KERNEL_BACKEND"
    )
    args = parser.parse_args(argv)
    if args.dtype is None:
        args.dtype = "float16" if args.device.startswith("cuda") else "float32"
    if args.resolutions and any(r % 64 for r in args.resolutions):
        parser.error("--resolutions must be multiples of 64 (the UNet downsamples the latent 3 times)")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.kernel_backend is not None:
        from linzoo.kernels import ENV_VAR

        os.environ[ENV_VAR] = args.kernel_backend
    start = time.perf_counter()
    results = run(args)
    results["wall_s"] = round(time.perf_counter() - start, 1)
    if not (args.no_docs or args.tiny):
        write(results, DOCS)
        print(f"wrote {DOCS / 'linfusion.md'}")
    if args.out is not None:
        write(results, args.out)
        print(f"wrote {args.out / 'linfusion.md'}")
    print(to_markdown(results))
    return results


if __name__ == "__main__":
    main()
