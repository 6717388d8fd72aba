"""LinFusion's generalized linear attention as a diffusers attention processor.

LinFusion ("LinFusion: 1 GPU, 1 Minute, 16K Image", Liu et al., arXiv 2409.02097) replaces the self-attention
of every transformer block of a Stable Diffusion UNet. For the input ``x (B, N, C)`` of one layer:

    Q = W_q (x + MLP_q(x)),   K = W_k (x + MLP_k(x)),   V = W_v x
    o_i = φ(q_i)ᵀ [(1/N) Σ_j φ(k_j) v_jᵀ] / (φ(q_i) · (1/N) Σ_j φ(k_j) + 1e-4),   φ(u) = elu(u) + 1

per head, followed by the module's ``to_out``. ``MLP = Linear(C, m) → LayerNorm(m) → LeakyReLU → Linear(m, C)``
is shared across heads (m = C by default, C/16 for SDXL). The formula is
``linzoo.kernels.linear_attention(q, k, v, feature_map="elu+1", normalizer="standard", scale=1/N, eps=1e-4)``.

Instead of the official module replacement (a subclass of ``Attention`` whose ``forward`` ignores processors),
the two MLPs are added to diffusers' own ``Attention`` module as ``to_q_`` / ``to_k_`` and
:class:`LinFusionAttnProcessor` computes the attention. The module's state dict is therefore key-for-key the
official one (``to_q``, ``to_k``, ``to_v``, ``to_out.0``, ``to_q_.{0,1,3}``, ``to_k_.{0,1,3}``), LoRA/PEFT wrapping
of ``to_q``... keeps working, and the processor survives IP-Adapter loading (diffusers rebuilds self-attention
processors as ``type(proc)()``; this processor has no state).
"""

from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention
from torch import nn

from linzoo.kernels import linear_attention

from .base import LinzooAttnProcessor

__all__ = [
    "LINFUSION_EPS",
    "LinFusionAttnProcessor",
    "LinFusionProjection",
    "add_linfusion_projections",
    "has_linfusion_projections",
    "remove_linfusion_projections",
]

LINFUSION_EPS = 1e-4  # official constant added to the (mean-)normaliser


class LinFusionProjection(nn.Sequential):
    """Residual non-linear projection ``Linear(C, m) → LayerNorm(m) → LeakyReLU → Linear(m, C)`` on ``(B, N, C)``.

    The indices (0, 1, 3 hold weights) match the official ``nn.Sequential``. ``zero_init`` zeroes the last
    Linear so ``x + MLP(x) == x`` and a fresh swap starts from the inherited ``to_q``/``to_k``/``to_v``/``to_out``
    (the paper's initialisation; the official script since commit 1b07891 skips it).
    """

    def __init__(
        self,
        dim: int,
        mid_dim: int | None = None,
        *,
        zero_init: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        mid = dim if mid_dim is None else mid_dim
        if not isinstance(mid, int) or mid <= 0:
            raise ValueError(f"projection_mid_dim must be a positive int or None (= dim), got {mid_dim!r}")
        kw = {"device": device, "dtype": dtype}
        # LeakyReLU is not in-place (unlike the official module): identical values, safe under autograd hooks.
        super().__init__(nn.Linear(dim, mid, **kw), nn.LayerNorm(mid, **kw), nn.LeakyReLU(), nn.Linear(mid, dim, **kw))
        self.dim, self.mid_dim = dim, mid
        if zero_init:
            nn.init.zeros_(self[3].weight)
            nn.init.zeros_(self[3].bias)


def has_linfusion_projections(attn: nn.Module) -> bool:
    """True when ``attn`` carries LinFusion's ``to_q_`` / ``to_k_`` projections."""
    return isinstance(getattr(attn, "to_q_", None), LinFusionProjection) and isinstance(
        getattr(attn, "to_k_", None), LinFusionProjection
    )


def add_linfusion_projections(attn: Attention, mid_dim: int | None = None, *, zero_init: bool = True) -> None:
    """Register ``to_q_`` and ``to_k_`` (:class:`LinFusionProjection`) on ``attn``, on its device and dtype."""
    if attn.to_q.in_features != attn.to_k.in_features:
        raise ValueError(
            "LinFusion needs a self-attention layer (to_q and to_k read the same features); got "
            f"to_q in_features={attn.to_q.in_features}, to_k in_features={attn.to_k.in_features}"
        )
    weight = attn.to_q.weight
    dim = attn.to_q.in_features
    for name in ("to_q_", "to_k_"):
        attn.add_module(
            name, LinFusionProjection(dim, mid_dim, zero_init=zero_init, device=weight.device, dtype=weight.dtype)
        )


def remove_linfusion_projections(attn: Attention) -> None:
    """Delete ``to_q_`` / ``to_k_`` from ``attn`` (no-op when absent)."""
    for name in ("to_q_", "to_k_"):
        if name in attn._modules:
            del attn._modules[name]


class LinFusionAttnProcessor(LinzooAttnProcessor):
    """LinFusion's generalized linear attention (ELU+1 features, mean normaliser, eps 1e-4).

    Needs the ``to_q_`` / ``to_k_`` projections on the ``Attention`` module (added by
    :func:`linzoo.diffusion.linearize` or :func:`add_linfusion_projections`).

    Args:
        backend: kernel backend of :func:`linzoo.kernels.linear_attention` (``"auto"``, ``"triton"``, ``"torch"``).
    """

    def __init__(self, backend: str = "auto") -> None:
        if backend not in ("auto", "triton", "torch"):
            raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
        self.backend = backend

    def project(
        self, attn: Attention, hidden_states: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not has_linfusion_projections(attn):
            raise ValueError(
                "LinFusionAttnProcessor is set on an Attention module without LinFusion's to_q_/to_k_ projections; "
                "use linzoo.diffusion.linearize(...) instead of setting the processor by hand"
            )
        query = attn.to_q(hidden_states + attn.to_q_(hidden_states))
        key = attn.to_k(context + attn.to_k_(context))
        return query, key, attn.to_v(context)

    def attend(
        self,
        attn: Attention,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        return linear_attention(
            query,
            key,
            value,
            feature_map="elu+1",
            normalizer="standard",
            scale=1.0 / key.shape[-2],
            eps=LINFUSION_EPS,
            backend=self.backend,
        )
