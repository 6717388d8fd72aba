"""Fewer-kernel forms of the elementwise glue around conv / attention blocks (eager speed, same numbers).

In eager mode every PyTorch op is one CUDA launch plus a full read and write of its operands, and a small
backbone at batch 64 spends as much time launching and streaming these elementwise ops as in its GEMMs.
These helpers compute exactly the formulas of the official code with fewer ops; results differ from the
separate ops only by float rounding (``addcmul`` may contract ``a + b·c`` into one fused multiply-add):

- :func:`conv1x1_nhwc`: a 1×1 ``nn.Conv2d`` applied to a channels-last ``(..., C)`` tensor as one GEMM with the
  bias fused in its epilogue (cuDNN convolutions add the bias in a second kernel), no layout change;
- :func:`conv1x1`: the same for an NCHW-shaped tensor in channels-last memory (``F.linear`` on its copy-free
  ``(B, H, W, C)`` view; any other layout goes through ``F.conv2d``);
- :func:`dwconv`: a stride-1 depthwise ``nn.Conv2d`` with the GELU after it and a shortcut fused in
  (:func:`linzoo.kernels.depthwise_conv2d`: one pass over the map on CUDA, ``F.conv2d`` + ops elsewhere);
- :func:`layer_scale_add`: ``x + DropPath(γ ⊙ branch)`` in one ``addcmul`` instead of two or three ops;
- :func:`rope_full_tables` / :func:`rotate_pairs`: rotary embedding of interleaved channel pairs as
  ``x ⊙ cos + swap(x) ⊙ sin±`` (three kernels for any number of tensors stacked in ``x``) instead of the
  slice / stack form (seven kernels per tensor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import Proxy

from linzoo.kernels import depthwise_conv2d

_DEFAULT = object()  # "the module's own parameter" (None is a legal bias: no bias)

__all__ = ["conv1x1", "conv1x1_nhwc", "dwconv", "layer_scale_add", "rope_full_tables", "rotate_pairs"]


def conv1x1_nhwc(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x)`` for a 1×1, stride-1, ungrouped ``conv`` on a channels-last ``x (..., C_in)`` → ``(..., C_out)``.

    Equal to ``conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)`` for ``x (B, H, W, C_in)``; the conv module keeps
    its ``(C_out, C_in, 1, 1)`` weight, so state-dict keys and shapes are unchanged.
    """
    if conv.kernel_size != (1, 1) or conv.groups != 1 or conv.stride != (1, 1) or conv.padding != (0, 0):
        raise ValueError(
            "conv must be a 1x1, stride-1, unpadded, ungrouped Conv2d, got "
            f"kernel_size={conv.kernel_size}, stride={conv.stride}, padding={conv.padding}, groups={conv.groups}"
        )
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def conv1x1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """1×1 convolution of ``(B, C_in, H, W)`` with ``weight`` ``(C_out, C_in, 1, 1)`` -> ``(B, C_out, H, W)``.

    A channels-last ``x`` (not also NCHW-contiguous) goes through ``F.linear`` on its ``(B, H, W, C)`` view: one
    GEMM with the bias in its epilogue, and the result is again channels-last memory. Anything else goes
    through ``F.conv2d``. The two compute the same sum; only the kernels differ.
    """
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
    return F.conv2d(x, weight, bias)


def dwconv(
    x: torch.Tensor,
    conv: nn.Conv2d,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = _DEFAULT,  # type: ignore[assignment]
    *,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``act(conv(x)) + residual`` for a stride-1 depthwise ``conv`` (``groups = C_in = C_out``) on ``(B, C, H, W)``.

    ``weight`` / ``bias`` replace the module's own (folded forms; ``bias=None``: no bias); ``activation`` is
    ``None`` or ``"gelu"`` (exact, ``nn.GELU()``). The geometry (padding, dilation) is the module's.
    """
    channels = conv.in_channels
    if (
        conv.groups != channels
        or conv.out_channels != channels
        or conv.stride != (1, 1)
        or conv.dilation[0] != conv.dilation[1]
    ):
        raise ValueError(
            "conv must be a stride-1 depthwise Conv2d (groups = in = out channels, square dilation), got "
            f"groups={conv.groups}, in/out={conv.in_channels}/{conv.out_channels}, stride={conv.stride}, "
            f"dilation={conv.dilation}"
        )
    if conv.padding_mode != "zeros":
        raise ValueError(f"conv must use zero padding, got padding_mode={conv.padding_mode!r}")
    return depthwise_conv2d(
        x,
        conv.weight if weight is None else weight,
        conv.bias if bias is _DEFAULT else bias,
        padding=conv.padding,
        dilation=conv.dilation[0],
        activation=activation,
        residual=residual,
    )


def layer_scale_add(
    x: torch.Tensor,
    branch: torch.Tensor,
    gamma: torch.Tensor | None = None,
    drop_prob: float = 0.0,
    training: bool = False,
    scale_by_keep: bool = True,
) -> torch.Tensor:
    """``x + DropPath(γ ⊙ branch)`` with timm's ``DropPath`` semantics, in one elementwise kernel (inference).

    ``gamma`` broadcasts against ``branch`` (e.g. ``(C,)`` for channels-last maps). With stochastic depth active
    (``training`` and ``drop_prob > 0``) the per-sample mask ``(B, 1, …)`` is drawn exactly as timm draws it (same
    shape, dtype and RNG use) and folded into the small ``γ`` tensor, so the full-size tensor is streamed once.
    """
    if not 0.0 <= drop_prob < 1.0:
        raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
    if training and drop_prob > 0.0:
        keep = 1.0 - drop_prob
        dtype = torch.promote_types(gamma.dtype, branch.dtype) if gamma is not None else branch.dtype
        mask = branch.new_empty((branch.shape[0],) + (1,) * (branch.ndim - 1), dtype=dtype).bernoulli_(keep)
        if scale_by_keep:
            mask.div_(keep)
        factor = mask if gamma is None else mask * gamma
    elif gamma is None:
        return x + branch
    else:
        factor = gamma
    tracing = isinstance(branch, Proxy)  # FX symbolic tracing: no control flow on tensor attributes
    if not tracing and torch.is_grad_enabled() and (branch.requires_grad or factor.requires_grad):
        # addcmul's backward multiplies the full-size branch by its `value` once more (one extra kernel per
        # residual; VAN-B2 trained 0.94x the official speed with it on the H100): mul + add differentiates cheaper
        return x + branch * factor
    return torch.addcmul(x, factor, branch)


def rope_full_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, d/2)`` per-pair ``cos, sin`` → ``(N, d)`` tables ``cos`` (each value twice) and ``sin± = (−sin, sin)``.

    With them :func:`rotate_pairs` turns pair ``(a, b)`` into ``(a cos − b sin, b cos + a sin)``.
    """
    # (no Python checks on shapes in these two: FX tracing turns shapes into proxies; torch raises on mismatch)
    return cos.repeat_interleave(2, dim=-1), torch.stack((-sin, sin), dim=-1).flatten(-2)


def rotate_pairs(x: torch.Tensor, cos_full: torch.Tensor, sin_signed: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of interleaved channel pairs of ``x (..., d)``: ``x ⊙ cos + swap(x) ⊙ sin±``.

    ``swap`` exchanges the two channels of each pair; ``cos_full, sin_signed`` come from :func:`rope_full_tables`
    and must broadcast against ``x``. Same products and sum as the official ``x·cos + rotate_every_two(x)·sin``
    (``(−b)·s`` equals ``−(b·s)`` exactly); the result has the promoted dtype of ``x`` and the tables.
    """
    swapped = x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    return torch.addcmul(x * cos_full, swapped, sin_signed)
