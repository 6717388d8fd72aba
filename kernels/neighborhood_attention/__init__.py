"""2-D neighborhood attention (NATTEN semantics) with relative position bias, extra global keys and circles.

Public API::

    neighborhood_attention_2d(q, k, v, kernel_size, *, dilation=1, rpb=None, extra_kv=None,
                              window_shape="square", scale=None, backend="auto") -> (B, heads, H, W, Dv)

- ``q, k``: ``(B, heads, H, W, D)``; ``v``: ``(B, heads, H, W, Dv)``; one dtype (fp32/fp16/bf16), one device.
- ``kernel_size``, ``dilation``: int or ``(kh, kw)`` / ``(dh, dw)``; kernel sizes odd; ``"square"`` windows
  need ``k·δ ≤`` the map size per axis. Each query sees exactly kh·kw keys; the window is centred on the
  query and shifted inward at the borders (NATTEN); dilation δ splits each axis into δ interleaved groups.
- ``rpb``: optional learnable ``(heads, 2kh − 1, 2kw − 1)`` bias indexed by key − query offset (in
  dilated units), NATTEN's pre-0.20 layout; it receives a gradient.
- ``extra_kv``: optional ``(k_extra, v_extra)`` of shape ``(B, heads, M, D)`` / ``(B, heads, M, Dv)``:
  M keys (text / global tokens) seen by every query in the same softmax, without bias.
- ``window_shape="circle"`` (CLEAR): keys with Δy² + Δx² < R², R = (k + 1)/2, around the query, truncated
  at borders; needs ``kh == kw``. CLEAR's radius r is ``kernel_size = 2r − 1``.
- ``scale``: logit scale, default ``D ** -0.5``.
- ``backend``: ``"auto"`` (``LINZOO_KERNEL_BACKEND``, else Triton on CUDA, else the reference),
  ``"triton"`` or ``"torch"``.

Exact formulas: :mod:`linzoo.kernels.neighborhood_attention.reference`. The fused Triton kernels
(online softmax over 2-D query tiles that share a haloed key rectangle; FlashAttention-2 style backward
with dq / dk,dv kernels) are registered as ``torch.ops.linzoo.neighborhood_attention_2d`` (and
``..._backward``) with fake implementations and autograd, used under ``torch.compile``/export; plain eager calls
reach the same kernels through an ``autograd.Function`` (less host work per call). The ``torch`` backend is the
differentiable reference itself.
"""

from __future__ import annotations

from typing import Optional

import torch

from .._backend import resolve_backend
from .reference import (
    WINDOW_SHAPES,
    neighborhood_attention_2d_bruteforce,
    neighborhood_attention_2d_reference,
)

__all__ = [
    "WINDOW_SHAPES",
    "neighborhood_attention_2d",
    "neighborhood_attention_2d_bruteforce",
    "neighborhood_attention_2d_reference",
]

try:  # the fused kernels need Triton; without it only the reference backend exists
    from . import triton_na as _triton_na
except ImportError:
    _triton_na = None

MAX_TRITON_HEAD_DIM = 256


@torch.library.custom_op("linzoo::neighborhood_attention_2d", mutates_args=())
def _na_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kh: int,
    kw: int,
    dh: int,
    dw: int,
    circle: bool,
    scale: float,
    rpb: Optional[torch.Tensor],
    k_extra: Optional[torch.Tensor],
    v_extra: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    return _triton_na.forward(q, k, v, kh, kw, dh, dw, circle, scale, rpb, k_extra, v_extra)


@_na_op.register_fake
def _(q, k, v, kh, kw, dh, dw, circle, scale, rpb, k_extra, v_extra):
    return v.new_empty((*q.shape[:-1], v.shape[-1])), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("linzoo::neighborhood_attention_2d_backward", mutates_args=())
def _na_backward_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    kh: int,
    kw: int,
    dh: int,
    dw: int,
    circle: bool,
    scale: float,
    rpb: Optional[torch.Tensor],
    k_extra: Optional[torch.Tensor],
    v_extra: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    args = (grad_out, q, k, v, out, lse, kh, kw, dh, dw, circle, scale, rpb, k_extra, v_extra)
    return tuple(t.contiguous() for t in _triton_na.backward(*args))


@_na_backward_op.register_fake
def _(grad_out, q, k, v, out, lse, kh, kw, dh, dw, circle, scale, rpb, k_extra, v_extra):
    drpb = rpb.new_empty(rpb.shape) if rpb is not None else q.new_empty(0)
    dke = k_extra.new_empty(k_extra.shape) if k_extra is not None else q.new_empty(0)
    dve = v_extra.new_empty(v_extra.shape) if v_extra is not None else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), drpb, dke, dve


def _setup_context(ctx, inputs, output):
    q, k, v, kh, kw, dh, dw, circle, scale, rpb, k_extra, v_extra = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, rpb, k_extra, v_extra)
    ctx.options = (kh, kw, dh, dw, circle, scale)
    ctx.mark_non_differentiable(lse)


def _input_grads(grads, rpb, k_extra, v_extra) -> tuple:
    """``(dq, dk, dv, drpb, dke, dve)`` as gradients of the op's 12 inputs (None for the 6 options and for
    the absent optional tensors)."""
    dq, dk, dv, drpb, dke, dve = grads
    return (
        dq,
        dk,
        dv,
        *([None] * 6),
        drpb if rpb is not None else None,
        dke if k_extra is not None else None,
        dve if v_extra is not None else None,
    )


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, rpb, k_extra, v_extra = ctx.saved_tensors
    kh, kw, dh, dw, circle, scale = ctx.options
    grads = _na_backward_op(
        grad_out.contiguous(), q, k, v, out, lse, kh, kw, dh, dw, circle, scale, rpb, k_extra, v_extra
    )
    return _input_grads(grads, rpb, k_extra, v_extra)


_na_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerNeighborhoodAttention(torch.autograd.Function):
    """The same fused forward/backward as the custom op, for plain eager calls.

    The custom op is what ``torch.compile``, ``torch.export`` and fake tensors need, but each eager call pays the
    dispatcher's Python layer (schema defaults, autograd wrapper, redispatch): measured on the H100 machine it was
    most of the host time of a forward+backward at 224-px shapes, where the kernels take ~0.5 ms.
    """

    @staticmethod
    def forward(ctx, q, k, v, kh, kw, dh, dw, circle, scale, rpb, k_extra, v_extra):
        out, lse = _triton_na.forward(q, k, v, kh, kw, dh, dw, circle, scale, rpb, k_extra, v_extra)
        ctx.save_for_backward(q, k, v, out, lse, rpb, k_extra, v_extra)
        ctx.options = (kh, kw, dh, dw, circle, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, rpb, k_extra, v_extra = ctx.saved_tensors
        grads = _triton_na.backward(grad_out, q, k, v, out, lse, *ctx.options, rpb, k_extra, v_extra)
        return _input_grads(grads, rpb, k_extra, v_extra)


def _eager_call(q: torch.Tensor) -> bool:
    """True for a plain eager call on real tensors (not compiling, exporting or running on fake tensors)."""
    return not (torch.compiler.is_compiling() or isinstance(q, torch._subclasses.FakeTensor))


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(x, int) for x in value):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def _check_tensor(name: str, t, ndim: int, layout: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must have shape {layout}, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")


def _check_inputs(q, k, v, kernel, dilation, rpb, extra_kv, window_shape):
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_tensor(name, t, 5, "(B, heads, H, W, D)")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:4] != q.shape[:4]:
        raise ValueError(f"v must match q in (B, heads, H, W): got {tuple(v.shape)} for q {tuple(q.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if window_shape not in WINDOW_SHAPES:
        raise ValueError(f"window_shape must be one of {WINDOW_SHAPES}, got {window_shape!r}")
    (kh, kw), (dh, dw) = kernel, dilation
    if kh < 1 or kw < 1 or kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive per axis, got {(kh, kw)}")
    if dh < 1 or dw < 1:
        raise ValueError(f"dilation must be >= 1 per axis, got {(dh, dw)}")
    height, width = q.shape[2], q.shape[3]
    if window_shape == "square" and (kh * dh > height or kw * dw > width):
        raise ValueError(
            f"kernel_size * dilation must not exceed the map size per axis: kernel_size {(kh, kw)} with "
            f"dilation {(dh, dw)} on a {height}x{width} map"
        )
    if window_shape == "circle" and kh != kw:
        raise ValueError(f"window_shape='circle' needs a square kernel_size, got {(kh, kw)}")
    if rpb is not None:
        _check_tensor("rpb", rpb, 3, "(heads, 2*kh - 1, 2*kw - 1)")
        want = (q.shape[1], 2 * kh - 1, 2 * kw - 1)
        if tuple(rpb.shape) != want:
            raise ValueError(f"rpb must have shape (heads, 2*kh - 1, 2*kw - 1) = {want}, got {tuple(rpb.shape)}")
        if rpb.device != q.device:
            raise ValueError(f"rpb must be on {q.device}, got {rpb.device}")
    if extra_kv is not None:
        if not (isinstance(extra_kv, (tuple, list)) and len(extra_kv) == 2):
            raise ValueError("extra_kv must be a (k_extra, v_extra) pair of (B, heads, M, D) tensors")
        ke, ve = extra_kv
        _check_tensor("extra_kv[0]", ke, 4, "(B, heads, M, D)")
        _check_tensor("extra_kv[1]", ve, 4, "(B, heads, M, Dv)")
        if tuple(ke.shape) != (q.shape[0], q.shape[1], ke.shape[2], q.shape[4]) or ke.shape[2] < 1:
            raise ValueError(
                f"extra_kv[0] must have shape (B, heads, M, D) matching q {tuple(q.shape)}, got {tuple(ke.shape)}"
            )
        if tuple(ve.shape) != (*ke.shape[:3], v.shape[4]):
            raise ValueError(
                f"extra_kv[1] must have shape (B, heads, M, Dv) = {(*ke.shape[:3], v.shape[4])}, got {tuple(ve.shape)}"
            )
        for name, t in (("extra_kv[0]", ke), ("extra_kv[1]", ve)):
            if t.dtype != q.dtype or t.device != q.device:
                raise ValueError(
                    f"{name} must match q in dtype and device ({q.dtype}, {q.device}), got {t.dtype}, {t.device}"
                )


def neighborhood_attention_2d(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: int | tuple[int, int],
    *,
    dilation: int | tuple[int, int] = 1,
    rpb: torch.Tensor | None = None,
    extra_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    window_shape: str = "square",
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """2-D neighborhood attention on ``(B, heads, H, W, D)`` maps; returns ``(B, heads, H, W, Dv)``.

    o_i = Σ_{j ∈ N(i) ∪ extra} softmax_j(scale · q_i·k_j + rpb[h, j − i]) v_j with N(i) the k_h×k_w
    (dilated) neighborhood of i, clamped inward at borders (see the module docstring for every option).
    """
    kernel = _pair(kernel_size, "kernel_size")
    dil = _pair(dilation, "dilation")
    _check_inputs(q, k, v, kernel, dil, rpb, extra_kv, window_shape)
    supported = (
        _triton_na is not None
        and max(q.shape[-1], v.shape[-1]) <= MAX_TRITON_HEAD_DIM
        and q.shape[0] * q.shape[1] <= 65535  # the kernels put batch x heads on CUDA grid axis 1
    )
    resolved = resolve_backend(backend, q.device, triton_supported=supported)
    k_extra, v_extra = (extra_kv[0], extra_kv[1]) if extra_kv is not None else (None, None)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if resolved == "triton":
        args = (q, k, v, *kernel, *dil, window_shape == "circle", scale, rpb, k_extra, v_extra)
        if not _eager_call(q):
            return _na_op(*args)[0]
        leaves = [t for t in (q, k, v, rpb, k_extra, v_extra) if t is not None]
        if torch.is_grad_enabled() and any(t.requires_grad for t in leaves):
            return _EagerNeighborhoodAttention.apply(*args)
        return _triton_na.forward(*args)[0]
    return neighborhood_attention_2d_reference(q, k, v, kernel, dil, rpb, k_extra, v_extra, window_shape, scale)
