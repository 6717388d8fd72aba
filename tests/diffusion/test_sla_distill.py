"""SLA fine-tuning by distillation (train/distill.py ``SLADistillation``) on a tiny offline SD pipeline."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from linzoo.diffusion import linearize, sla_state_dict
from linzoo.diffusion.sla import SLA_WEIGHTS_FILE
from linzoo.train.distill import ImageCaptionDataModule, SLADistillation

from .test_linfusion_distill import _LossLog, _write_images
from .test_linfusion_pipelines import tiny_sd_pipeline

SLA = {"topk": 0.5, "block_q": 16, "block_k": 16}


@pytest.mark.slow
def test_sla_distillation_trains_proj_l_and_exports(tmp_path):
    tiny_sd_pipeline(seed=0).save_pretrained(tmp_path / "pipe")
    _write_images(tmp_path / "data")
    module = SLADistillation(str(tmp_path / "pipe"), **SLA, noise_weight=0.0, lr=3e-3, export_dir=str(tmp_path / "x"))
    assert module.hparams.topk == 0.5 and module.hparams.trainable == "attention"
    trainable = {n for n, p in module.unet.named_parameters() if p.requires_grad}
    assert trainable and all(".attn1." in n for n in trainable)
    data = ImageCaptionDataModule(str(tmp_path / "data"), resolution=32, batch_size=4, num_workers=0)
    log = _LossLog()
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_steps=30,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[log],
        default_root_dir=str(tmp_path),
    )
    trainer.fit(module, datamodule=data)
    feat = [x["train/loss_feat"] for x in log.losses]
    assert np.mean(feat[-6:]) < 0.7 * np.mean(feat[:6]), feat  # the student closes part of the gap to the teacher
    trained = sla_state_dict(module.unet)
    assert any(v.abs().sum() > 0 for v in trained.values())
    assert (tmp_path / "x" / SLA_WEIGHTS_FILE).is_file()
    fresh = tiny_sd_pipeline(seed=0)
    result = linearize(fresh, method="sla", weights=str(tmp_path / "x"), **SLA)
    assert result.num_replaced == module.linearized.num_replaced
    for key, value in sla_state_dict(fresh).items():
        torch.testing.assert_close(value, trained[key])
    ckpt = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    assert set(ckpt["state_dict"]) == {f"unet.{n}" for n in trainable}


def test_sla_distillation_trainable_choices(tmp_path):
    tiny_sd_pipeline(seed=0).save_pretrained(tmp_path / "pipe")
    attention = SLADistillation(str(tmp_path / "pipe"), **SLA)
    names = {n for n, p in attention.unet.named_parameters() if p.requires_grad}
    assert any(".attn1.to_q." in n for n in names) and any(".sla.proj_l." in n for n in names)
    assert all(".attn1." in n for n in names)
    whole = SLADistillation(str(tmp_path / "pipe"), **SLA, trainable="unet")
    assert all(p.requires_grad for p in whole.unet.parameters())
    with pytest.raises(ValueError, match="trainable"):
        SLADistillation(str(tmp_path / "pipe"), trainable="linfusion")
    with pytest.raises(ValueError, match="topk"):
        SLADistillation(str(tmp_path / "pipe"), topk=2.0)


def test_sla_config_matches_the_class():
    import importlib
    import inspect

    import yaml

    from linzoo.configs import CONFIG_ROOT

    config = yaml.safe_load((CONFIG_ROOT / "distill" / "sla_sd15.yaml").read_text())
    for section in ("model", "data"):
        module_name, _, class_name = config[section]["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module_name), class_name)
        unknown = set(config[section]["init_args"]) - set(inspect.signature(cls.__init__).parameters)
        assert not unknown, f"{section} init_args not accepted by {cls.__name__}: {unknown}"
