"""Shared base for linzoo's attention processors on diffusers' (legacy) ``Attention`` module.

diffusers routes every ``Attention.forward`` through ``attn.processor(attn, hidden_states, encoder_hidden_states,
attention_mask, temb, **cross_attention_kwargs)``. The bookkeeping around the attention itself (spatial norm,
4-D feature maps, group norm, head split/merge, output projection, residual, output rescale) is the same for
every method, so :class:`LinzooAttnProcessor` does it once, following ``AttnProcessor2_0``; a method only
overrides :meth:`LinzooAttnProcessor.project` (how q/k/v are formed) and :meth:`LinzooAttnProcessor.attend`
(the attention on ``(B, heads, N, D)`` tensors, through :mod:`linzoo.kernels`).

Processors must stay constructible with no arguments and hold no learned state: diffusers rebuilds
self-attention processors as ``type(proc)()`` when IP-Adapters are loaded or unloaded, so learned weights
belong on the ``Attention`` module itself (where they also keep the official key layout).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

__all__ = ["LinzooAttnProcessor", "iter_attention_modules"]


def iter_attention_modules(model: nn.Module, kind: str = "self") -> Iterator[tuple[str, Attention]]:
    """Yield ``(name, module)`` for diffusers ``Attention`` modules of ``model`` in ``named_modules`` order.

    Args:
        model: any module (a UNet, a transformer, a ControlNet).
        kind: ``"self"`` (modules named ``...attn1`` that are not cross-attention: the layers LinFusion
            replaces), ``"cross"`` (``is_cross_attention``) or ``"all"``.
    """
    if kind not in ("self", "cross", "all"):
        raise ValueError(f"kind must be 'self', 'cross' or 'all', got {kind!r}")
    for name, module in model.named_modules():
        if not isinstance(module, Attention):
            continue
        if kind == "self" and (name.rsplit(".", 1)[-1] != "attn1" or module.is_cross_attention):
            continue
        if kind == "cross" and not module.is_cross_attention:
            continue
        yield name, module


class LinzooAttnProcessor:
    """Base processor: diffusers' pre/post-processing around a pluggable :meth:`attend`.

    Subclasses implement :meth:`attend` and may override :meth:`project`. Attributes of the ``Attention``
    module that are honoured: ``spatial_norm``, ``group_norm``, ``norm_cross``, ``norm_q``/``norm_k``,
    ``heads``, ``to_out``, ``residual_connection``, ``rescale_output_factor``.
    """

    #: whether :meth:`attend` understands ``attention_mask``; if not, a mask raises a ValueError.
    supports_attention_mask: bool = False

    def project(
        self, attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries from ``hidden_states (B, N, C)``, keys/values from ``context (B, M, Cc)``; each ``(B, ·, inner)``."""
        return attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)

    def attend(
        self,
        attn: Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attention on ``query (B, H, N, D)``, ``key (B, H, M, D)``, ``value (B, H, M, Dv)`` -> ``(B, H, N, Dv)``.

        The hook every processor subclass defines (LinFusion, CLEAR); the base class has no attention of its own."""
        raise NotImplementedError(f"{type(self).__name__} must define attend()")

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if attention_mask is not None and not self.supports_attention_mask:
            raise ValueError(
                f"{type(self).__name__} does not support attention_mask (got shape {tuple(attention_mask.shape)})"
            )
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        if encoder_hidden_states is None:
            context = hidden_states
        elif attn.norm_cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)
        else:
            context = encoder_hidden_states
        query, key, value = self.project(attn, hidden_states, context)

        heads = attn.heads
        query = query.view(batch, -1, heads, query.shape[-1] // heads).transpose(1, 2)
        key = key.view(batch, -1, heads, key.shape[-1] // heads).transpose(1, 2)
        value = value.view(batch, -1, heads, value.shape[-1] // heads).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        out = self.attend(attn, query, key, value, attention_mask)
        out = out.transpose(1, 2).reshape(batch, -1, heads * out.shape[-1]).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)

        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            out = out + residual
        # x / 1.0 == x exactly: skip the launch (every UNet/DiT attention has rescale_output_factor == 1.0)
        return out if attn.rescale_output_factor == 1.0 else out / attn.rescale_output_factor
