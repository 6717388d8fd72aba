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
  target model;
- :class:`SLAJointAttnProcessor`: diffusers' ``Attention`` run by ``JointAttnProcessor2_0`` (SD3 / SD3.5: the
  joint ``[image | text]`` sequence, and SD3.5's image-only second attention);
- :class:`SLALTXAttnProcessor`: LTX-Video's self-attention (``attn1``, ``LTXAttention``).
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from linzoo.kernels import SparseLinearAttention

from .base import LinzooAttnProcessor
from .flux import flux_attention_output, flux_qkv

__all__ = [
    "SLAAttnProcessor",
    "SLAFluxAttnProcessor",
    "SLAJointAttnProcessor",
    "SLALTXAttnProcessor",
    "SLAWanAttnProcessor",
    "sla_module",
]


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


def _self_attention_output(
    attn: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> torch.Tensor:
    """SLA on ``(B, L, heads, D)`` q/k/v, then the module's output projection: ``(B, L, C)`` tensor."""
    out = sla_module(attn)(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
    out = out.transpose(1, 2).flatten(2, 3).type_as(query)
    return attn.to_out[1](attn.to_out[0](out))


def _self_attention_only(processor: object, encoder_hidden_states: torch.Tensor | None) -> None:
    if encoder_hidden_states is not None:
        raise ValueError(
            f"{type(processor).__name__} is for self-attention (attn1): encoder_hidden_states must be None"
        )


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
        _self_attention_only(self, encoder_hidden_states)
        if getattr(attn, "fused_projections", False):
            query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        query = attn.norm_q(query).unflatten(2, (attn.heads, -1))  # (B, L, heads, D)
        key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
        value = value.unflatten(2, (attn.heads, -1))
        if rotary_emb is not None:
            query, key = _wan_rotary(query, *rotary_emb), _wan_rotary(key, *rotary_emb)
        return _self_attention_output(attn, query, key, value)


class SLALTXAttnProcessor:
    """Sparse-linear self-attention for LTX-Video's ``attn1`` (``LTXAttention``): RMSNorm over all heads, then
    LTX's RoPE on the flat projections, as diffusers' ``LTXVideoAttnProcessor``."""

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        from diffusers.models.transformers.transformer_ltx import apply_rotary_emb

        _no_mask(attention_mask, self)
        _self_attention_only(self, encoder_hidden_states)
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(hidden_states))
        if image_rotary_emb is not None:
            query, key = apply_rotary_emb(query, image_rotary_emb), apply_rotary_emb(key, image_rotary_emb)
        query, key = query.unflatten(2, (attn.heads, -1)), key.unflatten(2, (attn.heads, -1))
        return _self_attention_output(attn, query, key, attn.to_v(hidden_states).unflatten(2, (attn.heads, -1)))


class SLAJointAttnProcessor:
    """Sparse-linear attention for SD3-style joint attention (diffusers' ``JointAttnProcessor2_0`` layout).

    Image tokens come first, then the text tokens of ``encoder_hidden_states`` (their own projections and
    norms); with ``encoder_hidden_states=None`` (SD3.5's second attention) only the image tokens attend.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        _no_mask(attention_mask, self)

        def heads(x: torch.Tensor) -> torch.Tensor:  # (B, N, heads * D) -> (B, heads, N, D)
            return x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)

        query, key = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states))
        value = heads(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        image_length = hidden_states.shape[1]
        if encoder_hidden_states is not None:
            text_q = heads(attn.add_q_proj(encoder_hidden_states))
            text_k = heads(attn.add_k_proj(encoder_hidden_states))
            text_v = heads(attn.add_v_proj(encoder_hidden_states))
            if attn.norm_added_q is not None:
                text_q = attn.norm_added_q(text_q)
            if attn.norm_added_k is not None:
                text_k = attn.norm_added_k(text_k)
            query, key = torch.cat((query, text_q), 2), torch.cat((key, text_k), 2)
            value = torch.cat((value, text_v), 2)
        out = sla_module(attn)(query, key, value)
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)  # (B, N + T, heads * D)
        image_out = attn.to_out[1](attn.to_out[0](out[:, :image_length]))
        if encoder_hidden_states is None:
            return image_out
        text_out = out[:, image_length:]
        return image_out, text_out if attn.context_pre_only else attn.to_add_out(text_out)
