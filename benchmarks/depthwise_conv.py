"""Depthwise convolution: linzoo's fused Triton kernel vs cuDNN (``F.conv2d`` + bias + GELU), at VAN-B2's layers.

For each of VAN-B2's stage maps (1024 px at batch 4, 224 px at batch 64, channels-last bf16) and each depthwise
layer of a block — LKA's 5×5, LKA's 7×7 with dilation 3, the MLP's 3×3 followed by GELU — times the forward and
forward+backward (input, weight and bias gradients) of both, with the memory floor (input read + output write
forward; plus dy, dx, and x again backward: 5 map passes) at the bandwidth of a device-to-device copy measured in
the same run. ``--variants`` adds forward timings of other launch configurations (TH×TW×BLOCK_C×warps) of the
kernel, the data behind :func:`linzoo.kernels.depthwise_conv.triton_dwconv.launch_config`.

    python benchmarks/depthwise_conv.py --out docs/benchmarks [--variants]    # GPU machine
    python benchmarks/depthwise_conv.py --device cpu --quick --out /tmp/bench   # smoke test (interpreter)

Writes depthwise_conv.md and depthwise_conv.json into ``--out``; timings: median of ``triton.testing.do_bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from linzoo.kernels.depthwise_conv import depthwise_conv2d
from linzoo.kernels.depthwise_conv import triton_dwconv as td

# (name, kernel, dilation, GELU after it, channels as a multiple of the stage width)
LAYERS = (("LKA 5x5", 5, 1, False, 1), ("LKA 7x7 d3", 7, 3, False, 1), ("MLP 3x3 + GELU", 3, 1, True, None))
VAN_B2_DIMS = (64, 128, 320, 512)
VAN_B2_MLP_RATIOS = (8, 8, 4, 4)
VARIANTS = ((2, 16, 32, 4), (4, 8, 64, 4), (1, 32, 64, 4), (4, 16, 64, 8))


def cases(quick: bool) -> list[dict]:
    """One dict per (batch, resolution, stage, layer)."""
    if quick:
        return [dict(batch=1, res=32, stage=1, layer=name, kernel=k, dilation=d, gelu=g, channels=16, size=8)
                for name, k, d, g, _ in LAYERS]  # fmt: skip
    out = []
    for batch, res, stages in ((4, 1024, (1, 2, 3, 4)), (64, 224, (1, 3))):
        for stage in stages:
            dim, ratio = VAN_B2_DIMS[stage - 1], VAN_B2_MLP_RATIOS[stage - 1]
            for name, k, d, g, mult in LAYERS:
                channels = dim * (mult or ratio)
                size = res // (4 << (stage - 1))
                out.append(dict(batch=batch, res=res, stage=stage, layer=name, kernel=k, dilation=d, gelu=g,
                                channels=channels, size=size))  # fmt: skip
    return out


def _bench(fn, quick: bool) -> float:
    if quick:  # the interpreter: one timed call
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    from triton.testing import do_bench

    return do_bench(fn, warmup=5, rep=25)


def copy_bandwidth(device: torch.device, quick: bool) -> float:
    """Bytes/s of a device-to-device copy (read + write) of 512 MiB (4 MiB in --quick)."""
    x = torch.empty((4 if quick else 512) * 2**20 // 2, device=device, dtype=torch.bfloat16)
    return 2 * x.numel() * 2 / (_bench(lambda: x.clone(), quick) * 1e-3)


def run_case(case: dict, device: torch.device, bandwidth: float, quick: bool, variants: bool) -> dict:
    torch.manual_seed(0)
    c, n, k, d = case["channels"], case["size"], case["kernel"], case["dilation"]
    dtype = torch.float32 if device.type == "cpu" else torch.bfloat16
    x = torch.randn(case["batch"], c, n, n, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    w = (torch.randn(c, 1, k, k, device=device) / k).to(dtype)
    b = torch.randn(c, device=device, dtype=dtype)
    act = "gelu" if case["gelu"] else None
    pad = d * (k - 1) // 2
    backend = "triton"

    def cudnn():
        y = F.conv2d(x, w, b, 1, pad, d, c)
        return F.gelu(y) if act else y

    def ours():
        return depthwise_conv2d(x, w, b, dilation=d, activation=act, backend=backend)

    want = cudnn().float()
    err = ((ours().float() - want).abs().max() / want.abs().max()).item()
    res = {"cudnn_fwd": _bench(cudnn, quick), "ours_fwd": _bench(ours, quick), "rel_err": err}
    grad = torch.randn_like(want).to(dtype)
    for t in (x, w, b):
        t.requires_grad_(True)
    res["cudnn_fwdbwd"] = _bench(lambda: torch.autograd.grad(cudnn(), (x, w, b), grad), quick)
    res["ours_fwdbwd"] = _bench(lambda: torch.autograd.grad(ours(), (x, w, b), grad), quick)
    for t in (x, w, b):
        t.requires_grad_(False)
    map_bytes = x.numel() * x.element_size()
    res["floor_fwd"], res["floor_fwdbwd"] = 2 * map_bytes / bandwidth * 1e3, 5 * map_bytes / bandwidth * 1e3
    if variants and not quick:
        default = td.launch_config
        for cfg in VARIANTS:
            td.launch_config = lambda wo, channels, cfg=cfg: cfg
            try:
                res["x".join(map(str, cfg))] = _bench(ours, quick)
            except Exception as err:  # a configuration that does not fit (resources) is a table cell
                res["x".join(map(str, cfg))] = f"error: {type(err).__name__}"
            finally:
                td.launch_config = default
    return res


def write_report(out: Path, rows: list[dict], bandwidth: float, device_name: str, dtype: str) -> None:
    lines = [
        "# Depthwise convolution: fused Triton kernel vs cuDNN",
        "",
        f"Device: {device_name}; torch {torch.__version__}; channels-last {dtype}; copy bandwidth "
        f"{bandwidth / 1e12:.2f} TB/s. Generated by `benchmarks/depthwise_conv.py`. Times in ms (median of "
        "`do_bench`); *cuDNN* is `F.conv2d` (+ `F.gelu` where the layer has it), *ours* "
        "`linzoo.kernels.depthwise_conv2d` with the bias and GELU fused; *% floor* = memory floor / time.",
        "",
        "| batch × px | stage | layer | C × H × W | cuDNN fwd | ours fwd | × | % floor | cuDNN fwd+bwd | "
        "ours fwd+bwd | × | % floor |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} × {r['res']} | {r['stage']} | {r['layer']} | {r['channels']} × {r['size']}² | "
            f"{r['cudnn_fwd']:.3f} | {r['ours_fwd']:.3f} | {r['cudnn_fwd'] / r['ours_fwd']:.2f} | "
            f"{100 * r['floor_fwd'] / r['ours_fwd']:.0f} | {r['cudnn_fwdbwd']:.3f} | {r['ours_fwdbwd']:.3f} | "
            f"{r['cudnn_fwdbwd'] / r['ours_fwdbwd']:.2f} | {100 * r['floor_fwdbwd'] / r['ours_fwdbwd']:.0f} |"
        )
    keys = ["x".join(map(str, v)) for v in VARIANTS]
    if any(k in r for r in rows for k in keys):
        lines += ["", "Other launch configurations, forward (ms; TH×TW×BLOCK_C×warps):", ""]
        lines += ["| batch × px | stage | layer | default | " + " | ".join(keys) + " |", "|---" * (4 + len(keys)) + "|"]
        for r in rows:
            cells = [f"{r[k]:.3f}" if isinstance(r.get(k), float) else str(r.get(k, "-")) for k in keys]
            lines.append(f"| {r['batch']} × {r['res']} | {r['stage']} | {r['layer']} | {r['ours_fwd']:.3f} | "
                         + " | ".join(cells) + " |")  # fmt: skip
    lines += ["", "Largest relative error of our forward against cuDNN's: "
              f"{max(r['rel_err'] for r in rows):.1e}."]  # fmt: skip
    (out / "depthwise_conv.md").write_text("\n".join(lines) + "\n")
    (out / "depthwise_conv.json").write_text(json.dumps(rows, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one call each (CPU: interpreter)")
    parser.add_argument("--variants", action="store_true", help="also time other launch configurations")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        parser.error("on the CPU the Triton kernel needs TRITON_INTERPRET=1")
    args.out.mkdir(parents=True, exist_ok=True)
    bandwidth = copy_bandwidth(device, args.quick)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (Triton interpreter)"
    rows = []
    for case in cases(args.quick):
        rows.append({**case, **run_case(case, device, bandwidth, args.quick, args.variants)})
        r = rows[-1]
        print(f"{r['batch']}x{r['res']} s{r['stage']} {r['layer']:15s} C{r['channels']:5d}: fwd cuDNN "
              f"{r['cudnn_fwd']:.3f} ours {r['ours_fwd']:.3f} | fwd+bwd {r['cudnn_fwdbwd']:.3f} / "
              f"{r['ours_fwdbwd']:.3f} ms", flush=True)  # fmt: skip
        write_report(args.out, rows, bandwidth, name, "fp32" if device.type == "cpu" else "bf16")


if __name__ == "__main__":
    main()
