"""Plain-PyTorch definition of sparse-linear attention (SLA, arXiv 2509.24006; thu-ml/SLA).

Shapes: ``q (B, H, Lq, D)``, ``k (B, H, Lk, D)``, ``v (B, H, Lk, Dv)``; outputs ``(B, H, Lq, Dv)``. All arithmetic
runs in float32; results are cast to ``q.dtype``. Queries are grouped in ``Mq = ⌈Lq/bq⌉`` blocks of ``bq``
tokens, keys in ``Nk = ⌈Lk/bk⌉`` blocks of ``bk`` (the last block of each may be partial).

Block map (official ``utils.get_block_map``):

    q̄_m = mean_{i ∈ block m} q_i,    k̄_n = mean_{j ∈ block n} (k_j − mean_{all j'} k_j')    ("smooth-k")
    P̂ = q̄ k̄ᵀ  (B, H, Mq, Nk),   T = max(1, min(Nk, ⌊topk · Nk⌋)),   C_m = top-T columns of row m of P̂

Means run over the valid tokens of a partial block only. The official code uses ``min(Nk, int(topk · Nk))``
without the ``max(1, ·)``: there a ratio below 1/Nk selects no block and its kernel divides by zero.

Sparse (critical) branch — FlashAttention restricted to the selected blocks, normalised over them only:

    O_s[i] = Σ_{j ∈ C_m(i)} softmax_j(s · q_i·k_j) v_j,   s = scale (default D^-½)

Linear (marginal) branch with the feature map φ (``softmax`` over the head dim, ``elu+1`` or ``relu``, tied q/k):

    O_l[i] = φ(q_i) Σ_{j ∈ J(i)} φ(k_j) v_jᵀ / (φ(q_i) · Σ_{j ∈ J(i)} φ(k_j) + eps)

with ``J(i)`` = all keys (``linear_keys="all"``: the official main branch, eps 1e-5) or the keys of the blocks not
in ``C_m(i)`` (``"complement"``: the paper and the ``SLA-1`` branch; SLA-1 has no eps and sets O_l = 0 when every
block is selected; here O_l = 0 exactly in that case too, and eps is added otherwise — pass ``eps=0`` for SLA-1's
denominator). The module output is ``O = O_s + proj_l(O_l)`` (:class:`linzoo.kernels.SparseLinearAttention`).

Two references: :func:`sparse_linear_attention_dense_reference` builds the ``Lq × Lk`` token mask (small shapes,
tests); :func:`sparse_linear_attention_reference` gathers the selected key blocks per query block and never forms
``Lq × Lk`` (memory ``O(Lq · T · bk)`` scores plus ``O(Mq · T · bk · D)`` gathered keys/values); its complement
linear branch keeps per-key-block states ``(B, H, Nk, D, Dv)`` and sums the non-selected ones per query block
(``O((Nk + Mq) · D · Dv)`` memory).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "FEATURE_MAPS",
    "LINEAR_KEYS",
    "apply_feature_map",
    "block_mask_from_lut",
    "block_scores",
    "linear_branch",
    "num_selected_blocks",
    "sla_block_map",
    "sparse_linear_attention_dense_reference",
    "sparse_linear_attention_reference",
]

FEATURE_MAPS = ("softmax", "elu+1", "relu")
LINEAR_KEYS = ("all", "complement")


def apply_feature_map(x: torch.Tensor, feature_map: str) -> torch.Tensor:
    """φ(x): ``softmax`` over the last (head) dim (official default), ``elu+1`` or ``relu``."""
    if feature_map == "softmax":
        return F.softmax(x, dim=-1)
    if feature_map == "elu+1":
        return F.elu(x) + 1.0
    if feature_map == "relu":
        return F.relu(x)
    raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")


def num_selected_blocks(topk: float, n_key_blocks: int) -> int:
    """T = max(1, min(Nk, int(topk · Nk))): the official count (truncation) with at least one block."""
    return max(1, min(n_key_blocks, int(topk * n_key_blocks)))


def _block_mean(x: torch.Tensor, block: int) -> torch.Tensor:
    """Mean of ``x (B, H, L, D)`` over blocks of ``block`` tokens, valid tokens only → fp32 ``(B, H, ⌈L/block⌉, D)``.

    Reads ``x`` once in its own dtype (fp32 sums), without padded or fp32 copies."""
    length = x.shape[-2]
    full = length // block
    parts = []
    if full:
        parts.append(x[..., : full * block, :].unflatten(-2, (full, block)).sum(-2, dtype=torch.float32) / block)
    if full * block < length:
        tail = x[..., full * block :, :].sum(-2, keepdim=True, dtype=torch.float32)
        parts.append(tail / (length - full * block))
    return torch.cat(parts, -2) if len(parts) > 1 else parts[0]


def block_scores(q: torch.Tensor, k: torch.Tensor, block_q: int, block_k: int) -> torch.Tensor:
    """P̂ = mean-pooled q · mean-pooled smooth-k, fp32 ``(B, H, Mq, Nk)``.

    The block mean of k_j − k̄ is the block mean of k minus k̄, so smooth-k is never formed."""
    q, k = q.detach(), k.detach()
    pooled_k = _block_mean(k, block_k) - k.mean(dim=-2, keepdim=True, dtype=torch.float32)
    return _block_mean(q, block_q) @ pooled_k.transpose(-1, -2)


def block_mask_from_lut(lut: torch.Tensor, n_key_blocks: int) -> torch.Tensor:
    """Boolean ``(B, H, Mq, Nk)`` map with True at the LUT's key blocks."""
    mask = torch.zeros((*lut.shape[:-1], n_key_blocks), dtype=torch.bool, device=lut.device)
    return mask.scatter_(-1, lut.long(), True)


@torch.no_grad()
def sla_block_map(
    q: torch.Tensor, k: torch.Tensor, *, topk: float, block_q: int = 64, block_k: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query block, the T key blocks with the largest pooled score (non-differentiable).

    Returns ``lut (B, H, Mq, T)`` int32 key-block indices in ascending order and ``block_mask (B, H, Mq, Nk)`` bool.
    Scores are computed in fp32 (the official code computes them in the input dtype, so bf16 inputs can break
    near-ties differently; pass ``lut=`` to the op to use a given map).
    """
    if not (isinstance(topk, (int, float)) and not isinstance(topk, bool) and 0.0 < topk <= 1.0):
        raise ValueError(f"topk must be a fraction in (0, 1], got {topk!r}")
    scores = block_scores(q, k, block_q, block_k)
    n_sel = num_selected_blocks(topk, scores.shape[-1])
    lut = torch.topk(scores, n_sel, dim=-1, sorted=False).indices.sort(dim=-1).values.to(torch.int32)
    return lut.contiguous(), block_mask_from_lut(lut, scores.shape[-1])


def _feature_maps(q: torch.Tensor, k: torch.Tensor, feature_map: str) -> tuple[torch.Tensor, torch.Tensor]:
    return apply_feature_map(q.float(), feature_map), apply_feature_map(k.float(), feature_map)


def _token_mask(block_mask: torch.Tensor, lq: int, lk: int, block_q: int, block_k: int) -> torch.Tensor:
    """Token-level ``(B, H, Lq, Lk)`` mask from the block map."""
    return block_mask.repeat_interleave(block_q, -2)[..., :lq, :].repeat_interleave(block_k, -1)[..., :lk]


def sparse_linear_attention_dense_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    lut: torch.Tensor,
    *,
    block_q: int = 64,
    block_k: int = 64,
    feature_map: str = "softmax",
    linear_keys: str = "all",
    eps: float = 1e-5,
    scale: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(O_s, O_l)`` through explicit ``Lq × Lk`` score and mask matrices (memory O(Lq·Lk): small shapes only)."""
    lq, lk = q.shape[-2], k.shape[-2]
    n_kb = -(-lk // block_k)
    mask = _token_mask(block_mask_from_lut(lut, n_kb), lq, lk, block_q, block_k)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = (q.float() @ k.float().transpose(-1, -2)) * scale
    o_s = s.masked_fill(~mask, float("-inf")).softmax(-1) @ v.float()
    fq, fk = _feature_maps(q, k, feature_map)
    a = fq @ fk.transpose(-1, -2)
    if linear_keys == "complement":
        if lut.shape[-1] == n_kb:  # nothing left for the linear branch (SLA-1 writes zeros)
            return o_s.to(q.dtype), torch.zeros_like(o_s).to(q.dtype)
        a = a.masked_fill(mask, 0.0)
    o_l = (a @ v.float()) / (a.sum(-1, keepdim=True) + eps)
    return o_s.to(q.dtype), o_l.to(q.dtype)


def _sparse_branch_blockwise(q, k, v, lut, block_q, block_k, scale) -> torch.Tensor:
    """Softmax over the gathered key blocks of each query block; fp32 ``(B, H, Lq, Dv)``."""
    b, h, lq, d = q.shape
    lk, dv = k.shape[-2], v.shape[-1]
    n_qb, n_kb, n_sel = lut.shape[-2], -(-lk // block_k), lut.shape[-1]
    qb = F.pad(q.float(), (0, 0, 0, n_qb * block_q - lq)).unflatten(-2, (n_qb, block_q))  # (B,H,Mq,bq,D)
    kb = F.pad(k.float(), (0, 0, 0, n_kb * block_k - lk)).unflatten(-2, (n_kb, block_k))  # (B,H,Nk,bk,D)
    vb = F.pad(v.float(), (0, 0, 0, n_kb * block_k - lk)).unflatten(-2, (n_kb, block_k))
    idx = lut.long().flatten(-2)  # (B, H, Mq·T)
    k_sel = kb.gather(2, idx[..., None, None].expand(-1, -1, -1, block_k, d)).view(b, h, n_qb, n_sel * block_k, d)
    v_sel = vb.gather(2, idx[..., None, None].expand(-1, -1, -1, block_k, dv)).view(b, h, n_qb, n_sel * block_k, dv)
    key_pos = (lut.long()[..., None] * block_k + torch.arange(block_k, device=q.device)).flatten(-2)  # (B,H,Mq,T·bk)
    s = (qb @ k_sel.transpose(-1, -2)) * scale
    s = s.masked_fill((key_pos >= lk)[..., None, :], float("-inf"))
    o = s.softmax(-1) @ v_sel  # (B, H, Mq, bq, Dv)
    return o.flatten(2, 3)[:, :, :lq]


def linear_branch(
    fq: torch.Tensor,
    fk: torch.Tensor,
    v: torch.Tensor,
    lut: torch.Tensor | None,
    *,
    block_q: int,
    block_k: int,
    eps: float,
    state_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """O_l from φ(q), φ(k) (fp32, differentiable); ``lut=None`` means all keys, else the complement of the LUT.

    Complement: per-key-block states S_n = Σ_{j∈n} φ(k_j) v_jᵀ ``(B, H, Nk, D, Dv)`` and z_n = Σ φ(k_j); per query
    block, S_c = Σ_{n ∉ C_m} S_n as one matmul of the complement map ``(Mq, Nk)`` with the states (SLA-1 subtracts
    the selected states from the total instead; summing the complement avoids the cancellation). Memory
    O((Nk + Mq)·D·Dv), compute 2·Mq·Nk·D·Dv per head. ``state_dtype`` (e.g. bf16, as SLA-1 computes and stores
    its block states in the input dtype) runs the three state matmuls (block states, their complement sums, φ(q)·S)
    in that dtype on tensor cores (fp32 accumulation); the denominators stay fp32.
    """
    v = v.float()
    if lut is None:
        state = fk.transpose(-1, -2) @ v  # (B, H, D, Dv)
        z = fk.sum(-2)  # (B, H, D)
        return (fq @ state) / ((fq * z[..., None, :]).sum(-1, keepdim=True) + eps)
    b, h, lq, d = fq.shape
    lk, dv = fk.shape[-2], v.shape[-1]
    n_qb, n_kb = lut.shape[-2], -(-lk // block_k)
    if lut.shape[-1] == n_kb:  # every block is in the sparse branch: the complement is empty
        return fq.new_zeros((b, h, lq, dv))
    mm = state_dtype if state_dtype is not None else torch.float32  # dtype of the three state matmuls
    kb = F.pad(fk, (0, 0, 0, n_kb * block_k - lk)).unflatten(-2, (n_kb, block_k))
    vb = F.pad(v, (0, 0, 0, n_kb * block_k - lk)).unflatten(-2, (n_kb, block_k))
    s_blocks = (kb.to(mm).transpose(-1, -2) @ vb.to(mm)).flatten(-2)  # (B, H, Nk, D·Dv)
    z_blocks = kb.sum(-2)  # (B, H, Nk, D), fp32
    complement = ~block_mask_from_lut(lut, n_kb)  # (B, H, Mq, Nk)
    s_c = (complement.to(mm) @ s_blocks).unflatten(-1, (d, dv))  # (B, H, Mq, D, Dv)
    z_c = complement.float() @ z_blocks  # (B, H, Mq, D), fp32
    qb = F.pad(fq, (0, 0, 0, n_qb * block_q - lq)).unflatten(-2, (n_qb, block_q))  # (B, H, Mq, bq, D)
    pad_rows = (torch.arange(n_qb * block_q, device=fq.device) >= lq).view(n_qb, block_q, 1)
    den = ((qb @ z_c[..., None]) + eps).masked_fill(pad_rows, 1.0)  # padded rows: no 0/0 to poison the backward
    o = (qb.to(mm) @ s_c).float() / den
    return o.flatten(2, 3)[:, :, :lq]


def sparse_linear_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    topk: float | None = None,
    block_q: int = 64,
    block_k: int = 64,
    feature_map: str = "softmax",
    linear_keys: str = "all",
    eps: float = 1e-5,
    scale: float | None = None,
    lut: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(O_s, O_l)`` block-wise in fp32 (never forms ``Lq × Lk``); differentiable in q, k, v.

    Pass ``topk`` (the block map is computed with :func:`sla_block_map`) or a precomputed ``lut (B, H, Mq, T)``.
    """
    if lut is None:
        if topk is None:
            raise ValueError("pass topk or lut")
        lut, _ = sla_block_map(q, k, topk=topk, block_q=block_q, block_k=block_k)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    o_s = _sparse_branch_blockwise(q, k, v, lut, block_q, block_k, scale)
    fq, fk = _feature_maps(q, k, feature_map)
    o_l = linear_branch(fq, fk, v, None if linear_keys == "all" else lut, block_q=block_q, block_k=block_k, eps=eps)
    return o_s.to(q.dtype), o_l.to(q.dtype)
