"""Plain-PyTorch definition of bidirectional gated linear attention (the readable reference).

ViG (Liao et al. 2024, arXiv 2405.18425, eq. 5-7) runs gated linear attention (GLA, Yang et al. 2024) once
forwards and once backwards over the token sequence with shared ``q, k, v`` and direction-wise data-dependent
decays. Per batch element and head, with ``S`` a ``(dk, dv)`` state, ``a = exp(g)`` the per-key-channel decay
(``g`` = log-decay <= 0) and ``s`` the scale::

    forward:   S^f_t = diag(a^f_t) S^f_{t-1} + k_t v_t^T,   o^f_t = s q_t^T S^f_t,   t = 0 .. L-1,  S^f_{-1} = 0
    backward:  S^b_t = diag(a^b_t) S^b_{t+1} + k_t v_t^T,   o^b_t = s q_t^T S^b_t,   t = L-1 .. 0,  S^b_L = 0
    output:    o_t = o^f_t + o^b_t

Both directions include the current token (its ``k_t v_t^T`` term is counted twice). The backward gate applied at
position ``t`` is ``a^b_t`` of that token. Shapes: ``q, k, gk_fwd, gk_bwd`` are ``(B, heads, L, dk)``, ``v`` is
``(B, heads, L, dv)``, the output ``(B, heads, L, dv)``. Arithmetic in float32, the result cast to ``v.dtype``.
"""

from __future__ import annotations

import torch

__all__ = ["bidirectional_gla_reference", "gla_recurrent_reference"]


def gla_recurrent_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gk: torch.Tensor, scale: float, reverse: bool = False
) -> torch.Tensor:
    """One direction of the GLA scan, token by token (fp32): ``S_t = diag(exp(gk_t)) S_prev + k_t v_t^T``,
    ``o_t = scale · q_t^T S_t``; ``reverse`` scans from ``L-1`` down to ``0``. Returns fp32 ``(B, heads, L, dv)``."""
    q, k, v, gk = (t.float() for t in (q, k, v, gk))
    b, h, length, dk = q.shape
    state = q.new_zeros(b, h, dk, v.shape[-1])
    out = q.new_empty(b, h, length, v.shape[-1])
    steps = range(length - 1, -1, -1) if reverse else range(length)
    for t in steps:
        state = gk[:, :, t, :, None].exp() * state + k[:, :, t, :, None] * v[:, :, t, None, :]
        out[:, :, t] = scale * torch.einsum("bhd,bhde->bhe", q[:, :, t], state)
    return out


def bidirectional_gla_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk_fwd: torch.Tensor,
    gk_bwd: torch.Tensor,
    scale: float | None = None,
) -> torch.Tensor:
    """``o^f + o^b`` of the module docstring by the explicit recurrence; ``scale`` defaults to ``dk^-1/2``."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    out = gla_recurrent_reference(q, k, v, gk_fwd, scale) + gla_recurrent_reference(q, k, v, gk_bwd, scale, True)
    return out.to(v.dtype)
