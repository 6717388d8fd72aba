"""The ``linzoo`` command line: help, fit/validate on the digits, models, convert, clear errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from linzoo.train.cli import SUBCOMMANDS, main, register_subcommand


def test_help_lists_every_subcommand(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "predict", *SUBCOMMANDS):
        assert f"  {name} " in out


def test_unknown_command_is_an_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["fitt"]) == 2
    assert "unknown command 'fitt'" in capsys.readouterr().err


def test_registered_subcommand_runs(capsys: pytest.CaptureFixture) -> None:
    register_subcommand("echo-test", "prints its arguments", "builtins:print")
    try:
        assert main(["echo-test", "a", "b"]) == 0
        assert "['a', 'b']" in capsys.readouterr().out
        with pytest.raises(ValueError, match="taken by Lightning"):
            register_subcommand("fit", "x", "builtins:print")
    finally:
        SUBCOMMANDS.pop("echo-test", None)


@pytest.mark.slow
def test_fit_then_validate_on_digits(tmp_path: Path, config_factory) -> None:
    cfg = config_factory(
        trainer={"max_epochs": 2, "limit_train_batches": 5, "limit_val_batches": 3}, model={"ema_decay": 0.9}
    )
    run = tmp_path / "run"
    main(["fit", "-c", str(cfg), "--trainer.default_root_dir", str(run)])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)  # plain containers only
    assert ckpt["global_step"] == 10
    assert ckpt["hyper_parameters"]["model_name"] == "test_vit"
    assert any(k.startswith("model_ema.") for k in ckpt["state_dict"])
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    top1 = [float(r["val/top1"]) for r in rows if r.get("val/top1")]
    assert len(top1) == 2 and all(0.0 <= v <= 1.0 for v in top1)
    assert any(r.get("val/top1_ema") for r in rows)
    assert [r["train/lr"] for r in rows if r.get("train/lr")], "the learning rate is not logged"
    assert (run / "config.yaml").is_file()
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    png = run / "curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    main(["validate", "-c", str(cfg), "--trainer.default_root_dir", str(run), "--ckpt_path", "last"])
    with open(run / "metrics.csv", newline="") as f:
        assert any(r.get("val/top1") for r in list(csv.DictReader(f))[len(rows) :])


def test_models_command_lists_ravlt(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "ravlt", "--no-flops"]) == 0
    out = capsys.readouterr().out
    for name in ("ravlt_t", "ravlt_s", "ravlt_b", "ravlt_l"):
        assert name in out
    assert "84.4" in out  # RAVLT-S's published top-1, from the weights registry


def test_models_command_counts_flops(capsys: pytest.CaptureFixture) -> None:
    from linzoo.train.cli import model_stats

    stats = model_stats("ravlt_t")
    assert 13.0 < stats["params_m"] < 16.0  # 14.9 M with the 1000-class head (vision_a.md §1.1)
    assert stats["error"] is None and 1.5 < stats["gflops"] < 3.5  # README: 2.4 G
    assert main(["models", "ravlt_t"]) == 0
    assert "GFLOPs" in capsys.readouterr().out


def test_models_command_no_match(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "no_such_model_xyz", "--no-flops"]) == 1


def test_convert_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import timm
    from safetensors.torch import load_file

    import linzoo.vision  # noqa: F401
    from linzoo.weights import StateDictMismatchError

    with torch.device("cpu"):
        ref = timm.create_model("ravlt_t", num_classes=10)
    official = tmp_path / "RAVLT_T.pth"
    torch.save({"model": ref.state_dict(), "epoch": 3}, official)
    out = tmp_path / "converted"
    assert main(["convert", "ravlt_t", str(official), str(out)]) == 0
    assert "model.safetensors" in capsys.readouterr().out
    tensors = load_file(out / "model.safetensors")
    assert tensors["head.weight"].shape[0] == 10  # num_classes taken from the checkpoint
    torch.testing.assert_close(tensors["head.weight"], ref.state_dict()["head.weight"])
    assert (out / "config.json").is_file()

    broken = ref.state_dict()
    del broken["head.bias"]
    torch.save({"model": broken}, tmp_path / "broken.pth")
    with pytest.raises(StateDictMismatchError, match="missing .*head.bias"):
        main(["convert", "ravlt_t", str(tmp_path / "broken.pth"), str(tmp_path / "bad")])


def test_unknown_model_name_lists_closest() -> None:
    from linzoo.train.classification import ClassificationModule

    with pytest.raises(ValueError, match=r"ravlt_tt.*closest registered names: .*ravlt_t"):
        ClassificationModule(model_name="ravlt_tt", num_classes=10)


def test_missing_data_root_names_the_layout(tmp_path: Path) -> None:
    from linzoo.train.data import ImageFolderDataModule

    with pytest.raises(ValueError, match="data.root is not set"):
        ImageFolderDataModule()
    with pytest.raises(FileNotFoundError, match=r"has no folder 'train'.*ROOT/train/<class>/<image>"):
        ImageFolderDataModule(root=str(tmp_path / "imagenet"))
    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    (tmp_path / "imagenet" / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="no class sub-folders"):
        ImageFolderDataModule(root=str(tmp_path / "imagenet"))


def test_scheduler_needs_a_finite_run() -> None:
    """An unbounded run (no max_epochs, no max_steps) with a schedule is a clear error, not an OverflowError."""
    from types import SimpleNamespace

    from linzoo.train.classification import ClassificationModule

    module = ClassificationModule(model_name="ravlt_t", num_classes=3, scheduler="cosine")
    module._trainer = SimpleNamespace(estimated_stepping_batches=float("inf"))
    with pytest.raises(ValueError, match="max_epochs or trainer.max_steps"):
        module.configure_optimizers()
