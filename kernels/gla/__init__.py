"""Bidirectional gated linear attention (ViG's token mixer): public function and its chunked PyTorch form.

``bidirectional_gla(q, k, v, gk_fwd, gk_bwd, scale)`` computes ``o^f + o^b`` of
:mod:`linzoo.kernels.gla.reference` (a forward and a backward GLA scan with shared ``q, k, v`` and
direction-wise log-decays) on ``(B, heads, L, D)`` tensors in ``O(L)`` memory, without the token-by-token loop:

- the backward scan is the forward scan of the flipped sequence, so both directions run as one batched forward
  scan of ``[x; flip(x)]``;
- the sequence is cut into chunks of ``chunk_size`` tokens (default 64). With ``G_t`` the within-chunk cumulative
  log-decay, a chunk's output is ``s (q_t ⊙ e^{G_t})^T S_in`` (the state entering the chunk) plus the intra-chunk
  decayed attention ``s Σ_{u<=t} Σ_d q_td k_ud e^{G_td - G_ud} v_u``; the state passed on is
  ``e^{G_last} ⊙ S_in + Σ_u (k_u ⊙ e^{G_last - G_u}) v_u^T``;
- inside a chunk, sub-blocks of 16 queries use their first position as the decay reference for every earlier key
  (all exponents <= 0, so no overflow however strong the decay), and the 16 x 16 diagonal blocks use the exact
  pairwise decays.

The intra-chunk decays are differences of float32 cumulative log-decays, so their relative error is about
``|G| · 2^-24`` (``|G|`` the log-decay accumulated over a chunk): ~1e-5 for 64 tokens of -2 nats, far stronger than
ViG's trained gates need. All arithmetic is float32 (bf16/fp16 inputs are upcast; the result is cast back to
``v.dtype``); autograd differentiates it. This chunked form is the ``"torch"`` backend (every device).

The ``"triton"`` backend (``backend="auto"`` on CUDA, head dims dk <= 256) is the fused recurrent kernels of
:mod:`linzoo.kernels.gla.triton_gla`: forward and backward each run both scans in one launch (a long sequence with
few heads runs its forward as parallel segments: 3 launches), exact for any decay strength, fp32 states. They are
registered as the custom ops ``torch.ops.linzoo.bidirectional_gla`` / ``..._backward`` with fake implementations
and autograd, so ``torch.compile`` traces the op (and the ViG models) as one graph; plain eager calls skip the
dispatcher (as the other ops do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._backend import resolve_backend
from .reference import bidirectional_gla_reference, gla_recurrent_reference

__all__ = ["bidirectional_gla", "bidirectional_gla_reference", "gla_chunked", "gla_recurrent_reference"]

_SUB_CHUNK = 16

try:  # the fused kernels need Triton; without it only the chunked PyTorch form exists
    from . import triton_gla as _triton_gla
except ImportError:
    _triton_gla = None


@torch.library.custom_op("linzoo::bidirectional_gla", mutates_args=())
def _gla_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gk_fwd: torch.Tensor, gk_bwd: torch.Tensor, scale: float
) -> torch.Tensor:
    return _triton_gla.forward(q, k, v, gk_fwd, gk_bwd, scale)


@_gla_op.register_fake
def _(q, k, v, gk_fwd, gk_bwd, scale):
    return v.new_empty((*q.shape[:-1], v.shape[-1]))


@torch.library.custom_op("linzoo::bidirectional_gla_backward", mutates_args=())
def _gla_backward_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk_fwd: torch.Tensor,
    gk_bwd: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _triton_gla.backward(grad_out, q, k, v, gk_fwd, gk_bwd, scale)


@_gla_backward_op.register_fake
def _(grad_out, q, k, v, gk_fwd, gk_bwd, scale):
    return tuple(torch.empty(t.shape, dtype=t.dtype, device=t.device) for t in (q, k, v, gk_fwd, gk_bwd))


def _setup_context(ctx, inputs, output):
    *tensors, scale = inputs
    ctx.save_for_backward(*tensors)
    ctx.scale = scale


def _backward(ctx, grad_out):
    return (*_gla_backward_op(grad_out, *ctx.saved_tensors, ctx.scale), None)


_gla_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerGLA(torch.autograd.Function):
    """The custom op's kernels for plain eager calls, without the dispatcher's per-call host cost (as the other
    ops); torch.compile, export and fake tensors use the custom op."""

    @staticmethod
    def forward(ctx, q, k, v, gk_fwd, gk_bwd, scale):
        _setup_context(ctx, (q, k, v, gk_fwd, gk_bwd, scale), None)
        return _triton_gla.forward(q, k, v, gk_fwd, gk_bwd, scale)

    @staticmethod
    def backward(ctx, grad_out):
        return (*_triton_gla.backward(grad_out, *ctx.saved_tensors, ctx.scale), None)


def _check_inputs(q, k, v, gk_fwd, gk_bwd, chunk_size) -> None:
    for name, t in (("q", q), ("k", k), ("v", v), ("gk_fwd", gk_fwd), ("gk_bwd", gk_bwd)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, heads, L, D), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} must be on {q.device} like q, got {t.device}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must match q in (B, heads, L): got {tuple(v.shape)} for q {tuple(q.shape)}")
    for name, t in (("gk_fwd", gk_fwd), ("gk_bwd", gk_bwd)):
        if t.shape != q.shape:
            raise ValueError(f"{name} (log-decays) must have the shape of q {tuple(q.shape)}, got {tuple(t.shape)}")
    if not isinstance(chunk_size, int) or chunk_size < 1 or chunk_size % _SUB_CHUNK and chunk_size > _SUB_CHUNK:
        raise ValueError(f"chunk_size must be a positive int, a multiple of {_SUB_CHUNK} above it; got {chunk_size}")


def gla_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gk: torch.Tensor, scale: float,
                chunk_size: int = 64) -> torch.Tensor:  # fmt: skip
    """Forward (causal) GLA scan ``S_t = diag(e^{gk_t}) S_{t-1} + k_t v_t^T``, ``o_t = scale · q_t^T S_t`` in chunks.

    ``q, k, gk``: float32 ``(B, heads, L, dk)``; ``v``: float32 ``(B, heads, L, dv)``; returns ``(B, heads, L, dv)``.
    """
    b, h, length, dk = q.shape
    dv = v.shape[-1]
    if length == 0:
        return q.new_zeros(b, h, 0, dv) + 0 * (q.sum() + k.sum() + v.sum() + gk.sum())  # keeps the graph for autograd
    c = min(chunk_size, length)
    sub = min(_SUB_CHUNK, c)
    c = -(-c // sub) * sub  # a multiple of the sub-block
    pad = -length % c
    if pad:  # zero keys/values and zero log-decay after the end change nothing before it
        q, k, v, gk = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v, gk))
    n, m = (length + pad) // c, c // sub
    q, k, gk = (t.reshape(b, h, n, c, dk) for t in (q, k, gk))
    v = v.reshape(b, h, n, c, dv)
    g = gk.cumsum(-2)  # G_t, inclusive, within each chunk

    # intra-chunk scores A[t, u] = Σ_d q_td k_ud e^{G_td - G_ud}, u <= t
    gq = g.reshape(b, h, n, m, sub, dk)
    ref = gq[:, :, :, :, :1]  # decay reference of each query sub-block: its first position
    q_ref = q.reshape(b, h, n, m, sub, dk) * (gq - ref).exp()  # exponents <= 0
    pos = torch.arange(c, device=q.device)
    earlier = pos[None, :] < (torch.arange(m, device=q.device) * sub)[:, None]  # (m, c): key before the sub-block
    expo = ref - g[:, :, :, None]  # (b, h, n, m, c, dk): G_ref - G_u
    expo = torch.where(earlier[:, :, None], expo, torch.full_like(expo, float("-inf")))
    k_ref = k[:, :, :, None] * expo.exp()
    scores = torch.einsum("bhnmtd,bhnmud->bhnmtu", q_ref, k_ref)  # (b, h, n, m, sub, c), keys of earlier blocks
    # diagonal sub-blocks: exact pairwise decays
    kd = k.reshape(b, h, n, m, sub, dk)
    diff = gq[..., :, None, :] - gq[..., None, :, :]  # (b, h, n, m, sub_t, sub_u, dk)
    causal = torch.ones(sub, sub, dtype=torch.bool, device=q.device).tril()
    diff = torch.where(causal[:, :, None], diff, torch.full_like(diff, float("-inf")))
    diag = torch.einsum("bhnmtd,bhnmud,bhnmtud->bhnmtu", q.reshape(b, h, n, m, sub, dk), kd, diff.exp())
    scores = scores.reshape(b, h, n, m, sub, m, sub)
    idx = torch.arange(m, device=q.device)
    scores = scores.clone()
    scores[:, :, :, idx, :, idx] = scores[:, :, :, idx, :, idx] + diag.permute(3, 0, 1, 2, 4, 5)
    out = torch.einsum("bhntu,bhnue->bhnte", scores.reshape(b, h, n, c, c), v)

    # inter-chunk state passing
    g_last = g[:, :, :, -1:]  # (b, h, n, 1, dk)
    k_last = k * (g_last - g).exp()  # exponents <= 0
    q_in = q * g.exp()
    state = q.new_zeros(b, h, dk, dv)
    inter = []
    for i in range(n):
        inter.append(q_in[:, :, i] @ state)
        state = g_last[:, :, i, 0, :, None].exp() * state + k_last[:, :, i].transpose(-1, -2) @ v[:, :, i]
    out = out + torch.stack(inter, dim=2)
    return (scale * out).reshape(b, h, n * c, dv)[:, :, :length]


def bidirectional_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk_fwd: torch.Tensor,
    gk_bwd: torch.Tensor,
    scale: float | None = None,
    chunk_size: int = 64,
    backend: str = "auto",
) -> torch.Tensor:
    """Bidirectional GLA ``o^f + o^b`` (ViG's token mixer; definition in :mod:`linzoo.kernels.gla.reference`).

    Args:
        q, k: ``(B, heads, L, dk)``; v: ``(B, heads, L, dv)``.
        gk_fwd, gk_bwd: log-decays (``<= 0``, e.g. ``logsigmoid(z) / 16``) of the forward and backward scans,
            ``(B, heads, L, dk)``; position ``t`` of ``gk_bwd`` is the decay applied when the backward scan reaches
            token ``t``.
        scale: multiplies ``q``; defaults to ``dk^-1/2``.
        chunk_size: tokens per chunk of the chunked form (1..16, or a multiple of 16; the Triton kernel ignores it).
        backend: ``"auto"`` (Triton on CUDA, else the chunked form; honours ``LINZOO_KERNEL_BACKEND``),
            ``"triton"`` (the fused kernels; on the CPU only under ``TRITON_INTERPRET=1``) or ``"torch"``.

    Returns:
        ``(B, heads, L, dv)`` in ``v.dtype`` (computed in float32), contiguous.
    """
    _check_inputs(q, k, v, gk_fwd, gk_bwd, chunk_size)
    if scale is None:
        scale = q.shape[-1] ** -0.5
    fused_ok = _triton_gla is not None and q.shape[-1] <= _triton_gla.MAX_HEAD_DIM_K
    if resolve_backend(backend, q.device, triton_supported=fused_ok) == "triton":
        args = (q, k, v, gk_fwd, gk_bwd, float(scale))
        if torch.compiler.is_compiling() or isinstance(q, torch._subclasses.FakeTensor):
            return _gla_op(*args)
        if torch.is_grad_enabled() and any(t.requires_grad for t in args[:5]):
            return _EagerGLA.apply(*args)
        return _triton_gla.forward(*args)
    dtype = v.dtype
    with torch.autocast(q.device.type, enabled=False):
        q, k, v, gk_fwd, gk_bwd = (t.float() for t in (q, k, v, gk_fwd, gk_bwd))
        flip = lambda t: t.flip(2)
        out = gla_chunked(
            torch.cat([q, flip(q)]),
            torch.cat([k, flip(k)]),
            torch.cat([v, flip(v)]),
            torch.cat([gk_fwd, flip(gk_bwd)]),
            float(scale),
            chunk_size,
        )
        fwd, bwd = out.chunk(2)
        out = fwd + flip(bwd)
    return out.to(dtype)
