"""Sparse-linear attention (SLA, arXiv 2509.24006): public op, block map, module, and the fused op as a custom op.

Public API::

    o_sparse, o_linear = sparse_linear_attention(q, k, v, *, topk, block_q=64, block_k=64, feature_map="softmax",
                                                 linear_keys="all", eps=1e-5, scale=None, lut=None,
                                                 backend="auto")
    lut, block_mask = sla_block_map(q, k, topk=..., block_q=64, block_k=64)
    SparseLinearAttention(head_dim, topk, ...)(q, k, v) = o_sparse + proj_l(o_linear)

``q (B, H, Lq, D)``, ``k (B, H, Lk, D)``, ``v (B, H, Lk, Dv)`` (any lengths, fp32/fp16/bf16, any strides); both
outputs are ``(B, H, Lq, Dv)`` in q's dtype. Formulas, the block map and the two ``linear_keys`` modes (official
main branch ``"all"`` / paper and ``SLA-1`` branch ``"complement"``): :mod:`linzoo.kernels.sparse_linear_attention
.reference`. The block selection is not differentiable (as in the official code); gradients reach q, k, v through
both branches.

Backends (``backend="auto"`` honours ``LINZOO_KERNEL_BACKEND``, else Triton on CUDA):

- ``"triton"``: the sparse branch is a block-sparse FlashAttention over the LUT (forward writes O_s and the base-2
  log-sum-exp; backward: dQ over the LUT with Δ = rowsum(dO·O) fused in, then dK/dV per key block over the query
  blocks that selected it, from a transposed index built with torch), registered as
  ``torch.ops.linzoo.sla_sparse_forward`` / ``..._backward`` with fake implementations and autograd. The linear
  branch for ``linear_keys="all"`` with ``Lq == Lk`` is :func:`linzoo.kernels.linear_attention` (fused Triton,
  normalizer ``"standard"``; ``relu`` / ``elu+1`` applied in its kernels, the head-dim softmax by torch in the
  input dtype and passed with the identity map); for ``Lq != Lk`` and for
  ``"complement"`` it runs in PyTorch (fp32 matmuls, not fused; complement: per-key-block states
  ``(B, H, Nk, D, Dv)`` summed per query block over its non-selected blocks by one matmul with the complement map,
  memory ``O((Nk + Mq)·D·Dv)``, 2·Mq·Nk·D·Dv FLOPs per head, in the input dtype with fp32 accumulation for
  fp16/bf16 inputs, as SLA-1 keeps its block states in the input dtype). Not fused into the attention kernel on
  purpose: SLA-1 subtracts the T selected block states per query block, reading T·D·Dv per query block (6.5 GB
  of state reads at B2 H16 N32760 d128, 5 % of the blocks, in bf16); the GEMM with the complement map reads
  each block state once per output tile (137 GFLOP on tensor cores at that shape). Head dims up to 256 (D and Dv
  may differ; non-powers of two are padded and masked inside the kernels); other dtypes or larger heads use the
  reference.
- ``"torch"``: :func:`sparse_linear_attention_reference` (block-wise, fp32, differentiable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._backend import BACKENDS, resolve_backend
from .reference import (
    FEATURE_MAPS,
    LINEAR_KEYS,
    apply_feature_map,
    linear_branch,
    num_selected_blocks,
    sla_block_map,
    sparse_linear_attention_dense_reference,
    sparse_linear_attention_reference,
)

__all__ = [
    "FEATURE_MAPS",
    "LINEAR_KEYS",
    "SparseLinearAttention",
    "num_selected_blocks",
    "sla_block_map",
    "sparse_linear_attention",
    "sparse_linear_attention_dense_reference",
    "sparse_linear_attention_reference",
]

MAX_TRITON_HEAD_DIM = 256

try:  # the fused kernels need Triton; without it only the reference backend exists
    from . import triton_sla as _triton_sla
except ImportError:
    _triton_sla = None


@torch.library.custom_op("linzoo::sla_sparse_forward", mutates_args=())
def _sparse_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lut: torch.Tensor, block_q: int, block_k: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(O_s, lse)``: the block-sparse softmax branch and its base-2 log-sum-exp ``(B, H, Lq)`` fp32."""
    return _triton_sla.forward(q, k, v, lut, block_q, block_k, scale)


@_sparse_op.register_fake
def _(q, k, v, lut, block_q, block_k, scale):
    return q.new_empty((*q.shape[:-1], v.shape[-1])), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("linzoo::sla_sparse_backward", mutates_args=())
def _sparse_backward_op(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    lut: torch.Tensor,
    block_q: int,
    block_k: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    grads = _triton_sla.backward(grad_out, q, k, v, out, lse, lut, block_q, block_k, scale)
    return tuple(t.contiguous() for t in grads)


@_sparse_backward_op.register_fake
def _(grad_out, q, k, v, out, lse, lut, block_q, block_k, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, lut, block_q, block_k, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, lut)
    ctx.options = (block_q, block_k, scale)


def _backward(ctx, grad_out, _grad_lse):
    q, k, v, out, lse, lut = ctx.saved_tensors
    dq, dk, dv = _sparse_backward_op(grad_out, q, k, v, out, lse, lut, *ctx.options)
    return dq, dk, dv, None, None, None, None


_sparse_op.register_autograd(_backward, setup_context=_setup_context)


class _EagerSparse(torch.autograd.Function):
    """The same fused forward/backward as the custom op, for plain eager calls (no dispatcher layer per call);
    torch.compile, export and fake tensors use the custom op."""

    @staticmethod
    def forward(ctx, q, k, v, lut, block_q, block_k, scale):
        out, lse = _triton_sla.forward(q, k, v, lut, block_q, block_k, scale)
        ctx.save_for_backward(q, k, v, out, lse, lut)
        ctx.options = (block_q, block_k, scale)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse, lut = ctx.saved_tensors
        dq, dk, dv = _triton_sla.backward(grad_out, q, k, v, out, lse, lut, *ctx.options)
        return dq, dk, dv, None, None, None, None


def _eager_call(q: torch.Tensor) -> bool:
    """True for a plain eager call on real tensors (not compiling, exporting or running on fake tensors)."""
    return not (torch.compiler.is_compiling() or isinstance(q, torch._subclasses.FakeTensor))


def _capturing() -> bool:
    """True while the current CUDA stream is being captured into a CUDA graph (where a host sync is an error)."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _is_block_size(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 16 and x & (x - 1) == 0


def _check_inputs(q, k, v, topk, block_q, block_k, feature_map, linear_keys, eps, scale, lut) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, L, D), got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.shape[2] < 1 or t.shape[3] < 1:
            raise ValueError(f"{name} must have at least one token and one channel, got {tuple(t.shape)}")
    if not (q.shape[:2] == k.shape[:2] == v.shape[:2]):
        raise ValueError(f"q, k, v must share (B, H), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"q and k must share the head dim, got {q.shape[3]} and {k.shape[3]}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must have the same length, got {k.shape[2]} and {v.shape[2]}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if not (isinstance(topk, (int, float)) and not isinstance(topk, bool) and 0.0 < topk <= 1.0):
        raise ValueError(f"topk must be a fraction in (0, 1], got {topk!r}")
    for name, value in (("block_q", block_q), ("block_k", block_k)):
        if not _is_block_size(value):
            raise ValueError(f"{name} must be a power of two >= 16, got {value!r}")
    if feature_map not in FEATURE_MAPS:
        raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
    if linear_keys not in LINEAR_KEYS:
        raise ValueError(f"linear_keys must be one of {LINEAR_KEYS}, got {linear_keys!r}")
    if not (isinstance(eps, (int, float)) and eps >= 0):
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    if scale is not None and not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale must be None or a positive number, got {scale!r}")
    if lut is not None:
        n_qb, n_kb = -(-q.shape[2] // block_q), -(-k.shape[2] // block_k)
        if not isinstance(lut, torch.Tensor) or lut.dtype not in (torch.int32, torch.int64):
            raise ValueError("lut must be an int32 or int64 tensor (B, H, Mq, T) of key-block indices")
        if lut.dim() != 4 or tuple(lut.shape[:3]) != (*q.shape[:2], n_qb) or not 1 <= lut.shape[3] <= n_kb:
            raise ValueError(f"lut must have shape (B, H, Mq, T) = {(*q.shape[:2], n_qb)} + (T,), 1 <= T <= {n_kb}, "
                             f"got {tuple(lut.shape)}")  # fmt: skip
        if lut.device != q.device:
            raise ValueError(f"lut must be on {q.device}, got {lut.device}")
        # one host sync (skipped under torch.compile and CUDA-graph capture); a bad index would read out of bounds
        if _eager_call(q) and lut.numel() and not _capturing():
            srt = lut.sort(-1).values
            if srt[..., 0].min() < 0 or srt[..., -1].max() >= n_kb or (srt[..., 1:] == srt[..., :-1]).any():
                raise ValueError(f"lut entries must be distinct key-block indices in [0, {n_kb}) per row")


def sparse_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    topk: float,
    block_q: int = 64,
    block_k: int = 64,
    feature_map: str = "softmax",
    linear_keys: str = "all",
    eps: float = 1e-5,
    scale: float | None = None,
    lut: torch.Tensor | None = None,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """SLA's two branches ``(O_s, O_l)``, each ``(B, H, Lq, Dv)`` in q's dtype (O_l before ``proj_l``).

    Args:
        q, k, v: ``(B, H, Lq, D)``, ``(B, H, Lk, D)``, ``(B, H, Lk, Dv)``.
        topk: fraction of key blocks each query block keeps (1 − sparsity), ``0 < topk <= 1``; the block count is
            ``max(1, min(Nk, int(topk · Nk)))``.
        block_q, block_k: query / key block sizes of the map (powers of two >= 16; official 64 or 128 / 64).
        feature_map: φ of the linear branch, ``"softmax"`` (over the head dim), ``"elu+1"`` or ``"relu"``.
        linear_keys: ``"all"`` (official main branch) or ``"complement"`` (paper / SLA-1: non-selected blocks).
        eps: added to the linear branch's denominator. scale: softmax scale, default D^-½.
        lut: optional precomputed map ``(B, H, Mq, T)`` of distinct key-block indices (e.g. from
            :func:`sla_block_map`, or the official code's); it replaces the map ``topk`` would select.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.
    """
    _check_inputs(q, k, v, topk, block_q, block_k, feature_map, linear_keys, eps, scale, lut)
    if lut is None:
        lut, _ = sla_block_map(q, k, topk=topk, block_q=block_q, block_k=block_k)
    lut = lut.to(torch.int32).contiguous()
    supported = (
        _triton_sla is not None
        and max(q.shape[-1], v.shape[-1]) <= MAX_TRITON_HEAD_DIM
        and q.dtype in (torch.float32, torch.float16, torch.bfloat16)
    )
    resolved = resolve_backend(backend, q.device, triton_supported=supported)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if resolved == "torch":
        return sparse_linear_attention_reference(
            q, k, v, block_q=block_q, block_k=block_k, feature_map=feature_map, linear_keys=linear_keys,
            eps=float(eps), scale=scale, lut=lut,
        )  # fmt: skip
    args = (q, k, v, lut, block_q, block_k, scale)
    if not _eager_call(q):
        o_s = _sparse_op(*args)[0]
    elif torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        o_s = _EagerSparse.apply(*args)
    else:
        o_s = _triton_sla.forward(*args)[0]
    return o_s, _linear_output(q, k, v, lut, block_q, block_k, feature_map, linear_keys, float(eps))


def _linear_output(q, k, v, lut, block_q, block_k, feature_map, linear_keys, eps) -> torch.Tensor:
    """O_l on the Triton backend: the fused linear-attention op where it applies, else the torch branch."""
    if linear_keys == "all" and q.shape[2] == k.shape[2]:
        from ..linear_attention import linear_attention

        if feature_map == "softmax":  # one pass in the input dtype (softmax computes in fp32 inside)
            q, k, feature_map = q.softmax(-1), k.softmax(-1), "identity"
        # relu and elu+1 are applied inside the fused kernels
        return linear_attention(q, k, v, feature_map=feature_map, normalizer="standard", eps=eps, backend="triton")
    fq, fk = apply_feature_map(q.float(), feature_map), apply_feature_map(k.float(), feature_map)
    sel = None if linear_keys == "all" else lut
    out = linear_branch(fq, fk, v, sel, block_q=block_q, block_k=block_k, eps=eps, state_dtype=q.dtype)
    return out.to(q.dtype)


class SparseLinearAttention(nn.Module):
    """Drop-in equivalent of the official ``sparse_linear_attention.SparseLinearAttention`` module.

    ``forward(q, k, v) = O_s + proj_l(O_l)`` on ``(B, H, L, head_dim)``; ``proj_l = Linear(head_dim, head_dim)``
    in fp32, zero-initialised (the module starts as pure block-sparse attention), shared across heads; its state
    dict keys match the official ``proj_l.weight`` / ``proj_l.bias``. Unlike the official module, inputs are not
    cast to bf16 inside: the op computes in the input dtype (fp32 accumulation), and proj_l runs in fp32.
    The official feature-map name ``"elu"`` is accepted as ``"elu+1"``.
    """

    def __init__(
        self,
        head_dim: int,
        topk: float,
        feature_map: str = "softmax",
        block_q: int = 64,
        block_k: int = 64,
        linear_keys: str = "all",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        feature_map = "elu+1" if feature_map == "elu" else feature_map
        if feature_map not in FEATURE_MAPS:
            raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")
        if not (isinstance(topk, (int, float)) and not isinstance(topk, bool) and 0.0 < topk <= 1.0):
            raise ValueError(f"topk must be a fraction in (0, 1], got {topk!r}")
        for name, value in (("block_q", block_q), ("block_k", block_k)):
            if not _is_block_size(value):
                raise ValueError(f"{name} must be a power of two >= 16, got {value!r}")
        if linear_keys not in LINEAR_KEYS:
            raise ValueError(f"linear_keys must be one of {LINEAR_KEYS}, got {linear_keys!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.head_dim, self.topk, self.feature_map = head_dim, float(topk), feature_map
        self.block_q, self.block_k, self.linear_keys, self.backend = block_q, block_k, linear_keys, backend
        self.proj_l = nn.Linear(head_dim, head_dim, dtype=torch.float32)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.proj_l.weight)
        nn.init.zeros_(self.proj_l.bias)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if q.shape[-1] != self.head_dim or v.shape[-1] != self.head_dim:
            raise ValueError(f"q and v must have head_dim {self.head_dim}, got {q.shape[-1]} and {v.shape[-1]}")
        o_s, o_l = sparse_linear_attention(
            q, k, v, topk=self.topk, block_q=self.block_q, block_k=self.block_k, feature_map=self.feature_map,
            linear_keys=self.linear_keys, backend=self.backend,
        )  # fmt: skip
        with torch.autocast(q.device.type, enabled=False):
            proj = F.linear(o_l.float(), self.proj_l.weight.float(), self.proj_l.bias.float())
        return (o_s.float() + proj).to(q.dtype)

    def extra_repr(self) -> str:
        return (
            f"head_dim={self.head_dim}, topk={self.topk}, feature_map={self.feature_map!r}, block_q={self.block_q}, "
            f"block_k={self.block_k}, linear_keys={self.linear_keys!r}"
        )
