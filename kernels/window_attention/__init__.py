"""Swin-style 2-D window attention with cyclic shift, relative position bias and padding.

Public API (what the L²ViT, InLine-Swin, SLAB-Swin and MOAT blocks call)::

    window_attention_2d(q, k, v, window_size, *, shift=0, rpb=None, scale=None, pad_mode="mask",
                        backend="auto") -> (B, heads, H, W, Dv)

- ``q, k``: ``(B, heads, H, W, D)``; ``v``: ``(B, heads, H, W, Dv)`` — the *map* layout (not Swin's
  ``(B·nW, heads, w², D)``); the op pads, shifts, partitions and merges internally.
- ``window_size``: int or ``(wh, ww)``; any H, W: the map is padded at the bottom/right to multiples of
  the window (a window larger than the map is allowed: it is padded). Blocks that shrink the window to
  the map size when the map is small (Swin) do that themselves.
- ``shift``: int or ``(sh, sw)`` with ``0 <= shift < window``: cyclic shift by −shift before the
  partition and Swin's mask between the regions that the roll brought together (exact −inf masking;
  Swin's −100 gives the same result in float32).
- ``rpb``: optional learnable bias, either Swin's ``relative_position_bias_table`` of shape
  ``((2wh − 1)(2ww − 1), heads)`` — pass the checkpoint's parameter as is; row index
  ``(Δy + wh − 1)(2ww − 1) + Δx + ww − 1`` with Δ = query − key, gathered like Swin's
  ``relative_position_index`` — or ``(heads, 2wh − 1, 2ww − 1)`` indexed by **key − query**
  (``rpb[h, yk − yq + wh − 1, xk − xq + ww − 1]``, NATTEN's convention, same as
  :func:`linzoo.kernels.neighborhood_attention_2d`). ``swin_table_to_rpb`` / ``rpb_to_swin_table`` convert.
  Gradients flow to whichever tensor was passed.
- ``pad_mode``: ``"mask"`` (padded tokens are never keys) or ``"zeros"`` (padded positions are zero
  keys/values that take part in the softmax, as when a bias-free projection follows zero padding).
  L²ViT pads its input *before* the qkv projection (padded keys = qkv bias): such blocks pad themselves
  and call the op on a multiple-of-window map, where both modes are identical.
- ``scale``: default ``D ** -0.5``. ``backend``: ``"auto"``, ``"triton"``, ``"torch"``.

L²ViT's local attention is ``window_attention_2d(q, k, v, 7)`` (no shift, no bias); Swin's shifted
block is ``window_attention_2d(q, k, v, 7, shift=3, rpb=table)``.

The fused Triton kernel (one program per window; forward and a single backward kernel computing dq, dk,
dv and the bias gradient without atomics) is registered as ``torch.ops.linzoo.window_attention_2d``;
it covers windows of up to 128 tokens (w ≤ 11); larger windows use the reference. Formulas:
:mod:`linzoo.kernels.window_attention.reference`.
"""

from __future__ import annotations

from typing import Optional

import torch

from .._backend import resolve_backend
from .reference import PAD_MODES, rpb_to_swin_table, swin_table_to_rpb, window_attention_2d_reference

__all__ = [
    "PAD_MODES",
    "rpb_to_swin_table",
    "swin_table_to_rpb",
    "window_attention_2d",
    "window_attention_2d_reference",
]

try:  # the fused kernels need Triton; without it only the reference backend exists
    from . import triton_window as _triton_window
except ImportError:
    _triton_window = None

MAX_TRITON_WINDOW_TOKENS = 128
MAX_TRITON_HEAD_DIM = 256


@torch.library.custom_op("linzoo::window_attention_2d", mutates_args=())
def _window_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    wh: int,
    ww: int,
    sh: int,
    sw: int,
    scale: float,
    pad_zeros: bool,
    rpb: Optional[torch.Tensor],
) -> torch.Tensor:
    return _triton_window.forward(q, k, v, wh, ww, sh, sw, scale, pad_zeros, rpb)


@_window_op.register_fake
def _(q, k, v, wh, ww, sh, sw, scale, pad_zeros, rpb):
    return v.new_empty((*q.shape[:-1], v.shape[-1]))


@torch.library.custom_op("linzoo::window_attention_2d_backward", mutates_args=())
def _window_backward_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    wh: int,
    ww: int,
    sh: int,
    sw: int,
    scale: float,
    pad_zeros: bool,
    rpb: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    args = (grad_out, q, k, v, wh, ww, sh, sw, scale, pad_zeros, rpb)
    return tuple(t.contiguous() for t in _triton_window.backward(*args))


@_window_backward_op.register_fake
def _(grad_out, q, k, v, wh, ww, sh, sw, scale, pad_zeros, rpb):
    drpb = rpb.new_empty(rpb.shape) if rpb is not None else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), drpb


def _setup_context(ctx, inputs, output):
    q, k, v, wh, ww, sh, sw, scale, pad_zeros, rpb = inputs
    ctx.save_for_backward(q, k, v, rpb)
    ctx.options = (wh, ww, sh, sw, scale, pad_zeros)


def _backward(ctx, grad_out):
    q, k, v, rpb = ctx.saved_tensors
    dq, dk, dv, drpb = _window_backward_op(grad_out.contiguous(), q, k, v, *ctx.options, rpb)
    return dq, dk, dv, None, None, None, None, None, None, (drpb if rpb is not None else None)


_window_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerWindowAttention(torch.autograd.Function):
    """The same fused forward/backward as the custom op, for plain eager calls: the custom op's dispatcher layer
    costs more host time per call than the kernels take at 224-px backbone shapes (see
    ``benchmarks/host_overhead.py``); torch.compile, export and fake tensors still use the custom op."""

    @staticmethod
    def forward(ctx, q, k, v, wh, ww, sh, sw, scale, pad_zeros, rpb):
        ctx.save_for_backward(q, k, v, rpb)
        ctx.options = (wh, ww, sh, sw, scale, pad_zeros)
        return _triton_window.forward(q, k, v, wh, ww, sh, sw, scale, pad_zeros, rpb)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, rpb = ctx.saved_tensors
        dq, dk, dv, drpb = _triton_window.backward(grad_out, q, k, v, *ctx.options, rpb)
        return dq, dk, dv, None, None, None, None, None, None, (drpb if rpb is not None else None)


def _eager_call(q: torch.Tensor) -> bool:
    """True for a plain eager call on real tensors (not compiling, exporting or running on fake tensors)."""
    return not (torch.compiler.is_compiling() or isinstance(q, torch._subclasses.FakeTensor))


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(x, int) for x in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def _check_inputs(q, k, v, window, shift, rpb, pad_mode) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 5:
            raise ValueError(f"{name} must have shape (B, heads, H, W, D), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:4] != q.shape[:4]:
        raise ValueError(f"v must match q in (B, heads, H, W): got {tuple(v.shape)} for q {tuple(q.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    (wh, ww), (sh, sw) = window, shift
    if wh < 1 or ww < 1:
        raise ValueError(f"window_size must be positive, got {(wh, ww)}")
    if not (0 <= sh < wh and 0 <= sw < ww):
        raise ValueError(f"shift must satisfy 0 <= shift < window_size per axis, got shift {(sh, sw)} for {(wh, ww)}")
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}, got {pad_mode!r}")
    if rpb is not None:
        if not isinstance(rpb, torch.Tensor) or not rpb.is_floating_point():
            raise ValueError("rpb must be a floating-point torch.Tensor")
        heads, table = q.shape[1], (2 * wh - 1) * (2 * ww - 1)
        if tuple(rpb.shape) not in ((table, heads), (heads, 2 * wh - 1, 2 * ww - 1)):
            raise ValueError(
                f"rpb must be Swin's table ((2wh-1)(2ww-1), heads) = {(table, heads)} or "
                f"(heads, 2wh-1, 2ww-1) = {(heads, 2 * wh - 1, 2 * ww - 1)}, got {tuple(rpb.shape)}"
            )
        if rpb.device != q.device:
            raise ValueError(f"rpb must be on {q.device}, got {rpb.device}")


def window_attention_2d(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_size: int | tuple[int, int],
    *,
    shift: int | tuple[int, int] = 0,
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
    pad_mode: str = "mask",
    backend: str = "auto",
) -> torch.Tensor:
    """Swin window attention on ``(B, heads, H, W, D)`` maps; returns ``(B, heads, H, W, Dv)``.

    Inside each (shifted) window: softmax(scale · q kᵀ + rpb + shift mask) v (Swin, Eq. 4); see the
    module docstring for the options and the two accepted ``rpb`` layouts.
    """
    window = _pair(window_size, "window_size")
    shifts = _pair(shift, "shift")
    _check_inputs(q, k, v, window, shifts, rpb, pad_mode)
    if rpb is not None and rpb.dim() == 2:
        rpb = swin_table_to_rpb(rpb, window)
    supported = (
        _triton_window is not None
        and window[0] * window[1] <= MAX_TRITON_WINDOW_TOKENS
        and max(q.shape[-1], v.shape[-1]) <= MAX_TRITON_HEAD_DIM
    )
    resolved = resolve_backend(backend, q.device, triton_supported=supported)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if resolved == "triton":
        args = (q, k, v, *window, *shifts, scale, pad_mode == "zeros", rpb)
        if not _eager_call(q):
            return _window_op(*args)
        leaves = (q, k, v) if rpb is None else (q, k, v, rpb)
        if torch.is_grad_enabled() and any(t.requires_grad for t in leaves):
            return _EagerWindowAttention.apply(*args)
        return _triton_window.forward(*args)
    return window_attention_2d_reference(q, k, v, window, shifts, rpb, scale, pad_mode)
