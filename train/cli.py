"""The ``linzoo`` command line.

``linzoo fit | validate | test | predict -c config.yaml [--dotted.overrides]`` run Lightning through
:class:`LinzooCLI` (a ``LightningCLI`` with OmegaConf interpolation, any LightningModule / DataModule
chosen by ``class_path`` in the YAML, a resumable ``last.ckpt``, CSV + TensorBoard logs, a Rich progress bar
and a curves PNG). The other subcommands are plain functions listed in :data:`SUBCOMMANDS`.

Adding a subcommand: write a function ``def my_command(argv: list[str]) -> int`` that parses its own
arguments (argparse, ``prog="linzoo my-command"``) and returns an exit code, then add one line to
:data:`SUBCOMMANDS`, as ``generate`` is::

    "generate": Subcommand("sample a trained LiT: one PNG grid per class", "linzoo.train.generate:generate_main"),

The target is imported only when the subcommand runs, so ``linzoo --help`` stays fast. (At run time,
:func:`register_subcommand` does the same.)
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SUBCOMMANDS", "Subcommand", "main", "model_stats", "register_subcommand"]


@dataclass(frozen=True)
class Subcommand:
    """A non-Lightning subcommand: a help line and ``"module:function"``, the function taking ``argv``."""

    help: str
    target: str

    def load(self) -> Callable[[list[str]], int | None]:
        module, _, func = self.target.partition(":")
        return getattr(importlib.import_module(module), func)


#: Lightning's subcommands (run through :class:`LinzooCLI`).
LIGHTNING_SUBCOMMANDS: dict[str, str] = {
    "fit": "train a model (resume with --ckpt_path last)",
    "validate": "evaluate on the validation data",
    "test": "evaluate on the test data",
    "predict": "predict on the predict data",
}

#: Other subcommands: name -> Subcommand. Add one line to add a subcommand (see the module docstring).
SUBCOMMANDS: dict[str, Subcommand] = {
    "models": Subcommand(
        "table of linzoo's models: params, GFLOPs, published top-1", "linzoo.train.cli:models_command"
    ),
    "convert": Subcommand("official checkpoint -> model.safetensors + config.json", "linzoo.train.cli:convert_command"),
    "generate": Subcommand("sample a trained LiT: one PNG grid per class", "linzoo.train.generate:generate_main"),
}


def register_subcommand(name: str, help: str, target: str) -> None:
    """Add a subcommand at run time (``target`` = ``"module:function"``, the function takes ``argv``)."""
    if name in LIGHTNING_SUBCOMMANDS:
        raise ValueError(f"subcommand name {name!r} is taken by Lightning")
    SUBCOMMANDS[name] = Subcommand(help, target)


def _print_help() -> None:
    lines = [
        "usage: linzoo <command> [options]",
        "",
        "linzoo: linear-attention vision backbones and diffusion transformers (timm / diffusers / Lightning).",
        "",
        "training (LightningCLI; `linzoo <command> --help` lists every option):",
    ]
    lines += [f"  {name:<10} {text}" for name, text in LIGHTNING_SUBCOMMANDS.items()]
    lines += ["", "tools:"]
    lines += [f"  {name:<10} {sub.help}" for name, sub in SUBCOMMANDS.items()]
    lines += [
        "",
        "examples:",
        "  linzoo fit -c configs/demo/digits_ravlt_t.yaml",
        "  linzoo fit -c configs/classification/ravlt_s_imagenet.yaml --data.init_args.root /data/imagenet",
        "  linzoo fit -c configs/demo/digits_ravlt_t.yaml --ckpt_path last        # resume",
        "  linzoo models 'ravlt_*'",
        "  linzoo convert ravlt_s RAVLT_S.pth out/ravlt_s",
    ]
    print("\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``linzoo`` console script. ``argv`` defaults to ``sys.argv[1:]``.

    (DDP's subprocess launcher re-runs ``sys.argv`` in every extra process, so multi-process runs must come
    from the command line, not from ``main([...])``.)
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        _print_help()
        return 0
    command, rest = args[0], args[1:]
    if command in SUBCOMMANDS:
        return int(SUBCOMMANDS[command].load()(rest) or 0)
    if command in LIGHTNING_SUBCOMMANDS:
        run_lightning(None if argv is None else args)  # None: LightningCLI reads sys.argv itself
        return 0
    known = ", ".join([*LIGHTNING_SUBCOMMANDS, *SUBCOMMANDS])
    print(f"linzoo: unknown command {command!r} (choose from {known}; see `linzoo --help`)", file=sys.stderr)
    return 2


# ----------------------------------------------------------------------------------------------------------
# Lightning subcommands
# ----------------------------------------------------------------------------------------------------------


def _lightning_cli_class() -> type:
    from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
    from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

    from .callbacks import AppendingCSVLogger, LearningCurves, LinzooCheckpoint

    # our loggers deliberately share the run directory (a resumed run continues its logs)
    warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

    class _LinzooCLI(LightningCLI):
        """LightningCLI with linzoo's run layout: everything of a run in ``trainer.default_root_dir``.

        - ``checkpoint:`` (:class:`LinzooCheckpoint`) writes ``<run>/checkpoints/last.ckpt`` every
          ``checkpoint.every_n_train_steps`` steps and at each epoch end; ``--ckpt_path last`` resumes from it.
        - ``curves:`` (:class:`LearningCurves`) plots ``<run>/curves.png`` when fit ends.
        - Without a ``trainer.logger``, logs go to ``<run>/metrics.csv`` (CSV) and TensorBoard event files in
          ``<run>``; without a progress-bar callback, a Rich progress bar is used.
        """

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.add_lightning_class_args(LinzooCheckpoint, "checkpoint")
            parser.add_lightning_class_args(LearningCurves, "curves")

        def instantiate_trainer(self, **kwargs: Any) -> Any:
            config = self._get(self.config_init, "trainer", default={})
            root = os.path.expanduser(config.get("default_root_dir") or os.getcwd())
            if config.get("logger") in (None, True):
                kwargs["logger"] = [
                    AppendingCSVLogger(root, name="", version=""),
                    TensorBoardLogger(root, name="", version="", default_hp_metric=False),
                ]
            callbacks = list(config.get("callbacks") or [])
            if config.get("enable_progress_bar") is not False and not any(
                isinstance(cb, ProgressBar) for cb in callbacks
            ):
                callbacks.append(RichProgressBar())
            kwargs["callbacks"] = callbacks
            trainer = super().instantiate_trainer(**kwargs)
            for cb in trainer.callbacks:
                if isinstance(cb, LinzooCheckpoint):
                    cb.set_default_dirpath(trainer.default_root_dir)
                elif isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                    cb.dirpath = os.path.realpath(os.path.join(trainer.default_root_dir, "checkpoints"))
            return trainer

        def _resolve_ckpt_path(self) -> None:
            config = self.config_init[self.subcommand]
            if config.get("ckpt_path") != "last":
                return
            dirs = [cb.dirpath for cb in self.trainer.callbacks if isinstance(cb, LinzooCheckpoint) and cb.dirpath]
            candidates = [os.path.join(d, "last.ckpt") for d in dirs]
            found = [p for p in candidates if os.path.isfile(p)]
            if found:
                config["ckpt_path"] = max(found, key=os.path.getmtime)
                rank_zero_info(f"linzoo: resuming from {config['ckpt_path']}")
            elif self.subcommand == "fit":
                rank_zero_warn(f"--ckpt_path last: no {' or '.join(candidates)} yet; training from scratch")
                config["ckpt_path"] = None
            else:
                raise FileNotFoundError(f"--ckpt_path last: no {' or '.join(candidates) or 'last.ckpt'}")

        def before_fit(self) -> None:
            self._resolve_ckpt_path()

        def before_validate(self) -> None:
            self._resolve_ckpt_path()

        def before_test(self) -> None:
            self._resolve_ckpt_path()

        def before_predict(self) -> None:
            self._resolve_ckpt_path()

    return _LinzooCLI


def __getattr__(name: str) -> Any:  # ``LinzooCLI`` is built on first use: importing Lightning takes seconds
    if name == "LinzooCLI":
        return _lightning_cli_class()
    raise AttributeError(name)


def run_lightning(args: list[str] | None, run: bool = True) -> Any:
    """Run ``LinzooCLI`` on ``args`` (``["fit", "-c", "cfg.yaml", ...]``; None: ``sys.argv[1:]``)."""
    from lightning.pytorch import LightningDataModule, LightningModule

    import linzoo.vision  # noqa: F401  (registers linzoo's models with timm)

    from . import classification, data, detection  # noqa: F401  (short class names resolve in YAML)

    cli_class = _lightning_cli_class()
    return cli_class(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={"parser_mode": "omegaconf"},
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        auto_configure_optimizers=False,
        trainer_defaults={"default_root_dir": "runs/default"},
        args=args,
        run=run,
    )


# ----------------------------------------------------------------------------------------------------------
# linzoo models
# ----------------------------------------------------------------------------------------------------------


def _published_top1(name: str, pretrained_cfg: dict[str, Any]) -> float | None:
    from linzoo.weights import get_checkpoint

    ckpt = get_checkpoint(name)
    if ckpt is not None and ckpt.top1 is not None:
        return float(ckpt.top1)
    notes = pretrained_cfg.get("notes") or ()
    for note in (notes,) if isinstance(notes, str) else notes:
        match = re.search(r"top-?1\D{0,12}?(\d{2}\.\d+)", str(note))
        if match:
            return float(match.group(1))
    return None


def _count_flops(model: Any, x: Any) -> tuple[float, list[str]]:
    """FLOPs of ``model(x)`` with torch's FlopCounterMode, plus the custom ops it could not count."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    flop_registry = counter.flop_registry
    uncounted: set[str] = set()

    class _Uncounted(TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            if func.namespace not in ("aten", "prim", "prims") and func.overloadpacket not in flop_registry:
                uncounted.add(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), counter, _Uncounted():
        model(x)
    return float(counter.get_total_flops()), sorted(uncounted)


def model_stats(name: str, flops: bool = True, input_size: int | None = None) -> dict[str, Any]:
    """Params (M), GFLOPs for one image at the model's default input size, published top-1 of ``name``.

    The model is built on the ``meta`` device (no memory, no compute: FLOPs are a function of shapes); models
    whose forward needs real data (data-dependent control flow) are rebuilt on the CPU.
    """
    import timm
    import torch

    import linzoo.vision  # noqa: F401

    out: dict[str, Any] = {"name": name, "gflops": None, "uncounted": [], "error": None}
    with torch.device("meta"):
        model = timm.create_model(name)
    cfg = dict(model.pretrained_cfg or {})
    out["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
    out["top1"] = _published_top1(name, cfg)
    c, h, w = cfg.get("input_size", (3, 224, 224))
    if input_size is not None:
        h = w = input_size
    out["input"] = f"{h}x{w}"
    if flops:
        model.eval()
        try:
            total, out["uncounted"] = _count_flops(model, torch.empty(1, c, h, w, device="meta"))
        except Exception:  # data-dependent ops cannot run on meta tensors: count a real forward
            del model
            model = timm.create_model(name).eval()
            try:
                total, out["uncounted"] = _count_flops(model, torch.randn(1, c, h, w))
            except Exception as err:  # report, keep listing the other models
                total, out["error"] = None, f"{type(err).__name__}: {err}"
        out["gflops"] = None if total is None else total / 2e9  # multiply-add = 2 FLOPs; report GMACs like papers
    del model
    return out


def models_command(argv: list[str]) -> int:
    """``linzoo models [PATTERN] [--no-flops] [--input-size N]``"""
    parser = argparse.ArgumentParser(prog="linzoo models", description="List linzoo's registered models.")
    parser.add_argument(
        "pattern", nargs="?", default="", help="fnmatch filter ('ravlt_*'); a bare word matches anywhere"
    )
    parser.add_argument("--no-flops", action="store_true", help="skip the GFLOPs column (fast)")
    parser.add_argument("--input-size", type=int, default=None, help="count GFLOPs at this square size")
    args = parser.parse_args(argv)

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    import linzoo.vision  # noqa: F401
    from linzoo.vision._builder import list_linzoo_models

    pattern = args.pattern
    if pattern and not any(ch in pattern for ch in "*?["):
        pattern = f"*{pattern}*"
    names = list_linzoo_models(pattern)
    console = Console()
    if not names:
        console.print(f"no linzoo model matches {args.pattern!r} (registered: {', '.join(list_linzoo_models())})")
        return 1
    rows = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("building", total=len(names))
        for name in names:
            progress.update(task, description=f"building {name}")
            rows.append(model_stats(name, flops=not args.no_flops, input_size=args.input_size))
            progress.advance(task)

    table = Table(title=f"linzoo models ({len(rows)})")
    table.add_column("model", style="bold")
    table.add_column("params (M)", justify="right")
    if not args.no_flops:
        table.add_column("GFLOPs", justify="right")
        table.add_column("input", justify="right")
    table.add_column("top-1 (%)", justify="right")
    uncounted: set[str] = set()
    errors = []
    for r in rows:
        cells = [r["name"], f"{r['params_m']:.2f}"]
        if not args.no_flops:
            g = "error" if r["error"] else f"{r['gflops']:.2f}" + ("*" if r["uncounted"] else "")
            cells += [g, r["input"]]
            uncounted.update(r["uncounted"])
            if r["error"]:
                errors.append(f"{r['name']}: {r['error']}")
        cells.append("-" if r["top1"] is None else f"{r['top1']:.1f}")
        table.add_row(*cells)
    console.print(table)
    if not args.no_flops:
        console.print("GFLOPs = multiply-accumulates (GMACs, as papers report) for one image, torch FlopCounterMode.")
    if uncounted:
        ops = ", ".join(sorted(uncounted))
        console.print(f"* lower bound: custom ops without a FLOP formula were not counted: {ops}")
    for line in errors:
        console.print(f"[red]{line}[/red]")
    return 0


# ----------------------------------------------------------------------------------------------------------
# linzoo convert
# ----------------------------------------------------------------------------------------------------------


def convert_command(argv: list[str]) -> int:
    """``linzoo convert MODEL CKPT OUT_DIR [--state-dict-key KEY] [--num-classes N]``"""
    parser = argparse.ArgumentParser(
        prog="linzoo convert",
        description="Convert an official checkpoint into linzoo's layout: OUT_DIR/model.safetensors + config.json.",
    )
    parser.add_argument("model", help="linzoo model name, e.g. ravlt_s")
    parser.add_argument("checkpoint", help="the official checkpoint file")
    parser.add_argument("out_dir", help="output folder")
    parser.add_argument("--state-dict-key", default=None, help="top-level key holding the weights (default: registry)")
    parser.add_argument("--num-classes", type=int, default=None, help="classifier size (default: from the checkpoint)")
    args = parser.parse_args(argv)

    import timm
    import torch

    import linzoo.vision  # noqa: F401
    from linzoo.vision._builder import is_linzoo_model
    from linzoo.weights import convert_checkpoint, get_checkpoint, load_state_dict_file

    from .classification import _check_model_name

    _check_model_name(args.model)
    if not is_linzoo_model(args.model):
        raise ValueError(f"{args.model!r} is a timm model, not a linzoo one: timm loads its own weights")
    key = args.state_dict_key
    if key is None:
        ckpt = get_checkpoint(args.model)
        key = ckpt.state_dict_key if ckpt is not None else None
    family = importlib.import_module(timm.models.model_entrypoint(args.model).__module__)
    filter_fn = getattr(family, "checkpoint_filter_fn", None)
    num_classes = args.num_classes
    if num_classes is None:
        num_classes = _num_classes_of(load_state_dict_file(args.checkpoint, key), args.model)
    with torch.device("cpu"):
        model = timm.create_model(args.model, num_classes=num_classes)
    config = dict(model.pretrained_cfg or {})
    config.update(architecture=args.model, num_classes=num_classes, source_checkpoint=os.path.abspath(args.checkpoint))
    path = convert_checkpoint(
        model, args.checkpoint, args.out_dir, filter_fn=filter_fn, state_dict_key=key, config=config
    )
    print(f"wrote {path} and {path.parent / 'config.json'}")
    overlay = f"pretrained_cfg_overlay=dict(file={str(path)!r})"
    print(f"load with: timm.create_model({args.model!r}, pretrained=True, {overlay})")
    return 0


def _num_classes_of(state_dict: dict[str, Any], model_name: str) -> int | None:
    """The classifier size stored in ``state_dict`` (via the model's ``classifier`` cfg), or None."""
    import timm

    cfg = timm.models.get_pretrained_cfg(model_name)
    classifier = (cfg.classifier if cfg is not None else None) or "head"
    for head in (classifier,) if isinstance(classifier, str) else classifier:
        for suffix in (".weight", ".fc.weight"):
            weight = state_dict.get(head + suffix)
            if weight is not None:
                return int(weight.shape[0])
    return None


if __name__ == "__main__":
    sys.exit(main())
