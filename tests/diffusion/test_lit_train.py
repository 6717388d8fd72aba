"""LiT training: VB loss, distillation terms, a short Lightning fit with export, ``linzoo generate``, latent cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel

from linzoo.train.diffusion import (
    CachedLatentDataModule,
    DigitsPixelDataModule,
    GaussianDiffusionLoss,
    LiTDiffusionModule,
)

TINY = dict(
    num_attention_heads=2,
    attention_head_dim=8,
    num_linear_heads=1,
    in_channels=1,
    out_channels=2,
    num_layers=1,
    sample_size=8,
    patch_size=2,
    num_classes=10,
)


def test_vb_loss_is_zero_for_the_true_posterior_and_positive_otherwise():
    sched = DDPMScheduler(num_train_timesteps=1000)
    loss = GaussianDiffusionLoss(sched)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.tensor([1, 10, 500, 999])
    x_t = loss.add_noise(x0, noise, t)
    torch.testing.assert_close(x_t, sched.add_noise(x0, noise, t), rtol=1e-5, atol=1e-5)
    v_min = -torch.ones_like(x0)  # v = -1: the posterior variance β̃_t
    torch.testing.assert_close(loss.vb_terms(x0, x_t, t, noise, v_min), torch.zeros(4), rtol=0, atol=1e-4)
    assert (loss.vb_terms(x0, x_t, t, noise + 0.3, v_min) > 0).all()
    assert (loss.vb_terms(x0, x_t, t, noise, v_min + 1.5) > 0).all()
    nll = loss.vb_terms(
        x0, loss.add_noise(x0, noise, torch.zeros(4, dtype=torch.long)), torch.zeros(4, dtype=torch.long), noise, v_min
    )
    assert torch.isfinite(nll).all() and (nll > 0).all()


def test_losses_with_teacher_distillation(tmp_path):
    torch.manual_seed(0)
    teacher = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=1,
        out_channels=2,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    )
    teacher.save_pretrained(tmp_path / "teacher")
    module = LiTDiffusionModule(
        transformer={"num_linear_heads": 1},
        inherit_from=str(tmp_path / "teacher"),
        teacher=str(tmp_path / "teacher"),
        distill_noise_weight=0.5,
        distill_var_weight=0.05,
    )
    assert module.transformer.config.num_linear_heads == 1 and module.teacher is not None
    assert not any(k.startswith("_teacher") or "teacher" in k for k in module.state_dict())
    module.train()
    x0, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 3])
    losses = module.compute_losses(x0, y)
    assert set(losses) == {"mse", "vb", "distill_noise", "distill_var", "loss"}
    total = losses["mse"] + losses["vb"] + 0.5 * losses["distill_noise"] + 0.05 * losses["distill_var"]
    torch.testing.assert_close(losses["loss"], total)
    losses["loss"].backward()
    assert all(p.grad is not None for p in module.transformer.parameters())
    with pytest.raises(ValueError, match="need a teacher"):
        LiTDiffusionModule(transformer=TINY, distill_noise_weight=1.0)


def test_loss_falls_on_digits():
    torch.manual_seed(0)
    module = LiTDiffusionModule(transformer=dict(TINY, num_layers=2), lr=2e-3)
    dm = DigitsPixelDataModule(batch_size=64)
    dm.setup()
    batch = next(iter(dm.train_dataloader()))
    opt = module.configure_optimizers()
    module.train()

    def fixed_loss() -> float:
        g = torch.random.get_rng_state()
        torch.manual_seed(123)
        with torch.no_grad():
            value = module.compute_losses(batch["x"], batch["y"])["mse"].item()
        torch.random.set_rng_state(g)
        return value

    before = fixed_loss()
    for _ in range(40):
        loss = module.compute_losses(batch["x"], batch["y"])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_loss()
    assert after < 0.7 * before, (before, after)


def test_fit_exports_pipeline_and_generate(tmp_path):
    import lightning.pytorch as pl

    from linzoo.train.generate import generate_main

    export = tmp_path / "pipeline"
    module = LiTDiffusionModule(transformer=TINY, export_dir=str(export), ema_warmup=True)
    dm = DigitsPixelDataModule(batch_size=32)
    trainer = pl.Trainer(
        max_steps=4,
        limit_val_batches=1,
        val_check_interval=4,
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
        logger=False,
        enable_model_summary=False,
    )
    trainer.fit(module, dm)
    assert (export / "model_index.json").is_file()
    ckpt = next((tmp_path / "checkpoints").glob("*.ckpt"))
    assert (
        generate_main(
            [
                "lit",
                "-o",
                str(tmp_path / "a"),
                "--checkpoint",
                str(export),
                "--num-inference-steps",
                "2",
                "--num-images-per-class",
                "3",
                "--class-labels",
                "4",
                "7",
            ]
        )
        == 0
    )
    assert (
        generate_main(
            [
                "lit",
                "-o",
                str(tmp_path / "b"),
                "--checkpoint",
                str(ckpt),
                "--num-inference-steps",
                "2",
                "--num-images-per-class",
                "2",
                "--class-labels",
                "4",
            ]
        )
        == 0
    )
    from PIL import Image

    grid = Image.open(tmp_path / "a" / "class_0004.png")
    assert grid.mode == "L" and grid.size == (2 * 9 + 1, 2 * 9 + 1)  # 3 images -> 2x2 grid of 8x8 + gaps
    assert sorted(p.name for p in (tmp_path / "a").glob("*.png")) == ["class_0004.png", "class_0007.png", "grid.png"]
    with pytest.raises(ValueError, match="does not exist"):
        generate_main(["lit", "-o", str(tmp_path / "c"), "--checkpoint", str(tmp_path / "missing" / "x")])


def test_latent_cache_and_data_module(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(3):
            rgb = (np.random.default_rng(i).random((40, 48, 3)) * 255).astype(np.uint8)
            Image.fromarray(rgb).save(tmp_path / "images" / cls / f"{i}.png")
    torch.manual_seed(0)
    AutoencoderKL(
        block_out_channels=(8, 8),
        norm_num_groups=4,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    ).save_pretrained(tmp_path / "vae")
    dm = CachedLatentDataModule(
        cache_dir=str(tmp_path / "cache"),
        image_root=str(tmp_path / "images"),
        vae=str(tmp_path / "vae"),
        image_size=16,
        batch_size=4,
        num_workers=0,
        val_size=2,
    )
    dm.prepare_data()
    mean = np.load(tmp_path / "cache" / "mean.npy")
    assert mean.shape == (12, 4, 8, 8) and mean.dtype == np.float16  # 6 images + flips, 16 px / 2 (tiny VAE)
    assert np.load(tmp_path / "cache" / "labels.npy").tolist().count(1) == 6
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 4, 8, 8) and batch["y"].dtype == torch.long
    assert len(dm.val_set) == 2 and math.isfinite(batch["x"].sum().item())
    with pytest.raises(ValueError, match="no latent cache"):
        CachedLatentDataModule(cache_dir=str(tmp_path / "none")).prepare_data()
