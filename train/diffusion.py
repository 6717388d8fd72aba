"""LiT training with Lightning: the diffusion LightningModule and its data modules.

- :class:`LiTDiffusionModule`: DDPM noise-prediction loss plus the variational-bound (VB) loss of a learned-sigma
  head (Improved DDPM, as DiT trains), LiT's hybrid distillation from a frozen teacher (noise and variance
  terms, configurable weights), EMA, classifier-free-guidance label dropout, and export of the EMA model as a
  diffusers :class:`~linzoo.diffusion.pipelines.LiTPipeline` when fitting ends.
- :class:`DigitsPixelDataModule`: scikit-learn's 8×8 digits in pixel space (ships with scikit-learn: no download);
  the embedded default of ``linzoo fit -c configs/demo/digits_lit.yaml``.
- :class:`CachedLatentDataModule`: VAE latents of an image folder (ImageNet layout), cached once as memory-mapped
  ``.npy`` files (posterior mean and std of every image and of its horizontal flip); a fresh posterior sample
  is drawn for every batch, as DiT's ``vae.encode(x).latent_dist.sample()`` does.

All classes take plain typed arguments, so LightningCLI builds them from ``class_path`` / ``init_args``.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from lightning.pytorch.utilities import rank_zero_info
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader, Dataset

from linzoo.diffusion.models import LiTTransformer2DModel, lit_from_teacher, load_transformer

__all__ = [
    "CachedLatentDataModule",
    "DigitsPixelDataModule",
    "GaussianDiffusionLoss",
    "LiTDiffusionModule",
    "cache_latents",
    "digits_arrays",
]


# ----------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------
def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=tuple(range(1, x.dim())))


def _normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def _discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log-likelihood of data ``x`` in [-1, 1] quantised to 256 bins under N(mean, e^(2 log_scale))."""
    centered = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = _approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


class GaussianDiffusionLoss(nn.Module):
    """DDPM training losses for an ε-prediction model with an optional learned-range variance head.

    diffusers ships schedulers (noise, sampling) but no variational-bound loss, so this module adds it, following
    Improved DDPM (Nichol & Dhariwal 2021, Eq. 15-16) as DiT trains: the model outputs ``[ε̂, v]`` with
    ``log Σ = (v+1)/2 · log β_t + (1-(v+1)/2) · log β̃_t``; ``L = ||ε - ε̂||² + L_vb``, where ``L_vb`` is the
    KL between the true posterior q(x_{t-1}|x_t,x_0) and p(x_{t-1}|x_t) (the decoder NLL at t = 0), in bits per
    dimension, with the gradient stopped through ε̂ so that ``L_vb`` only trains the variance.
    """

    def __init__(self, scheduler: DDPMScheduler) -> None:
        super().__init__()
        betas = scheduler.betas.double()
        alphas = 1.0 - betas
        ac = torch.cumprod(alphas, 0)
        ac_prev = torch.cat([torch.ones(1, dtype=ac.dtype), ac[:-1]])
        post_var = betas * (1.0 - ac_prev) / (1.0 - ac)
        buffers = {
            "sqrt_ac": ac.sqrt(),
            "sqrt_one_minus_ac": (1.0 - ac).sqrt(),
            "sqrt_recip_ac": (1.0 / ac).sqrt(),
            "sqrt_recipm1_ac": (1.0 / ac - 1.0).sqrt(),
            "log_betas": betas.log(),
            "post_log_var": torch.cat([post_var[1:2], post_var[1:]]).log(),  # clipped at t = 0, as in IDDPM
            "post_coef1": betas * ac_prev.sqrt() / (1.0 - ac),
            "post_coef2": (1.0 - ac_prev) * alphas.sqrt() / (1.0 - ac),
        }
        for name, value in buffers.items():
            self.register_buffer(name, value.float(), persistent=False)
        self.num_timesteps = len(betas)

    def _at(self, name: str, t: torch.Tensor, ndim: int) -> torch.Tensor:
        return getattr(self, name)[t].view(-1, *([1] * (ndim - 1)))

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε."""
        return self._at("sqrt_ac", t, x0.dim()) * x0 + self._at("sqrt_one_minus_ac", t, x0.dim()) * noise

    def vb_terms(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """Per-sample L_vb in bits/dim for predicted noise ``eps`` (detached by the caller) and variance ``v``."""
        n = x0.dim()
        min_log, max_log = self._at("post_log_var", t, n), self._at("log_betas", t, n)
        frac = (v + 1.0) / 2.0
        model_log_var = frac * max_log + (1.0 - frac) * min_log
        x0_pred = self._at("sqrt_recip_ac", t, n) * x_t - self._at("sqrt_recipm1_ac", t, n) * eps
        c1, c2 = self._at("post_coef1", t, n), self._at("post_coef2", t, n)
        model_mean = c1 * x0_pred + c2 * x_t
        true_mean = c1 * x0 + c2 * x_t
        kl = _mean_flat(_normal_kl(true_mean, min_log, model_mean, model_log_var)) / math.log(2.0)
        nll = -_mean_flat(_discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_log_var)) / math.log(2.0)
        return torch.where(t == 0, nll, kl)


# ----------------------------------------------------------------------------------------------------------------
# LightningModule
# ----------------------------------------------------------------------------------------------------------------
class LiTDiffusionModule(pl.LightningModule):
    """Train a :class:`LiTTransformer2DModel` (class-conditional) with DDPM + VB loss and hybrid distillation.

    Args:
        transformer: ``LiTTransformer2DModel`` config (used as overrides of the teacher-derived config when
            ``inherit_from`` is set).
        pretrained: folder of a saved LiT (model or pipeline) to start from.
        inherit_from: folder (or hub id) of a diffusers DiT / PixArt teacher to inherit weights from (all but the
            self-attention q/k/v, paper guideline 3-4).
        teacher: folder (or hub id) of a frozen teacher for hybrid distillation; ``None`` disables it.
        distill_noise_weight: weight of ||ε̂_student - ε̂_teacher||² (paper: 0.5 with a DiT-XL/2 teacher).
        distill_var_weight: weight of ||v_student - v_teacher||² on the variance outputs (paper: 0.05).
        vb_weight: weight of the VB loss (1 as in DiT; ignored without a learned-sigma head).
        num_train_timesteps, beta_schedule, beta_start, beta_end: the DDPM noise schedule (diffusers
            ``DDPMScheduler``).
        label_dropout: probability of replacing a label by the null label (CFG); ``None`` = the transformer's
            ``class_dropout_prob``.
        lr, weight_decay, betas, warmup_steps: AdamW and a linear warm-up (DiT: 1e-4, 0, no warm-up).
        ema_decay: EMA decay (DiT: 0.9999); ``ema_warmup`` uses timm's warm-up schedule for short runs.
        gradient_checkpointing: enable diffusers gradient checkpointing on the transformer.
        vae: folder (or hub id) of the ``AutoencoderKL`` that decodes the latents (``None`` for pixel space).
        export_dir: where the EMA pipeline is saved when fitting ends (default ``<log_dir>/pipeline``).
        id2label: class names for the exported pipeline.
    """

    def __init__(
        self,
        transformer: dict[str, Any] | None = None,
        pretrained: str | None = None,
        inherit_from: str | None = None,
        teacher: str | None = None,
        distill_noise_weight: float = 0.0,
        distill_var_weight: float = 0.0,
        vb_weight: float = 1.0,
        num_train_timesteps: int = 1000,
        beta_schedule: str = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        label_dropout: float | None = None,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        ema_decay: float = 0.9999,
        ema_warmup: bool = False,
        gradient_checkpointing: bool = False,
        vae: str | None = None,
        export_dir: str | None = None,
        id2label: dict[int, str] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if sum(x is not None for x in (pretrained, inherit_from)) > 1:
            raise ValueError("pass at most one of pretrained and inherit_from")
        if pretrained is None and inherit_from is None and not transformer:
            raise ValueError("transformer (a LiTTransformer2DModel config) is required without pretrained/inherit_from")
        if (distill_noise_weight > 0 or distill_var_weight > 0) and teacher is None:
            raise ValueError("distill_noise_weight / distill_var_weight need a teacher")
        if pretrained is not None:
            self.transformer = load_transformer(pretrained)
            if not isinstance(self.transformer, LiTTransformer2DModel):
                raise ValueError(f"pretrained must hold a LiTTransformer2DModel, got {type(self.transformer).__name__}")
        elif inherit_from is not None:
            self.transformer, report = lit_from_teacher(load_transformer(inherit_from), **(transformer or {}))
            rank_zero_info(f"LiT weight inheritance from {inherit_from}: {report.summary()}")
        else:
            self.transformer = LiTTransformer2DModel(**transformer)
        if self.transformer.config.norm_type != "ada_norm_zero":
            raise ValueError("LiTDiffusionModule trains the class-conditional form (norm_type='ada_norm_zero')")
        if gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_schedule=beta_schedule,
            beta_start=beta_start,
            beta_end=beta_end,
            variance_type="learned_range" if self.learned_sigma else "fixed_small",
            clip_sample=False,
        )
        self.diffusion = GaussianDiffusionLoss(self.scheduler)
        self.ema = ModelEmaV3(self.transformer, decay=ema_decay, use_warmup=ema_warmup)
        self.ema.requires_grad_(False)
        # The frozen teacher is kept out of the module tree so that it is neither trained, nor saved in
        # checkpoints, nor counted in the model summary; it follows the module's device in on_fit_start.
        self._teacher: list[nn.Module] = []
        if teacher is not None:
            model = load_transformer(teacher).eval().requires_grad_(False)
            self._teacher.append(model)
        cfg = self.transformer.config
        self.label_dropout = cfg.class_dropout_prob if label_dropout is None else label_dropout
        if self.label_dropout > 0 and cfg.class_dropout_prob <= 0:
            raise ValueError("label_dropout > 0 needs a transformer with class_dropout_prob > 0 (a null label)")

    @property
    def learned_sigma(self) -> bool:
        return self.transformer.out_channels == 2 * self.transformer.config.in_channels

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Raw transformer output ``(B, out_channels, H, W)`` for noisy ``x``, timesteps ``t`` and labels ``y``."""
        return self.transformer(x, timestep=t, class_labels=y, return_dict=False)[0]

    @staticmethod
    def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(batch, dict):
            return batch["x"], batch["y"]
        return batch[0], batch[1]

    def compute_losses(self, x0: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        """All loss terms for clean samples ``x0 (B, C, H, W)`` and labels ``y (B,)``; ``loss`` is their sum."""
        b, c = x0.shape[:2]
        t = torch.randint(0, self.diffusion.num_timesteps, (b,), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.diffusion.add_noise(x0, noise, t)
        if self.training and self.label_dropout > 0:
            drop = torch.rand(b, device=y.device) < self.label_dropout
            y = torch.where(drop, torch.full_like(y, self.transformer.config.num_classes), y)
        out = self(x_t, t, y)
        eps = out[:, :c]
        losses = {"mse": _mean_flat((noise - eps.float()) ** 2).mean()}
        loss = losses["mse"]
        if self.learned_sigma:
            v = out[:, c:].float()
            losses["vb"] = self.diffusion.vb_terms(x0.float(), x_t.float(), t, eps.detach().float(), v).mean()
            loss = loss + self.hparams.vb_weight * losses["vb"]
        if self.teacher is not None:
            with torch.no_grad():
                t_out = self.teacher(x_t, timestep=t, class_labels=y, return_dict=False)[0].float()
            if self.hparams.distill_noise_weight > 0:
                losses["distill_noise"] = F.mse_loss(eps.float(), t_out[:, :c])
                loss = loss + self.hparams.distill_noise_weight * losses["distill_noise"]
            if self.hparams.distill_var_weight > 0:
                if not self.learned_sigma or t_out.shape[1] != 2 * c:
                    raise ValueError("distill_var_weight > 0 needs learned-sigma outputs in student and teacher")
                losses["distill_var"] = F.mse_loss(out[:, c:].float(), t_out[:, c:])
                loss = loss + self.hparams.distill_var_weight * losses["distill_var"]
        losses["loss"] = loss
        return losses

    def on_fit_start(self) -> None:
        if self.teacher is not None:
            self.teacher.to(self.device)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x0, y = self._unpack(batch)
        losses = self.compute_losses(x0, y)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, prog_bar=False, batch_size=x0.shape[0])
        self.log("loss", losses["loss"].detach(), prog_bar=True, batch_size=x0.shape[0], logger=False)
        return losses["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.ema.update(self.transformer, step=self.global_step)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x0, y = self._unpack(batch)
        losses = self.compute_losses(x0, y)
        self.log_dict({f"val/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=x0.shape[0])

    def configure_optimizers(self) -> Any:
        hp = self.hparams
        opt = torch.optim.AdamW(
            self.transformer.parameters(), lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas)
        )
        if hp.warmup_steps <= 0:
            return opt
        warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / hp.warmup_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": warm, "interval": "step"}}

    def build_pipeline(self, use_ema: bool = True) -> Any:
        """A :class:`~linzoo.diffusion.pipelines.LiTPipeline` (DDIM sampler with the training noise schedule) over a
        CPU copy of the EMA (or raw) transformer."""
        from linzoo.diffusion.pipelines import LiTPipeline

        model = copy.deepcopy(self.ema.module if use_ema else self.transformer).to("cpu").eval()
        model.disable_gradient_checkpointing()
        vae = None
        if self.hparams.vae is not None:
            from diffusers import AutoencoderKL

            subfolder = "vae" if os.path.isfile(os.path.join(self.hparams.vae, "model_index.json")) else None
            vae = AutoencoderKL.from_pretrained(self.hparams.vae, subfolder=subfolder)
        scheduler = DDIMScheduler.from_config(self.scheduler.config, clip_sample=False)
        return LiTPipeline(transformer=model, scheduler=scheduler, vae=vae, id2label=self.hparams.id2label)

    def on_fit_end(self) -> None:
        if self.trainer is None or not self.trainer.is_global_zero:
            return
        out = self.hparams.export_dir or os.path.join(self.trainer.log_dir or self.trainer.default_root_dir, "pipeline")
        self.build_pipeline(use_ema=True).save_pretrained(out)
        rank_zero_info(f"saved the EMA LiT pipeline to {out}")


# ----------------------------------------------------------------------------------------------------------------
# Data: scikit-learn digits in pixel space
# ----------------------------------------------------------------------------------------------------------------
def digits_arrays(image_size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 digits as ``(N, 1, S, S)`` float tensors in [-1, 1] (bilinear resize when S != 8) and
    ``(N,)`` labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.from_numpy(data.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)  # pixel values are 0..16
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False).clamp(-1, 1)
    return x, torch.from_numpy(data.target.astype(np.int64))


class _DictDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor, repeats: int = 1) -> None:
        self.x, self.y, self.repeats = x, y, repeats

    def __len__(self) -> int:
        return len(self.x) * self.repeats

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = i % len(self.x)
        return {"x": self.x[i], "y": self.y[i]}


class DigitsPixelDataModule(pl.LightningDataModule):
    """scikit-learn digits (10 classes, 8×8 grey levels) as ``{"x": (1, S, S) in [-1, 1], "y": label}`` batches.

    Args:
        image_size: side length S (8 = the native digits; larger sizes are bilinear upsamplings).
        batch_size: batch size.
        val_fraction: fraction held out (stratified by a fixed permutation) for validation.
        repeats: how many passes over the training images make one epoch (fewer, longer epochs on tiny data).
        num_workers: DataLoader workers.
        seed: split seed.
    """

    def __init__(
        self,
        image_size: int = 8,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        repeats: int = 1,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.save_hyperparameters()

    def setup(self, stage: str | None = None) -> None:
        x, y = digits_arrays(self.hparams.image_size)
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.hparams.seed))
        n_val = int(round(self.hparams.val_fraction * len(x)))
        val, train = perm[:n_val], perm[n_val:]
        self.train_set = _DictDataset(x[train], y[train], self.hparams.repeats)
        self.val_set = _DictDataset(x[val], y[val]) if n_val else None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)


# ----------------------------------------------------------------------------------------------------------------
# Data: cached VAE latents (ImageNet-256 recipe)
# ----------------------------------------------------------------------------------------------------------------
def _center_crop(image: Any, size: int) -> Any:
    """ADM / DiT preprocessing: halve with BOX while the image is >= 2x the target, then BICUBIC resize so the
    short side equals ``size`` and centre-crop."""
    from PIL import Image

    while min(*image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(*image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image.convert("RGB"))
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return Image.fromarray(arr[top : top + size, left : left + size])


@torch.no_grad()
def cache_latents(
    image_root: str,
    cache_dir: str,
    vae: str = "stabilityai/sd-vae-ft-ema",
    image_size: int = 256,
    batch_size: int = 64,
    flip: bool = True,
    num_workers: int = 4,
    device: str | None = None,
) -> Path:
    """Encode an image folder (``root/<class>/<image>``, ImageNet layout) with a VAE and store the posterior of every
    image (and of its horizontal flip) in ``cache_dir``: ``mean.npy`` / ``std.npy`` ``(M, C, S/f, S/f)`` float16
    (f = the VAE's downsampling, 8 for Stable Diffusion's),
    already multiplied by the VAE's ``scaling_factor``, ``labels.npy`` ``(M,)`` and ``classes.txt``."""
    from diffusers import AutoencoderKL
    from torchvision import datasets, transforms

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(cache_dir)
    out.mkdir(parents=True, exist_ok=True)
    tf = transforms.Compose(
        [
            transforms.Lambda(lambda im: _center_crop(im, image_size)),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    dataset = datasets.ImageFolder(image_root, transform=tf)
    model = AutoencoderKL.from_pretrained(vae).to(device).eval()
    scale = model.config.scaling_factor
    views = 2 if flip else 1
    n = len(dataset) * views
    lat = image_size // 2 ** (len(model.config.block_out_channels) - 1)  # 8 for the SD VAEs
    shape = (n, model.config.latent_channels, lat, lat)
    mean = np.lib.format.open_memmap(out / "mean.npy.partial", mode="w+", dtype=np.float16, shape=shape)
    std = np.lib.format.open_memmap(out / "std.npy.partial", mode="w+", dtype=np.float16, shape=shape)
    labels = np.empty(n, dtype=np.int64)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    pos = 0
    for images, y in loader:
        images = images.to(device)
        for view in range(views):
            batch = images.flip(-1) if view else images
            dist = model.encode(batch).latent_dist
            k = len(batch)
            mean[pos : pos + k] = (dist.mean * scale).cpu().numpy().astype(np.float16)
            std[pos : pos + k] = (dist.std * scale).cpu().numpy().astype(np.float16)
            labels[pos : pos + k] = y.numpy()
            pos += k
    mean.flush()
    std.flush()
    del mean, std
    os.replace(out / "mean.npy.partial", out / "mean.npy")
    os.replace(out / "std.npy.partial", out / "std.npy")
    np.save(out / "labels.npy", labels)
    (out / "classes.txt").write_text("\n".join(dataset.classes) + "\n")
    return out


class _LatentDataset(Dataset):
    def __init__(self, cache_dir: Path, index: np.ndarray, sample: bool) -> None:
        self.mean = np.load(cache_dir / "mean.npy", mmap_mode="r")
        self.std = np.load(cache_dir / "std.npy", mmap_mode="r")
        self.labels = np.load(cache_dir / "labels.npy")
        self.index, self.sample = index, sample

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(self.index[i])
        x = torch.from_numpy(np.array(self.mean[j], dtype=np.float32))
        if self.sample:
            x = x + torch.from_numpy(np.array(self.std[j], dtype=np.float32)) * torch.randn_like(x)
        return {"x": x, "y": torch.tensor(int(self.labels[j]))}


class CachedLatentDataModule(pl.LightningDataModule):
    """Batches of cached VAE latents ``{"x": (C, h, w), "y": label}`` (a fresh posterior sample each time).

    ``prepare_data`` builds the cache with :func:`cache_latents` when ``cache_dir`` has none and ``image_root`` is
    given (rank 0 only); otherwise point ``cache_dir`` at an existing cache.

    Args:
        cache_dir: folder of ``mean.npy``, ``std.npy``, ``labels.npy``.
        image_root: image folder to encode when the cache is missing.
        vae: VAE used for caching (DiT: ``stabilityai/sd-vae-ft-ema``).
        image_size: image side before encoding (256 -> 32×32 latents).
        batch_size, num_workers: DataLoader settings (per device).
        val_size: number of cached latents held out for the validation loss (0: none).
        sample_posterior: draw ``mean + std·ε`` (DiT) instead of the posterior mean.
        seed: split seed.
    """

    def __init__(
        self,
        cache_dir: str,
        image_root: str | None = None,
        vae: str = "stabilityai/sd-vae-ft-ema",
        image_size: int = 256,
        batch_size: int = 32,
        num_workers: int = 4,
        val_size: int = 0,
        sample_posterior: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()

    def _ready(self) -> bool:
        root = Path(self.hparams.cache_dir)
        return all((root / f).is_file() for f in ("mean.npy", "std.npy", "labels.npy"))

    def prepare_data(self) -> None:
        if self._ready():
            return
        if self.hparams.image_root is None:
            raise ValueError(f"no latent cache in {self.hparams.cache_dir!r} and no image_root to build one from")
        cache_latents(
            self.hparams.image_root,
            self.hparams.cache_dir,
            vae=self.hparams.vae,
            image_size=self.hparams.image_size,
            num_workers=self.hparams.num_workers,
        )

    def setup(self, stage: str | None = None) -> None:
        if not self._ready():
            raise ValueError(f"no latent cache in {self.hparams.cache_dir!r} (run prepare_data or cache_latents)")
        root = Path(self.hparams.cache_dir)
        n = len(np.load(root / "labels.npy", mmap_mode="r"))
        perm = np.random.default_rng(self.hparams.seed).permutation(n)
        val, train = perm[: self.hparams.val_size], perm[self.hparams.val_size :]
        self.train_set = _LatentDataset(root, train, self.hparams.sample_posterior)
        self.val_set = _LatentDataset(root, val, False) if len(val) else None

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set,
            batch_size=self.hparams.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.hparams.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=self.hparams.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return DataLoader(self.val_set, batch_size=self.hparams.batch_size, num_workers=self.hparams.num_workers)
