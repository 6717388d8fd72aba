"""The projections around FLUX's attention (``FluxAttention``), shared by linzoo's FLUX processors (CLEAR, SLA).

They follow diffusers' ``FluxAttnProcessor``: q/k/v (or the fused ``to_qkv``), RMSNorm on q and k per head, the
text stream's own projections in double-stream blocks (concatenated in front: ``[text | image]``), RoPE on the
joint sequence; after attention, the image and text streams get their own output projections. Only the
attention in between differs between processors.
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import apply_rotary_emb
from torch import nn

__all__ = ["flux_attention_output", "flux_qkv"]


def flux_qkv(
    attn: nn.Module,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None,
    image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Queries, keys and values ``(B, S, heads, D)`` of a ``FluxAttention`` call, RoPE applied.

    ``S`` is ``T + N`` (``[text | image]``) in double-stream blocks (``encoder_hidden_states`` ``(B, T, C)`` given
    and the module has text projections: the returned flag ``joint`` is True) and ``hidden_states.shape[1]`` in
    single-stream blocks, whose input already holds ``[text | image]``.
    """
    if getattr(attn, "fused_projections", False):
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
    else:
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
    key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
    value = value.unflatten(-1, (-1, attn.head_dim))

    joint = encoder_hidden_states is not None and attn.added_kv_proj_dim is not None
    if joint:  # double-stream block: text tokens come from their own projections
        if getattr(attn, "fused_projections", False):
            text_q, text_k, text_v = attn.to_added_qkv(encoder_hidden_states).chunk(3, dim=-1)
        else:
            text_q = attn.add_q_proj(encoder_hidden_states)
            text_k = attn.add_k_proj(encoder_hidden_states)
            text_v = attn.add_v_proj(encoder_hidden_states)
        text_q = attn.norm_added_q(text_q.unflatten(-1, (-1, attn.head_dim)))
        text_k = attn.norm_added_k(text_k.unflatten(-1, (-1, attn.head_dim)))
        text_v = text_v.unflatten(-1, (-1, attn.head_dim))
        query = torch.cat((text_q, query), 1)
        key = torch.cat((text_k, key), 1)
        value = torch.cat((text_v, value), 1)
    if image_rotary_emb is not None:
        query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
        key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
    return query, key, value, joint


def flux_attention_output(
    attn: nn.Module, out: torch.Tensor, joint: bool, text_length: int
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Output projections of a ``FluxAttention`` call for ``out`` ``(B, S, heads * D)``.

    Double-stream blocks (``joint``) return ``(image, text)`` after their own projections (``text_length``
    leading tokens are text); single-stream blocks return ``out`` unchanged (their block projects it).
    """
    if not joint:
        return out
    text_out, image_out = out.split_with_sizes((text_length, out.shape[1] - text_length), dim=1)
    image_out = attn.to_out[1](attn.to_out[0](image_out.contiguous()))
    return image_out, attn.to_add_out(text_out.contiguous())
