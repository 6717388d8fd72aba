"""``linearize(pipe, method="sla", topk=...)``: sparse-linear attention (SLA, arXiv 2509.24006) in a diffusers model.

Every self-attention layer of the denoiser gets a :class:`linzoo.kernels.SparseLinearAttention` (``attn.sla``,
holding the layer's ``proj_l``) and an SLA processor (:mod:`linzoo.diffusion.attention.sla`):

- Wan 2.1 / 2.2 (``WanTransformer3DModel``): every ``attn1`` (cross-attention stays dense);
- FLUX (``FluxTransformer2DModel``): every ``FluxAttention`` (joint text + image sequence);
- models built on diffusers' ``Attention``: every self-attention ``attn1`` (SD UNets, PixArt, DiT, ...).

SLA is a fine-tuning method: ``proj_l`` starts at zero, so a freshly linearised model computes block-sparse
softmax attention over the top ``topk`` key blocks only (close to the original for generous ``topk``) until
it is fine-tuned (the authors fine-tune the whole model: thu-ml/TurboDiffusion issue #117). The learned
weights are the ``...sla.proj_l.{weight,bias}`` entries of the model's state dict: :func:`sla_state_dict` /
:func:`save_sla` write them (safetensors), ``linearize(..., weights=...)`` reads them from such a file, a
state dict, or a full fine-tuned model file or folder that contains them (its other keys are ignored: load
the fine-tuned model itself with ``from_pretrained`` first).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from linzoo.kernels import SparseLinearAttention
from linzoo.weights import check_state_dict, load_state_dict_file

from .linearize import LinearizeResult, _target_model, register_linearization

__all__ = ["SLA_WEIGHTS_FILE", "save_sla", "sla_state_dict"]

#: file name :func:`save_sla` writes and ``linearize(..., weights=<folder>)`` looks for first.
SLA_WEIGHTS_FILE = "sla_attention.safetensors"
_FOLDER_FILES = (SLA_WEIGHTS_FILE, "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_ORIGINAL_ATTR = "_linzoo_sla_original_processor"
_KEY_MARK = ".sla.proj_l."


def _sla_layers(model: nn.Module) -> list[tuple[str, nn.Module, Any]]:
    """``(name, module, processor)`` for every self-attention layer SLA replaces in ``model``."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.transformers.transformer_flux import FluxAttention
    from diffusers.models.transformers.transformer_wan import WanAttention

    from .attention.sla import SLAAttnProcessor, SLAFluxAttnProcessor, SLAWanAttnProcessor

    layers = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, FluxAttention):
            layers.append((name, module, SLAFluxAttnProcessor()))
        elif isinstance(module, WanAttention) and leaf == "attn1" and not module.is_cross_attention:
            layers.append((name, module, SLAWanAttnProcessor()))
        elif isinstance(module, Attention) and leaf == "attn1" and not module.is_cross_attention:
            layers.append((name, module, SLAAttnProcessor()))
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no self-attention layer SLA applies to (Wan `attn1` WanAttention, "
            "FluxAttention, or diffusers `Attention` named `attn1`)"
        )
    return layers


def _head_dim(attn: nn.Module) -> int:
    if hasattr(attn, "head_dim"):  # FluxAttention
        return int(attn.head_dim)
    return int(attn.to_q.out_features // attn.heads)


def _resolve_sla_weights(weights: Any) -> tuple[dict[str, torch.Tensor], str]:
    """The SLA entries (keys containing ``.sla.proj_l.``) of a state dict, file or folder."""
    if isinstance(weights, dict):
        state, description = weights, "state dict"
    elif isinstance(weights, (str, os.PathLike)):
        path = Path(weights)
        if path.is_dir():
            found = [path / f for f in _FOLDER_FILES if (path / f).is_file()]
            if not found:
                raise FileNotFoundError(f"weights folder {str(path)!r} has none of {list(_FOLDER_FILES)}")
            path = found[0]
        elif not path.is_file():
            raise FileNotFoundError(f"weights {str(weights)!r} is neither a file nor a folder")
        state, description = load_state_dict_file(path), str(path)
    else:
        raise TypeError(f"weights must be None, a state dict, a file or a folder, got {type(weights).__name__}")
    sla = {k: v for k, v in state.items() if _KEY_MARK in k}
    if not sla:
        raise ValueError(f"SLA weights {description!r} contain no '*{_KEY_MARK}*' entries")
    return sla, description


def _apply_sla(
    model: nn.Module,
    weights: Any = None,
    *,
    source: Any = None,
    topk: float = 0.2,
    block_q: int = 64,
    block_k: int = 64,
    feature_map: str = "softmax",
    linear_keys: str = "all",
    backend: str = "auto",
) -> LinearizeResult:
    layers = _sla_layers(model)
    modules = {
        name: SparseLinearAttention(
            _head_dim(attn),
            topk,
            feature_map=feature_map,
            block_q=block_q,
            block_k=block_k,
            linear_keys=linear_keys,
            backend=backend,
        )
        for name, attn, _ in layers
    }  # validates every option before the model changes
    state, description = None, None
    if weights is not None:
        state, description = _resolve_sla_weights(weights)
        reference = {f"{name}.sla.{k}": v for name, module in modules.items() for k, v in module.state_dict().items()}
        check_state_dict(state, reference, what=f"SLA weights {description!r}")

    for name, attn, processor in layers:
        if not hasattr(attn, _ORIGINAL_ATTR):
            setattr(attn, _ORIGINAL_ATTR, attn.processor)
        module = modules[name].to(attn.to_q.weight.device)  # proj_l stays fp32, as the official op keeps it
        if state is not None:
            module.load_state_dict(
                {k.split(f"{name}.sla.", 1)[1]: v for k, v in state.items() if k.startswith(f"{name}.sla.")}
            )
        attn.sla = module
        attn.set_processor(processor)
    return LinearizeResult("sla", len(layers), [name for name, _, _ in layers], description)


def _remove_sla(model: nn.Module) -> int:
    count = 0
    for _, attn in model.named_modules():
        if not hasattr(attn, _ORIGINAL_ATTR):
            continue
        attn.set_processor(getattr(attn, _ORIGINAL_ATTR))
        delattr(attn, _ORIGINAL_ATTR)
        del attn.sla
        count += 1
    return count


def sla_state_dict(pipe_or_model: Any) -> dict[str, torch.Tensor]:
    """The learned SLA weights of a linearised model: ``{"<layer>.sla.proj_l.weight": ..., ...bias}``."""
    model = _target_model(pipe_or_model)
    state = {k: v for k, v in model.state_dict().items() if _KEY_MARK in k}
    if not state:
        raise ValueError(f"{type(model).__name__} is not linearised with SLA (call linearize(..., method='sla'))")
    return state


def save_sla(pipe_or_model: Any, path: str | os.PathLike) -> Path:
    """Write :func:`sla_state_dict` to ``path``: a ``.safetensors`` file or a folder (``sla_attention.safetensors``)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        path.mkdir(parents=True, exist_ok=True)
        path = path / SLA_WEIGHTS_FILE
    save_file({k: v.detach().contiguous().cpu() for k, v in sla_state_dict(pipe_or_model).items()}, str(path))
    return path


register_linearization("sla", _apply_sla, _remove_sla)
