"""COCO detection in the trainer: data conversion, a short fit that learns and logs COCO mAP, exact resume, errors.

Everything runs offline on a synthetic COCO-layout dataset (coloured rectangles) written to ``tmp_path`` and a
0.2 M-parameter RAVLT (the ravlt_t architecture with tiny widths) under Faster R-CNN + FPN.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from linzoo.train.cli import main
from linzoo.train.detection import (
    CocoDetectionDataModule,
    CocoDetectionDataset,
    DetectionModule,
    collate_detection,
    create_detector,
    write_synthetic_coco,
)

TINY_BACKBONE = {"embed_dims": [16, 32, 64, 64], "depths": [1, 1, 1, 1], "num_heads": [1, 1, 2, 2]}
TINY_MODEL = {
    "backbone": "ravlt_t",
    "num_classes": 3,
    "backbone_kwargs": TINY_BACKBONE,
    "fpn_channels": 32,
    "representation_size": 64,
    "min_size": 64,
    "max_size": 64,
}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic_coco(tmp_path_factory.mktemp("coco"), num_train=12, num_val=4, image_size=64, seed=1)


def _config(
    path: Path,
    root: Path,
    *,
    model: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    trainer: dict[str, Any] | None = None,
    checkpoint: dict[str, Any] | None = None,
) -> Path:
    config = {
        "seed_everything": 5,
        "model": {
            "class_path": "linzoo.train.detection.DetectionModule",
            "init_args": {**TINY_MODEL, "lr": 2e-3, "warmup_steps": 2, "weight_decay": 0.0, **(model or {})},
        },
        "data": {
            "class_path": "linzoo.train.detection.CocoDetectionDataModule",
            "init_args": {"root": str(root), "batch_size": 4, "num_workers": 0, **(data or {})},
        },
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "num_sanity_val_steps": 0,
            "log_every_n_steps": 1,
            "enable_model_summary": False,
            "enable_progress_bar": False,
            **(trainer or {}),
        },
        "checkpoint": {"every_n_train_steps": 2, **(checkpoint or {})},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_dataset_converts_coco_boxes(coco_root: Path) -> None:
    ann = json.loads((coco_root / "annotations" / "instances_val.json").read_text())
    cat_ids = [c["id"] for c in ann["categories"]]
    assert cat_ids == [1, 3, 7]  # sparse ids -> labels 1..3
    val = CocoDetectionDataset(
        coco_root / "val", coco_root / "annotations" / "instances_val.json", cat_ids, train=False
    )
    assert len(val) == 4  # evaluation keeps every image
    image, target = val[1]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32 and 0.0 <= image.min() <= image.max() <= 1.0
    anns = [a for a in ann["annotations"] if a["image_id"] == int(target["image_id"])]
    expected = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                             for a in anns], dtype=torch.float32)  # fmt: skip
    torch.testing.assert_close(target["boxes"], expected)  # xywh -> xyxy
    assert target["labels"].tolist() == [cat_ids.index(a["category_id"]) + 1 for a in anns]
    assert target["iscrowd"].tolist() == [a["iscrowd"] for a in anns] and 1 in target["iscrowd"].tolist()

    train_ann = coco_root / "annotations" / "instances_train.json"
    train = CocoDetectionDataset(coco_root / "train", train_ann, cat_ids, train=True, hflip=1.0)
    assert len(train) == 11  # the image without objects is skipped
    image, target = train[(0, 123)]
    plain = CocoDetectionDataset(coco_root / "train", train_ann, cat_ids, train=True)
    image0, target0 = plain[0]
    torch.testing.assert_close(image, image0.flip(-1))
    flipped = target0["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1.0, 1.0, -1.0, 1.0]) + torch.tensor([64.0, 0, 64, 0])
    torch.testing.assert_close(target["boxes"], flipped)
    assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()
    images, targets = collate_detection([train[0], train[1]])
    assert len(images) == len(targets) == 2


@pytest.mark.parametrize("detector", ["fasterrcnn", "retinanet"])
def test_detector_trains_and_predicts(detector: str, coco_root: Path) -> None:
    module = DetectionModule(**TINY_MODEL, detector=detector)
    data = CocoDetectionDataModule(root=str(coco_root), batch_size=2, num_workers=0)
    data.setup()
    assert data.classes == ["red", "green", "blue"] and data.num_classes == 3
    images, targets = collate_detection([data.train_set[i] for i in range(2)])
    module.train()
    losses = module(images, targets)
    assert all(torch.isfinite(v) for v in losses.values()) and len(losses) >= 2
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in module.model.backbone.body.parameters() if p.requires_grad)
    module.eval()
    with torch.no_grad():
        preds = module([images[0]])
    assert preds[0]["boxes"].shape[-1] == 4 and bool(((preds[0]["labels"] >= 1) & (preds[0]["labels"] <= 3)).all())


def test_fit_learns_and_logs_map(tmp_path: Path, coco_root: Path) -> None:
    run = tmp_path / "run"
    cfg = _config(tmp_path / "fit.yaml", coco_root, trainer={"max_epochs": 6, "check_val_every_n_epoch": 3})
    main(["fit", "-c", str(cfg), "--trainer.default_root_dir", str(run)])
    rows = _rows(run)
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    assert len(losses) == 12  # 11 images with boxes // batch 4 = 2 steps per epoch
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    maps = [float(r["val/map"]) for r in rows if r.get("val/map")]
    map50 = [float(r["val/map_50"]) for r in rows if r.get("val/map_50")]
    assert len(maps) == len(map50) == 2 and all(0.0 <= m <= 1.0 for m in maps + map50)
    assert [r["train/loss_objectness"] for r in rows if r.get("train/loss_objectness")]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 12 and ckpt["hyper_parameters"]["backbone"] == "ravlt_t"


def test_resume_matches_uninterrupted_run(tmp_path: Path, coco_root: Path) -> None:
    """Resume at step 2 (mid-epoch: 5 batches of 2) with ``--ckpt_path last``; end equal to a 4-step run."""
    cfg = _config(
        tmp_path / "resume.yaml",
        coco_root,
        model={"backbone_kwargs": {**TINY_BACKBONE, "drop_path_rate": 0.1}, "min_size": [48, 64]},
        data={"batch_size": 2},
        trainer={"max_steps": 4, "limit_val_batches": 0},
        checkpoint={"save_top_k": -1, "filename": "{step}"},
    )
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    main(["fit", "-c", str(cfg), "--trainer.default_root_dir", str(reference)])
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copy(reference / "checkpoints" / "step=2.ckpt", resumed / "checkpoints" / "last.ckpt")
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    main(["fit", "-c", str(cfg), "--trainer.default_root_dir", str(resumed), "--ckpt_path", "last"])
    a = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 4
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    lr_a = [g["lr"] for g in a["optimizer_states"][0]["param_groups"]]
    lr_b = [g["lr"] for g in b["optimizer_states"][0]["param_groups"]]
    assert lr_a == pytest.approx(lr_b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0}, "num_classes must be >= 1"),
        ({"detector": "yolo"}, "detector must be 'fasterrcnn' or 'retinanet'"),
        ({"backbone": "ravlt_tt"}, r"model_name='ravlt_tt'.*closest registered names: .*ravlt_t"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"scheduler": "linear"}, "scheduler must be"),
        ({"decay_milestones": (11, 8)}, "decay_milestones must be increasing"),
        ({"min_size": 800, "max_size": 64}, "min_size must be"),
        (
            {"backbone": "inline_deit_t", "backbone_kwargs": {}, "out_indices": (9, 10, 11)},
            r"out_indices=\[9, 10, 11\].*strictly increasing",
        ),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DetectionModule(**{**TINY_MODEL, **kwargs})


def test_data_errors_name_the_layout(tmp_path: Path, coco_root: Path) -> None:
    with pytest.raises(ValueError, match="data.root is not set"):
        CocoDetectionDataModule().setup()
    with pytest.raises(FileNotFoundError, match=r"no image folder .*train.*ROOT/annotations/instances_train.json"):
        CocoDetectionDataModule(root=str(tmp_path / "nothing")).setup()
    with pytest.raises(ValueError, match="data.hflip"):
        CocoDetectionDataModule(root=str(coco_root), hflip=2.0)
    with pytest.raises(ValueError, match="data.batch_size"):
        CocoDetectionDataModule(root=str(coco_root), batch_size=0)
    with pytest.raises(ValueError, match="larger than the 11 training images"):
        CocoDetectionDataModule(root=str(coco_root), batch_size=12).setup()


def test_num_classes_mismatch(tmp_path: Path, coco_root: Path) -> None:
    cfg = _config(tmp_path / "bad.yaml", coco_root, model={"num_classes": 5}, trainer={"max_steps": 1})
    with pytest.raises(ValueError, match=r"model.num_classes=5 but .* has 3 categories"):
        main(["fit", "-c", str(cfg), "--trainer.default_root_dir", str(tmp_path / "run")])


def test_create_detector_anchor_sizes() -> None:
    model = create_detector("ravlt_t", 3, backbone_kwargs=TINY_BACKBONE, fpn_channels=16, representation_size=16)
    # MMDetection's RPN anchors: 8 x stride on P2..P6
    assert [s[0] for s in model.rpn.anchor_generator.sizes] == [32, 64, 128, 256, 512]
    retina = create_detector("ravlt_t", 3, detector="retinanet", backbone_kwargs=TINY_BACKBONE, fpn_channels=16)
    assert [round(s[0]) for s in retina.anchor_generator.sizes] == [32, 64, 128, 256, 512]  # 4 x stride, P3..P7


@pytest.mark.slow
def test_ddp_validation_map_equals_single_process(tmp_path: Path, coco_root: Path, linzoo_cli) -> None:
    """Validation sharded over two gloo processes reports the single-process COCO mAP (torchmetrics sync)."""
    model = {"detector_kwargs": {"box_score_thresh": 0.0}}  # random weights: keep low-score boxes, mAP > 0
    single = _config(tmp_path / "single.yaml", coco_root, model=model)
    ddp = _config(tmp_path / "ddp.yaml", coco_root, model=model, trainer={"devices": 2, "strategy": "ddp"})
    maps = []
    for cfg, run in ((single, tmp_path / "single"), (ddp, tmp_path / "ddp")):
        proc = linzoo_cli.run("validate", "-c", cfg, "--trainer.default_root_dir", run, cwd=tmp_path)
        maps.append([float(r["val/map"]) for r in _rows(run) if r.get("val/map")])
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    assert len(maps[0]) == len(maps[1]) == 1 and maps[0][0] > 0
    assert maps[1][0] == pytest.approx(maps[0][0], abs=1e-6)
