"""SLA attention processors: sparse-linear attention in place of the softmax self-attention of a diffusers model.

SLA (arXiv 2509.24006, official op thu-ml/SLA ``SparseLinearAttention``) keeps, for each block of queries, the
top ``topk`` fraction of key blocks (scored on mean-pooled q and smoothed k) for exact block-sparse softmax
attention and sends the rest through linear attention: ``O = O_s + proj_l(O_l)`` with ``proj_l`` a zero-initialised
``Linear(head_dim, head_dim)`` per layer, so a freshly linearised model is pure block-sparse attention until
fine-tuned. The op is :class:`linzoo.kernels.SparseLinearAttention` (Triton forward and backward on CUDA); it lives
on the attention module as ``attn.sla`` (keys ``...attn1.sla.proj_l.weight``), the processors hold no state.

Processors, one per kind of attention module (the projections, norms and RoPE of each follow the model's own
diffusers processor; only the attention between them changes):

- :class:`SLAAttnProcessor`: diffusers' ``Attention`` (UNet ``attn1``, PixArt, DiT, ...), via
  :class:`~linzoo.diffusion.attention.LinzooAttnProcessor`;
- :class:`SLAFluxAttnProcessor`: ``FluxAttention`` (FLUX double- and single-stream blocks; the joint
  ``[text | image]`` sequence is one SLA problem);
- :class:`SLAWanAttnProcessor`: the self-attention (``attn1``) ``WanAttention`` of Wan 2.1 / 2.2, the paper's
  target model.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from linzoo.kernels import SparseLinearAttention

from .base import LinzooAttnProcessor
from .flux import flux_attention_output, flux_qkv

__all__ = ["SLAAttnProcessor", "SLAFluxAttnProcessor", "SLAWanAttnProcessor", "sla_module"]


def sla_module(attn: nn.Module) -> SparseLinearAttention:
    """The :class:`~linzoo.kernels.SparseLinearAttention` installed on ``attn`` by ``linearize(..., method="sla")``."""
    module = getattr(attn, "sla", None)
    if not isinstance(module, SparseLinearAttention):
        raise ValueError(
            f"{type(attn).__name__} has no `sla` SparseLinearAttention module: call "
            "linzoo.diffusion.linearize(pipe, method='sla', ...) instead of setting the SLA processor by hand"
        )
    return module


def _no_mask(attention_mask: torch.Tensor | None, processor: object) -> None:
    if attention_mask is not None:
        raise ValueError(
            f"{type(processor).__name__} does not take attention_mask (got shape {tuple(attention_mask.shape)}): "
            "SLA chooses its own block mask"
        )


class SLAAttnProcessor(LinzooAttnProcessor):
    """Sparse-linear self-attention for diffusers' ``Attention`` module (see the module docstring)."""

    def attend(
        self,
        attn: Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """``(B, heads, N, D)`` q/k/v -> ``O_s + proj_l(O_l)`` ``(B, heads, N, D)``."""
        return sla_module(attn)(query, key, value)


class SLAFluxAttnProcessor:
    """Sparse-linear attention for ``FluxAttention``: the joint ``[text | image]`` sequence is one SLA problem."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        _no_mask(attention_mask, self)
        query, key, value, joint = flux_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        out = sla_module(attn)(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)  # (B, S, heads * D)
        text_length = encoder_hidden_states.shape[1] if joint else 0
        return flux_attention_output(attn, out, joint, text_length)


def _wan_rotary(x: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor) -> torch.Tensor:
    """Wan's RoPE on interleaved pairs of ``x`` ``(B, L, heads, D)`` (as diffusers' ``WanAttnProcessor``)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = freqs_cos[..., 0::2], freqs_sin[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).type_as(x)


class SLAWanAttnProcessor:
    """Sparse-linear self-attention for Wan's ``attn1`` (``WanAttention``); tokens in Wan's (frame, row, column)
    order, as the official SLA integration (TurboDiffusion) feeds them."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        _no_mask(attention_mask, self)
        if encoder_hidden_states is not None:
            raise ValueError(
                "SLAWanAttnProcessor is for Wan's self-attention (attn1): encoder_hidden_states must be None"
            )
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))  # (B, L, heads, D)
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query, key = _wan_rotary(query, *rotary_emb), _wan_rotary(key, *rotary_emb)
        out = sla_module(attn)(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
        out = out.transpose(1, 2).flatten(2, 3).type_as(query)
        return attn.to_out[1](attn.to_out[0](out))
