"""``linearize(pipe, method="sla", topk=...)``: sparse-linear attention (SLA, arXiv 2509.24006) in a diffusers model.

Every self-attention layer of the denoiser gets a :class:`linzoo.kernels.SparseLinearAttention` (``attn.sla``,
holding the layer's ``proj_l``) and an SLA processor (:mod:`linzoo.diffusion.attention.sla`):

- Wan 2.1 / 2.2 (``WanTransformer3DModel``): every ``attn1`` (cross-attention stays dense);
- FLUX (``FluxTransformer2DModel``): every ``FluxAttention`` (joint text + image sequence);
- SD3 / SD3.5 (``SD3Transformer2DModel``): every attention run by ``JointAttnProcessor2_0`` (joint image + text
  sequence; SD3.5's image-only second attention);
- LTX-Video (``LTXVideoTransformer3DModel``): every ``attn1``;
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

__all__ = ["SLA_WEIGHTS_FILE", "load_turbodiffusion_wan", "save_sla", "sla_state_dict"]

#: file name :func:`save_sla` writes and ``linearize(..., weights=<folder>)`` looks for first.
SLA_WEIGHTS_FILE = "sla_attention.safetensors"
_FOLDER_FILES = (SLA_WEIGHTS_FILE, "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_ORIGINAL_ATTR = "_linzoo_sla_original_processor"
_KEY_MARK = ".sla.proj_l."
#: where TurboDiffusion's Wan keeps each self-attention's SLA module (original Wan layout, ``self_attn`` blocks)
_TURBO_MARK = ".attn_op.local_attn.proj_l."


def _sla_layers(model: nn.Module) -> list[tuple[str, nn.Module, Any]]:
    """``(name, module, processor)`` for every self-attention layer SLA replaces in ``model``."""
    from diffusers.models.attention_processor import Attention, JointAttnProcessor2_0
    from diffusers.models.transformers.transformer_flux import FluxAttention
    from diffusers.models.transformers.transformer_ltx import LTXAttention
    from diffusers.models.transformers.transformer_wan import WanAttention

    from .attention.sla import (
        SLAAttnProcessor,
        SLAFluxAttnProcessor,
        SLAJointAttnProcessor,
        SLALTXAttnProcessor,
        SLAWanAttnProcessor,
    )

    layers = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        original = getattr(module, _ORIGINAL_ATTR, getattr(module, "processor", None))  # before any SLA
        if isinstance(module, Attention) and isinstance(original, JointAttnProcessor2_0):
            layers.append((name, module, SLAJointAttnProcessor()))
        elif isinstance(module, FluxAttention):
            layers.append((name, module, SLAFluxAttnProcessor()))
        elif isinstance(module, WanAttention) and leaf == "attn1" and not module.is_cross_attention:
            layers.append((name, module, SLAWanAttnProcessor()))
        elif isinstance(module, LTXAttention) and leaf == "attn1":
            layers.append((name, module, SLALTXAttnProcessor()))
        elif isinstance(module, Attention) and leaf == "attn1" and not module.is_cross_attention:
            layers.append((name, module, SLAAttnProcessor()))
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no self-attention layer SLA applies to (Wan / LTX-Video `attn1`, "
            "FluxAttention, SD3 joint attention, or diffusers `Attention` named `attn1`)"
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


def load_turbodiffusion_wan(
    pipe_or_model: Any,
    checkpoint: str | os.PathLike | dict[str, torch.Tensor],
    *,
    topk: float = 0.1,
    block_q: int = 128,
    block_k: int = 64,
    backend: str = "auto",
) -> LinearizeResult:
    """Load a TurboDiffusion SLA checkpoint of Wan into a diffusers ``WanTransformer3DModel`` and linearise it.

    TurboDiffusion (thu-ml/TurboDiffusion, the SLA authors' Wan release: ``TurboWan2.1-T2V-1.3B-480P.pth``,
    ``TurboWan2.1-T2V-14B-{480,720}P.pth``, ``TurboWan2.2-I2V-A14B-{high,low}-720P.pth``) ships the whole fine-tuned
    Wan in the original Wan layout, each self-attention's SLA ``proj_l`` under
    ``blocks.{i}.self_attn.attn_op.local_attn.proj_l``. The Wan weights go through diffusers' own converter
    (``convert_wan_transformer_to_diffusers``) and must match the model key for key; ``proj_l`` becomes
    ``blocks.{i}.attn1.sla.proj_l``. Defaults follow TurboDiffusion's inference (``--sla_topk 0.1``; blocks of
    128 queries x 64 keys; softmax feature map; linear branch over all keys). The checkpoints are also rCM
    step-distilled: sample with the few steps and sampler TurboDiffusion uses, which diffusers' Wan pipelines
    do not reproduce. The ``-quant`` (int8) checkpoints are not supported. Wan 2.2 A14B has two experts:
    load the high-noise file into ``pipe.transformer`` and the low-noise one into ``pipe.transformer_2``.

    Args:
        pipe_or_model: a diffusers Wan pipeline (its ``transformer``) or a ``WanTransformer3DModel`` of the
            checkpoint's size (e.g. from ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``).
        checkpoint: the ``.pth`` / ``.safetensors`` file or its state dict (a ``{"state_dict": ...}`` training
            checkpoint with ``net.`` prefixes is accepted too).
        topk, block_q, block_k, backend: the SLA options of :func:`linzoo.diffusion.linearize`.
    """
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    model = _target_model(pipe_or_model)
    if isinstance(checkpoint, (str, os.PathLike)):
        state, description = load_state_dict_file(Path(checkpoint)), str(checkpoint)
    elif isinstance(checkpoint, dict):
        state, description = checkpoint, "state dict"
    else:
        raise TypeError(f"checkpoint must be a file path or a state dict, got {type(checkpoint).__name__}")
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k.removeprefix("net."): v for k, v in state.items()}
    if any("int8" in k for k in state):
        raise ValueError(f"{description!r} is a quantized (-quant) TurboDiffusion checkpoint: use the unquantized file")
    proj = {k: v for k, v in state.items() if _TURBO_MARK in k}
    if not proj:
        raise ValueError(f"{description!r} holds no SLA weights ('*{_TURBO_MARK}*'): not a TurboDiffusion checkpoint")
    wan = convert_wan_transformer_to_diffusers({k: v for k, v in state.items() if _TURBO_MARK not in k})
    own = {k: v for k, v in model.state_dict().items() if _KEY_MARK not in k}
    check_state_dict(wan, own, what=f"Wan weights of {description!r}")
    sla = {k.replace(".self_attn" + _TURBO_MARK, ".attn1" + _KEY_MARK): v for k, v in proj.items()}
    result = _apply_sla(model, sla, topk=topk, block_q=block_q, block_k=block_k, linear_keys="all", backend=backend)
    params = model.state_dict(keep_vars=True)
    with torch.no_grad():
        for key, value in wan.items():
            params[key].copy_(value)
    result.weights = description
    return result


register_linearization("sla", _apply_sla, _remove_sla)
