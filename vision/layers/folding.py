"""BatchNorm folding and caching of parameter-derived tensors for eager inference (VAN, RepBN).

Everything here computes exactly the function of the unfused modules (up to floating-point rounding); the
modules and their state dicts stay as they are, the fusions only change which kernels run:

- :func:`bn_scale_shift` / :func:`fold_bn_before_conv` / :func:`fold_bn_after_conv`: an eval-mode
  ``BatchNorm2d`` (running statistics) is the per-channel affine map ``s ⊙ x + t``, which folds into a 1×1
  convolution that reads its output (``W' = W·diag(s)``, ``b' = b + W t``) or into any convolution that
  writes its input (``W' = diag(s)·W``, ``b' = s ⊙ b + t``). One BatchNorm kernel (a full read and write of
  the map) less per fold.
- :class:`DerivedTensorCache`: keeps tensors derived from parameters (folded weights, weights already cast to
  the autocast dtype) between grad-free inference calls, so the folding costs no kernel launches per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "DerivedTensorCache",
    "at_least_fp32",
    "bn_scale_shift",
    "bn_uses_running_stats",
    "fold_bn_after_conv",
    "fold_bn_before_conv",
]


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32, or as it is when already fp32 or wider (folds are computed at this precision)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def bn_uses_running_stats(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """True when ``bn`` normalises with its running statistics (eval mode with tracked statistics)."""
    return not bn.training and bn.running_mean is not None and bn.running_var is not None


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as ``BN(x) = s ⊙ x + t`` with ``s = γ / sqrt(σ² + ε)``, ``t = β − μ s`` (``(C,)``, fp32 or wider).

    Raises:
        ValueError: ``bn`` does not normalise with running statistics (training mode or untracked).
    """
    if not bn_uses_running_stats(bn):
        raise ValueError("bn must be in eval mode with running statistics to be folded")
    scale = torch.rsqrt(at_least_fp32(bn.running_var) + bn.eps)
    if bn.weight is not None:
        scale = scale * at_least_fp32(bn.weight)
    shift = -at_least_fp32(bn.running_mean) * scale
    if bn.bias is not None:
        shift = shift + at_least_fp32(bn.bias)
    return scale, shift


def fold_bn_before_conv(
    scale: torch.Tensor, shift: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``Conv1x1(s ⊙ x + t) = Conv1x1'(x)``: ``W' = W·diag(s)``, ``b' = b + W t``.

    Only exact for a 1×1 convolution (a k×k one with zero padding sees ``t`` only inside the image).
    ``weight`` is ``(C_out, C_in, 1, 1)``; ``scale`` and ``shift`` are ``(C_in,)``.
    """
    if weight.shape[-2:] != (1, 1):
        raise ValueError(f"weight must be a 1x1 convolution weight (C_out, C_in, 1, 1), got {tuple(weight.shape)}")
    w = weight * scale.view(1, -1, 1, 1)
    b = weight.flatten(1) @ shift
    return w, b if bias is None else b + bias


def fold_bn_after_conv(
    scale: torch.Tensor, shift: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s ⊙ Conv(x) + t = Conv'(x)`` for any convolution: ``W' = diag(s)·W``, ``b' = s ⊙ b + t`` (``(C_out,)``)."""
    w = weight * scale.view(-1, *([1] * (weight.dim() - 1)))
    return w, shift if bias is None else torch.addcmul(shift, scale, bias)


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    if device_type in ("cuda", "cpu", "xpu", "mps") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


class DerivedTensorCache:
    """Caches tensors derived from parameters and buffers across grad-free calls.

    ``get(sources, compute, cast)`` returns ``compute()``, a dict of tensors. When autograd records
    (``torch.is_grad_enabled()``) or under ``torch.compile`` it computes every call (gradients then flow
    through the derivation; the compiler fuses it). Otherwise the result is kept and reused until any source
    tensor is replaced, moved or modified in place (its ``id``, ``data_ptr`` and in-place ``_version`` are the
    key) or the autocast state changes. Entries named in ``cast`` are stored already cast to the autocast
    dtype of ``device_type``, which is the cast autocast would apply to a convolution's weight and bias
    anyway, so the call skips those casts.

    The cache is a plain attribute, not a buffer: ``state_dict`` is unaffected.
    """

    def __init__(self) -> None:
        self._key: tuple[Any, ...] | None = None
        self._value: dict[str, torch.Tensor] | None = None

    def clear(self) -> None:
        self._key, self._value = None, None

    def get(
        self,
        sources: Sequence[torch.Tensor],
        compute: Callable[[], dict[str, torch.Tensor]],
        cast: Sequence[str] = (),
        device_type: str = "cuda",
    ) -> dict[str, torch.Tensor]:
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return compute()
        amp = _autocast_dtype(device_type)
        key = (amp, *((id(t), t.data_ptr(), t._version) for t in sources))
        if key != self._key or self._value is None:
            value = compute()
            if amp is not None:
                value = {k: (v.to(amp) if k in cast else v) for k, v in value.items()}
            self._key, self._value = key, value
        return self._value

    def __getstate__(self) -> dict[str, Any]:  # never pickle or deep-copy cached tensors
        return {"_key": None, "_value": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._key, self._value = None, None
