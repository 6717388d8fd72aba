"""Image classification with any timm model (linzoo's or timm's own), as a LightningModule.

What timm's ``train.py`` does, expressed in Lightning: ``create_model`` (optionally from a checkpoint
file, with a new ``num_classes`` head), ``create_optimizer_v2`` (AdamW / LAMB / SGD ..., weight decay
without bias/norm, layer-wise lr decay through the model's ``group_matcher``), ``create_scheduler_v2``
(cosine with warm-up, stepped per optimizer update or per epoch), Mixup/CutMix with soft-target
cross-entropy or label smoothing, and ModelEmaV3 weights evaluated beside the raw ones.
Gradient clipping, accumulation and bf16 are Trainer settings (``gradient_clip_val``,
``accumulate_grad_batches``, ``precision: bf16-mixed``).

Exact resume: every training step reseeds Python/NumPy/torch from ``(seed, epoch, batch_idx, rank)``
(dropout, drop-path, Mixup draws), and the data modules seed every sample's augmentation
(:mod:`linzoo.train.data`), so a run resumed from a mid-epoch checkpoint computes what the uninterrupted run
computes.
"""

from __future__ import annotations

import difflib
import math
import os
import random
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClassificationModule", "create_classifier", "plain_container"]


def plain_container(value: Any) -> Any:
    """OmegaConf / jsonargparse containers -> plain dicts and lists (checkpoints must load with weights_only)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {str(k): plain_container(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_container(v) for v in value]
    if hasattr(value, "as_dict") and callable(value.as_dict):  # jsonargparse Namespace
        return plain_container(value.as_dict())
    return value


def _check_model_name(name: str) -> None:
    import timm
    from timm.models import split_model_name_tag

    import linzoo.vision  # noqa: F401  (registers linzoo's models with timm)

    if ":" in name:  # hf-hub:..., local-dir:... are resolved by timm itself
        return
    arch, _ = split_model_name_tag(name)
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=8, cutoff=0.5)
        hint = f"closest registered names: {', '.join(close)}" if close else "see `linzoo models` or timm.list_models()"
        raise ValueError(f"model_name={name!r} is not a registered timm or linzoo model; {hint}")


def create_classifier(
    model_name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    drop_path_rate: float | None = None,
    drop_rate: float | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """``timm.create_model`` with a clear error for unknown names.

    ``checkpoint_path`` (an official file, a linzoo ``model.safetensors`` or a timm checkpoint) is loaded as
    the pretrained weights through timm (``pretrained_cfg_overlay=dict(file=...)``), i.e. through the
    family's ``checkpoint_filter_fn``; a classifier of a different size is dropped and re-initialised.
    """
    import timm

    _check_model_name(model_name)
    kwargs: dict[str, Any] = dict(model_kwargs or {})
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    if drop_rate is not None:
        kwargs["drop_rate"] = drop_rate
    if checkpoint_path is not None:
        path = os.path.expanduser(checkpoint_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint_path={checkpoint_path!r} does not exist")
        pretrained = True
        kwargs["pretrained_cfg_overlay"] = dict(file=path)
    return timm.create_model(model_name, pretrained=pretrained, num_classes=num_classes, **kwargs)


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def compile_options(value: bool | str | dict[str, Any] | None) -> dict[str, Any] | None:
    """``torch.compile`` keyword arguments for the ``compile`` argument (None: do not compile)."""
    value = plain_container(value)
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, str):
        if value not in COMPILE_MODES:
            raise ValueError(
                f"compile must be a bool, a dict of torch.compile arguments or one of {COMPILE_MODES}, got {value!r}"
            )
        return {"mode": value}
    if isinstance(value, dict):
        return dict(value)
    raise ValueError(
        f"compile must be a bool, a mode name or a dict of torch.compile arguments, got {type(value).__name__}"
    )


class ClassificationModule(pl.LightningModule):
    """Train / evaluate a timm classifier.

    Args:
        model_name: any ``timm.list_models()`` name (``import linzoo.vision`` registers linzoo's).
        num_classes: classifier size (the head is re-created when it differs from a checkpoint's).
        pretrained: load the model's official weights (needs network unless ``checkpoint_path`` is set).
        checkpoint_path: local weights to start from (official file, linzoo safetensors, timm checkpoint).
        model_kwargs: extra ``timm.create_model`` arguments (``img_size``, ``in_chans``, ...).
        drop_path_rate / drop_rate: stochastic depth and classifier dropout (None: the model's default).
        optimizer: timm optimizer name (``adamw``, ``lamb``, ``sgd``, ``lion`` ...).
        lr: peak learning rate (not scaled by batch size: write the recipe's effective value).
        weight_decay: decoupled weight decay (not applied to biases, norms and ``no_weight_decay()``).
        momentum / opt_eps / opt_betas: optimizer details (None: timm's default).
        layer_decay: layer-wise lr decay for fine-tuning (e.g. 0.65), through the model's ``group_matcher``.
        scheduler: timm scheduler name (``cosine``, ``step``, ``multistep``, ``plateau``, ``poly``, ``none``).
        warmup_epochs / warmup_lr / min_lr: linear warm-up length and start, floor of the decay.
        cooldown_epochs: final epochs held at ``min_lr`` (timm's ``--cooldown-epochs``; part of ``max_epochs``).
        sched_on: ``step`` (lr updated every optimizer step, like timm's ``--sched-on-updates``) or ``epoch``.
        label_smoothing: label smoothing of the cross-entropy (and of Mixup's soft targets).
        mixup / cutmix: Beta parameters of timm's Mixup and CutMix (0 disables each).
        mixup_prob / mixup_switch_prob / mixup_mode: probability of mixing a batch, of CutMix over Mixup,
            and ``batch`` / ``pair`` / ``elem``.
        ema_decay: keep timm ``ModelEmaV3`` weights with this decay (e.g. 0.9998) and report
            ``val/top1_ema``; None disables.
        ema_warmup: ModelEmaV3's decay warm-up.
        grad_checkpointing: ``model.set_grad_checkpointing()`` (less memory, more compute).
        seed: base seed of the per-step RNG streams (None: Lightning's ``seed_everything`` value).
        compile: ``torch.compile`` the model in place (``nn.Module.compile``: state-dict keys and checkpoints
            unchanged): None/False off, True the default mode, a mode name (``"reduce-overhead"`` replays
            forward and backward as CUDA graphs: RAVLT-S trains 3.1x faster than eagerly on an H100, see
            docs/benchmarks/models.md; ``"max-autotune"``, ...) or a dict of ``torch.compile`` arguments.
    """

    def __init__(
        self,
        model_name: str = "ravlt_t",
        num_classes: int = 1000,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
        drop_path_rate: float | None = None,
        drop_rate: float | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        momentum: float = 0.9,
        opt_eps: float | None = None,
        opt_betas: tuple[float, float] | None = None,
        layer_decay: float | None = None,
        scheduler: str = "cosine",
        warmup_epochs: float = 5.0,
        cooldown_epochs: float = 0.0,
        warmup_lr: float = 1e-6,
        min_lr: float = 1e-5,
        sched_on: Literal["step", "epoch"] = "step",
        label_smoothing: float = 0.1,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        mixup_switch_prob: float = 0.5,
        mixup_mode: Literal["batch", "pair", "elem"] = "batch",
        ema_decay: float | None = None,
        ema_warmup: bool = False,
        grad_checkpointing: bool = False,
        seed: int | None = None,
        compile: bool | str | dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        model_kwargs = plain_container(model_kwargs)
        opt_betas = None if opt_betas is None else tuple(float(b) for b in opt_betas)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")
        if layer_decay is not None and not 0.0 < layer_decay <= 1.0:
            raise ValueError(f"layer_decay must be in (0, 1] or None, got {layer_decay}")
        compile_kwargs = compile_options(compile)
        self.save_hyperparameters()
        self.model = create_classifier(
            model_name,
            num_classes,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            drop_path_rate=drop_path_rate,
            drop_rate=drop_rate,
            model_kwargs=model_kwargs,
        )
        if grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        self.num_classes = num_classes
        self.model_ema = self._create_ema() if ema_decay is not None else None
        self.mixup_fn = self._create_mixup()
        self._build_metrics()
        # after the EMA copy (which stays an eager module); marks each step for CUDA-graph modes
        self._cudagraph_steps = compile_kwargs is not None and "reduce-overhead" in str(compile_kwargs.get("mode"))
        if compile_kwargs is not None:
            self.model.compile(**compile_kwargs)

    # -- construction helpers ---------------------------------------------------------------------------
    def _create_ema(self) -> nn.Module:
        from timm.utils import ModelEmaV3

        return ModelEmaV3(self.model, decay=self.hparams.ema_decay, use_warmup=self.hparams.ema_warmup)

    def _create_mixup(self) -> Any:
        hp = self.hparams
        if hp.mixup <= 0 and hp.cutmix <= 0:
            return None
        from timm.data import Mixup

        return Mixup(
            mixup_alpha=hp.mixup,
            cutmix_alpha=hp.cutmix,
            prob=hp.mixup_prob,
            switch_prob=hp.mixup_switch_prob,
            mode=hp.mixup_mode,
            label_smoothing=hp.label_smoothing,
            num_classes=hp.num_classes,
        )

    def _build_metrics(self) -> None:
        from torchmetrics.classification import MulticlassAccuracy

        def acc(k: int) -> MulticlassAccuracy:
            return MulticlassAccuracy(num_classes=self.num_classes, top_k=min(k, self.num_classes), average="micro")

        self.train_top1 = acc(1)
        self.val_top1, self.val_top5 = acc(1), acc(5)
        self.val_top1_ema, self.val_top5_ema = acc(1), acc(5)
        self.test_top1, self.test_top5 = acc(1), acc(5)

    @property
    def data_config(self) -> dict[str, Any]:
        """timm's data config of the model (input size, mean/std, interpolation, crop_pct)."""
        from timm.data import resolve_model_data_config

        return resolve_model_data_config(self.model)

    # -- forward / steps ----------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, num_classes)`` logits."""
        return self.model(x)

    def _base_seed(self) -> int:
        seed = self.hparams.seed
        return int(seed if seed is not None else os.environ.get("PL_GLOBAL_SEED", 0))

    def _mark_step(self) -> None:
        """A new CUDA-graph step: outputs of the previous replay may be overwritten from here on."""
        if self._cudagraph_steps:
            torch.compiler.cudagraph_mark_step_begin()

    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._mark_step()

    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._mark_step()

    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._mark_step()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        from .data import derive_seed

        self._mark_step()
        seed = derive_seed(self._base_seed(), self.current_epoch, batch_idx, self.global_rank)
        random.seed(seed)
        np.random.seed(seed)  # noqa: NPY002  (timm's Mixup draws from the global NumPy generator)
        torch.manual_seed(seed)
        if hasattr(self.model, "set_prepbn_step"):
            # SLAB's progressive LayerNorm -> RepBN schedule follows the optimiser step, so it is right after a
            # resume and identical on every DDP rank.
            self.model.set_prepbn_step(self.global_step)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.mixup_fn is not None:
            if x.shape[0] % 2:
                raise ValueError(f"Mixup/CutMix needs an even batch size, got {x.shape[0]}")
            x, soft = self.mixup_fn(x, y)
            logits = self(x)
            loss = torch.sum(-soft * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()
        else:
            logits = self(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.hparams.label_smoothing)
            self.train_top1.update(logits.detach(), y)
            self.log("train/top1", self.train_top1, on_step=False, on_epoch=True)
        distributed = self.trainer.world_size > 1
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=distributed)
        self.log("train/lr", max(g["lr"] for g in self.optimizers().param_groups), on_step=True, on_epoch=False)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        if self.model_ema is not None:
            self.model_ema.update(self.model, step=self.global_step)

    def _evaluate(self, batch: Any, prefix: str) -> None:
        x, y = batch
        logits = self(x)
        top1, top5 = getattr(self, f"{prefix}_top1"), getattr(self, f"{prefix}_top5")
        top1.update(logits, y)
        top5.update(logits, y)
        self.log(f"{prefix}/loss", F.cross_entropy(logits.float(), y), on_epoch=True, sync_dist=True)
        self.log(f"{prefix}/top1", top1, on_epoch=True, prog_bar=True)
        self.log(f"{prefix}/top5", top5, on_epoch=True)
        if prefix == "val" and self.model_ema is not None:
            logits_ema = self.model_ema.module(x)
            self.val_top1_ema.update(logits_ema, y)
            self.val_top5_ema.update(logits_ema, y)
            self.log("val/top1_ema", self.val_top1_ema, on_epoch=True, prog_bar=True)
            self.log("val/top5_ema", self.val_top5_ema, on_epoch=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        probs = self(x).softmax(dim=-1)
        return {"probs": probs, "pred": probs.argmax(dim=-1)}

    # -- optimisation -------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2

        hp = self.hparams
        opt_kwargs: dict[str, Any] = {}
        if hp.opt_eps is not None:
            opt_kwargs["eps"] = hp.opt_eps
        if hp.opt_betas is not None:
            opt_kwargs["betas"] = tuple(hp.opt_betas)
        optimizer = create_optimizer_v2(
            self.model,
            opt=hp.optimizer,
            lr=hp.lr,
            weight_decay=hp.weight_decay,
            momentum=hp.momentum,
            layer_decay=hp.layer_decay,
            **opt_kwargs,
        )
        if hp.scheduler in (None, "none"):
            return {"optimizer": optimizer}
        estimated = self.trainer.estimated_stepping_batches
        if math.isinf(estimated):
            raise ValueError(
                f"scheduler={hp.scheduler!r} needs a finite run: set trainer.max_epochs or trainer.max_steps "
                "(or scheduler: none)"
            )
        total_steps = int(estimated)
        steps_per_epoch = max(1, math.ceil(self.trainer.num_training_batches / self.trainer.accumulate_grad_batches))
        num_epochs = max(1, math.ceil(total_steps / steps_per_epoch))
        if not 0 <= hp.cooldown_epochs < num_epochs:
            raise ValueError(f"cooldown_epochs={hp.cooldown_epochs} must be in [0, {num_epochs}) (the run's epochs)")
        by_step = hp.sched_on == "step"
        warmup = hp.warmup_epochs * steps_per_epoch if by_step else hp.warmup_epochs
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=hp.scheduler,
            num_epochs=max(1, round(num_epochs - hp.cooldown_epochs)),  # the cosine ends there, then min_lr
            warmup_epochs=0,
            warmup_lr=hp.warmup_lr,
            min_lr=hp.min_lr,
            step_on_epochs=not by_step,
            updates_per_epoch=steps_per_epoch,
        )
        # create_scheduler_v2 takes whole warm-up epochs; set the (possibly fractional) length directly.
        self._set_warmup(scheduler, round(warmup), hp.warmup_lr)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step" if by_step else "epoch", "frequency": 1},
        }

    @staticmethod
    def _set_warmup(scheduler: Any, warmup_t: int, warmup_lr: float) -> None:
        """Give a timm scheduler a linear warm-up of ``warmup_t`` updates (or epochs) from ``warmup_lr``."""
        if warmup_t <= 0 or not hasattr(scheduler, "warmup_t"):
            return
        scheduler.warmup_t = warmup_t
        scheduler.warmup_lr_init = warmup_lr
        scheduler.warmup_steps = [(v - warmup_lr) / warmup_t for v in scheduler.base_values]
        scheduler.update_groups(warmup_lr)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Step timm schedulers: ``step_update(num_updates)`` per optimizer step, ``step(epoch)`` per epoch."""
        if self.hparams.sched_on == "step":
            scheduler.step_update(num_updates=self.global_step, metric=metric)
        else:
            scheduler.step(epoch=self.current_epoch + 1, metric=metric)

    # -- checkpoints --------------------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Let runs with and without EMA load each other's checkpoints (EMA starts from the raw weights)."""
        state = checkpoint.get("state_dict", {})
        has_ema = any(k.startswith("model_ema.") for k in state)
        if self.model_ema is not None and not has_ema:
            for key in [k for k in state if k.startswith("model.")]:
                state["model_ema.module." + key[len("model.") :]] = state[key].clone()
        elif self.model_ema is None and has_ema:
            for key in [k for k in state if k.startswith("model_ema.")]:
                del state[key]
