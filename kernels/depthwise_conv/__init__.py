"""Depthwise convolution with its epilogue fused: ``y = act(DWConv(x) + bias) + residual`` (stride 1).

Public API (what VAN's large-kernel attention and MLP call)::

    depthwise_conv2d(x, weight, bias=None, *, padding=None, dilation=1, activation=None, residual=None,
                     backend="auto") -> (B, C, H_out, W_out)

- ``x``: ``(B, C, H, W)``, any strides; the output has its memory format (channels-last in, channels-last out).
- ``weight``: ``(C, 1, KH, KW)`` (an ``nn.Conv2d(C, C, K, groups=C)`` weight as it is), ``bias``: ``(C,)``. Both
  are cast to ``x``'s dtype (as autocast does for a convolution); accumulation is fp32.
- ``padding``: int, pair, ``"same"`` (the default, ``dilation · (K − 1) / 2``) or ``"valid"``; ``dilation``: int.
- ``activation``: ``None`` or ``"gelu"`` (erf form, ``nn.GELU()``); ``residual``: a tensor of the output's shape
  added last (the block's shortcut); the output dtype is that of ``x`` and ``residual`` promoted.

The Triton path (``torch.ops.linzoo.depthwise_conv2d``, with a Triton backward) reads the input once and writes
the output once where cuDNN's convolution, the bias, the GELU and the shortcut each take a pass over the map;
the backward saves only ``x`` and recomputes the pre-activation. ``backend="auto"`` uses it where it measured
faster than cuDNN (:func:`_kernel_is_faster`: dilated filters, and GELU-fused inference) and ``F.conv2d`` with
the separate ops elsewhere; ``backend="triton"`` (or ``LINZOO_KERNEL_BACKEND=triton``) forces the kernel. Formulas:
:mod:`linzoo.kernels.depthwise_conv.reference` and :mod:`linzoo.kernels.depthwise_conv.triton_dwconv`.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from .._backend import ENV_VAR, resolve_backend
from .reference import ACTIVATIONS, depthwise_conv2d_reference

__all__ = ["ACTIVATIONS", "depthwise_conv2d", "depthwise_conv2d_reference"]

try:  # the fused kernels need Triton; without it only the reference backend exists
    from . import triton_dwconv as _triton_dwconv
except ImportError:
    _triton_dwconv = None


@torch.library.custom_op("linzoo::depthwise_conv2d", mutates_args=())
def _dw_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    residual: Optional[torch.Tensor],
    ph: int,
    pw: int,
    dilation: int,
    gelu: bool,
) -> torch.Tensor:
    return _triton_dwconv.forward(x, weight, bias, residual, (ph, pw), dilation, gelu)


@_dw_op.register_fake
def _(x, weight, bias, residual, ph, pw, dilation, gelu):
    return _triton_dwconv.empty_output(x, weight.shape[2:], (ph, pw), dilation, residual)


@torch.library.custom_op("linzoo::depthwise_conv2d_backward", mutates_args=())
def _dw_backward_op(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    ph: int,
    pw: int,
    dilation: int,
    gelu: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx, dw, db = _triton_dwconv.backward(grad_out, x, weight, bias, (ph, pw), dilation, gelu)
    return dx, dw, (db if db is not None else x.new_empty(0))


@_dw_backward_op.register_fake
def _(grad_out, x, weight, bias, ph, pw, dilation, gelu):
    db = bias.new_empty(bias.shape) if bias is not None else x.new_empty(0)
    return torch.empty_like(x), weight.new_empty(weight.shape), db


def _setup_context(ctx, inputs, output):
    x, weight, bias, residual, ph, pw, dilation, gelu = inputs
    ctx.save_for_backward(x, weight, bias)
    ctx.options = (ph, pw, dilation, gelu)
    ctx.residual_dtype = residual.dtype if residual is not None else None


def _residual_grad(ctx, grad_out: torch.Tensor) -> torch.Tensor | None:
    return grad_out.to(ctx.residual_dtype) if ctx.residual_dtype is not None else None


def _backward(ctx, grad_out):
    x, weight, bias = ctx.saved_tensors
    dx, dw, db = _dw_backward_op(grad_out, x, weight, bias, *ctx.options)
    return dx, dw, (db if bias is not None else None), _residual_grad(ctx, grad_out), None, None, None, None


_dw_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerDepthwiseConv(torch.autograd.Function):
    """The custom op's kernels for plain eager calls, without the dispatcher's per-call host cost (as in the
    attention ops); torch.compile, export and fake tensors use the custom op."""

    @staticmethod
    def forward(ctx, x, weight, bias, residual, ph, pw, dilation, gelu):
        _setup_context(ctx, (x, weight, bias, residual, ph, pw, dilation, gelu), None)
        return _triton_dwconv.forward(x, weight, bias, residual, (ph, pw), dilation, gelu)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, bias = ctx.saved_tensors
        ph, pw, dilation, gelu = ctx.options
        dx, dw, db = _triton_dwconv.backward(
            grad_out, x, weight, bias, (ph, pw), dilation, gelu, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        return dx, dw, (db if ctx.needs_input_grad[2] else None), _residual_grad(ctx, grad_out), None, None, None, None


def _pair(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, value
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(f"{name} must be a non-negative int, a pair of them, 'same' or 'valid', got {value!r}")


def _check(x, weight, bias, residual, dilation, activation) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point (B, C, H, W) tensor, got {getattr(x, 'shape', type(x))}")
    channels = x.shape[1]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4 or weight.shape[:2] != (channels, 1):
        raise ValueError(
            f"weight must have shape (C, 1, KH, KW) with C = x.shape[1] = {channels}, got "
            f"{tuple(getattr(weight, 'shape', ()))}"
        )
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (channels,)):
        raise ValueError(f"bias must have shape (C,) = ({channels},), got {tuple(getattr(bias, 'shape', ()))}")
    if not isinstance(dilation, int) or isinstance(dilation, bool) or dilation < 1:
        raise ValueError(f"dilation must be a positive int, got {dilation!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    for name, t in (("weight", weight), ("bias", bias), ("residual", residual)):
        if t is not None and t.device != x.device:
            raise ValueError(f"{name} must be on {x.device}, got {t.device}")


def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    padding: int | tuple[int, int] | str | None = None,
    dilation: int = 1,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """``act(DWConv(x) + bias) + residual`` with stride 1; x (B, C, H, W), weight (C, 1, KH, KW).

    ``padding``: ints, ``"same"`` (the default: ``dilation · (K − 1) / 2`` per side; odd kernels) or ``"valid"``
    (none), as ``F.conv2d`` takes them. See the module docstring.
    """
    _check(x, weight, bias, residual, dilation, activation)
    kh, kw = weight.shape[2:]
    if padding is None or padding == "same":
        if kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"padding 'same' (the default) needs an odd kernel, got {(kh, kw)}: pass padding")
        padding = (dilation * (kh - 1) // 2, dilation * (kw - 1) // 2)
    elif padding == "valid":
        padding = (0, 0)
    ph, pw = _pair(padding, "padding")
    out_h, out_w = x.shape[2] + 2 * ph - dilation * (kh - 1), x.shape[3] + 2 * pw - dilation * (kw - 1)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"the kernel {(kh, kw)} with dilation {dilation} and padding {(ph, pw)} leaves no output")
    if residual is not None and tuple(residual.shape) != (*x.shape[:2], out_h, out_w):
        raise ValueError(
            f"residual must have the output's shape {(*x.shape[:2], out_h, out_w)}, got {tuple(residual.shape)}"
        )
    if weight.dtype != x.dtype:  # (a no-op .to() still costs ~1 µs of host time per tensor)
        weight = weight.to(x.dtype)
    if bias is not None and bias.dtype != x.dtype:
        bias = bias.to(x.dtype)
    gelu = activation == "gelu"
    needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias, residual))
    resolved = resolve_backend(backend, x.device, triton_supported=_triton_dwconv is not None)
    forced = backend == "triton" or os.environ.get(ENV_VAR, "").strip().lower() == "triton"
    if resolved == "torch" or (not forced and not _kernel_is_faster(x, dilation, gelu, needs_grad)):
        return depthwise_conv2d_reference(x, weight, bias, (ph, pw), dilation, activation, residual)
    if x[0].numel() >= 2**31:
        raise ValueError(f"x holds {x[0].numel()} elements per image; the Triton kernels index them in int32")
    if torch.compiler.is_compiling() or isinstance(x, torch._subclasses.FakeTensor):
        return _dw_op(x, weight, bias, residual, ph, pw, dilation, gelu)
    if not needs_grad:  # inference: no autograd node (its host cost is most of a small layer's time)
        return _triton_dwconv.forward(x, weight, bias, residual, (ph, pw), dilation, gelu)
    return _EagerDepthwiseConv.apply(x, weight, bias, residual, ph, pw, dilation, gelu)


def _kernel_is_faster(x: torch.Tensor, dilation: int, gelu: bool, needs_grad: bool) -> bool:
    """``backend="auto"``'s choice between the fused kernel and cuDNN, from the per-layer table of
    ``benchmarks/depthwise_conv.py`` (H100, VAN-B2's layers at 224 and 1024 px; docs/benchmarks/depthwise_conv.md):

    - only channels-last maps (a tap is a vector load of contiguous channels; NCHW maps go to ``F.conv2d``);
    - dilated filters always: cuDNN runs them at 1–13 % of the memory floor (7×7, dilation 3: kernel 2.4–9.7×
      faster forward, 1.1–7.1× forward+backward, except 0.68× on 32×32 maps);
    - undilated filters only for inference with the GELU fused (1.35–2.05× the conv + GELU, one tie): plain
      5×5 / 3×3 forwards are faster in cuDNN beyond 64 channels, and the kernel's weight gradient is slower
      (forward+backward 0.3–0.7×).
    """
    if not x.is_contiguous(memory_format=torch.channels_last):
        return False
    return dilation > 1 or (gelu and not needs_grad)
