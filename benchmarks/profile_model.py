"""Where a backbone spends its GPU time: torch.profiler's top CUDA kernels for one inference and one training step.

    python benchmarks/profile_model.py ravlt_s --batch 64 --res 224 --out docs/benchmarks [--compile]
Writes profile_<model>.md (the tables), the input to the next round of speed work (METHOD: floor first), with a
summary line per step: CUDA kernels launched, GPU busy time (sum of kernel times) and the step's wall time
outside the profiler; wall ≫ GPU busy means launch-bound (CUDA graphs / fewer ops help), wall ≈ GPU busy means
the kernels themselves must get faster. ``--compile`` profiles the model under ``torch.compile`` instead
(profile_<model>_compiled.md, sorted by each kernel's own GPU time: the fused kernels have no aten parents).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import timm
import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import linzoo.vision  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--res", type=int, default=224)
    parser.add_argument("--rows", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--compile", action="store_true", help="profile torch.compile(model) instead of eager")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        profile_one(name, args, device)


def profile_one(name: str, args: argparse.Namespace, device: torch.device) -> None:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    if args.compile:
        sort = "self_" + sort
    model = timm.create_model(name).to(device)
    eager_model = model
    if args.compile:
        model = torch.compile(model)
    x = torch.randn(args.batch, 3, args.res, args.res, device=device)
    opt = torch.optim.SGD(eager_model.parameters(), lr=1e-4)
    mode = ", torch.compile" if args.compile else ""
    sections = [f"# Profile of {name}: batch {args.batch}, {args.res}px, bf16 autocast, {device}{mode}", ""]

    def infer():
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16):
            eager_model.eval()
            model(x)

    def train():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            eager_model.train()
            loss = model(x).float().square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for label, step in (("inference", infer), ("training step", train)):
        for _ in range(3):
            step()
        sync()
        walls = []
        for _ in range(10):
            start = time.perf_counter()
            step()
            sync()
            walls.append(time.perf_counter() - start)
        wall_ms = 1e3 * sorted(walls)[len(walls) // 2]
        with profile(activities=activities) as prof:
            step()
            sync()
        table = prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=70)
        kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
        busy_ms = sum(e.time_range.elapsed_us() for e in kernels) / 1e3
        summary = (
            f"{len(kernels)} CUDA kernels, GPU busy {busy_ms:.1f} ms, wall {wall_ms:.1f} ms per step "
            f"(median of 10, outside the profiler) = {args.batch / wall_ms * 1e3:,.0f} img/s"
        )
        sections += [f"## {label}", "", summary, "", "```", table, "```", ""]
        print(f"{name} {label}: {summary}\n{table}", flush=True)
    suffix = "_compiled" if args.compile else ""
    (args.out / f"profile_{name}{suffix}.md").write_text("\n".join(sections))


if __name__ == "__main__":
    main()
