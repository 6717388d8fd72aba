"""``--trainer.strategy ddp`` with two gloo processes on CPU equals one process with the same global batch.

Two processes with 16 images each see, step by step, the same 32 images as one process with 32 (rank r takes
positions r, r+2, ... of the epoch's permutation and every image's augmentation is seeded by its index);
DDP averages the two mean-loss gradients, which is the gradient of the 32-image mean. The model has no
BatchNorm (per-process statistics would differ) and no dropout.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

STEPS = 6


def _val_top1(run: Path) -> float:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["val/top1"]) for r in csv.DictReader(f) if r.get("val/top1")][-1]


@pytest.mark.slow
def test_two_process_ddp_equals_one_process(tmp_path: Path, config_factory, linzoo_cli) -> None:
    trainer = {"max_epochs": 1, "limit_train_batches": STEPS, "enable_progress_bar": False}
    keep = {"every_n_train_steps": 3, "save_top_k": -1, "filename": "{step}"}
    single = config_factory("single.yaml", data={"batch_size": 32}, trainer=trainer, checkpoint=keep)
    ddp = config_factory(
        "ddp.yaml", data={"batch_size": 16}, trainer={**trainer, "devices": 2, "strategy": "ddp"}, checkpoint=keep
    )
    linzoo_cli.run("fit", "-c", single, "--trainer.default_root_dir", tmp_path / "single", cwd=tmp_path)
    proc = linzoo_cli.run("fit", "-c", ddp, "--trainer.default_root_dir", tmp_path / "ddp", cwd=tmp_path)
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr

    for name in ("step=3.ckpt", "last.ckpt"):
        a = torch.load(tmp_path / "single" / "checkpoints" / name, weights_only=True)
        b = torch.load(tmp_path / "ddp" / "checkpoints" / name, weights_only=True)
        assert a["global_step"] == b["global_step"]
        for key, value in a["state_dict"].items():
            torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-4, atol=2e-5, msg=key)
    assert a["global_step"] == STEPS
    # the weights did move between step 3 and step 6, so the equality above is not trivial
    mid = torch.load(tmp_path / "single" / "checkpoints" / "step=3.ckpt", weights_only=True)["state_dict"]
    assert max((a["state_dict"][k] - mid[k]).abs().max().item() for k in mid) > 1e-3
    # validation is sharded over the two processes and its accuracy reduced across them
    assert _val_top1(tmp_path / "ddp") == pytest.approx(_val_top1(tmp_path / "single"), abs=1e-6)
