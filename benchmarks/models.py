"""Backbone throughput and memory: linzoo (eager, CUDA graph, compiled) vs the official code vs timm peers, one run.

For each family's reference variant, in this order so that a time-boxed run keeps the comparison rows: linzoo eager;
for the ``--backend-rows`` models (default ravlt_s) linzoo eager with the kernels' PyTorch backend
(``LINZOO_KERNEL_BACKEND=torch`` set around that row only, so the default row shows Triton on CUDA); for the
``--channels-last-rows`` models linzoo eager with model and input in ``torch.channels_last`` (inference and
training; VAN's weights are channels-last by default since this row measured it); linzoo eager + CUDA graph
(inference: the forward captured once on a static input and replayed, no compilation); the official implementation
with the same weights; then the timm peers; then torch.compile rows (inference for every family, the training step
for ``--compile-train``, 1024 px for ``--compile-hi``, and for ``--compile-graphs`` (default ravlt_s) the same under
``mode="reduce-overhead"``, which replays the compiled steps, training included, as CUDA graphs) last, since each
costs ~1 min of compilation. Measured with bf16 autocast on one GPU: inference img/s at 224
(batch 64), training img/s at 224 (batch 64; forward + backward + SGD step), inference img/s and peak memory at
1024 (batch 4), and a resolution sweep 224…2048 (batch 1) for the plots (eager, official and peer rows). The
official model's logits are compared with ours in fp32 before timing, so the rows time the same function.
timm peers fixed to 224 px (Swin, DeiT) run the 1024 column and the sweep as timm's any-size variant with the same
weights, falling back per resolution to the model built with ``img_size=<res>`` where the installed timm has no
working any-size option. ``--budget SECONDS`` skips (and marks in the table) every row that would not finish in
time, from the durations measured so far in the run; the table and the plots are rewritten after every row.

    python benchmarks/models.py --out docs/benchmarks --official-dir .official --budget 230   # GPU machine
    python benchmarks/models.py --device cpu --quick --out /tmp/bench                          # smoke test anywhere

``--official-dir`` holds the official model files (never committed): rala/RALA.py, van/models/van.py,
l2vit/models/l2vit.py, inline/models/inline_swin.py, slab/models/{slab_swin,prepbn}.py, vig/models/vig.py with
ViG's vendored fla (vig/fla), and stubs for fvcore and causal_conv1d (imported, never called by the forwards).
SOFT-Small and MOAT-0 run without an official row (:data:`NO_OFFICIAL` says why).
Writes models.md, models_throughput.png and models_memory.png into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib
import inspect
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import timm
import torch
from torch import nn

import linzoo.vision  # noqa: F401  (registers the models)
from linzoo.kernels import ENV_VAR, resolve_backend

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


@_official("vig_s", "vig")
def _vig_s() -> nn.Module:
    # ViG-S as classification/configs/vig/vig-s.yaml builds it (hustvl/ViG@dfb9d32); its fla is the vendored copy
    mod = importlib.import_module("models.vig")
    return mod.ViG(
        img_size=224, patch_size=16, stride=16, depth=12, embed_dim=384, num_heads=6, num_classes=1000,
        if_cls_token=False, classification_mode="avgpool", if_abs_pos_embed=True, attn_model="fused_chunk",
        hidden_act="swish", use_out_gate=False, use_swiglu=True, rope_mode="none", expand_k=0.5, expand_v=1.0,
        patch_embed_version="v2", use_out_act=False, use_act_in_conv=False, drop_path_rate=0.0,
    )  # fmt: skip


# Families whose official code cannot run on the GPU machine: their rows are linzoo and the peers only.
NO_OFFICIAL = {
    "soft_small": "SOFT's official model needs its CUDA extension (SOFT/kernel/csrc) built on the machine",
    "moat_0": "MOAT's official code is TensorFlow (deeplab2)",
}

PEERS = ["swin_tiny_patch4_window7_224", "deit_small_patch16_224", "efficientvit_b2", "convnext_tiny"]
# timm peers fixed to 224 px run the 1024 px column and the sweep as timm's any-size variant (same weights), see
# AnySizePeer; the 224 columns keep the fixed-size model.
ANY_SIZE_PEERS = ("swin_tiny_patch4_window7_224", "deit_small_patch16_224")
# The any-size switches, each passed only where the model's constructor names it: timm 1.0.29's Swin has only
# strict_img_size (its **kwargs silently drop dynamic_img_size, leaving the 224 px input check), ViT only
# dynamic_img_size, timm 1.0.31's Swin both.
ANY_SIZE_KWARGS = {"dynamic_img_size": True, "strict_img_size": False}


@contextlib.contextmanager
def _env(**values: str):
    """Set environment variables for the block and restore them (unset where they were unset) afterwards."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


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


def _error_cell(err: BaseException) -> dict:
    """A table cell for a measurement that raised (e.g. a fixed-size official / timm model at another size)."""
    return {"img_s": f"error: {str(err).splitlines()[0][:60] if str(err) else type(err).__name__}", "mem": "-"}


class AnySizePeer:
    """The timm model ``name`` with the weights of ``fixed`` at any input resolution, across timm versions.

    ``peer(res)`` returns timm's any-size variant (built once with the :data:`ANY_SIZE_KWARGS` its constructor
    names) when one batch-1 forward at ``res`` on ``device`` runs, else a model built with ``img_size=res`` for
    that resolution; that raises a ValueError where the size changes parameter shapes (the caller records the
    error cell). ``used`` maps each resolution to the variant it got, for the notes. Same cost, not the same
    function: timm's any-size Swin keeps the 224 px model's window shifts (none in its last stage, whose 7×7 map
    was one window), an ``img_size`` build recomputes them (shifted last-stage blocks at 1024 px).
    """

    def __init__(self, name: str, fixed: nn.Module, device: torch.device) -> None:
        self.name, self.fixed, self.device = name, fixed, device
        params = inspect.signature(type(fixed).__init__).parameters
        self.kwargs = {key: value for key, value in ANY_SIZE_KWARGS.items() if key in params}
        self.dynamic: nn.Module | None = None
        self.used: dict[int, str] = {}
        self.build_error = ""
        if self.kwargs:
            try:
                self.dynamic = timm.create_model(name, **self.kwargs)
                self.dynamic.load_state_dict(fixed.state_dict())
            except Exception as err:  # a timm version whose any-size variant does not build: img_size fallback
                self.dynamic = None
                self.build_error = f"{type(err).__name__}: {str(err)[:80]}"

    def _accepts(self, model: nn.Module, res: int) -> bool:
        model.to(self.device).eval()
        try:
            with torch.inference_mode(), _autocast(self.device):
                model(torch.zeros(1, 3, res, res, device=self.device))
        except torch.OutOfMemoryError:
            return True  # the size is accepted; the measurement records the OOM
        except Exception:
            model.to("cpu")
            return False
        return True

    def __call__(self, res: int) -> nn.Module:
        if self.dynamic is not None and self._accepts(self.dynamic, res):
            self.used[res] = f"timm's {self.kwargs} variant"
            return self.dynamic
        model = timm.create_model(self.name, img_size=res)
        try:
            model.load_state_dict(self.fixed.state_dict())
        except RuntimeError as err:  # e.g. Swin's windows clipped to a small feature map: other table shapes
            raise ValueError(f"img_size={res} changes parameter shapes") from err
        self.used[res] = "the model built with img_size=<res>"
        return model

    def note(self) -> str:
        by_variant: dict[str, list[int]] = {}
        for res, variant in sorted(self.used.items()):
            by_variant.setdefault(variant, []).append(res)
        parts = [f"{variant} at {', '.join(map(str, sizes))} px" for variant, sizes in by_variant.items()]
        failed = f" (any-size variant not built: {self.build_error})" if self.build_error else ""
        return f"{self.name}: the high-resolution column and the sweep use " + "; ".join(parts) + failed + "."


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


def _autocast(device: torch.device, cache_enabled: bool = True):
    return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)


def _graph_forward(model: nn.Module, x: torch.Tensor, device: torch.device) -> Callable[[], torch.Tensor]:
    """The inference forward captured in a CUDA graph on the static input ``x``; returns a replay function.

    Warm-up runs on a side stream first (lazy init, Triton JIT, RoPE tables), as torch.cuda.graphs requires;
    autocast's weight-cast cache must be off while capturing (the casts are replayed from the weights instead).
    """
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream), torch.inference_mode(), _autocast(device, cache_enabled=False):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph), _autocast(device, cache_enabled=False):
        out = model(x)

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def _measure(
    model: nn.Module,
    mode: str,
    batch: int,
    res: int,
    device: torch.device,
    args,
    iters: tuple[int, int] | None = None,
    channels_last: bool = False,
    graph_steps: bool = False,
) -> dict:
    """img/s and peak memory (MiB) of ``mode``: "infer", "graph" (CUDA-graph replay of inference) or "train".

    ``iters``: (warm-up, timed) calls, default ``(args.warmup, args.iters)``. ``channels_last``: the input in
    ``torch.channels_last`` (the model is converted by the caller). ``graph_steps``: the model was compiled with
    ``mode="reduce-overhead"``; each step starts with ``torch.compiler.cudagraph_mark_step_begin()``.
    """
    mark = torch.compiler.cudagraph_mark_step_begin if graph_steps else (lambda: None)
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
                mark()
                with torch.inference_mode(), _autocast(device):
                    return model(x)
        elif mode == "graph":
            model.eval()
            step = _graph_forward(model, x, device)
        else:
            model.train()
            opt = torch.optim.SGD(model.parameters(), lr=1e-4)

            def step():
                mark()
                with _autocast(device):
                    loss = model(x).float().square().mean()
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

        seconds = time_it(step, device, *(iters or (args.warmup, args.iters)))
    except torch.OutOfMemoryError:
        return {"img_s": "OOM", "mem": "OOM"}
    except Exception as err:  # e.g. a fixed-size official / timm model at another resolution
        return _error_cell(err)
    finally:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
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


class Budget:
    """Wall-clock budget of the run: a row runs only if its estimated duration still fits.

    Estimates are the longest duration measured so far for rows of the same kind, else ``GUESS`` (seconds on
    the H100 machine, cold: Triton JIT and cuDNN heuristics included in a family's first row).
    """

    # "variant": an eager row measured another way (kernel backend, memory format), no sweep
    GUESS = {
        "eager": 25.0,
        "variant": 15.0,
        "graph": 10.0,
        "official": 20.0,
        "peer": 12.0,
        "compile": 75.0,
        "compile_train": 150.0,
    }

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()
        self.seen: dict[str, float] = {}

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - (time.perf_counter() - self.start)

    def fits(self, kind: str) -> bool:
        return self.left() >= self.seen.get(kind, self.GUESS[kind])

    def record(self, kind: str, seconds: float) -> None:
        self.seen[kind] = max(seconds, self.seen.get(kind, 0.0))


SKIPPED = "skipped (budget)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks"))
    parser.add_argument("--official-dir", type=Path, default=Path(".official"))
    parser.add_argument("--models", nargs="*", default=[*OFFICIAL, *NO_OFFICIAL])
    parser.add_argument("--peers", nargs="*", default=PEERS)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, few iterations, no compiled rows (smoke)")
    parser.add_argument("--compile", nargs="*", default=None, help="models also timed under torch.compile")
    parser.add_argument("--compile-train", nargs="*", default=["ravlt_s"], help="...including the training step")
    parser.add_argument(
        "--compile-graphs",
        nargs="*",
        default=["ravlt_s"],
        help="models also timed under torch.compile(mode='reduce-overhead') (CUDA graphs; training too if in "
        "--compile-train); without the plain compiled row unless also in --compile",
    )
    parser.add_argument(
        "--compiled-first", action="store_true", help="run the compiled rows before the eager ones (budget order)"
    )
    parser.add_argument(
        "--compile-hi", nargs="*", default=[], help="...and the high-resolution column (one more compilation)"
    )
    parser.add_argument(
        "--backend-rows",
        nargs="*",
        default=["ravlt_s"],
        metavar="MODEL",
        help=f"models with an extra eager row under {ENV_VAR}=torch (the kernels' PyTorch backend)",
    )
    parser.add_argument(
        "--channels-last-rows",
        nargs="*",
        default=[],
        metavar="MODEL",
        help="models with an extra eager row with model and input in torch.channels_last",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for the run after imports; rows that would not fit are skipped (230 on CUDA, none on CPU)",
    )
    parser.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the resolution sweep")
    parser.add_argument(
        "--sweep-only",
        action="store_true",
        help="only the resolution sweep (throughput and memory plots) of the eager, official and peer rows",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    budget = Budget(args.budget if args.budget is not None or device.type != "cuda" else 230.0)
    if args.compile is None:
        args.compile = [] if args.quick else list(OFFICIAL)
    if args.sweep_only:
        if not args.sweep:
            parser.error("--sweep-only and --no-sweep exclude each other")
        args.compile, args.compile_graphs, args.backend_rows, args.channels_last_rows = [], [], [], []
    args.warmup, args.iters = (1, 2) if args.quick else (3, 10)
    args.sweep_iters = (1, 2) if args.quick else (2, 5)  # batch-1 sweep points: a plot, not the headline table
    res_lo, batch_lo = (64, 2) if args.quick else (224, 64)
    res_hi, batch_hi = (96, 1) if args.quick else (1024, 4)
    sweep = [64, 96] if args.quick else [224, 512, 1024, 1536, 2048]
    args.out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    models = [m for m in args.models if m in timm.list_models()]
    notes.extend(f"{name}: no official row: {why}." for name, why in NO_OFFICIAL.items() if name in models)
    sizes = {"res_lo": res_lo, "batch_lo": batch_lo, "res_hi": res_hi, "batch_hi": batch_hi, "sweep": sweep}

    rows: list[dict] = []
    curves: dict[str, dict[int, dict]] = {}

    def report() -> None:  # rewritten after every row, so a run stopped from outside keeps what it measured
        write_report(args, rows, curves, notes, device, sizes, budget)

    def skip(family: str, label: str, kind: str) -> None:
        rows.append({"family": family, "impl": label, "kind": kind, **dict.fromkeys(_COLS, SKIPPED), "mem_hi": "-"})
        print(f"{family} {label}: {SKIPPED} ({budget.left():.0f} s left)", flush=True)
        report()

    def run(
        label: str,
        family: str,
        model: nn.Module,
        kind: str,
        budget_kind: str,
        modes: dict[str, str],
        hi_model: Callable[[int], nn.Module] | None = None,
        env: dict[str, str] | None = None,
        channels_last: bool = False,
        graph_steps: bool = False,
    ) -> None:
        """One table row; ``modes`` maps the columns infer_lo / train_lo / infer_hi to a _measure mode.

        ``hi_model(res)`` (same weights) runs the high-resolution column and the sweep instead of ``model``.
        ``env``: environment variables set during the row's measurements only. ``channels_last``: inputs in
        ``torch.channels_last`` (``model`` converted by the caller). The sweep runs for eager, official and peer
        rows."""
        if not budget.fits(budget_kind):
            skip(family, label, kind)
            return
        start = time.perf_counter()
        on_device = model.to(device)

        def place(target: nn.Module) -> nn.Module:  # ``target`` alone on the device
            nonlocal on_device
            if target is not on_device:
                on_device.to("cpu")
                on_device = target.to(device)
            return target

        def measure(res: int, mode: str, batch: int, hi: bool, iters: tuple[int, int] | None = None) -> dict:
            try:
                target = place(hi_model(res) if hi and hi_model is not None else model)
            except Exception as err:  # no model of this peer runs at this size
                return _error_cell(err)
            return _measure(
                target, mode, batch, res, device, args, iters, channels_last=channels_last, graph_steps=graph_steps
            )

        row = {"family": family, "impl": label, "kind": kind, "infer_lo": "-", "train_lo": "-", "infer_hi": "-"}
        row["mem_hi"] = "-"
        with _env(**(env or {})):
            for col, mode in modes.items():
                hi = col == "infer_hi"
                res, batch = (res_hi, batch_hi) if hi else (res_lo, batch_lo)
                result = measure(res, mode, batch, hi)
                row[col] = result["img_s"]
                if hi:
                    row["mem_hi"] = result["mem"]
            if modes:  # (--sweep-only rows have no table columns)
                rows.append(row)
                print(row, flush=True)
            if args.sweep and budget_kind in ("eager", "official", "peer"):
                curve = curves.setdefault(f"{family}: {label}", {})
                for r in sweep:
                    fits = budget.left() > 0
                    curve[r] = measure(r, "infer", 1, True, args.sweep_iters) if fits else {"img_s": SKIPPED}
        on_device.to("cpu")
        model.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        budget.record(budget_kind, time.perf_counter() - start)
        report()

    def compiled_rows() -> None:
        """torch.compile rows (about a minute of compilation per model and mode), each only if it still fits."""
        # a model in --compile-graphs but not in --compile gets the reduce-overhead row alone (one compilation)
        for name in [m for m in models if m in args.compile or m in args.compile_graphs]:
            torch.manual_seed(0)
            ours = timm.create_model(name).to(device)
            train = name in args.compile_train
            budget_kind = "compile_train" if train else "compile"
            if not budget.fits(budget_kind) and train and budget.fits("compile"):
                train, budget_kind = False, "compile"  # the inference row alone still fits
            modes = {"infer_lo": "infer", **({"train_lo": "train"} if train else {})}
            if name in args.compile_hi:
                modes["infer_hi"] = "infer"
            if name in args.compile:
                dynamo_utils = importlib.import_module("torch._dynamo.utils")
                importlib.import_module("torch._dynamo").reset()
                dynamo_utils.counters.clear()
                compiled = torch.compile(ours, dynamic=False)
                run("linzoo compiled", name, compiled, "ours", budget_kind, modes)
                breaks = sum(dynamo_utils.counters["graph_break"].values())
                if rows[-1]["infer_lo"] != SKIPPED:
                    notes.append(f"{name}: torch.compile graph breaks = {breaks}")
                    report()
                del compiled
            if name in args.compile_graphs and device.type == "cuda":
                # the launch-bound case: a compiled step still launches ~700 (inference) / ~2,300 (training)
                # kernels
                importlib.import_module("torch._dynamo").reset()
                graphed = torch.compile(ours, mode="reduce-overhead", dynamic=False)
                label = "linzoo compiled + CUDA graphs"
                graph_kind = "compile_train" if "train_lo" in modes else "compile"
                if graph_kind == "compile_train" and not budget.fits(graph_kind) and budget.fits("compile"):
                    graph_kind, modes = "compile", {k: v for k, v in modes.items() if k != "train_lo"}
                run(label, name, graphed, "ours", graph_kind, modes, graph_steps=True)
                del graphed
            del ours

    if args.compiled_first:
        compiled_rows()
    eager_modes = {} if args.sweep_only else {"infer_lo": "infer", "train_lo": "train", "infer_hi": "infer"}
    for name in models:
        torch.manual_seed(0)
        ours = timm.create_model(name)
        try:
            official = build_official(name, args.official_dir)
        except Exception as err:  # a broken or missing official file must not stop the other rows
            official = None
            notes.append(f"{name}: official model not built ({type(err).__name__}: {str(err)[:80]})")
        if official is not None:
            # at 224 even in --quick: several official models accept no other size
            checks = [("CPU, fp32, same weights", torch.device("cpu"))]
            if device.type == "cuda":  # the default CUDA path runs our Triton kernels: check it at real shapes too
                checks.append((f"{device.type}, fp32, linzoo's default kernels", device))
            for where, dev in checks:
                try:
                    ours.to(dev), official.to(dev)
                    notes.append(
                        f"{name}: official vs linzoo max |Δlogit| = {parity(ours, official, dev, 224):.2e} ({where})"
                    )
                except Exception as err:
                    notes.append(f"{name}: parity check failed ({where}): {type(err).__name__}: {str(err)[:80]}")
                print(notes[-1], flush=True)
            ours.to("cpu"), official.to("cpu")
        run("linzoo eager", name, ours, "ours", "eager", eager_modes)
        if name in args.backend_rows:  # issue 3: the linear-attention kernels' PyTorch backend vs the default
            with _env(**{ENV_VAR: "torch"}):
                forced = resolve_backend("auto", device)
            notes.append(
                f"{name}: 'linzoo eager' runs the kernels' {resolve_backend('auto', device)} backend "
                f"({ENV_VAR}={os.environ.get(ENV_VAR, 'unset')}); 'linzoo eager, backend torch' sets "
                f"{ENV_VAR}=torch around its measurements ({forced} backend)."
            )
            run("linzoo eager, backend torch", name, ours, "ours", "variant", eager_modes, env={ENV_VAR: "torch"})
        if name in args.channels_last_rows:  # issue 8: channels_last model and input (VAN's 1x1 convs as GEMMs)
            cl_model = copy.deepcopy(ours).to(memory_format=torch.channels_last)
            run("linzoo eager channels_last", name, cl_model, "ours", "variant", eager_modes, channels_last=True)
            del cl_model
        if device.type == "cuda" and not args.sweep_only:
            run("linzoo eager + CUDA graph", name, ours, "ours", "graph", {"infer_lo": "graph", "infer_hi": "graph"})
        if official is not None:
            run("official", name, official, "official", "official", eager_modes)
        del official, ours
    for peer in args.peers:
        model = timm.create_model(peer)
        hi_model = AnySizePeer(peer, model, device) if peer in ANY_SIZE_PEERS else None
        run("timm", peer, model, "peer", "peer", eager_modes, hi_model=hi_model)
        if hi_model is not None and hi_model.used:
            notes.append(hi_model.note())
            report()
        del model, hi_model
    if device.type != "cuda":
        notes.append("CUDA-graph rows need a CUDA device: not run.")
    notes.append("CUDA graphs are used for inference only (training would need static optimizer state and capture).")
    if not args.compiled_first:
        compiled_rows()


_COLS = ("infer_lo", "train_lo", "infer_hi")


def write_report(args, rows, curves, notes, device, sizes, budget: Budget) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lo, blo, hi, bhi = sizes["res_lo"], sizes["batch_lo"], sizes["res_hi"], sizes["batch_hi"]
    elapsed = time.perf_counter() - budget.start
    limit = f" of a {budget.seconds:.0f} s budget" if budget.seconds is not None else ""
    lines = [
        "# Backbone throughput (img/s) and memory",
        "",
        f"Device: {name}; torch {torch.__version__}; timm {timm.__version__}; bf16 autocast"
        ". Generated by `benchmarks/models.py`"
        f"{' --quick' if args.quick else ''}; all rows from one run ({elapsed:.0f} s{limit} so far).",
        "",
        f"| family | implementation | infer {lo} (b{blo}) | train {lo} (b{blo}) | "
        f"infer {hi} (b{bhi}) | peak MiB {hi} | × official infer/train/{hi} |",
        "|---|---|---|---|---|---|---|",
    ]
    official = {r["family"]: r for r in rows if r["impl"] == "official"}
    for r in rows:
        ratio = "-"
        ref = official.get(r["family"])
        if ref is not None and r["impl"] != "official":
            parts = []
            for key in _COLS:
                a, b = r[key], ref[key]
                parts.append(f"{a / b:.2f}" if isinstance(a, float) and isinstance(b, float) else "-")
            ratio = " / ".join(parts)
        lines.append(
            f"| {r['family']} | {r['impl']} | {fmt(r['infer_lo'])} | {fmt(r['train_lo'])} | "
            f"{fmt(r['infer_hi'])} | {fmt(r['mem_hi'])} | {ratio} |"
        )
    lines += ["", "Notes and parity checks (before timing):", ""] + [f"- {n}" for n in notes]
    sweep = sizes["sweep"]
    lines += ["", f"Resolution sweep (batch 1, inference img/s / peak MiB): {sweep}", ""]
    lines += ["| model | " + " | ".join(str(s) for s in sweep) + " |", "|---|" + "---|" * len(sweep)]
    for label, curve in curves.items():
        cells = [f"{fmt(c['img_s'])} / {fmt(c.get('mem', '-'))}" for c in (curve.get(s, {"img_s": "-"}) for s in sweep)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
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
        if not any(isinstance(point.get(key), float) for curve in curves.values() for point in curve.values()):
            continue  # no sweep in this run (--no-sweep): keep the plot an earlier run wrote
        fig, ax = plt.subplots(figsize=(8, 5))
        for label, curve in curves.items():
            xs = [r for r in sweep if isinstance(curve.get(r, {}).get(key), float) and math.isfinite(curve[r][key])]
            if xs:
                style = "-" if "linzoo" in label else ("--" if "official" in label else ":")
                ax.plot(xs, [curve[r][key] for r in xs], style, marker="o", label=label)
        ax.set_xlabel("input resolution (px)")
        ax.set_ylabel(ylabel)
        ax.set_xscale("log", base=2)
        if ax.lines:
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=120)
        plt.close(fig)


if __name__ == "__main__":
    main()
