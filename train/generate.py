"""``linzoo generate lit``: sample images from a trained LiT and write one PNG grid per class.

    linzoo generate lit -o samples/ --checkpoint runs/digits_lit/pipeline --class-labels 0 1 2
    linzoo generate lit -o samples/ --checkpoint path/to/last.ckpt --height 16 --width 16 --guidance-scale 2

``--checkpoint`` is a saved LiT pipeline folder (what ``linzoo fit`` exports when fitting ends), a
Lightning ``.ckpt`` of :class:`~linzoo.train.diffusion.LiTDiffusionModule` (its EMA weights are used), or a Hub
id of a saved pipeline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["build_parser", "generate_main", "load_lit_pipeline", "save_grid"]

DEFAULT_CHECKPOINT = "runs/digits_lit/pipeline"  # where configs/demo/digits_lit.yaml exports its pipeline
SCHEDULERS = ("ddim", "ddpm", "dpm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linzoo generate", description="Generate images with a trained LiT.")
    parser.add_argument("family", choices=["lit"], help="model family (only 'lit' for now)")
    parser.add_argument("-o", "--output", required=True, help="output folder for the PNG grids")
    parser.add_argument(
        "--checkpoint",
        default=DEFAULT_CHECKPOINT,
        help=f"LiT pipeline folder, Lightning .ckpt, or Hub id (default: the digits demo's {DEFAULT_CHECKPOINT})",
    )
    parser.add_argument("--height", type=int, default=None, help="image height in pixels (default: training size)")
    parser.add_argument("--width", type=int, default=None, help="image width in pixels (default: training size)")
    parser.add_argument("--num-inference-steps", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=2.0, help="classifier-free guidance (<= 1: off)")
    parser.add_argument("--class-labels", type=int, nargs="+", default=None, help="class ids (default: all)")
    parser.add_argument("--num-images-per-class", type=int, default=16)
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="ddim", help="sampler (default: DDIM)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--batch-size", type=int, default=64, help="images per pipeline call")
    return parser


def load_lit_pipeline(checkpoint: str, dtype: torch.dtype = torch.float32) -> Any:
    """A :class:`~linzoo.diffusion.pipelines.LiTPipeline` from a pipeline folder, a Lightning ``.ckpt`` or a Hub id."""
    from linzoo.diffusion.pipelines import LiTPipeline

    if checkpoint.endswith(".ckpt"):
        if not os.path.isfile(checkpoint):
            raise ValueError(f"--checkpoint {checkpoint!r} does not exist")
        from linzoo.train.diffusion import LiTDiffusionModule

        module = LiTDiffusionModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=False)
        pipe = module.build_pipeline(use_ema=True)
    else:
        if os.path.sep in checkpoint and not os.path.isdir(checkpoint):
            raise ValueError(
                f"--checkpoint {checkpoint!r} does not exist; train first (linzoo fit -c configs/demo/digits_lit.yaml)"
                " or pass a pipeline folder / .ckpt"
            )
        pipe = LiTPipeline.from_pretrained(checkpoint)
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)


def _scheduler(pipe: Any, name: str) -> Any:
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    cfg = pipe.scheduler.config
    if name == "ddim":
        return DDIMScheduler.from_config(cfg, clip_sample=False)
    if name == "ddpm":
        return DDPMScheduler.from_config(cfg, clip_sample=False)
    return DPMSolverMultistepScheduler.from_config(cfg, variance_type=None)  # sample with ε only


def save_grid(images: np.ndarray, path: str | Path, nrow: int | None = None) -> None:
    """Save ``images (N, H, W, C)`` in [0, 1] as one PNG grid with a 1-pixel gap."""
    from PIL import Image

    n, h, w, c = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    grid = np.ones((ncol * (h + 1) + 1, nrow * (w + 1) + 1, c), dtype=np.float32)
    for i, im in enumerate(images):
        r, q = divmod(i, nrow)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = im
    arr = (grid.clip(0, 1) * 255).round().astype(np.uint8)
    Image.fromarray(arr[..., 0] if c == 1 else arr).save(path)


def generate_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``linzoo generate``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    for name in ("num_inference_steps", "num_images_per_class", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 1")
    dtype = getattr(torch, args.dtype)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe = load_lit_pipeline(args.checkpoint, dtype=dtype).to(device)
    pipe.scheduler = _scheduler(pipe, args.scheduler)
    num_classes = pipe.transformer.config.num_classes
    labels = args.class_labels if args.class_labels is not None else list(range(num_classes))
    bad = [c for c in labels if not 0 <= c < num_classes]
    if bad:
        raise SystemExit(f"--class-labels must be in [0, {num_classes}), got {bad}")

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator(device="cpu").manual_seed(args.seed)
    per_class: dict[int, np.ndarray] = {}
    for c in labels:
        chunks = []
        left = args.num_images_per_class
        while left > 0:
            k = min(left, args.batch_size)
            result = pipe(
                class_labels=[c] * k,
                height=args.height,
                width=args.width,
                num_inference_steps=args.num_inference_steps,
                guidance_scale=args.guidance_scale,
                generator=generator,
                output_type="np",
            )
            chunks.append(result.images)
            left -= k
        per_class[c] = np.concatenate(chunks)
        save_grid(per_class[c], out / f"class_{c:04d}.png")
    first = min(8, args.num_images_per_class)
    save_grid(np.concatenate([per_class[c][:first] for c in labels]), out / "grid.png", nrow=first)
    meta = {k: v for k, v in vars(args).items() if k != "family"}
    (out / "generate.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {len(labels)} class grids and grid.png to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(generate_main())
