"""LinFusion distillation (train/distill.py) on a tiny offline SD pipeline, the caption-folder data, the configs."""

from __future__ import annotations

import importlib
import inspect
import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from linzoo.configs import CONFIG_ROOT
from linzoo.diffusion import linearize, linfusion_state_dict
from linzoo.train.distill import ImageCaptionDataModule, ImageCaptionDataset, LinFusionDistillation

from .test_linfusion_pipelines import tiny_sd_pipeline, tiny_sdxl_pipeline


def _write_images(folder, n: int = 4, sidecar: bool = True) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        # smooth blobs (learnable structure rather than white noise), different aspect ratios
        h, w = 24 + 8 * (i % 2), 32
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([np.sin(xx / (3 + i) + c) * np.cos(yy / (4 + c)) for c in range(3)], -1)
        img = ((img + 1) * 127.5).clip(0, 255).astype(np.uint8) + rng.integers(0, 3, (h, w, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"img{i}.png")
        caption = f"a {'red blue green gray'.split()[i % 4]} pattern"
        if sidecar:
            (folder / f"img{i}.txt").write_text(caption)
        lines.append(json.dumps({"file_name": f"img{i}.png", "text": caption}))
    if not sidecar:
        (folder / "metadata.jsonl").write_text("\n".join(lines))


def test_image_caption_dataset(tmp_path):
    _write_images(tmp_path / "a", sidecar=True)
    ds = ImageCaptionDataset(tmp_path / "a", resolution=16, resize_mode="crop")
    item = ds[1]
    assert item["pixel_values"].shape == (3, 16, 16) and item["pixel_values"].abs().max() <= 1
    assert item["caption"] == "a blue pattern"
    assert item["original_size"].tolist() == [32, 32] and item["crop_top_left"].tolist() == [0, 0]
    assert ds[0]["original_size"].tolist() == [24, 32] and ds[0]["crop_top_left"].tolist() == [0, 2]
    assert ImageCaptionDataset(tmp_path / "a", resolution=16)[0]["pixel_values"].shape == (3, 16, 16)  # stretch
    _write_images(tmp_path / "b", sidecar=False)
    assert [c for _, c in ImageCaptionDataset(tmp_path / "b", resolution=16).items][2] == "a green pattern"
    (tmp_path / "c").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "c" / "x.png")
    with pytest.raises(ValueError, match="no caption file"):
        ImageCaptionDataset(tmp_path / "c", resolution=16)
    with pytest.raises(ValueError, match="not a folder"):
        ImageCaptionDataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="resize_mode"):
        ImageCaptionDataset(tmp_path / "a", resize_mode="pad")


class _LossLog(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})


@pytest.mark.slow
def test_distillation_loss_falls_and_exports_official_layout(tmp_path):
    pipe = tiny_sd_pipeline(seed=0)
    pipe.save_pretrained(tmp_path / "pipe")
    _write_images(tmp_path / "data")
    # A random tiny teacher has no noise-prediction skill to distil, so the test trains on the distillation terms
    # (L_kd, L_feat) from default-initialised projections, which start far from the teacher.
    module = LinFusionDistillation(
        str(tmp_path / "pipe"), zero_init=False, noise_weight=0.0, lr=3e-3, export_dir=str(tmp_path / "export")
    )
    trainable = {n for n, p in module.unet.named_parameters() if p.requires_grad}
    assert trainable and all(".attn1." in n for n in trainable)  # official: the replaced layers only
    assert any(".to_q_." in n for n in trainable) and any(".to_v." in n for n in trainable)
    teacher_before = {k: v.clone() for k, v in module.teacher.state_dict().items()}

    data = ImageCaptionDataModule(str(tmp_path / "data"), resolution=16, batch_size=4, num_workers=0)
    log = _LossLog()
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_steps=40,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[log],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=data)
    assert len(log.losses) == 40
    distill = [x["train/loss_kd"] + x["train/loss_feat"] for x in log.losses]
    distill = [x["train/loss"] for x in log.losses]
    assert np.mean(distill[-8:]) < 0.5 * np.mean(distill[:8]), distill
    assert all(x["train/loss_noise"] > 0 for x in log.losses)  # logged, weighted 0 here
    # the teacher stays frozen and untouched
    assert all(torch.equal(v, teacher_before[k]) for k, v in module.teacher.state_dict().items())
    # the learned weights come out in the official layout and load into a fresh pipeline
    fresh = tiny_sd_pipeline(seed=0)
    result = linearize(fresh, weights=str(tmp_path / "export"))
    assert result.num_replaced == module.linearized.num_replaced
    trained = linfusion_state_dict(module.unet)
    for key, value in linfusion_state_dict(fresh).items():
        torch.testing.assert_close(value, trained[key].half().float())
    # checkpoints keep the trainable weights only
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert set(ckpt["state_dict"]) == {f"unet.{n}" for n in trainable}


def test_distillation_options(tmp_path):
    pipe = tiny_sd_pipeline(seed=0)
    pipe.save_pretrained(tmp_path / "pipe")
    proj = LinFusionDistillation(str(tmp_path / "pipe"), trainable="projections")
    names = {n for n, p in proj.unet.named_parameters() if p.requires_grad}
    assert names and all(".to_q_." in n or ".to_k_." in n for n in names)
    attn = LinFusionDistillation(str(tmp_path / "pipe"), trainable="attention")
    names = {n for n, p in attn.unet.named_parameters() if p.requires_grad}
    assert any(".attn2." in n for n in names) and not any(".resnets." in n for n in names)
    with pytest.raises(ValueError, match="trainable"):
        LinFusionDistillation(str(tmp_path / "pipe"), trainable="all")
    with pytest.raises(ValueError, match="frozen_dtype"):
        LinFusionDistillation(str(tmp_path / "pipe"), frozen_dtype="fp8")


def test_sdxl_distillation_step(tmp_path):
    """SDXL: two text encoders (penultimate hidden states concatenated, pooled embeds) and size conditioning."""
    tiny_sdxl_pipeline().save_pretrained(tmp_path / "pipe")
    _write_images(tmp_path / "data")
    module = LinFusionDistillation(str(tmp_path / "pipe"), mid_dim_scale=16, zero_init=False)
    assert module.is_sdxl and module.linearized.num_replaced == 11
    module.on_fit_start()
    data = ImageCaptionDataModule(
        str(tmp_path / "data"), resolution=16, resize_mode="crop", batch_size=2, num_workers=0
    )
    batch = next(iter(data.train_dataloader()))
    hidden, added = module.encode_prompts(list(batch["caption"]))
    assert hidden.shape == (2, 16, 16) and added["text_embeds"].shape == (2, 8)
    losses = module.compute_losses(batch)
    assert set(losses) == {"loss", "loss_noise", "loss_kd", "loss_feat"}
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_feat"] > 0
    losses["loss"].backward()
    grads = [p.grad for p in module.unet.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)


@pytest.mark.parametrize("name", ["linfusion_sd15", "linfusion_sd21", "linfusion_sdxl"])
def test_distill_configs_match_the_classes(name):
    config = yaml.safe_load((CONFIG_ROOT / "distill" / f"{name}.yaml").read_text())
    for section in ("model", "data"):
        module_name, _, class_name = config[section]["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        params = inspect.signature(cls.__init__).parameters
        unknown = set(config[section]["init_args"]) - set(params)
        assert not unknown, f"{name}: {section} init_args not accepted by {cls.__name__}: {unknown}"
    args = config["model"]["init_args"]
    assert (args.get("kd_weight", 0.5), args.get("feat_weight", 0.5), args.get("lr", 1e-4)) == (0.5, 0.5, 1e-4)
    assert args.get("mid_dim_scale") == (16 if name.endswith("sdxl") else None)


@pytest.mark.slow
def test_linzoo_fit_runs_the_shipped_config_and_resumes(tmp_path):
    """`linzoo fit -c configs/distill/linfusion_sd15.yaml` with the tiny pipeline, 2 steps, then resume to 3."""
    from linzoo.train.cli import run_lightning

    tiny_sd_pipeline().save_pretrained(tmp_path / "pipe")
    _write_images(tmp_path / "data")
    run = tmp_path / "run"
    args = [
        "-c",
        str(CONFIG_ROOT / "distill" / "linfusion_sd15.yaml"),
        f"--model.init_args.pretrained={tmp_path / 'pipe'}",
        f"--model.init_args.export_dir={run / 'linfusion'}",
        "--model.init_args.frozen_dtype=float32",
        f"--data.init_args.root={tmp_path / 'data'}",
        "--data.init_args.resolution=16",
        "--data.init_args.batch_size=2",
        "--data.init_args.num_workers=0",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        "--trainer.strategy=auto",
        "--trainer.precision=32-true",
        "--trainer.accumulate_grad_batches=1",
        "--trainer.enable_progress_bar=false",
        f"--trainer.default_root_dir={run}",
        "--checkpoint.every_n_train_steps=1",
    ]
    run_lightning(["fit", *args, "--trainer.max_steps=2"])
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert ckpt["global_step"] == 2
    assert ckpt["state_dict"] and all(".attn1." in k for k in ckpt["state_dict"])  # trainable weights only
    assert (run / "linfusion" / "config.json").is_file()
    cli = run_lightning(["fit", *args, "--trainer.max_steps=3", "--ckpt_path=last"])
    assert cli.trainer.global_step == 3
    resumed = linfusion_state_dict(cli.model.unet)
    assert all(torch.isfinite(v).all() for v in resumed.values())
