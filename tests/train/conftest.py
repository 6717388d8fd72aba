"""Helpers for the trainer tests: a tiny config (timm's ``test_vit`` on 16x16 digits) and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def tiny_config(
    path: Path,
    *,
    model: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> Path:
    """Write a small ``linzoo fit`` config: a 0.3 M-parameter ViT on 16x16 digits, a few steps."""
    config = {
        "seed_everything": 3,
        "model": {
            "class_path": "linzoo.train.classification.ClassificationModule",
            "init_args": {
                "model_name": "test_vit",
                "num_classes": 10,
                "model_kwargs": {"img_size": 16, "patch_size": 4},
                "lr": 2e-3,
                "warmup_epochs": 0.5,
                **(model or {}),
            },
        },
        "data": {
            "class_path": "linzoo.train.data.DigitsDataModule",
            "init_args": {"batch_size": 32, "input_size": 16, **(data or {})},
        },
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": 1,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
            "enable_model_summary": False,
            **(trainer or {}),
        },
        "checkpoint": {"every_n_train_steps": 3, **(checkpoint or {})},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "linzoo.train.cli", *map(str, args)]


def cli_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("PL_GLOBAL_SEED", None)
    return env


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m linzoo.train.cli ARGS`` in a fresh process (single-threaded: reproducible sums)."""
    proc = subprocess.run(cli_command(*args), cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        command = " ".join(map(str, args))
        raise AssertionError(
            f"linzoo {command} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


@pytest.fixture
def config_factory(tmp_path: Path):
    def make(name: str = "config.yaml", **kwargs: Any) -> Path:
        return tiny_config(tmp_path / name, **kwargs)

    return make


@pytest.fixture
def linzoo_cli() -> SimpleNamespace:
    """``.run(*args, cwd=...)`` (a checked subprocess), ``.command(*args)`` and ``.env()`` for Popen."""
    return SimpleNamespace(run=run_cli, command=cli_command, env=cli_env)
