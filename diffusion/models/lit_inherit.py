"""Weight inheritance for LiT (guideline 3 of the paper): build a LiT from a pre-trained DiT / PixArt-Σ teacher.

Everything is copied except the self-attention's query/key/value projections, which LiT replaces by the new
``attn.q`` / ``attn.kv`` (Xavier-uniform, as the paper's new linear layers) and ``attn.dwc`` (PyTorch's default
conv init). The teacher's self-attention output projection becomes ``attn.proj`` and, for PixArt-Σ, the
cross-attention is inherited, as the official text-to-image code does (``inherit_attn_proj=False`` reproduces
the class-to-image code, which drops every attention key).

Teachers may be diffusers models (``DiTTransformer2DModel``, ``PixArtTransformer2DModel``, or a saved folder of
one), or state dicts in the original DiT / PixArt-Σ / LiT code layout (``blocks.{i}.attn.qkv`` ...), which
:func:`convert_original_state_dict` maps onto diffusers / LiT names first.

The student is always built with real (CPU) tensors and filled with ``load_state_dict``, so no parameter is ever
left on the ``meta`` device (diffusers' ``from_pretrained(low_cpu_mem_usage=True)`` would leave the new LiT
parameters there when handed a teacher checkpoint).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .lit_transformer_2d import LiTTransformer2DModel

__all__ = [
    "InheritanceReport",
    "convert_original_state_dict",
    "lit_config_from_teacher",
    "lit_from_teacher",
]

# Config keys shared verbatim by diffusers' DiT / PixArt configs and LiT's.
_SHARED_CONFIG = (
    "num_attention_heads",
    "attention_head_dim",
    "in_channels",
    "out_channels",
    "num_layers",
    "dropout",
    "attention_bias",
    "sample_size",
    "patch_size",
    "activation_fn",
    "norm_elementwise_affine",
    "norm_eps",
)


@dataclass
class InheritanceReport:
    """What :func:`lit_from_teacher` did, key by key (LiT names for ``copied`` / ``new``, teacher names for
    ``dropped``)."""

    copied: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """Human-readable counts plus the name patterns of new and dropped tensors."""

        def patterns(keys: list[str]) -> str:
            pats = sorted({re.sub(r"\.\d+\.", ".{i}.", k) for k in keys})
            return ", ".join(pats) if pats else "-"

        return (
            f"copied {len(self.copied)} tensors; new (initialised) {len(self.new)}: {patterns(self.new)}; "
            f"dropped from teacher {len(self.dropped)}: {patterns(self.dropped)}"
        )

    def __str__(self) -> str:
        return self.summary()


def _form_of(state_dict: dict[str, torch.Tensor]) -> str:
    if any(k.startswith("adaln_single.") or k.startswith("t_block.") for k in state_dict):
        return "ada_norm_single"
    return "ada_norm_zero"


def convert_original_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original-code DiT / PixArt-Σ / LiT state dict (``x_embedder``, ``blocks.{i}``, ``final_layer``)
    to diffusers / LiT names. The teacher's fused ``attn.qkv`` becomes ``attn1.to_q/k/v`` (diffusers layout, so
    :func:`lit_from_teacher` treats both layouts alike); LiT's ``attn.q/kv/dwc/proj`` keep their names.
    PixArt's null-caption embedding ``y_embedder.y_embedding`` and the fixed ``pos_embed`` buffer are dropped, as
    in diffusers' converters."""
    text = _form_of(state_dict) == "ada_norm_single"
    out: dict[str, torch.Tensor] = {}
    simple = {
        "x_embedder.proj.": "pos_embed.proj.",
        "t_embedder.mlp.0.": (
            "adaln_single.emb.timestep_embedder.linear_1." if text else "time_class_embed.timestep_embedder.linear_1."
        ),
        "t_embedder.mlp.2.": (
            "adaln_single.emb.timestep_embedder.linear_2." if text else "time_class_embed.timestep_embedder.linear_2."
        ),
        "y_embedder.embedding_table.": "time_class_embed.class_embedder.embedding_table.",
        "t_block.1.": "adaln_single.linear.",
        "y_embedder.y_proj.fc1.": "caption_projection.linear_1.",
        "y_embedder.y_proj.fc2.": "caption_projection.linear_2.",
        "final_layer.adaLN_modulation.1.": "proj_out_1.",
        "final_layer.linear.": "proj_out." if text else "proj_out_2.",
        "final_layer.scale_shift_table": "scale_shift_table",
        "csize_embedder.mlp.0.": "adaln_single.emb.resolution_embedder.linear_1.",
        "csize_embedder.mlp.2.": "adaln_single.emb.resolution_embedder.linear_2.",
        "ar_embedder.mlp.0.": "adaln_single.emb.aspect_ratio_embedder.linear_1.",
        "ar_embedder.mlp.2.": "adaln_single.emb.aspect_ratio_embedder.linear_2.",
    }
    block = {
        "adaLN_modulation.1.": "norm1.linear.",
        "scale_shift_table": "scale_shift_table",
        "mlp.fc1.": "ff.net.0.proj.",
        "mlp.fc2.": "ff.net.2.",
        "attn.q.": "attn.q.",
        "attn.kv.": "attn.kv.",
        "attn.dwc.": "attn.dwc.",
        "attn.proj.": "attn.proj.",
        "cross_attn.q_linear.": "attn2.to_q.",
        "cross_attn.proj.": "attn2.to_out.0.",
    }
    for key, value in state_dict.items():
        if key in ("pos_embed", "y_embedder.y_embedding"):
            continue
        m = re.match(r"blocks\.(\d+)\.(.*)", key)
        if m is None:
            for old, new in simple.items():
                if key.startswith(old):
                    out[new + key[len(old) :]] = value
                    break
            else:
                raise ValueError(f"state_dict has a key this converter does not know: {key!r}")
            continue
        i, rest = m.groups()
        prefix = f"transformer_blocks.{i}."
        if rest.startswith("attn.qkv."):
            for name, chunk in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
                out[f"{prefix}attn1.{name}.{rest[len('attn.qkv.') :]}"] = chunk
            continue
        if rest.startswith("cross_attn.kv_linear."):
            for name, chunk in zip(("to_k", "to_v"), value.chunk(2, dim=0)):
                out[f"{prefix}attn2.{name}.{rest[len('cross_attn.kv_linear.') :]}"] = chunk
            continue
        for old, new in block.items():
            if rest.startswith(old):
                out[prefix + new + rest[len(old) :]] = value
                break
        else:
            raise ValueError(f"state_dict has a key this converter does not know: {key!r}")
    return out


def _teacher_key_to_lit(key: str, inherit_attn_proj: bool) -> str | None:
    """LiT name of a diffusers-layout teacher key, or None when LiT does not inherit it."""
    m = re.match(r"transformer_blocks\.(\d+)\.(.*)", key)
    if m is None:
        return key
    i, rest = m.groups()
    if rest.startswith("norm1.emb."):  # diffusers' DiT repeats the shared embedder in every block
        return "time_class_embed." + rest[len("norm1.emb.") :] if i == "0" else None
    if rest.startswith("attn1.to_out.0."):
        return f"transformer_blocks.{i}.attn.proj.{rest[len('attn1.to_out.0.') :]}" if inherit_attn_proj else None
    if rest.startswith("attn1."):  # q/k/v of the softmax self-attention: replaced by attn.q / attn.kv
        return None
    if rest.startswith("attn.proj.") and not inherit_attn_proj:
        return None
    if rest.startswith(("attn.q.", "attn.kv.", "attn.dwc.")):  # a LiT teacher: its linear attention is new too
        return None
    return key


def lit_config_from_teacher(teacher_config: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """LiT config for a teacher config (diffusers ``DiTTransformer2DModel`` / ``PixArtTransformer2DModel`` or LiT),
    updated with ``overrides`` (e.g. ``num_linear_heads=2``, ``kernel_size=5``)."""
    name = teacher_config.get("_class_name", "")
    if name == "LiTTransformer2DModel":
        cfg = {k: v for k, v in teacher_config.items() if not k.startswith("_")}
    else:
        cfg = {k: teacher_config[k] for k in _SHARED_CONFIG if k in teacher_config}
        if (
            teacher_config.get("norm_type", "ada_norm_zero") == "ada_norm_single"
            or "caption_channels" in teacher_config
        ):
            cfg.update(
                norm_type="ada_norm_single",
                cross_attention_dim=teacher_config.get("cross_attention_dim"),
                caption_channels=teacher_config.get("caption_channels"),
                interpolation_scale=teacher_config.get("interpolation_scale"),
                use_additional_conditions=teacher_config.get("use_additional_conditions"),
            )
        else:
            cfg.update(norm_type="ada_norm_zero", num_classes=teacher_config.get("num_embeds_ada_norm", 1000))
    cfg.update(overrides)
    return cfg


def _load_teacher(teacher: nn.Module | str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    if isinstance(teacher, nn.Module):
        return dict(teacher.config), teacher.state_dict()
    path = str(teacher)
    if not os.path.isdir(path):
        raise ValueError(f"teacher must be a model or a diffusers model folder, got {path!r}")
    from .loading import load_transformer

    model = load_transformer(path)
    return dict(model.config), model.state_dict()


def lit_from_teacher(
    teacher: nn.Module | str | os.PathLike | None = None,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    teacher_config: dict[str, Any] | None = None,
    inherit_attn_proj: bool = True,
    dtype: torch.dtype | None = None,
    **config_overrides: Any,
) -> tuple[LiTTransformer2DModel, InheritanceReport]:
    """Build a LiT from a pre-trained teacher, copying every teacher tensor except the self-attention's q/k/v.

    Args:
        teacher: a diffusers ``DiTTransformer2DModel`` / ``PixArtTransformer2DModel`` (or LiT) instance, or a saved
            folder of one.
        state_dict: instead of ``teacher``, a state dict in diffusers or original-code layout (converted with
            :func:`convert_original_state_dict` when it has ``blocks.{i}`` keys); needs ``teacher_config`` or
            ``config_overrides`` describing the architecture.
        teacher_config: the teacher's diffusers config when ``state_dict`` is given.
        inherit_attn_proj: copy the teacher's self-attention output projection into ``attn.proj`` (the official
            text-to-image behaviour); False leaves it new (the class-to-image code).
        dtype: dtype of the returned model (default: the teacher tensors' dtype, float32 for a state dict).
        **config_overrides: LiT config values, e.g. ``num_linear_heads=2`` or ``kernel_size=5``.

    Returns:
        ``(lit_model, report)``; ``report.copied`` lists exactly the LiT tensors taken from the teacher.
    """
    if (teacher is None) == (state_dict is None):
        raise ValueError("pass exactly one of teacher (a model or folder) or state_dict")
    if teacher is not None:
        teacher_config, state_dict = _load_teacher(teacher)
    elif any(k.startswith("blocks.") for k in state_dict):
        original_dit = _form_of(state_dict) == "ada_norm_zero"
        state_dict = convert_original_state_dict(state_dict)
        if original_dit:  # the original DiT code uses an unshifted sinusoidal frequency grid
            config_overrides.setdefault("timestep_freq_shift", 0)
    config = lit_config_from_teacher(teacher_config or {}, **config_overrides)
    student = LiTTransformer2DModel(**config)  # real CPU tensors, random init for the new layers

    mapped: dict[str, torch.Tensor] = {}
    report = InheritanceReport()
    for key, value in state_dict.items():
        target = _teacher_key_to_lit(key, inherit_attn_proj)
        if target is None:
            report.dropped.append(key)
        else:
            mapped[target] = value
    own = student.state_dict()
    unexpected = sorted(set(mapped) - set(own))
    if unexpected:
        raise ValueError(f"teacher tensors with no place in the LiT model: {unexpected[:8]}")
    mismatched = [k for k, v in mapped.items() if tuple(v.shape) != tuple(own[k].shape)]
    if mismatched:
        raise ValueError(
            "teacher tensors whose shape differs from the LiT config (check the overrides): "
            + ", ".join(f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:8])
        )
    result = student.load_state_dict(mapped, strict=False)
    report.copied = sorted(mapped)
    report.new = sorted(result.missing_keys)
    target_dtype = dtype or next(iter(state_dict.values())).dtype
    if target_dtype.is_floating_point and target_dtype != torch.float32:
        student = student.to(target_dtype)
    return student, report
