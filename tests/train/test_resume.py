"""A run killed with SIGKILL mid-epoch and resumed with ``--ckpt_path last`` ends exactly like an uninterrupted run.

Everything random is exercised: shuffling, RandomResizedCrop, drop-path, Mixup/CutMix, and the EMA weights,
lr schedule and optimizer state are compared too.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

STEPS_PER_EPOCH = 20
EPOCHS = 2


def _final_val_top1(run: Path) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(r["val/top1"]) for r in csv.DictReader(f) if r.get("val/top1")]


@pytest.mark.slow
def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path: Path, config_factory, linzoo_cli) -> None:
    cfg = config_factory(
        model={"drop_path_rate": 0.1, "mixup": 0.2, "cutmix": 0.2, "ema_decay": 0.9},
        data={"scale": [0.5, 1.0], "ratio": [0.75, 1.33]},  # random crops
        trainer={
            "max_epochs": EPOCHS,
            "limit_train_batches": STEPS_PER_EPOCH,
            "limit_val_batches": 3,
            "enable_progress_bar": False,
        },
        checkpoint={"every_n_train_steps": 3, "save_top_k": -1, "filename": "{step}"},
    )
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    linzoo_cli.run("fit", "-c", cfg, "--trainer.default_root_dir", reference, cwd=tmp_path)

    # Kill the second run once it has checkpointed at step 24 (mid-epoch 2: steps 21..40).
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(
        linzoo_cli.command("fit", "-c", cfg, "--trainer.default_root_dir", killed),
        cwd=tmp_path,
        env=linzoo_cli.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    marker = killed / "checkpoints" / "step=24.ckpt"
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if marker.exists():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    log.close()
    assert proc.returncode == -signal.SIGKILL, (
        f"the run was not killed mid-way (exit {proc.returncode}):\n{(tmp_path / 'killed.log').read_text()[-3000:]}"
    )
    last = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    step = last["global_step"]
    assert STEPS_PER_EPOCH < step < EPOCHS * STEPS_PER_EPOCH and step % STEPS_PER_EPOCH, f"not mid-epoch: {step}"
    assert last["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": step - STEPS_PER_EPOCH}
    ]

    linzoo_cli.run("fit", "-c", cfg, "--trainer.default_root_dir", killed, "--ckpt_path", "last", cwd=tmp_path)

    a = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == EPOCHS * STEPS_PER_EPOCH
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert any(k.startswith("model_ema.") for k in a["state_dict"])
    for key in a["state_dict"]:
        torch.testing.assert_close(b["state_dict"][key], a["state_dict"][key], rtol=1e-5, atol=1e-6, msg=key)
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for name in sa:
            torch.testing.assert_close(sb[name], sa[name], rtol=1e-5, atol=1e-7)
    assert [g["lr"] for g in a["optimizer_states"][0]["param_groups"]] == pytest.approx(
        [g["lr"] for g in b["optimizer_states"][0]["param_groups"]]
    )
    # the final validation (epoch 2) is the same; the killed run's log keeps its first epoch too
    assert _final_val_top1(killed)[-1] == pytest.approx(_final_val_top1(reference)[-1], abs=1e-6)
    assert len(_final_val_top1(killed)) >= EPOCHS
    assert (killed / "curves.png").is_file()
