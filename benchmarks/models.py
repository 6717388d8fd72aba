"""Backbone throughput and memory: linzoo (eager, compiled) vs the official code vs timm peers, in one run.

For each family's reference variant it measures, with bf16 autocast on one GPU:
inference img/s at 224 (batch 64), training img/s at 224 (batch 64; forward + backward + SGD step), inference
img/s and peak memory at 1024 (batch 4), and a resolution sweep 224…2048 (batch 1) for the plots.
The official implementation gets the same weights (our state dict loads into it strictly) and its logits are
compared with ours in fp32 before timing, so the rows time the same function.

    python benchmarks/models.py --out docs/benchmarks --official-dir .official     # on the GPU machine
    python benchmarks/models.py --device cpu --quick --out /tmp/bench             # smoke test anywhere

``--official-dir`` holds the official model files (never committed): rala/RALA.py, van/models/van.py,
l2vit/models/l2vit.py, inline/models/inline_swin.py, slab/models/{slab_swin,prepbn}.py, and an fvcore stub.
Writes models.md, models_throughput.png and models_memory.png into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import nn

import linzoo.vision  # noqa: F401  (registers the models)

# family reference variant -> (official sub-folder, builder of the official model)
OFFICIAL: dict[str, tuple[str, Callable[[], nn.Module]]] = {}


def _official(name: str, folder: str):
    def register(fn):
        OFFICIAL[name] = (folder, fn)
        return fn

    return register


@_official("ravlt_s", "rala")
def _ravlt_s() -> nn.Module:
    return importlib.import_module("RALA").RAVLT_S()


@_official("inline_swin_t", "inline")
def _inline_swin_t() -> nn.Module:
    mod = importlib.import_module("models.inline_swin")
    return mod.InLineSwin(
        img_size=224,
        patch_size=4,
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=56,
        attn_type="IIIS",
        drop_path_rate=0.0,
    )


@_official("l2vit_t", "l2vit")
def _l2vit_t() -> nn.Module:
    return importlib.import_module("models.l2vit").L2ViT_Tiny()


@_official("van_b2", "van")
def _van_b2() -> nn.Module:
    return importlib.import_module("models.van").van_b2()


@_official("slab_swin_t", "slab")
def _slab_swin_t() -> nn.Module:
    mod = importlib.import_module("models.slab_swin")
    return mod.SlabSwinTransformer(
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=56,
        attn_type="LLSS",
        drop_path_rate=0.0,
    )


PEERS = ["swin_tiny_patch4_window7_224", "deit_small_patch16_224", "efficientvit_b2", "convnext_tiny"]


@contextlib.contextmanager
def _no_timm_registration():
    """Official files register names that clash with ours (e.g. van_b2): make their decorator a no-op."""
    import timm.models._registry as registry

    saved = registry.register_model
    patched = [registry]
    for mod_name in ("timm.models.registry", "timm.models"):
        with contextlib.suppress(ImportError):
            patched.append(importlib.import_module(mod_name))
    originals = [getattr(m, "register_model", None) for m in patched]
    for m in patched:
        m.register_model = lambda fn: fn
    try:
        yield
    finally:
        for m, orig in zip(patched, originals):
            if orig is not None:
                m.register_model = orig
        registry.register_model = saved


def build_official(name: str, official_dir: Path) -> nn.Module | None:
    if name not in OFFICIAL or not official_dir.is_dir():
        return None
    folder, builder = OFFICIAL[name]
    path = str(official_dir / folder)
    for key in [k for k in sys.modules if k == "models" or k.startswith("models.")]:
        del sys.modules[key]  # each official repo has its own top-level `models` package
    sys.path[:0] = [path, str(official_dir)]
    try:
        with _no_timm_registration():
            return builder()
    finally:
        sys.path.remove(path)
        sys.path.remove(str(official_dir))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[], object], device: torch.device, warmup: int, iters: int) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def _autocast(device: torch.device):
    dtype = torch.bfloat16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def _measure(
    model: nn.Module, mode: str, batch: int, res: int, device: torch.device, args, channels_last: bool = False
) -> dict:
    """img/s and peak memory (MiB) of inference or one training step; 'OOM' on out-of-memory."""
    x = torch.randn(batch, 3, res, res, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        if mode == "infer":
            model.eval()

            def step():
                with torch.inference_mode(), _autocast(device):
                    return model(x)
        else:
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-4)

            def step():
                with _autocast(device):
                    loss = model(x).float().square().mean()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

        seconds = time_it(step, device, args.warmup, args.iters)
    except torch.OutOfMemoryError:
        return {"img_s": "OOM", "mem": "OOM"}
    except RuntimeError as err:  # e.g. a fixed-size official model at another resolution
        return {"img_s": f"error: {str(err).splitlines()[0][:60]}", "mem": "-"}
    mem = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"img_s": batch / seconds, "mem": mem}


def parity(ours: nn.Module, official: nn.Module, device: torch.device, res: int) -> float:
    """Max |logit difference| in fp32 with our weights loaded into the official model."""
    official.load_state_dict(ours.state_dict(), strict=False)
    ours.eval(), official.eval()
    x = torch.randn(2, 3, res, res, device=device)
    with torch.no_grad():
        return (ours(x).float() - official(x).float()).abs().max().item()


def fmt(v) -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:,.1f}"
    return str(v)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--official-dir", type=Path, default=Path(".official"))
    parser.add_argument("--models", nargs="*", default=list(OFFICIAL))
    parser.add_argument("--peers", nargs="*", default=PEERS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few iterations (smoke test)")
    parser.add_argument("--compile", nargs="*", default=list(OFFICIAL), help="models also timed under torch.compile")
    parser.add_argument("--compile-train", nargs="*", default=["ravlt_s"], help="...including the training step")
    parser.add_argument(
        "--no-channels-last",
        dest="channels_last_too",
        action="store_false",
        help="skip the extra channels_last row for linzoo models",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    args.warmup, args.iters = (1, 2) if args.quick else (3, 10)
    batch224, batch1024 = (2, 1) if args.quick else (64, 4)
    res_hi = 256 if args.quick else 1024
    sweep = [224, 320] if args.quick else [224, 512, 1024, 1536, 2048]
    args.out.mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models if m in timm.list_models()]

    rows: list[dict] = []
    curves: dict[str, dict[int, dict]] = {}
    notes: list[str] = []

    def report() -> None:  # rewritten after every model, so a run stopped by its time budget keeps its rows
        write_report(args, rows, curves, notes, device, sweep, batch224, batch1024, res_hi)

    def run(
        label: str, family: str, model: nn.Module, kind: str, compiled: nn.Module | None = None, cl: bool = False
    ) -> None:
        target = compiled if compiled is not None else model
        model.to(device, memory_format=torch.channels_last if cl else torch.contiguous_format)

        def measure(*a):
            return _measure(*a, channels_last=cl)

        row = {"family": family, "impl": label, "kind": kind}
        row["infer224"] = measure(target, "infer", batch224, 224, device, args)["img_s"]
        # Compiling the training step (and recompiling for a second shape) costs ~1 min per model on the GPU
        # machine, whose time is rationed: compiled rows cover 224 only, training for --compile-train models.
        train = compiled is None or family in args.compile_train
        row["train224"] = measure(target, "train", batch224, 224, device, args)["img_s"] if train else "-"
        hi = measure(target, "infer", batch1024, res_hi, device, args) if compiled is None else {"img_s": "-"}
        row["infer1024"], row["mem1024"] = hi["img_s"], hi.get("mem", "-")
        rows.append(row)
        print(row, flush=True)
        if compiled is None:
            curves[f"{family}: {label}"] = {r: measure(model, "infer", 1, r, device, args) for r in sweep}
        model.to("cpu", memory_format=torch.contiguous_format)
        if device.type == "cuda":
            torch.cuda.empty_cache()

    for name in models:
        torch.manual_seed(0)
        ours = timm.create_model(name)
        official = build_official(name, args.official_dir)
        if official is not None:
            diff = parity(ours, official, torch.device("cpu"), 224 if not args.quick else 64)
            notes.append(f"{name}: official vs linzoo max |Δlogit| = {diff:.2e} (CPU, fp32, same weights)")
            if device.type == "cuda":  # the default CUDA path runs our Triton kernels: check it at real shapes too
                ours.to(device), official.to(device)
                diff = parity(ours, official, device, 224)
                notes.append(f"{name}: same on {device.type} (linzoo's default kernels) = {diff:.2e}")
                ours.to("cpu"), official.to("cpu")
            print("\n".join(notes[-2:]), flush=True)
        run("linzoo eager", name, ours, "ours")
        if args.channels_last_too:
            run("linzoo eager channels_last", name, ours, "ours", cl=True)
        if official is not None:
            run("official", name, official, "official")
        report()
        del official
    for peer in args.peers:
        run("timm", peer, timm.create_model(peer), "peer")
        report()
    # Compilation takes minutes per model: compiled rows come last so a time-boxed run keeps every other row.
    for name in [m for m in models if m in args.compile]:
        torch.manual_seed(0)
        ours = timm.create_model(name).to(device)
        run("linzoo compiled", name, ours, "ours", compiled=torch.compile(ours, dynamic=False))
        report()


def write_report(args, rows, curves, notes, device, sweep, batch224, batch1024, res_hi) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines = [
        "# Backbone throughput (img/s) and memory",
        "",
        f"Device: {name}; torch {torch.__version__}; timm {timm.__version__}; bf16 autocast"
        ". Generated by `benchmarks/models.py`"
        f"{' --quick' if args.quick else ''}; all rows from one run.",
        "",
        f"| family | implementation | infer {224} (b{batch224}) | train {224} (b{batch224}) | "
        f"infer {res_hi} (b{batch1024}) | peak MiB {res_hi} | × official infer/train/{res_hi} |",
        "|---|---|---|---|---|---|---|",
    ]
    official = {r["family"]: r for r in rows if r["impl"] == "official"}
    for r in rows:
        ratio = "-"
        ref = official.get(r["family"])
        if ref is not None and r["impl"] != "official":
            parts = []
            for key in ("infer224", "train224", "infer1024"):
                a, b = r[key], ref[key]
                parts.append(f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) else "-")
            ratio = " / ".join(parts)
        lines.append(
            f"| {r['family']} | {r['impl']} | {fmt(r['infer224'])} | {fmt(r['train224'])} | "
            f"{fmt(r['infer1024'])} | {fmt(r['mem1024'])} | {ratio} |"
        )
    lines += ["", "Parity checks before timing:", ""] + [f"- {n}" for n in notes]
    lines += ["", f"Resolution sweep (batch 1, inference img/s / peak MiB): {sweep}", ""]
    lines += ["| model | " + " | ".join(str(s) for s in sweep) + " |", "|---|" + "---|" * len(sweep)]
    for label, curve in curves.items():
        lines.append(
            f"| {label} | " + " | ".join(f"{fmt(c['img_s'])} / {fmt(c['mem'])}" for c in curve.values()) + " |"
        )
    (args.out / "models.md").write_text("\n".join(lines) + "\n")
    _plot(args.out, curves, sweep)


def _plot(out: Path, curves: dict, sweep: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for key, ylabel, fname in (
        ("img_s", "images / s (batch 1)", "models_throughput.png"),
        ("mem", "peak memory (MiB)", "models_memory.png"),
    ):
        fig, ax = plt.subplots(figsize=(8, 5))
        for label, curve in curves.items():
            xs = [r for r in sweep if isinstance(curve[r][key], float) and math.isfinite(curve[r][key])]
            if xs:
                style = "-" if "linzoo" in label else ("--" if "official" in label else ":")
                ax.plot(xs, [curve[r][key] for r in xs], style, marker="o", label=label)
        ax.set_xlabel("input resolution (px)")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        if ax.lines:
            ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)


if __name__ == "__main__":
    main()
