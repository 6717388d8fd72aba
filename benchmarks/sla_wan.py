"""SLA vs dense self-attention in Wan 2.1 (1.3B): one transformer forward against the video size.

A random-init ``WanTransformer3DModel`` with Wan2.1-T2V-1.3B's architecture (no weights needed: the time does not
depend on them), bf16, batch 1, a 512-token text context, in inference mode, at latent video sizes from 33 frames
at 480p to 81 frames at 720p (``(frames - 1) / 4 + 1`` latent frames, 8x spatial VAE factor, 1x2x2 patches: 81
frames at 480p = 21 x 30 x 52 = 32,760 tokens, the SLA paper's shape). Variants of the 30 self-attention layers:
diffusers' default (SDPA), ``linearize(..., method="sla", topk=t)`` for each ``--topk`` (blocks of 128 queries x
64 keys, as TurboDiffusion runs Wan) and the *floor* (self-attention reduced to its output projection: the
forward time no attention method can beat). Cross-attention and FFNs are unchanged. Median of eager forwards;
out-of-memory is recorded; a variant past ``--time-budget`` is skipped. Writes ``sla_wan.{md,json}``.

    python benchmarks/sla_wan.py --out docs/benchmarks                                  # GPU machine
    python benchmarks/sla_wan.py --tiny --device cpu --out /tmp/bench                   # smoke test anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from linfusion import _cleanup, _skipped, time_eager  # the shared timing helpers of the diffusion benchmarks

#: Wan2.1-T2V-1.3B-Diffusers ``transformer/config.json``, architecture fields
WAN_13B = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 12,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 8960,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
TINY = {**WAN_13B, "num_attention_heads": 2, "attention_head_dim": 24, "text_dim": 32, "freq_dim": 32,
        "ffn_dim": 64, "num_layers": 2}  # fmt: skip
#: (name, frames, height, width) of the generated video
SIZES = [("480p, 33 frames", 33, 480, 832), ("480p, 81 frames", 81, 480, 832), ("720p, 81 frames", 81, 720, 1280)]
TINY_SIZES = [("tiny, 5 frames", 5, 64, 96)]
TEXT_TOKENS = 512


def latent_shape(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Wan VAE latents: ``(frames - 1) / 4 + 1`` frames, 8x smaller in height and width."""
    if (frames - 1) % 4 or height % 16 or width % 16:
        raise ValueError(f"frames must be 4k+1 and height/width multiples of 16, got {frames}x{height}x{width}")
    return (frames - 1) // 4 + 1, height // 8, width // 8


def tokens(frames: int, height: int, width: int) -> int:
    """Self-attention sequence length after the 1x2x2 patch embedding."""
    f, h, w = latent_shape(frames, height, width)
    return f * (h // 2) * (w // 2)


class FloorWanProcessor:
    """The floor: Wan's self-attention reduced to its output projection (benchmark-only, not a model)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        return attn.to_out[1](attn.to_out[0](hidden_states))


@contextlib.contextmanager
def variant(model, name: str, backend: str) -> Iterator[None]:
    """Install ``"sdpa"``, ``"floor"`` or ``"sla-<topk>"`` on the self-attention layers for the ``with`` body."""
    from linzoo.diffusion import linearize, unlinearize

    if name == "sdpa":
        yield
    elif name == "floor":
        layers = [block.attn1 for block in model.blocks]
        saved = [attn.processor for attn in layers]
        for attn in layers:
            attn.set_processor(FloorWanProcessor())
        try:
            yield
        finally:
            for attn, processor in zip(layers, saved):
                attn.set_processor(processor)
    elif name.startswith("sla-"):
        linearize(model, "sla", topk=float(name[4:]), block_q=128, block_k=64, backend=backend)
        try:
            yield
        finally:
            unlinearize(model, "sla")
    else:
        raise ValueError(f"variant must be 'sdpa', 'floor' or 'sla-<topk>', got {name!r}")


def run(args: argparse.Namespace, on_update=None) -> dict[str, Any]:
    from diffusers import WanTransformer3DModel

    device, dtype = torch.device(args.device), torch.bfloat16 if args.device == "cuda" else torch.float32
    config, sizes = (TINY, TINY_SIZES) if args.tiny else (WAN_13B, SIZES)
    torch.manual_seed(0)
    model = WanTransformer3DModel(**config).to(device, dtype).eval()
    keep = tuple(model._keep_in_fp32_modules or ())  # as from_pretrained(torch_dtype=bf16) leaves them
    for name, param in model.named_parameters():
        if any(part in keep for part in name.split(".")):
            param.data = param.data.float()
    variants = ["sdpa", *(f"sla-{t:g}" for t in args.topk), "floor"]
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "config": "tiny" if args.tiny else "Wan2.1-T2V-1.3B",
        "variants": variants,
        "rows": [],
    }
    start = time.perf_counter()
    for label, frames, height, width in sizes:
        f, h, w = latent_shape(frames, height, width)
        gen = torch.Generator(device="cpu").manual_seed(0)
        inputs = {
            "hidden_states": torch.randn(1, config["in_channels"], f, h, w, generator=gen).to(device, dtype),
            "timestep": torch.tensor([500], device=device),
            "encoder_hidden_states": torch.randn(1, TEXT_TOKENS, config["text_dim"], generator=gen).to(device, dtype),
        }
        row: dict[str, Any] = {"size": label, "tokens": tokens(frames, height, width), "results": {}}
        for name in variants:
            if time.perf_counter() - start > args.time_budget:
                row["results"][name] = _skipped("time budget")
                continue
            with variant(model, name, args.backend):
                entry = time_eager(model, inputs, device, args.reps, args.max_seconds)
            entry.pop("_output", None)
            row["results"][name] = entry
            print(f"{label}: {name} {entry}", flush=True)
        results["rows"].append(row)
        del inputs
        _cleanup(device)
        if on_update is not None:
            on_update(results)
    return results


def _ms(entry: dict[str, Any]) -> str:
    return f"{entry['ms']:.0f}" if entry.get("ms") is not None else entry.get("status", "-")


def to_markdown(results: dict[str, Any]) -> str:
    variants = results["variants"]
    sla = [v for v in variants if v.startswith("sla-")]
    lines = [
        "# SLA in Wan 2.1 (1.3B): one transformer forward",
        "",
        f"Device: {results['device']}; torch {results['torch']}; model: {results['config']} (random init, bf16 on "
        "CUDA), batch 1, 512 text tokens, eager, median ms. Generated by `benchmarks/sla_wan.py`. SLA uses blocks of "
        "128 queries x 64 keys; *floor* = self-attention reduced to its output projection (no attention method "
        "can be faster). Speed-up = SDPA / SLA; attention share = (SDPA − floor) / SDPA.",
        "",
        "| video | tokens | " + " | ".join(f"{v} ms" for v in variants) + " | "
        + " | ".join(f"× SDPA ({v})" for v in sla) + " | attention share |",
        "|---|---|" + "---|" * (len(variants) + len(sla) + 1),
    ]  # fmt: skip
    for row in results["rows"]:
        res = row["results"]
        dense, floor = res["sdpa"].get("ms"), res["floor"].get("ms")
        ratios = [
            f"{dense / res[v]['ms']:.2f}×" if dense and res[v].get("ms") else "-" for v in sla
        ]  # speed-up of each SLA sparsity over dense attention
        share = f"{(dense - floor) / dense:.0%}" if dense and floor else "-"
        cells = [row["size"], f"{row['tokens']:,}", *(_ms(res[v]) for v in variants), *ratios, share]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write(results: dict[str, Any], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sla_wan.json").write_text(json.dumps(results, indent=2))
    (folder / "sla_wan.md").write_text(to_markdown(results))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--topk", type=float, nargs="+", default=[0.2, 0.1, 0.05])
    parser.add_argument("--backend", default="auto", help="SLA kernel backend (auto: Triton on CUDA)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=10.0, help="timed seconds per measurement at most")
    parser.add_argument("--time-budget", type=float, default=float("inf"), help="skip variants after this many s")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model at a tiny video size (smoke test)")
    args = parser.parse_args(argv)
    if any(not 0 < t <= 1 for t in args.topk):
        parser.error(f"--topk values must be in (0, 1], got {args.topk}")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results = run(args, on_update=lambda r: write(r, args.out))
    write(results, args.out)
    return results


if __name__ == "__main__":
    main()
