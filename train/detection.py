"""COCO-style object detection with any timm / linzoo backbone, as a LightningModule + LightningDataModule.

The detector is torchvision's: :class:`~torchvision.models.detection.FasterRCNN` (default) or
:class:`~torchvision.models.detection.RetinaNet`, on a backbone made of ``timm.create_model(name,
features_only=True, out_indices=...)`` and torchvision's :class:`~torchvision.ops.FeaturePyramidNetwork`
(:class:`TimmFPNBackbone`). The anchors follow MMDetection's defaults (the framework the RAVLT / VAN / SOFT
papers report COCO numbers with): Faster R-CNN uses one anchor of ``8 × stride`` per FPN level (3 aspect
ratios), RetinaNet three octave scales of ``4 × stride``.

Resizing and normalisation are done by the detector's ``GeneralizedRCNNTransform`` (``min_size`` /
``max_size``, the backbone's mean/std, padding to a multiple of 32), which maps the predictions back to the
input image's coordinates, so COCO mAP is measured on the original boxes (areas and crowd flags from the
annotation file), as the official evaluation does. mAP comes from torchmetrics'
:class:`~torchmetrics.detection.MeanAveragePrecision` with the pycocotools backend (synchronised across DDP
processes).

Data: :class:`CocoDetectionDataModule` reads the COCO layout (``ROOT/<split>/`` images and
``ROOT/annotations/instances_<split>.json``), turns COCO's ``[x, y, w, h]`` into ``[x1, y1, x2, y2]`` and, for
training, drops crowd and degenerate boxes and images left without a box (as torchvision's detection
reference does); validation keeps every image and flags crowd boxes (``iscrowd``) for the evaluation.
:class:`SyntheticCocoDataModule` writes a small synthetic COCO dataset (coloured shapes) once and reads it
through the same code: the embedded demo, and the tests.

Exact resume, as for classification: the train loader is :class:`~linzoo.train.data.ResumableDataLoader`
(``(index, seed)`` keys: each image's flip is drawn from its own seed) and every training step reseeds the
global generators (RPN / RoI sampling, multi-scale ``min_size`` draws) from ``(seed, epoch, batch, rank)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .classification import ClassificationModule, _check_model_name, plain_container
from .data import ResumableDataModule, derive_seed

__all__ = [
    "CocoDetectionDataModule",
    "CocoDetectionDataset",
    "DetectionModule",
    "SyntheticCocoDataModule",
    "TimmFPNBackbone",
    "collate_detection",
    "create_detector",
    "write_synthetic_coco",
]

Target = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------------------


class TimmFPNBackbone(nn.Module):
    """timm ``features_only`` backbone → (optional per-level LayerNorm) → torchvision FPN.

    torchvision's ``BackboneWithFPN`` expects a torchvision-style module with named children to cut
    (``IntermediateLayerGetter``); a timm ``features_only`` model already returns the stage outputs as a list,
    so only the FPN part is reused here.

    Args:
        body: a timm ``features_only`` model returning ``len(in_channels)`` maps of increasing stride.
        in_channels: channels of those maps (``body.feature_info.channels()``).
        out_channels: FPN width (``self.out_channels``, what torchvision's heads read).
        extra_block: ``"maxpool"`` (P6 = max-pool of the last level; Faster R-CNN), ``"p6p7"`` (two stride-2
            3×3 convs on the last FPN level; RetinaNet) or ``None``.
        out_norm: a ``LayerNorm2d`` on each backbone output before the FPN, as the official RAVLT detection
            backbone's ``extra_norms`` (classification models end their stages without a norm).

    ``forward``: ``(B, 3, H, W)`` → ``OrderedDict`` of ``(B, out_channels, H/s, W/s)`` maps, keys ``"0"``…
    (and ``"pool"`` / ``"p6"``, ``"p7"`` for the extra levels).
    """

    def __init__(
        self,
        body: nn.Module,
        in_channels: Sequence[int],
        out_channels: int = 256,
        extra_block: Literal["maxpool", "p6p7"] | None = "maxpool",
        out_norm: bool = True,
    ) -> None:
        super().__init__()
        from timm.layers import LayerNorm2d
        from torchvision.ops.feature_pyramid_network import (
            FeaturePyramidNetwork,
            LastLevelMaxPool,
            LastLevelP6P7,
        )

        extra: nn.Module | None
        if extra_block == "maxpool":
            extra = LastLevelMaxPool()
        elif extra_block == "p6p7":
            extra = LastLevelP6P7(out_channels, out_channels)
        elif extra_block is None:
            extra = None
        else:
            raise ValueError(f"extra_block must be 'maxpool', 'p6p7' or None, got {extra_block!r}")
        self.body = body
        self.norms = nn.ModuleList([LayerNorm2d(c) if out_norm else nn.Identity() for c in in_channels])
        self.fpn = FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=extra)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body(x)
        return self.fpn(OrderedDict((str(i), norm(f)) for i, (norm, f) in enumerate(zip(self.norms, feats))))


def _num_extra_levels(extra_block: str | None) -> int:
    return {"maxpool": 1, "p6p7": 2, None: 0}[extra_block]


def create_detector(
    backbone: str,
    num_classes: int,
    *,
    detector: Literal["fasterrcnn", "retinanet"] = "fasterrcnn",
    pretrained: bool = False,
    checkpoint_path: str | None = None,
    out_indices: Sequence[int] | None = None,
    backbone_kwargs: dict[str, Any] | None = None,
    fpn_channels: int = 256,
    out_norm: bool = True,
    representation_size: int = 1024,
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    detector_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """A torchvision detector on ``timm.create_model(backbone, features_only=True)`` + FPN.

    ``num_classes`` counts object classes only; the detector predicts labels ``1..num_classes`` (0 is the
    background of Faster R-CNN). ``detector_kwargs`` go to the torchvision constructor (``box_score_thresh``,
    ``rpn_post_nms_top_n_train``, ``detections_per_img`` ...). Returns the torchvision model: in training mode
    ``model(images, targets)`` gives a dict of losses, in eval mode ``model(images)`` a list of
    ``{"boxes" (N, 4) xyxy, "scores" (N,), "labels" (N,)}`` in the input images' coordinates.
    """
    import timm
    from torchvision.models.detection import FasterRCNN, RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.ops import MultiScaleRoIAlign

    if detector not in ("fasterrcnn", "retinanet"):
        raise ValueError(f"detector must be 'fasterrcnn' or 'retinanet', got {detector!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if fpn_channels < 1:
        raise ValueError(f"fpn_channels must be >= 1, got {fpn_channels}")
    if representation_size < 1:
        raise ValueError(f"representation_size must be >= 1, got {representation_size}")
    sizes = [min_size] if isinstance(min_size, int) else list(min_size)
    if not sizes or any(int(s) < 1 for s in sizes) or max_size < max(int(s) for s in sizes):
        raise ValueError(f"min_size must be >= 1 (int or list) and <= max_size={max_size}, got {min_size}")
    _check_model_name(backbone)

    kwargs: dict[str, Any] = dict(backbone_kwargs or {})
    if checkpoint_path is not None:
        path = os.path.expanduser(checkpoint_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"checkpoint_path={checkpoint_path!r} does not exist")
        pretrained = True
        kwargs["pretrained_cfg_overlay"] = dict(file=path)
    if out_indices is None:
        out_indices = (0, 1, 2, 3) if detector == "fasterrcnn" else (1, 2, 3)
    out_indices = tuple(int(i) for i in out_indices)
    body = timm.create_model(backbone, pretrained=pretrained, features_only=True, out_indices=out_indices, **kwargs)
    if str(getattr(body, "output_fmt", "NCHW")).rpartition(".")[2] != "NCHW":
        raise ValueError(f"backbone={backbone!r} returns {body.output_fmt} features; the FPN needs NCHW maps")
    channels, strides = body.feature_info.channels(), body.feature_info.reduction()
    if any(b <= a for a, b in zip(strides, strides[1:])):
        raise ValueError(
            f"out_indices={list(out_indices)} of backbone={backbone!r} give feature strides {strides}; an FPN "
            "needs strictly increasing strides (a hierarchical backbone: RAVLT, VAN, PVT, Swin, CSWin ...; "
            "plain ViTs such as DeiT have one stride)"
        )
    extra_block = "maxpool" if detector == "fasterrcnn" else "p6p7"
    fpn = TimmFPNBackbone(body, channels, fpn_channels, extra_block=extra_block, out_norm=out_norm)
    level_strides = [*strides, *(strides[-1] * 2 ** (i + 1) for i in range(_num_extra_levels(extra_block)))]
    cfg = body.pretrained_cfg or {}
    common: dict[str, Any] = dict(
        min_size=tuple(int(s) for s in sizes),
        max_size=int(max_size),
        image_mean=list(cfg.get("mean", (0.485, 0.456, 0.406))),
        image_std=list(cfg.get("std", (0.229, 0.224, 0.225))),
    )
    common.update(detector_kwargs or {})
    if detector == "fasterrcnn":
        # MMDetection's RPN: scale 8 × stride per level, ratios 0.5 / 1 / 2 (torchvision's 32..512 for strides 4..64)
        anchors = AnchorGenerator(tuple((8 * s,) for s in level_strides), ((0.5, 1.0, 2.0),) * len(level_strides))
        roi_pool = MultiScaleRoIAlign([str(i) for i in range(len(strides))], output_size=7, sampling_ratio=2)
        box_head = TwoMLPHead(fpn_channels * 7 * 7, representation_size)
        return FasterRCNN(
            fpn,
            rpn_anchor_generator=anchors,
            box_roi_pool=roi_pool,
            box_head=box_head,
            box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
            **common,
        )
    # RetinaNet: octave_base_scale 4, 3 scales per octave, ratios 0.5 / 1 / 2 (MMDetection and torchvision)
    anchors = AnchorGenerator(
        tuple(tuple(4 * s * 2 ** (k / 3) for k in range(3)) for s in level_strides),
        ((0.5, 1.0, 2.0),) * len(level_strides),
    )
    head = RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes + 1)
    return RetinaNet(fpn, num_classes + 1, anchor_generator=anchors, head=head, **common)


class DetectionModule(pl.LightningModule):
    """Train / evaluate a torchvision detector on a timm (linzoo) backbone; logs COCO bbox mAP.

    Batches are ``(images, targets)``: lists of ``(3, H, W)`` float images in [0, 1] and of dicts with
    ``boxes`` ``(N, 4)`` xyxy in pixels and ``labels`` ``(N,)`` in ``1..num_classes`` (validation targets
    may add ``iscrowd`` and ``area``, used by the COCO evaluation). Logged: ``train/loss`` and each loss term
    (``train/loss_classifier``, ``train/loss_box_reg``, ``train/loss_objectness``, ``train/loss_rpn_box_reg``
    for Faster R-CNN; ``train/classification``, ``train/bbox_regression`` for RetinaNet), ``train/lr``, and
    ``val/map``, ``val/map_50``, ``val/map_75``, ``val/map_small|medium|large``, ``val/mar_100``.

    Args:
        backbone: any timm / linzoo model with ``features_only`` support and increasing strides.
        num_classes: number of object classes (80 for COCO), background not counted.
        detector: ``fasterrcnn`` (FPN P2–P6, RPN + RoIAlign two-MLP box head) or ``retinanet`` (P3–P7).
        pretrained / checkpoint_path: ImageNet weights of the backbone (official file, linzoo safetensors or
            timm checkpoint; loaded through the family's ``checkpoint_filter_fn``).
        out_indices: backbone stages fed to the FPN (None: all four for Faster R-CNN, the last three for
            RetinaNet).
        backbone_kwargs: extra ``timm.create_model`` arguments (``drop_path_rate``, ``img_size`` ...).
        fpn_channels / representation_size: FPN width and the box head's MLP width.
        out_norm: LayerNorm2d on each backbone output (the official RAVLT detection backbone's ``extra_norms``).
        norm_eval: keep the backbone's BatchNorm layers in eval mode while training (frozen running statistics,
            MMDetection's ``norm_eval=True``; detection batches are too small for BN statistics).
        min_size / max_size: the detector's resize (shorter side, capped longer side); a list of ``min_size``
            values draws one per training batch (multi-scale training).
        detector_kwargs: extra arguments of the torchvision detector.
        optimizer / lr / weight_decay / opt_betas: timm optimizer (weight decay skips biases and norms).
        scheduler: ``cosine``, ``multistep`` (×``decay_rate`` at each of ``decay_milestones``, in epochs:
            the 1× schedule is 12 epochs with milestones 8, 11) or ``none``.
        warmup_steps / warmup_lr: linear warm-up over optimizer steps, starting at ``warmup_lr``.
        min_lr: floor of the cosine.
        seed: base seed of the per-step generators (None: Lightning's ``seed_everything`` value).
    """

    def __init__(
        self,
        backbone: str = "ravlt_s",
        num_classes: int = 80,
        detector: Literal["fasterrcnn", "retinanet"] = "fasterrcnn",
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        out_indices: tuple[int, ...] | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        fpn_channels: int = 256,
        representation_size: int = 1024,
        out_norm: bool = True,
        norm_eval: bool = True,
        min_size: int | tuple[int, ...] = 800,
        max_size: int = 1333,
        detector_kwargs: dict[str, Any] | None = None,
        optimizer: str = "adamw",
        lr: float = 1e-4,
        weight_decay: float = 0.05,
        opt_betas: tuple[float, float] | None = None,
        scheduler: Literal["cosine", "multistep", "none"] = "cosine",
        decay_milestones: tuple[float, ...] = (8, 11),
        decay_rate: float = 0.1,
        warmup_steps: int = 500,
        warmup_lr: float = 1e-7,
        min_lr: float = 1e-6,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        backbone_kwargs = plain_container(backbone_kwargs)
        detector_kwargs = plain_container(detector_kwargs)
        out_indices = None if out_indices is None else tuple(int(i) for i in out_indices)
        min_size = int(min_size) if isinstance(min_size, int) else tuple(int(s) for s in min_size)
        opt_betas = None if opt_betas is None else tuple(float(b) for b in opt_betas)
        decay_milestones = tuple(float(m) for m in decay_milestones)
        if lr <= 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if scheduler not in ("cosine", "multistep", "none"):
            raise ValueError(f"scheduler must be 'cosine', 'multistep' or 'none', got {scheduler!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 < decay_rate <= 1.0:
            raise ValueError(f"decay_rate must be in (0, 1], got {decay_rate}")
        if list(decay_milestones) != sorted(decay_milestones) or any(m <= 0 for m in decay_milestones):
            raise ValueError(f"decay_milestones must be increasing positive epochs, got {list(decay_milestones)}")
        self.save_hyperparameters()
        self.model = create_detector(
            backbone,
            num_classes,
            detector=detector,
            pretrained=pretrained,
            checkpoint_path=checkpoint_path,
            out_indices=out_indices,
            backbone_kwargs=backbone_kwargs,
            fpn_channels=fpn_channels,
            out_norm=out_norm,
            representation_size=representation_size,
            min_size=min_size,
            max_size=max_size,
            detector_kwargs=detector_kwargs,
        )
        self.num_classes = num_classes
        self.val_map = self._new_metric()
        self.test_map = self._new_metric()

    @staticmethod
    def _new_metric() -> nn.Module:
        from torchmetrics.detection import MeanAveragePrecision

        return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")

    def train(self, mode: bool = True) -> DetectionModule:
        super().train(mode)
        if mode and self.hparams.norm_eval:
            for module in self.model.backbone.body.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    # -- forward / steps ----------------------------------------------------------------------------------
    def forward(self, images: list[torch.Tensor], targets: list[Target] | None = None) -> Any:
        """Training mode: ``images`` + ``targets`` → dict of losses; eval mode: ``images`` → detections."""
        return self.model(images, targets)

    def _base_seed(self) -> int:
        seed = self.hparams.seed
        return int(seed if seed is not None else os.environ.get("PL_GLOBAL_SEED", 0))

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        seed = derive_seed(self._base_seed(), self.current_epoch, batch_idx, self.global_rank)
        random.seed(seed)
        np.random.seed(seed)  # noqa: NPY002
        torch.manual_seed(seed)
        body = self.model.backbone.body
        body = getattr(body, "model", body)  # timm's feature wrappers keep the network as ``.model``
        if hasattr(body, "set_prepbn_step"):  # SLAB's LayerNorm -> RepBN schedule follows the optimizer step
            body.set_prepbn_step(self.global_step)

    def training_step(self, batch: tuple[list[torch.Tensor], list[Target]], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        loss = sum(losses.values())
        distributed = self.trainer.world_size > 1
        batch_size = len(images)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=distributed, batch_size=batch_size
        )
        for name, value in losses.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("train/lr", max(g["lr"] for g in self.optimizers().param_groups), on_step=True, on_epoch=False)
        return loss

    def _evaluate(self, batch: tuple[list[torch.Tensor], list[Target]], metric: Any) -> None:
        images, targets = batch
        preds = self.model(images)
        keep = ("boxes", "labels", "iscrowd", "area")
        metric.update(
            [
                {k: p[k].detach().float() if k != "labels" else p[k] for k in ("boxes", "scores", "labels")}
                for p in preds
            ],
            [{k: t[k] for k in keep if k in t} for t in targets],
        )

    def _log_map(self, metric: Any, prefix: str) -> None:
        result = metric.compute()
        names = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")
        for name in names:
            self.log(f"{prefix}/{name}", result[name].float(), prog_bar=name in ("map", "map_50"))
        metric.reset()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, self.val_map)

    def on_validation_epoch_end(self) -> None:
        self._log_map(self.val_map, "val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self._evaluate(batch, self.test_map)

    def on_test_epoch_end(self) -> None:
        self._log_map(self.test_map, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, torch.Tensor]]:
        images = batch[0] if isinstance(batch, (tuple, list)) and isinstance(batch[0], (list, tuple)) else batch
        return self.model(list(images))

    # -- optimisation -------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2

        hp = self.hparams
        opt_kwargs: dict[str, Any] = {}
        if hp.opt_betas is not None:
            opt_kwargs["betas"] = tuple(hp.opt_betas)
        optimizer = create_optimizer_v2(
            self.model, opt=hp.optimizer, lr=hp.lr, weight_decay=hp.weight_decay, **opt_kwargs
        )
        if hp.scheduler == "none":
            return {"optimizer": optimizer}
        trainer = self.trainer
        total_steps = int(trainer.estimated_stepping_batches)
        if math.isinf(trainer.num_training_batches):  # max_steps without max_epochs: the loader is not loaded yet
            trainer.fit_loop.setup_data()
        batches = trainer.num_training_batches
        steps_per_epoch = total_steps if math.isinf(batches) else math.ceil(batches / trainer.accumulate_grad_batches)
        steps_per_epoch = max(1, steps_per_epoch)
        sched_kwargs: dict[str, Any] = dict(num_epochs=max(1, math.ceil(total_steps / steps_per_epoch)))
        if hp.scheduler == "multistep":
            sched_kwargs.update(decay_milestones=list(hp.decay_milestones), decay_rate=hp.decay_rate)
        scheduler, _ = create_scheduler_v2(
            optimizer,
            sched=hp.scheduler,
            warmup_epochs=0,
            warmup_lr=hp.warmup_lr,
            min_lr=hp.min_lr,
            step_on_epochs=False,
            updates_per_epoch=steps_per_epoch,
            **sched_kwargs,
        )
        if hp.scheduler == "multistep":
            # whole optimizer steps (create_scheduler_v2 leaves fractional epochs × updates_per_epoch as floats)
            scheduler.decay_t = [round(m * steps_per_epoch) for m in hp.decay_milestones]
        ClassificationModule._set_warmup(scheduler, int(hp.warmup_steps), hp.warmup_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Step the timm scheduler once per optimizer update."""
        scheduler.step_update(num_updates=self.global_step, metric=metric)


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------

_COCO_LAYOUT = (
    "the COCO layout: ROOT/{train}/<images>, ROOT/{val}/<images>, ROOT/annotations/instances_{train}.json and "
    "ROOT/annotations/instances_{val}.json"
)


def collate_detection(batch: Sequence[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """``[(image, target), ...]`` → ``([images], [targets])`` (images keep their own sizes)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


class CocoDetectionDataset(Dataset):
    """Images and boxes of one COCO split.

    Items are ``(image, target)``: a ``(3, H, W)`` float image in [0, 1] and ``{"boxes": (N, 4) float xyxy,
    "labels": (N,) int64 in 1..K, "iscrowd": (N,), "area": (N,), "image_id": ()}``; labels follow
    ``category_ids`` (COCO's sparse category ids in order → 1..K). Keys may be ``(index, seed)`` (what
    :class:`~linzoo.train.data.ResumableSampler` yields): the horizontal flip is drawn from ``seed``.

    Args:
        image_dir / annotation_file: the split's images and ``instances_*.json``.
        category_ids: COCO category ids in label order (label = position + 1).
        train: drop crowd boxes, boxes without area after clipping, and images left without a box.
        hflip: probability of a horizontal flip (0 for evaluation).
    """

    def __init__(
        self,
        image_dir: str | Path,
        annotation_file: str | Path,
        category_ids: Sequence[int],
        *,
        train: bool,
        hflip: float = 0.0,
    ) -> None:
        from pycocotools.coco import COCO

        self.image_dir = Path(image_dir)
        self.train, self.hflip = train, float(hflip)
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # pycocotools prints timings
            self.coco = COCO(str(annotation_file))
        self.label_of = {int(c): i + 1 for i, c in enumerate(category_ids)}
        ids = sorted(self.coco.imgs)
        if train:
            ids = [i for i in ids if len(self._annotations(i)[0])]
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def _annotations(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        info = self.coco.imgs[image_id]
        w, h = float(info["width"]), float(info["height"])
        boxes, labels, crowd, area = [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            is_crowd = int(ann.get("iscrowd", 0))
            if self.train and is_crowd:
                continue
            if int(ann["category_id"]) not in self.label_of:
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            x1, y1 = min(max(x, 0.0), w), min(max(y, 0.0), h)
            x2, y2 = min(max(x + bw, 0.0), w), min(max(y + bh, 0.0), h)
            if x2 <= x1 or y2 <= y1:
                continue
            boxes.append((x1, y1, x2, y2))
            labels.append(self.label_of[int(ann["category_id"])])
            crowd.append(is_crowd)
            area.append(float(ann.get("area", bw * bh)))
        return (
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor(labels, dtype=torch.int64),
            torch.tensor(crowd, dtype=torch.int64),
            torch.tensor(area, dtype=torch.float32),
        )

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, Target]:
        from PIL import Image

        index, seed = key if isinstance(key, tuple) else (key, derive_seed(key))
        image_id = self.ids[index]
        with Image.open(self.image_dir / self.coco.imgs[image_id]["file_name"]) as im:
            pixels = np.asarray(im.convert("RGB"))
        image = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)
        boxes, labels, crowd, area = self._annotations(image_id)
        if self.hflip > 0 and random.Random(seed).random() < self.hflip:
            image = image.flip(-1)
            width = image.shape[-1]
            boxes = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
        target = {"boxes": boxes, "labels": labels, "iscrowd": crowd, "area": area, "image_id": torch.tensor(image_id)}
        return image, target


class CocoDetectionDataModule(ResumableDataModule):
    """COCO-layout detection data: ``ROOT/<split>/`` images, ``ROOT/annotations/instances_<split>.json``.

    COCO 2017: ``train_split: train2017``, ``val_split: val2017``. Categories are taken from the training
    file (sorted by id → labels 1..K) and must match the model's ``num_classes``.

    Args:
        root: dataset root (required).
        train_split / val_split: image folder names (the annotation files are named after them).
        batch_size: images per process and step.
        num_workers: loader worker processes.
        hflip: horizontal-flip probability of training images (resizing is the detector's ``min_size`` /
            ``max_size``).
        seed: seed of the shuffling and flips (None: Lightning's ``seed_everything`` value).
    """

    def __init__(
        self,
        root: str | None = None,
        train_split: str = "train",
        val_split: str = "val",
        batch_size: int = 2,
        num_workers: int = 4,
        hflip: float = 0.5,
        seed: int | None = None,
        pin_memory: bool = True,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"data.hflip must be in [0, 1], got {hflip}")
        self.root, self.train_split, self.val_split = root, train_split, val_split
        self.batch_size, self.num_workers, self.hflip = batch_size, num_workers, hflip
        self.seed, self.pin_memory = seed, pin_memory
        self.classes: list[str] = []
        self.category_ids: list[int] = []
        self.train_set: CocoDetectionDataset | None = None
        self.val_set: CocoDetectionDataset | None = None

    def _paths(self, split: str) -> tuple[Path, Path]:
        root = Path(self.root).expanduser()  # type: ignore[arg-type]
        return root / split, root / "annotations" / f"instances_{split}.json"

    def check_layout(self) -> None:
        """Raise a ``ValueError`` / ``FileNotFoundError`` naming the expected layout if ``root`` does not match."""
        layout = _COCO_LAYOUT.format(train=self.train_split, val=self.val_split)
        if not self.root:
            raise ValueError(f"data.root is not set: pass --data.init_args.root /path/to/coco, {layout}")
        for split in (self.train_split, self.val_split):
            images, annotations = self._paths(split)
            if not images.is_dir():
                raise FileNotFoundError(f"data.root={self.root!r} has no image folder {images}; expected {layout}")
            if not annotations.is_file():
                raise FileNotFoundError(f"data.root={self.root!r} has no {annotations}; expected {layout}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        self.check_layout()
        train_images, train_ann = self._paths(self.train_split)
        val_images, val_ann = self._paths(self.val_split)
        with open(train_ann) as f:
            categories = sorted(json.load(f)["categories"], key=lambda c: int(c["id"]))
        with open(val_ann) as f:
            val_categories = sorted(json.load(f)["categories"], key=lambda c: int(c["id"]))
        if [c["id"] for c in val_categories] != [c["id"] for c in categories]:
            raise ValueError(f"{val_ann} and {train_ann} list different categories")
        self.category_ids = [int(c["id"]) for c in categories]
        self.classes = [str(c["name"]) for c in categories]
        module = self.trainer.lightning_module if self.trainer is not None else None
        model_classes = getattr(module, "num_classes", None)
        if model_classes is not None and model_classes != self.num_classes:
            raise ValueError(
                f"model.num_classes={model_classes} but {train_ann} has {self.num_classes} categories; "
                f"set --model.init_args.num_classes {self.num_classes}"
            )
        self.train_set = CocoDetectionDataset(train_images, train_ann, self.category_ids, train=True, hflip=self.hflip)
        self.val_set = CocoDetectionDataset(val_images, val_ann, self.category_ids, train=False)
        replicas = self._world()[0]
        if len(self.train_set) < self.batch_size * replicas:
            raise ValueError(
                f"data.batch_size={self.batch_size} x {replicas} process(es) is larger than the "
                f"{len(self.train_set)} training images with boxes"
            )

    def _collate_fn(self) -> Any:
        return collate_detection


# ----------------------------------------------------------------------------------------------------------
# synthetic data (the demo and the tests)
# ----------------------------------------------------------------------------------------------------------

#: COCO-style sparse category ids of the synthetic shapes (class = colour).
SYNTHETIC_CATEGORIES = (
    {"id": 1, "name": "red", "color": (220, 40, 40)},
    {"id": 3, "name": "green", "color": (40, 200, 60)},
    {"id": 7, "name": "blue", "color": (50, 70, 230)},
)


def write_synthetic_coco(
    root: str | Path,
    *,
    num_train: int = 64,
    num_val: int = 16,
    image_size: int | tuple[int, int] = 64,
    max_objects: int = 3,
    seed: int = 0,
    train_split: str = "train",
    val_split: str = "val",
) -> Path:
    """Write a COCO-layout dataset of filled rectangles on a noisy background (the class is the colour).

    ``root/{train,val}/*.png`` and ``root/annotations/instances_{train,val}.json`` with sparse category ids
    (1, 3, 7); objects do not overlap. Image 0 of the training split has no object (the training set must skip
    it) and every validation image after the first gets a crowd box (``iscrowd: 1``, ignored by the evaluation).
    Returns ``root``.
    """
    from PIL import Image

    if num_train < 2 or num_val < 1:
        raise ValueError(f"num_train must be >= 2 and num_val >= 1, got {num_train} and {num_val}")
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(height, width) < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    categories = [{"id": c["id"], "name": c["name"], "supercategory": "shape"} for c in SYNTHETIC_CATEGORIES]
    colors = {c["id"]: c["color"] for c in SYNTHETIC_CATEGORIES}
    ann_id = 1
    for split, count, offset in ((train_split, num_train, 0), (val_split, num_val, 100_000)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image_id = offset + i + 1
            pixels = rng.integers(90, 150, size=(height, width, 3)).astype(np.uint8)
            objects: list[tuple[int, int, int, int, int, int]] = []  # (category, x, y, w, h, iscrowd)
            if split == val_split and i > 0:  # a crowd region (drawn, so it looks like an object)
                bw, bh = max(4, width // 8), max(4, height // 8)
                objects.append((SYNTHETIC_CATEGORIES[0]["id"], 0, 0, bw, bh, 1))
            n = 0 if (split == train_split and i == 0) else int(rng.integers(1, max_objects + 1))
            for _ in range(20 * n):  # rejection sampling: objects do not overlap (no hidden boxes)
                if sum(1 for o in objects if not o[5]) == n:
                    break
                cat_id = SYNTHETIC_CATEGORIES[int(rng.integers(len(SYNTHETIC_CATEGORIES)))]["id"]
                bw = int(rng.integers(max(4, width // 6), max(5, width // 2)))
                bh = int(rng.integers(max(4, height // 6), max(5, height // 2)))
                x, y = int(rng.integers(0, width - bw + 1)), int(rng.integers(0, height - bh + 1))
                if all(
                    x + bw <= ox or ox + ow <= x or y + bh <= oy or oy + oh <= y for _, ox, oy, ow, oh, _ in objects
                ):
                    objects.append((cat_id, x, y, bw, bh, 0))
            for cat_id, x, y, bw, bh, _ in objects:
                pixels[y : y + bh, x : x + bw] = colors[cat_id]
            name = f"{image_id:012d}.png"
            Image.fromarray(pixels).save(root / split / name)
            images.append({"id": image_id, "file_name": name, "width": width, "height": height})
            for cat_id, x, y, bw, bh, crowd in objects:
                annotations.append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": cat_id,
                        "bbox": [x, y, bw, bh],
                        "area": bw * bh,
                        "iscrowd": crowd,
                    }
                )
                ann_id += 1
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        data = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


class SyntheticCocoDataModule(CocoDetectionDataModule):
    """:class:`CocoDetectionDataModule` on a synthetic COCO dataset written to ``root`` on first use.

    Three classes (red, green, blue filled rectangles on noise), see :func:`write_synthetic_coco`; nothing to
    download. The files are written once (``prepare_data``) and reused while ``root`` holds them.
    """

    def __init__(
        self,
        root: str = "runs/synthetic_coco",
        num_train: int = 64,
        num_val: int = 16,
        image_size: int = 64,
        max_objects: int = 3,
        data_seed: int = 0,
        batch_size: int = 4,
        num_workers: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(root=root, batch_size=batch_size, num_workers=num_workers, **kwargs)
        self.synthetic = dict(
            num_train=num_train, num_val=num_val, image_size=image_size, max_objects=max_objects, seed=data_seed
        )

    def prepare_data(self) -> None:
        stamp = Path(self.root).expanduser() / "annotations" / "synthetic.json"
        wanted = json.dumps(self.synthetic, sort_keys=True)
        if stamp.is_file() and stamp.read_text() == wanted:
            return
        write_synthetic_coco(
            Path(self.root).expanduser(), train_split=self.train_split, val_split=self.val_split, **self.synthetic
        )
        stamp.write_text(wanted)

    def setup(self, stage: str | None = None) -> None:
        if self.trainer is None:  # used outside a Trainer: prepare_data was not called
            self.prepare_data()
        super().setup(stage)
