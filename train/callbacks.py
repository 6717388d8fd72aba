"""Callbacks of the ``linzoo`` trainer: resumable checkpoints and learning-curve plots."""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["AppendingCSVLogger", "LearningCurves", "LinzooCheckpoint", "plot_curves"]


class AppendingCSVLogger(CSVLogger):
    """A ``CSVLogger`` that continues an existing ``metrics.csv`` instead of deleting it.

    Lightning's CSV writer deletes ``metrics.csv`` when it finds one, so a resumed run (or ``linzoo validate``
    in the run directory) would lose the run's history. Here the existing rows are read first and written
    back under a header that also has the earlier columns; new rows are appended to them.
    """

    @property
    def experiment(self) -> Any:
        old_rows: list[dict[str, str]] | None = None
        path = Path(self.log_dir) / "metrics.csv"
        if self._experiment is None and rank_zero_only.rank == 0 and path.is_file():
            with open(path, newline="") as f:
                old_rows = list(csv.DictReader(f))
        writer = super().experiment
        if old_rows is not None:
            keys = sorted(set(writer.metrics_keys).union(*old_rows))
            with open(path, "w", newline="") as f:
                out = csv.DictWriter(f, fieldnames=keys)
                out.writeheader()
                out.writerows(old_rows)
            writer.metrics_keys = keys
        return writer


class LinzooCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` optimizer steps and at the end of every epoch.

    A :class:`~lightning.pytorch.callbacks.ModelCheckpoint` with resume-friendly defaults:

    - ``dirpath`` defaults to ``<trainer.default_root_dir>/checkpoints`` (fixed, not per logger version), so
      ``--ckpt_path last`` finds the file again in a new process;
    - ``last.ckpt`` is always overwritten (no ``last-v1.ckpt``) and is written atomically (a temporary file
      renamed over the old one), so a run killed while saving still has a complete ``last.ckpt``;
    - ``save_top_k=0`` by default: only ``last.ckpt``; add a second ``ModelCheckpoint`` with a ``monitor``
      (the configs keep the best ``val/top1``) or set ``save_top_k=-1`` to keep every step checkpoint.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str | None = "{epoch}-{step}",
        every_n_train_steps: int | None = 500,
        save_last: bool = True,
        save_top_k: int = 0,
        monitor: str | None = None,
        mode: str = "min",
        save_weights_only: bool = False,
        verbose: bool = False,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            verbose=verbose,
            save_last=save_last,
            save_top_k=save_top_k,
            save_weights_only=save_weights_only,
            mode=mode,
            every_n_train_steps=every_n_train_steps or None,
            enable_version_counter=False,
        )

    def set_default_dirpath(self, root: str | os.PathLike) -> None:
        """Use ``<root>/checkpoints`` unless a ``dirpath`` was given."""
        if self.dirpath is None:
            self.dirpath = os.path.realpath(os.path.join(os.path.expanduser(os.fspath(root)), "checkpoints"))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        if not _is_local_file_protocol(filepath):
            super()._save_checkpoint(trainer, filepath)
            return
        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)
        if trainer.is_global_zero and os.path.isfile(tmp):
            os.replace(tmp, filepath)
        trainer.strategy.barrier("LinzooCheckpoint.replace")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)


def _read_metrics(path: Path) -> list[dict[str, float]]:
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                if key and value not in (None, ""):
                    try:
                        parsed[key] = float(value)
                    except ValueError:
                        continue
            rows.append(parsed)
    return rows


class LearningCurves(Callback):
    """At the end of ``fit``, plot the CSV logger's loss and accuracy curves to ``<log_dir>/<filename>``.

    Left panel: every logged ``*loss*`` series against the optimizer step; right panel: every ``*top1*`` /
    ``*top5*`` / ``*acc*`` series. Resumed runs are stitched: rows written before this ``fit`` started are kept
    up to the step it resumed from and replaced by the new rows after it. Needs a ``CSVLogger``
    (the ``linzoo`` CLI adds one); does nothing otherwise.
    """

    def __init__(self, filename: str = "curves.png", enabled: bool = True) -> None:
        self.filename = filename
        self.enabled = enabled
        self._old_rows = 0
        self._start_step = 0
        self.path: Path | None = None

    @staticmethod
    def _csv_logger(trainer: pl.Trainer) -> CSVLogger | None:
        return next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = self._csv_logger(trainer)
        self._start_step = trainer.global_step
        self._old_rows = 0
        if logger is not None:
            path = Path(logger.log_dir) / "metrics.csv"
            self._old_rows = len(_read_metrics(path)) if path.is_file() else 0

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = self._csv_logger(trainer)
        if not self.enabled or logger is None:
            return
        logger.save()
        metrics = Path(logger.log_dir) / "metrics.csv"
        if not metrics.is_file():
            return
        self.path = plot_curves(metrics, Path(logger.log_dir) / self.filename, self._old_rows, self._start_step)


def plot_curves(
    metrics_csv: str | os.PathLike, out: str | os.PathLike, old_rows: int = 0, resumed_from: int = 0
) -> Path | None:
    """Plot loss and accuracy series of a Lightning ``metrics.csv`` into a PNG; returns its path (None: nothing)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = _read_metrics(Path(metrics_csv))
    # rows of earlier runs: keep those before the step this run resumed from (none for a fresh run)
    kept = [r for r in rows[:old_rows] if resumed_from > 0 and r.get("step", math.inf) <= resumed_from]
    series: dict[str, dict[float, float]] = defaultdict(dict)
    for row in kept + rows[old_rows:]:
        step = row.get("step")
        if step is None:
            continue
        for key, value in row.items():
            if key not in ("step", "epoch"):
                series[key][step] = value  # later rows win (a resumed run re-logs the same steps)
    panels = {
        "loss": sorted(k for k in series if "loss" in k),
        "accuracy": sorted(k for k in series if any(t in k for t in ("top1", "top5", "acc"))),
    }
    panels = {k: v for k, v in panels.items() if v}
    if not panels:
        return None
    fig = Figure(figsize=(6 * len(panels), 4.2), dpi=110)
    FigureCanvasAgg(fig)
    for i, (title, keys) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key in keys:
            points = sorted(series[key].items())
            style = "-" if len(points) > 30 else "-o"
            ax.plot([p[0] for p in points], [p[1] for p in points], style, label=key, markersize=3, linewidth=1.2)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
