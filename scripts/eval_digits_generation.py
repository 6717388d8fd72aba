"""Quality of the digits LiT demo: how often a digits classifier recognises a generated sample as its class.

    python scripts/eval_digits_generation.py --checkpoint runs/digits_lit/pipeline \
        --classifier runs/digits_ravlt_t/checkpoints/best-*.ckpt
    python scripts/eval_digits_generation.py --checkpoint runs/digits_lit/pipeline --classifier svm

``--classifier`` is a checkpoint of the trainer's digits demo (``linzoo fit -c configs/demo/digits_ravlt_t.yaml``:
RAVLT-T on 32x32 RGB upsampled digits); generated 8x8 samples go through exactly that demo's preprocessing
(grey levels to uint8, bicubic upsampling to 32x32, RGB, timm eval transform). ``svm`` instead fits scikit-learn's
SVC on the real 8x8 digits (an independent classifier, seconds to train). The classifier's accuracy on the
real digits under the same preprocessing is reported next to the generated-sample accuracy.
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch


def generate(checkpoint: str, per_class: int, steps: int, guidance: float, scheduler: str, seed: int) -> tuple:
    """``(images (N, 8, 8) in [0, 1], labels (N,))`` sampled from the LiT pipeline."""
    from linzoo.train.generate import _scheduler, load_lit_pipeline

    pipe = load_lit_pipeline(checkpoint)
    pipe.scheduler = _scheduler(pipe, scheduler)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for c in range(pipe.transformer.config.num_classes):
        out = pipe(
            class_labels=[c] * per_class,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator,
            output_type="np",
        ).images
        images.append(out[..., 0])
        labels += [c] * per_class
    return np.concatenate(images), np.array(labels)


def svm_classifier():
    """SVC (RBF, gamma 0.001, as scikit-learn's digits example) on all real digits; input ``(N, 8, 8)`` in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.svm import SVC

    digits = load_digits()
    clf = SVC(gamma=0.001).fit(digits.images.reshape(len(digits.images), -1), digits.target)  # grey levels 0..16
    return lambda x: clf.predict(x.reshape(len(x), -1) * 16.0)


def demo_classifier(path: str):
    """The trainer demo's classifier; input ``(N, 8, 8)`` in [0, 1], preprocessed as its DigitsDataModule does."""
    from PIL import Image
    from timm.data import create_transform

    from linzoo.train.classification import ClassificationModule

    module = ClassificationModule.load_from_checkpoint(path, map_location="cpu", weights_only=False).eval()
    cfg = dict(module.data_config)
    transform = create_transform(
        input_size=(3, 32, 32),
        interpolation="bicubic",
        mean=cfg["mean"],
        std=cfg["std"],
        crop_pct=1.0,
        crop_mode="center",
        is_training=False,
    )

    @torch.no_grad()
    def predict(x: np.ndarray) -> np.ndarray:
        raw = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
        batch = torch.stack(
            [transform(Image.fromarray(im).resize((32, 32), Image.BICUBIC).convert("RGB")) for im in raw]
        )
        return torch.cat([module(b).argmax(-1) for b in batch.split(256)]).numpy()

    return predict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/digits_lit/pipeline", help="LiT pipeline folder or .ckpt")
    parser.add_argument("--classifier", default="svm", help="'svm' or a digits-classifier .ckpt (glob allowed)")
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance-scale", type=float, default=2.0)
    parser.add_argument("--scheduler", default="ddim", choices=["ddim", "ddpm", "dpm"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)

    if args.classifier == "svm":
        predict, name = svm_classifier(), "svm"
    else:
        matches = sorted(glob.glob(args.classifier))
        if not matches:
            parser.error(f"--classifier {args.classifier!r} matches no file")
        predict, name = demo_classifier(matches[-1]), matches[-1]

    from sklearn.datasets import load_digits

    real = load_digits()
    real_acc = float((predict(real.images / 16.0) == real.target).mean())
    images, labels = generate(
        args.checkpoint, args.per_class, args.steps, args.guidance_scale, args.scheduler, args.seed
    )
    pred = predict(images)
    per_class = {int(c): float((pred[labels == c] == c).mean()) for c in np.unique(labels)}
    result = {
        "checkpoint": args.checkpoint,
        "classifier": name,
        "classifier_accuracy_on_real_digits": real_acc,
        "generated_accuracy": float((pred == labels).mean()),
        "per_class": per_class,
        "samples": len(labels),
        "steps": args.steps,
        "guidance_scale": args.guidance_scale,
        "scheduler": args.scheduler,
        "seed": args.seed,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
