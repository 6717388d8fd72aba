"""Distil a linearised Stable Diffusion UNet (LinFusion, SLA) from its own frozen original, with Lightning.

- :class:`LinFusionDistillation`: student = the pipeline's UNet linearised with
  :func:`linzoo.diffusion.linearize`, teacher = a frozen copy of the original. Loss (LinFusion, Sec. 3.3 and
  ``src/train/distill*.py``): ``L = L_noise + 0.5 L_kd + 0.5 L_feat`` with ``L_noise = ||ε̂_s − target||²``
  (ε or v as the scheduler predicts), ``L_kd = ||ε̂_s − ε̂_t||²`` and ``L_feat`` the mean over the replaced layers
  of ``||attn1_s(x) − attn1_t(x)||²``, collected with forward hooks. SD-1.5 / 2.1 and SDXL pipelines.
- :class:`SLADistillation`: the same loss and teacher for a UNet whose self-attention is sparse-linear attention
  (``linearize(unet, "sla", ...)``); ``proj_l``, the replaced layers or the whole UNet are trained.
- :class:`ImageCaptionDataModule`: a folder of images with captions (``metadata.jsonl`` as in Hugging Face's
  ``imagefolder``, or a ``<name>.txt`` beside every image).

Both take plain typed arguments, so ``linzoo fit`` (LightningCLI) builds them from ``class_path`` / ``init_args``;
see ``configs/distill/linfusion_*.yaml`` for the official recipes and ``configs/distill/sla_sd15.yaml``.
"""

from __future__ import annotations

import abc
import copy
import json
import random
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from linzoo.diffusion.attention import iter_attention_modules
from linzoo.diffusion.linearize import LinearizeResult, linearize, save_linfusion
from linzoo.diffusion.sla import save_sla

__all__ = ["ImageCaptionDataModule", "ImageCaptionDataset", "LinFusionDistillation", "SLADistillation"]

_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ------------------------------------------------------------------------------------------------------- data


class ImageCaptionDataset(Dataset):
    """Images and captions from a folder; items are dicts.

    Item: ``pixel_values (3, R, R)`` in [-1, 1], ``caption`` (str), ``original_size`` and ``crop_top_left``
    (``(2,)`` int tensors, (height, width) / (top, left), for SDXL's size conditioning).

    Args:
        root: the folder. Captions come from ``root/metadata.jsonl`` (lines ``{"file_name": ..., "text": ...}``;
            ``caption`` is accepted for ``text``) when present, else from ``<image stem>.txt`` files.
        resolution: output side R.
        resize_mode: ``"stretch"`` resizes to R×R ignoring the aspect ratio (official SD-1.5/2.1 script),
            ``"crop"`` resizes the shorter side to R and crops (official SDXL script).
        center_crop: centre crop (official) rather than a random crop in ``"crop"`` mode.
        random_flip: horizontal flip with probability 0.5.
    """

    def __init__(
        self,
        root: str | Path,
        resolution: int = 512,
        resize_mode: str = "stretch",
        center_crop: bool = True,
        random_flip: bool = False,
    ) -> None:
        if resize_mode not in ("stretch", "crop"):
            raise ValueError(f"resize_mode must be 'stretch' or 'crop', got {resize_mode!r}")
        if resolution <= 0 or resolution % 8:
            raise ValueError(f"resolution must be a positive multiple of 8, got {resolution}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root must be a folder of images with captions, got {str(root)!r} (not a folder)")
        self.resolution, self.resize_mode = resolution, resize_mode
        self.center_crop, self.random_flip = center_crop, random_flip
        self.items = self._scan()

    def _scan(self) -> list[tuple[Path, str]]:
        metadata = self.root / "metadata.jsonl"
        items: list[tuple[Path, str]] = []
        if metadata.is_file():
            for n, line in enumerate(metadata.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                entry = json.loads(line)
                text = entry.get("text", entry.get("caption"))
                if "file_name" not in entry or text is None:
                    raise ValueError(f"{metadata}:{n}: each line needs 'file_name' and 'text' (or 'caption')")
                path = self.root / entry["file_name"]
                if not path.is_file():
                    raise ValueError(f"{metadata}:{n}: image {path} does not exist")
                items.append((path, str(text)))
        else:
            images = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in _IMAGE_EXTENSIONS)
            missing = [p.name for p in images if not p.with_suffix(".txt").is_file()]
            if missing:
                raise ValueError(
                    f"{len(missing)} image(s) in {self.root} have no caption file <name>.txt and there is no "
                    f"metadata.jsonl: {missing[:5]}"
                )
            items = [(p, p.with_suffix(".txt").read_text().strip()) for p in images]
        if not items:
            raise ValueError(
                f"no images with captions found in {self.root} (expected metadata.jsonl or <image> + <image>.txt)"
            )
        return items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, caption = self.items[index]
        image = Image.open(path).convert("RGB")
        width, height = image.size
        res = self.resolution
        if self.resize_mode == "stretch":
            image = image.resize((res, res), Image.BICUBIC)
            top = left = 0
        else:
            scale = res / min(width, height)
            new_w, new_h = max(res, round(width * scale)), max(res, round(height * scale))
            image = image.resize((new_w, new_h), Image.BICUBIC)
            if self.center_crop:
                top, left = (new_h - res) // 2, (new_w - res) // 2
            else:
                top, left = random.randint(0, new_h - res), random.randint(0, new_w - res)
            image = image.crop((left, top, left + res, top + res))
        if self.random_flip and random.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
        return {
            "pixel_values": pixels.contiguous(),
            "caption": caption,
            "original_size": torch.tensor([height, width]),
            "crop_top_left": torch.tensor([top, left]),
        }


class ImageCaptionDataModule(pl.LightningDataModule):
    """Training data for :class:`LinFusionDistillation`: an :class:`ImageCaptionDataset` (see it for ``root``).

    Args:
        root, resolution, resize_mode, center_crop, random_flip: see :class:`ImageCaptionDataset`.
        batch_size: per-device batch size (official: 6 for SD-1.5/2.1, 2 for SDXL).
        num_workers: data-loader workers.
    """

    def __init__(
        self,
        root: str,
        resolution: int = 512,
        resize_mode: str = "stretch",
        center_crop: bool = True,
        random_flip: bool = False,
        batch_size: int = 6,
        num_workers: int = 4,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.dataset: ImageCaptionDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            hp = self.hparams
            self.dataset = ImageCaptionDataset(hp.root, hp.resolution, hp.resize_mode, hp.center_crop, hp.random_flip)

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        hp = self.hparams
        return DataLoader(
            self.dataset,
            batch_size=hp.batch_size,
            shuffle=True,
            num_workers=hp.num_workers,
            drop_last=len(self.dataset) >= hp.batch_size,
            persistent_workers=hp.num_workers > 0,
        )


# ---------------------------------------------------------------------------------------------------- module


def _load_pipeline(pretrained: str) -> Any:
    from diffusers import DiffusionPipeline

    try:
        return DiffusionPipeline.from_pretrained(pretrained, safety_checker=None, requires_safety_checker=False)
    except TypeError:  # pipelines without a safety checker (SDXL) reject the extra arguments
        return DiffusionPipeline.from_pretrained(pretrained)


class _AttentionDistillation(pl.LightningModule, abc.ABC):
    """Shared machinery: a Stable Diffusion pipeline's UNet, linearised in place as the student (by
    :meth:`_linearize_student`), distilled from its frozen original with ``L_noise + L_kd + L_feat``.

    Subclasses pass the shared arguments to this ``__init__`` (whose ``save_hyperparameters`` records the
    subclass's own arguments too: Lightning collects every ``__init__`` frame of the instance); they define
    :meth:`_linearize_student`, :meth:`_set_trainable` and :meth:`_export`, and list their ``trainable``
    choices in ``TRAINABLE``.
    """

    TRAINABLE: tuple[str, ...] = ()
    #: name of the export folder under the log dir when ``export_dir`` is not given.
    EXPORT_NAME = "export"

    def __init__(
        self,
        pretrained: str,
        trainable: str,
        noise_weight: float,
        kd_weight: float,
        feat_weight: float,
        frozen_dtype: str,
        gradient_checkpointing: bool,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if trainable not in self.TRAINABLE:
            raise ValueError(f"trainable must be one of {self.TRAINABLE}, got {trainable!r}")
        if frozen_dtype not in _DTYPES:
            raise ValueError(f"frozen_dtype must be one of {tuple(_DTYPES)}, got {frozen_dtype!r}")
        if min(noise_weight, kd_weight, feat_weight) < 0 or noise_weight + kd_weight + feat_weight <= 0:
            raise ValueError("noise_weight, kd_weight, feat_weight must be >= 0 and not all 0")
        from diffusers import DDPMScheduler

        pipe = _load_pipeline(pretrained)
        for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            if getattr(pipe, name, None) is None:
                raise ValueError(f"pretrained {pretrained!r} must be a Stable Diffusion pipeline; it has no {name!r}")
        self.is_sdxl = getattr(pipe, "text_encoder_2", None) is not None
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if self.is_sdxl else [])

        teacher = copy.deepcopy(pipe.unet).eval().requires_grad_(False)
        self.unet = pipe.unet.train()  # from_pretrained leaves it in eval mode
        self.unet.requires_grad_(False)
        self.linearized = self._linearize_student()
        self._set_trainable(trainable)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()

        # Frozen parts stay outside the module tree: not trained, not saved in checkpoints, not in the summary.
        encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if self.is_sdxl else [])
        self._frozen: dict[str, Any] = {
            "teacher": teacher,
            "vae": pipe.vae.eval().requires_grad_(False),
            "text_encoders": [e.eval().requires_grad_(False) for e in encoders],
        }
        self._student_feats: list[torch.Tensor] = []
        self._teacher_feats: list[torch.Tensor] = []
        self._collect = False
        for name in self.linearized.modules:
            self.unet.get_submodule(name).register_forward_hook(self._hook(self._student_feats))
            teacher.get_submodule(name).register_forward_hook(self._hook(self._teacher_feats))
        # Checkpoints hold the trainable weights only; the rest is rebuilt from `pretrained`.
        self.strict_loading = False

    @abc.abstractmethod
    def _linearize_student(self) -> LinearizeResult:
        """Linearise ``self.unet`` in place (the teacher keeps the originals)."""

    @abc.abstractmethod
    def _set_trainable(self, trainable: str) -> None:
        """Unfreeze the student weights selected by ``trainable`` (one of ``TRAINABLE``)."""

    @abc.abstractmethod
    def _export(self, path: Path) -> Path:
        """Write the learned weights to ``path``; returns the written path."""

    def _hook(self, store: list[torch.Tensor]):
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            if self._collect:
                store.append(output)

        return hook

    @property
    def teacher(self) -> nn.Module:
        return self._frozen["teacher"]

    def on_fit_start(self) -> None:
        dtype = _DTYPES[self.hparams.frozen_dtype]
        self.teacher.to(self.device, dtype)
        vae = self._frozen["vae"]
        vae.to(self.device, torch.float32 if vae.config.get("force_upcast", False) else dtype)
        for encoder in self._frozen["text_encoders"]:
            encoder.to(self.device, dtype)

    # ------------------------------------------------------------------------------------------------ loss

    @torch.no_grad()
    def encode_prompts(self, captions: list[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        """Text conditioning: ``(encoder_hidden_states (B, L, C), SDXL pooled embeds or None)``."""
        encoders = self._frozen["text_encoders"]
        max_length = self.tokenizers[0].model_max_length
        ids = [
            tok(
                captions, padding="max_length", truncation=True, max_length=max_length, return_tensors="pt"
            ).input_ids.to(self.device)
            for tok in self.tokenizers
        ]
        if not self.is_sdxl:
            return encoders[0](ids[0])[0], None
        out1 = encoders[0](ids[0], output_hidden_states=True)
        out2 = encoders[1](ids[1], output_hidden_states=True)
        hidden = torch.cat([out1.hidden_states[-2], out2.hidden_states[-2]], dim=-1)
        return hidden, {"text_embeds": out2[0]}

    def compute_losses(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``loss``, ``loss_noise``, ``loss_kd``, ``loss_feat`` for one batch of :class:`ImageCaptionDataset` items."""
        vae = self._frozen["vae"]
        pixels = batch["pixel_values"].to(self.device)
        with torch.no_grad():
            latents = vae.encode(pixels.to(vae.dtype)).latent_dist.sample() * vae.config.scaling_factor
            latents = latents.float()
            hidden, added = self.encode_prompts(list(batch["caption"]))
            if added is not None:
                size = torch.full_like(batch["original_size"], pixels.shape[-1])
                time_ids = torch.cat([batch["original_size"], batch["crop_top_left"], size], dim=1)
                added["time_ids"] = time_ids.to(self.device, hidden.dtype)
        noise = torch.randn_like(latents)
        sched = self.noise_scheduler
        t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), device=self.device)
        noisy = sched.add_noise(latents, noise, t)
        if sched.config.prediction_type == "epsilon":
            target = noise
        elif sched.config.prediction_type == "v_prediction":
            target = sched.get_velocity(latents, noise, t)
        else:
            raise ValueError(f"unsupported prediction_type {sched.config.prediction_type!r}")

        self._student_feats.clear()
        self._teacher_feats.clear()
        self._collect = True
        try:
            with torch.no_grad():
                teacher = self.teacher
                t_kwargs = {k: v.to(teacher.dtype) for k, v in added.items()} if added else None
                pred_teacher = teacher(
                    noisy.to(teacher.dtype), t, hidden.to(teacher.dtype), added_cond_kwargs=t_kwargs
                ).sample
            pred = self.unet(noisy, t, hidden, added_cond_kwargs=added).sample
        finally:
            self._collect = False
        if len(self._student_feats) != len(self._teacher_feats) or not self._student_feats:
            raise RuntimeError(
                f"collected {len(self._student_feats)} student and {len(self._teacher_feats)} teacher attention outputs"
            )
        hp = self.hparams
        losses = {
            "loss_noise": F.mse_loss(pred.float(), target.float()),
            "loss_kd": F.mse_loss(pred.float(), pred_teacher.float()),
            "loss_feat": torch.stack(
                [F.mse_loss(s.float(), te.float()) for s, te in zip(self._student_feats, self._teacher_feats)]
            ).mean(),
        }
        self._student_feats.clear()
        self._teacher_feats.clear()
        losses["loss"] = (
            hp.noise_weight * losses["loss_noise"]
            + hp.kd_weight * losses["loss_kd"]
            + hp.feat_weight * losses["loss_feat"]
        )
        return losses

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self.compute_losses(batch)
        size = batch["pixel_values"].shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, batch_size=size)
        self.log("loss", losses["loss"].detach(), prog_bar=True, batch_size=size, logger=False)
        return losses["loss"]

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        params = [p for p in self.unet.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay, betas=tuple(hp.betas))

    # ----------------------------------------------------------------------------------------- checkpoints

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {f"unet.{n}" for n, p in self.unet.named_parameters() if p.requires_grad}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def _export_root(self) -> Path:
        if self.hparams.export_dir:
            return Path(self.hparams.export_dir)
        log_dir = self.trainer.log_dir if self._trainer is not None else None
        return Path(log_dir or ".") / self.EXPORT_NAME

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        every = self.hparams.export_every_n_steps
        if every > 0 and self.global_step % every == 0 and self.trainer.is_global_zero:
            self._export(self._export_root() / f"{self.EXPORT_NAME}-{self.global_step}")

    def on_train_end(self) -> None:
        if self.trainer.is_global_zero:
            path = self._export(self._export_root())
            print(f"{self.EXPORT_NAME} weights written to {path} (load: linzoo.diffusion.linearize(pipe, weights=...))")


class LinFusionDistillation(_AttentionDistillation):
    """Distil LinFusion's linear self-attention into a Stable Diffusion UNet (SD-1.5 / 2.1 / XL).

    Args:
        pretrained: a diffusers pipeline folder or hub id (``StableDiffusionPipeline`` or
            ``StableDiffusionXLPipeline`` layout); its UNet is the teacher and, linearised, the student.
        linfusion_weights: start from existing LinFusion weights (folder, file or hub id, official layout).
        projection_mid_dim, mid_dim_scale: width of the new projections (official: channels for SD-1.5/2.1,
            ``mid_dim_scale=16`` for SDXL).
        zero_init: start the new projections at zero (the paper's initialisation: the student starts as the
            teacher with linear attention); False keeps PyTorch's default init (the official script since 1b07891).
        trainable: ``"linfusion"`` (official: every weight of the replaced self-attention layers, q/k/v/out and
            the projections), ``"projections"`` (only the new projections) or ``"attention"`` (all self- and
            cross-attention weights).
        noise_weight, kd_weight, feat_weight: weights of L_noise, L_kd, L_feat (official 1, 0.5, 0.5).
        lr, weight_decay, betas: AdamW (official 1e-4, 0, default betas; constant learning rate).
        frozen_dtype: dtype of the frozen teacher, VAE and text encoders (``float32``, ``float16``,
            ``bfloat16``; official: the mixed-precision dtype). A VAE whose config asks ``force_upcast`` stays fp32.
        gradient_checkpointing: diffusers gradient checkpointing on the student UNet.
        export_dir: folder where the LinFusion weights are written in the official layout when fitting ends
            (default ``<log_dir>/linfusion``); ``export_every_n_steps > 0`` also writes
            ``export_dir/linfusion-<step>`` periodically (official: every 10,000 steps).
    """

    TRAINABLE = ("linfusion", "projections", "attention")
    EXPORT_NAME = "linfusion"

    def __init__(
        self,
        pretrained: str,
        linfusion_weights: str | None = None,
        projection_mid_dim: int | None = None,
        mid_dim_scale: int | None = None,
        zero_init: bool = True,
        trainable: str = "linfusion",
        noise_weight: float = 1.0,
        kd_weight: float = 0.5,
        feat_weight: float = 0.5,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        frozen_dtype: str = "float32",
        gradient_checkpointing: bool = False,
        export_dir: str | None = None,
        export_every_n_steps: int = 0,
    ) -> None:
        super().__init__(
            pretrained, trainable, noise_weight, kd_weight, feat_weight, frozen_dtype, gradient_checkpointing
        )

    def _linearize_student(self) -> LinearizeResult:
        hp = self.hparams
        return linearize(
            self.unet,
            "linfusion",
            hp.linfusion_weights,
            projection_mid_dim=hp.projection_mid_dim,
            mid_dim_scale=hp.mid_dim_scale,
            zero_init=hp.zero_init,
            keep_originals=False,  # the teacher holds the originals
        )

    def _set_trainable(self, trainable: str) -> None:
        layers = [self.unet.get_submodule(n) for n in self.linearized.modules]
        if trainable == "linfusion":
            for attn in layers:
                attn.requires_grad_(True)
        elif trainable == "projections":
            for attn in layers:
                attn.to_q_.requires_grad_(True)
                attn.to_k_.requires_grad_(True)
        else:
            for _, attn in iter_attention_modules(self.unet, "all"):
                attn.requires_grad_(True)

    def _export(self, path: Path) -> Path:
        return save_linfusion(self.unet, path)


class SLADistillation(_AttentionDistillation):
    """Fine-tune a Stable Diffusion UNet for sparse-linear attention (SLA) by distillation from its original.

    The student's self-attention layers (``attn1``) are linearised with ``linearize(unet, "sla", ...)``
    (:mod:`linzoo.diffusion.sla`); the loss is the LinFusion recipe's ``L_noise + L_kd + L_feat`` (the SLA
    paper gives no recipe; its authors fine-tune the whole model with the plain diffusion loss, which is
    ``kd_weight = feat_weight = 0``).

    Args:
        pretrained: a diffusers SD-1.5 / 2.1 / XL pipeline folder or hub id.
        topk, block_q, block_k, feature_map, linear_keys: the SLA options of :func:`linzoo.diffusion.linearize`.
        sla_weights: start from existing ``proj_l`` weights (file, folder or state dict).
        trainable: ``"attention"`` (default: every weight of the replaced layers, ``proj_l`` included),
            ``"proj_l"`` (only ``proj_l``: the authors found this not enough, TurboDiffusion #117) or ``"unet"``
            (the whole UNet, as the authors fine-tune).
        noise_weight, kd_weight, feat_weight, lr, weight_decay, betas, frozen_dtype, gradient_checkpointing:
            as :class:`LinFusionDistillation`.
        export_dir, export_every_n_steps: where the ``proj_l`` weights are written (``sla_attention.safetensors``,
            default ``<log_dir>/sla``); with ``trainable`` other than ``"proj_l"`` the student's other trained
            weights are in the Lightning checkpoints (``module.unet.save_pretrained`` writes the whole UNet).
    """

    TRAINABLE = ("attention", "proj_l", "unet")
    EXPORT_NAME = "sla"

    def __init__(
        self,
        pretrained: str,
        topk: float = 0.2,
        block_q: int = 64,
        block_k: int = 64,
        feature_map: str = "softmax",
        linear_keys: str = "all",
        sla_weights: str | None = None,
        trainable: str = "attention",
        noise_weight: float = 1.0,
        kd_weight: float = 0.5,
        feat_weight: float = 0.5,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        frozen_dtype: str = "float32",
        gradient_checkpointing: bool = False,
        export_dir: str | None = None,
        export_every_n_steps: int = 0,
    ) -> None:
        super().__init__(
            pretrained, trainable, noise_weight, kd_weight, feat_weight, frozen_dtype, gradient_checkpointing
        )

    def _linearize_student(self) -> LinearizeResult:
        hp = self.hparams
        return linearize(
            self.unet,
            "sla",
            hp.sla_weights,
            topk=hp.topk,
            block_q=hp.block_q,
            block_k=hp.block_k,
            feature_map=hp.feature_map,
            linear_keys=hp.linear_keys,
        )

    def _set_trainable(self, trainable: str) -> None:
        if trainable == "unet":
            self.unet.requires_grad_(True)
            return
        for name in self.linearized.modules:
            attn = self.unet.get_submodule(name)
            (attn if trainable == "attention" else attn.sla.proj_l).requires_grad_(True)

    def _export(self, path: Path) -> Path:
        return save_sla(self.unet, path)
