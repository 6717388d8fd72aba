"""Non-causal linear attention: public function, backend dispatch, and the fused op as a custom op.

``linear_attention(q, k, v, feature_map=..., normalizer=...)`` computes the formulas in
:mod:`linzoo.kernels.linear_attention.reference` on ``(B, heads, N, D)`` tensors without ever forming
the N×N matrix. The fused Triton kernel is registered as ``torch.ops.linzoo.linear_attention`` (and
``..._backward``) with fake implementations and autograd, so ``torch.compile``, ``torch.export`` and the
``meta`` device see one opaque op; the ``torch`` backend is the differentiable reference itself.
"""

from __future__ import annotations

from typing import Optional

import torch

from .._backend import resolve_backend
from .reference import FEATURE_MAPS, NORMALIZERS, default_scale, linear_attention_reference

__all__ = ["FEATURE_MAPS", "NORMALIZERS", "linear_attention", "linear_attention_reference"]


_MAX_TRITON_HEAD_DIM = 256
_MAX_GRID_Y = 65535  # CUDA grid axis 1 (and 2) limit

try:  # the fused kernels need Triton; without it only the reference backend exists
    from . import triton_fused as _triton_fused
except ImportError:
    _triton_fused = None


@torch.library.custom_op("linzoo::linear_attention", mutates_args=())
def _linear_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: str,
    normalizer: str,
    eps: float,
    scale: float,
    clamp_min: float,
    rope_cos: Optional[torch.Tensor],
    rope_sin: Optional[torch.Tensor],
    temperature: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(o, S, z, aux)``: the output and the reduced fp32 state the backward reuses (O(B·heads·dk·dv))."""
    return _triton_fused.forward_with_state(
        q, k, v, feature_map, normalizer, eps, scale, clamp_min, rope_cos, rope_sin, temperature
    )


@_linear_attention_op.register_fake
def _(q, k, v, feature_map, normalizer, eps, scale, clamp_min, rope_cos, rope_sin, temperature):
    b, h, _, dk = q.shape
    dv = v.shape[-1]
    return (
        v.new_empty((*q.shape[:-1], dv)),
        q.new_empty((b, h, dk, dv), dtype=torch.float32),
        q.new_empty((b, h, dk), dtype=torch.float32),
        q.new_empty((b, h, dk + dv + 2), dtype=torch.float32),
    )


@torch.library.custom_op("linzoo::linear_attention_backward", mutates_args=())
def _linear_attention_backward_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    state_s: torch.Tensor,
    state_z: torch.Tensor,
    state_aux: torch.Tensor,
    feature_map: str,
    normalizer: str,
    eps: float,
    scale: float,
    clamp_min: float,
    rope_cos: Optional[torch.Tensor],
    rope_sin: Optional[torch.Tensor],
    temperature: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    args = (grad_out, q, k, v, feature_map, normalizer, eps, scale, clamp_min, rope_cos, rope_sin, temperature)
    return tuple(t.contiguous() for t in _triton_fused.backward(*args, state=(state_s, state_z, state_aux)))


@_linear_attention_backward_op.register_fake
def _(grad_out, q, k, v, state_s, state_z, state_aux, feature_map, normalizer, eps, scale, clamp_min, rope_cos,
      rope_sin, temperature):  # fmt: skip
    dtemp = temperature.new_empty(temperature.shape) if temperature is not None else q.new_empty(0)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), dtemp


def _setup_context(ctx, inputs, output):
    q, k, v, feature_map, normalizer, eps, scale, clamp_min, rope_cos, rope_sin, temperature = inputs
    _, state_s, state_z, state_aux = output
    ctx.save_for_backward(q, k, v, rope_cos, rope_sin, temperature, state_s, state_z, state_aux)
    ctx.options = (feature_map, normalizer, eps, scale, clamp_min)


def _backward(ctx, grad_out, _grad_s, _grad_z, _grad_aux):
    q, k, v, rope_cos, rope_sin, temperature, state_s, state_z, state_aux = ctx.saved_tensors
    feature_map, normalizer, eps, scale, clamp_min = ctx.options
    dq, dk, dv, dtemp = _linear_attention_backward_op(
        grad_out, q, k, v, state_s, state_z, state_aux, feature_map, normalizer, eps, scale, clamp_min,
        rope_cos, rope_sin, temperature,
    )  # fmt: skip
    return dq, dk, dv, None, None, None, None, None, None, None, (dtemp if temperature is not None else None)


_linear_attention_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerLinearAttention(torch.autograd.Function):
    """The same fused forward/backward as the custom op, for plain eager calls.

    The custom op is what ``torch.compile``, ``torch.export`` and fake tensors need, but each eager call of it
    pays the dispatcher's Python layer (schema defaults, autograd wrapper; ~70 µs per forward+backward on an
    idle CPU, several times that on a slow host), which at 224-px backbone shapes costs more than the kernels.
    """

    @staticmethod
    def forward(ctx, q, k, v, feature_map, normalizer, eps, scale, clamp_min, rope_cos, rope_sin, temperature):
        o, state_s, state_z, state_aux = _triton_fused.forward_with_state(
            q, k, v, feature_map, normalizer, eps, scale, clamp_min, rope_cos, rope_sin, temperature
        )
        ctx.save_for_backward(q, k, v, rope_cos, rope_sin, temperature, state_s, state_z, state_aux)
        ctx.options = (feature_map, normalizer, eps, scale, clamp_min)
        return o

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, rope_cos, rope_sin, temperature, state_s, state_z, state_aux = ctx.saved_tensors
        dq, dk, dv, dtemp = _triton_fused.backward(
            grad_out, q, k, v, *ctx.options, rope_cos, rope_sin, temperature, state=(state_s, state_z, state_aux)
        )
        return dq, dk, dv, None, None, None, None, None, None, None, (dtemp if temperature is not None else None)


def _eager_call(q: torch.Tensor) -> bool:
    """True for a plain eager call on real tensors (not compiling, exporting or running on fake tensors)."""
    return not (torch.compiler.is_compiling() or isinstance(q, torch._subclasses.FakeTensor))


def _check_inputs(q, k, v, feature_map, normalizer, rope, temperature) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, heads, N, D), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must match q in (B, heads, N): got {tuple(v.shape)} for q {tuple(q.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
    if rope is not None:
        if normalizer not in ("standard", "none", "clamp", "rala"):
            raise ValueError(f"rope is not supported with normalizer={normalizer!r}")
        if not (isinstance(rope, (tuple, list)) and len(rope) == 2):
            raise ValueError("rope must be a (cos, sin) pair of tensors of shape (N, dk/2)")
        want = (q.shape[2], q.shape[3] // 2)
        for name, t in zip(("cos", "sin"), rope):
            if q.shape[3] % 2 or tuple(t.shape) != want:
                raise ValueError(f"rope {name} must have shape (N, dk/2) = {want} with even dk, got {tuple(t.shape)}")
            if t.device != q.device:
                raise ValueError(f"rope {name} must be on {q.device}, got {t.device}")
    if temperature is not None:
        if normalizer not in ("standard", "none", "clamp"):
            raise ValueError(f"temperature is not supported with normalizer={normalizer!r}")
        if temperature.numel() != q.shape[1]:
            raise ValueError(f"temperature must have one value per head ({q.shape[1]}), got {tuple(temperature.shape)}")


def linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    feature_map: str = "identity",
    normalizer: str = "standard",
    eps: float = 1e-6,
    scale: float | None = None,
    clamp_min: float = 0.0,
    rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    temperature: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Non-causal linear attention over ``(B, heads, N, D)`` tensors; returns ``(B, heads, N, dv)``.

    Args:
        q, k: queries and keys ``(B, heads, N, dk)`` before the feature map.
        v: values ``(B, heads, N, dv)``.
        feature_map: ``"identity"``, ``"relu"`` or ``"elu+1"``, applied to q and k inside the op.
        normalizer: ``"standard"``, ``"none"``, ``"clamp"``, ``"injective"`` or ``"rala"`` (formulas in
            :mod:`linzoo.kernels.linear_attention.reference`).
        eps: added to the denominator (``standard``, ``rala``).
        scale: ``s`` in the formulas; ``None`` means 1, or dk^-½ for ``injective`` and ``rala``.
            ``scale=1/N`` turns the sums of ``standard`` into means (LinFusion, LiT).
        clamp_min: lower clamp of the denominator for ``clamp`` (L²ViT uses 100).
        rope: optional ``(cos, sin)`` of shape ``(N, dk/2)`` rotating φq and φk in the numerator only
            (see :func:`linzoo.kernels.rope_2d`).
        temperature: optional per-head multiplier ``(heads,)`` of the numerator, learnable.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``; ``auto`` honours ``LINZOO_KERNEL_BACKEND``.
    """
    _check_inputs(q, k, v, feature_map, normalizer, rope, temperature)
    # The fused kernels keep a (dk, <=128) state tile in registers: head dims up to 256 (padded to a power of 2);
    # they put batch x heads on CUDA grid axis 1, which holds at most 65535 programs.
    fused_ok = (
        _triton_fused is not None
        and max(q.shape[-1], v.shape[-1]) <= _MAX_TRITON_HEAD_DIM
        and q.shape[0] * q.shape[1] <= _MAX_GRID_Y
    )
    resolved = resolve_backend(backend, q.device, triton_supported=fused_ok)
    rope_cos, rope_sin = (rope[0], rope[1]) if rope is not None else (None, None)
    args = (
        q,
        k,
        v,
        feature_map,
        normalizer,
        float(eps),
        default_scale(normalizer, q.shape[-1], scale),
        float(clamp_min),
    )
    if resolved == "triton":
        if not _eager_call(q):
            return _linear_attention_op(*args, rope_cos, rope_sin, temperature)[0]
        leaves = (q, k, v) if temperature is None else (q, k, v, temperature)
        if torch.is_grad_enabled() and any(t.requires_grad for t in leaves):
            return _EagerLinearAttention.apply(*args, rope_cos, rope_sin, temperature)
        return _triton_fused.forward_with_state(*args, rope_cos, rope_sin, temperature)[0]
    # The reference is plain differentiable PyTorch: autograd, torch.compile (which fuses it), export and the
    # meta device all see through it.
    return linear_attention_reference(*args, rope_cos, rope_sin, temperature)
