"""Helpers every linzoo family file shares: input checks, pretrained loading, timm building, listing."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, list_models, model_entrypoint
from timm.models._features_fx import register_notrace_function
from timm.models._manipulate import adapt_input_conv
from torch import nn

import linzoo.kernels
from linzoo.weights import check_state_dict, get_checkpoint, load_state_dict_file, pretrained_source

__all__ = [
    "base_cfg",
    "unwrap_checkpoint",
    "build_linzoo_model",
    "check_image_input",
    "is_linzoo_model",
    "list_linzoo_models",
    "load_pretrained_file",
]

_logger = logging.getLogger(__name__)

# The kernel ops validate shapes in Python and dispatch to custom ops; FX (timm's feature extraction) must
# treat them as leaves rather than trace into them. Same for the RoPE table, which depends on the grid size.
for _name in ("linear_attention", "neighborhood_attention_2d", "window_attention_2d", "rope_2d", "bidirectional_gla"):
    if hasattr(linzoo.kernels, _name):
        register_notrace_function(getattr(linzoo.kernels, _name))


def unwrap_checkpoint(
    state_dict: dict[str, Any],
    containers: tuple[str, ...] = ("model",),
    prefixes: tuple[str, ...] = ("module.",),
    tensors_only: bool = True,
) -> dict[str, Any]:
    """The weights of an official training checkpoint, with wrapper prefixes removed.

    Takes the first entry of ``containers`` that holds a dict (``model``, ``state_dict``, ``state_dict_ema``...;
    a bare state dict is used as is), drops non-tensor entries when ``tensors_only``, and strips each of
    ``prefixes`` in turn from the start of a key (``module.`` from DDP, ``backbone.`` from detection configs).
    Each family's ``checkpoint_filter_fn`` starts with this and then applies its own renames and resizes.
    """
    for name in containers:
        if isinstance(state_dict.get(name), dict):
            state_dict = state_dict[name]
            break
    out = {}
    for key, value in state_dict.items():
        if tensors_only and not isinstance(value, torch.Tensor):
            continue
        for prefix in prefixes:
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


@register_notrace_function
def check_image_input(x: torch.Tensor, in_chans: int, multiple_of: int = 1) -> None:
    """Raise ``ValueError`` unless ``x`` is ``(B, in_chans, H, W)`` (and H, W are multiples of ``multiple_of``)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be an image batch of shape (B, {in_chans}, H, W), got {shape}")
    if x.shape[1] != in_chans:
        raise ValueError(f"x must have {in_chans} channels (B, {in_chans}, H, W), got {tuple(x.shape)}")
    if multiple_of > 1 and (x.shape[2] % multiple_of or x.shape[3] % multiple_of):
        raise ValueError(f"x height and width must be multiples of {multiple_of}, got {tuple(x.shape[2:])}")


def base_cfg(model_name: str | None = None, **kwargs: Any) -> dict[str, Any]:
    """timm pretrained cfg with ImageNet defaults and, when registered, the official weight source."""
    cfg = {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj.0",
        "classifier": "head",
    }
    if model_name is not None:
        cfg.update(pretrained_source(model_name))
        ckpt = get_checkpoint(model_name)
        if ckpt is not None and ckpt.top1 is not None:
            cfg["notes"] = (f"published ImageNet-1k top-1 {ckpt.top1}",)
    cfg.update(kwargs)
    return cfg


def load_pretrained_file(
    model: nn.Module,
    path: str | os.PathLike,
    filter_fn: Callable[[dict, nn.Module], dict] | None = None,
    state_dict_key: str | None = None,
) -> None:
    """Load an official (or linzoo) checkpoint file into ``model``.

    Reads the file with the safe loader, maps it with ``filter_fn``, adapts the first conv to ``in_chans``,
    drops classifier weights whose shape differs (a new ``num_classes``), then loads strictly and raises
    :class:`linzoo.weights.StateDictMismatchError` listing every other mismatch.
    """
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if state_dict_key is None:
        arch, tag = cfg.get("architecture") or "", cfg.get("tag") or ""
        ckpt = get_checkpoint(f"{arch}.{tag}") or get_checkpoint(arch)
        state_dict_key = ckpt.state_dict_key if ckpt is not None else None
    try:
        state_dict = load_state_dict_file(path, state_dict_key)
    except Exception:
        if state_dict_key is None:
            raise
        state_dict = load_state_dict_file(path, None)  # a bare state dict (e.g. converted by linzoo)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    own = model.state_dict()
    first_conv = cfg.get("first_conv")
    for conv in (first_conv,) if isinstance(first_conv, str) else (first_conv or ()):
        key = f"{conv}.weight"
        if key in state_dict and key in own and state_dict[key].shape[1] != own[key].shape[1]:
            state_dict[key] = adapt_input_conv(own[key].shape[1], state_dict[key])
    classifier = cfg.get("classifier")
    for head in (classifier,) if isinstance(classifier, str) else (classifier or ()):
        for suffix in (".weight", ".bias"):
            key = head + suffix
            if key in state_dict and (key not in own or own[key].shape != state_dict[key].shape):
                _logger.info("dropping %s from the checkpoint (classifier shape differs)", key)
                del state_dict[key]
                if key in own:
                    state_dict[key] = own[key]  # keep the freshly initialised head
    check_state_dict(state_dict, own, what=f"checkpoint {os.fspath(path)}")
    model.load_state_dict(state_dict, strict=True)


def build_linzoo_model(
    model_cls: type[nn.Module],
    variant: str,
    pretrained: bool = False,
    *,
    filter_fn: Callable[[dict, nn.Module], dict] | None = None,
    feature_cfg: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``timm.models.build_model_with_cfg`` plus a clear error when official weights cannot be fetched.

    A local file given as ``pretrained_cfg_overlay=dict(file=...)`` is read by the model's ``load_pretrained``
    (linzoo's safe loader, the registry's ``state_dict_key``, the family's filter fn) rather than by timm's
    generic loader, which would prefer an EMA copy and refuse pickled yacs configs.
    """
    overlay = kwargs.get("pretrained_cfg_overlay")
    if pretrained and overlay and overlay.get("file") and "custom_load" not in overlay:
        kwargs["pretrained_cfg_overlay"] = {**overlay, "custom_load": True}
    try:
        return build_model_with_cfg(
            model_cls, variant, pretrained, pretrained_filter_fn=filter_fn, feature_cfg=feature_cfg, **kwargs
        )
    except (OSError, RuntimeError, ValueError) as err:
        if not pretrained:
            raise
        overlay = kwargs.get("pretrained_cfg_overlay") or {}
        if overlay.get("file"):
            raise
        ckpt = get_checkpoint(variant)
        where = (ckpt.url or f"hf://{ckpt.hf_hub_id}/{ckpt.hf_hub_filename}") if ckpt else "the official repository"
        filename = ckpt.filename if ckpt else "checkpoint.pth"
        raise RuntimeError(
            f"could not fetch the official weights of {variant!r} ({type(err).__name__}: {err}). "
            f"Download {where} and pass the file: timm.create_model({variant!r}, pretrained=True, "
            f"pretrained_cfg_overlay=dict(file='/path/to/{filename}'))"
        ) from err


def is_linzoo_model(name: str) -> bool:
    """True when the timm entrypoint of ``name`` is defined by linzoo."""
    return model_entrypoint(name.split(".")[0]).__module__.startswith("linzoo.")


def list_linzoo_models(pattern: str = "") -> list[str]:
    """Names of every model linzoo registers with timm (optionally filtered by an fnmatch pattern)."""
    return [n for n in list_models(pattern or "*") if is_linzoo_model(n)]
