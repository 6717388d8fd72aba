"""Fused Triton kernels for SLA's block-sparse softmax branch (forward and backward).

Forward (``_sla_fwd_kernel``, FlashAttention-2 over a LUT): a program owns ``TM`` rows of one query block of one
(batch, head) and streams the ``T`` key blocks its LUT row lists, ``TN`` keys at a time, in one flat loop over
``T · block_k / TN`` tiles (so the software pipeline prefetches across key blocks; keys past ``Lk`` are masked),
with an online softmax in base 2 (scores pre-multiplied by scale·log₂e) and fp32 accumulators. It writes O_s and
the base-2 log-sum-exp ``lse_i = m_i + log₂ l_i``. The first tile of every LUT block holds at least one real key,
so the running maximum is finite from the first tile on (a fully masked later tile adds exp2(−inf) = 0).

Backward (FlashAttention-2 style; the probabilities are recomputed as ``P = exp2(S·scale·log₂e − lse)``):

- ``_sla_bwd_dq_kernel``: per query tile, Δ_i = Σ_d dO_id·O_id (stored for the next kernel), then over the LUT
  dP = dO Vᵀ, dS = P ∘ (dP − Δ), dQ = scale · dS K;
- ``_sla_bwd_dkdv_kernel``: per key tile, the query blocks that selected its key block (a transposed index
  ``(B, H, Nk, Mq)`` built with torch from the LUT: the selecting query blocks first, then a count), dV = Pᵀ dO,
  dK = scale · dSᵀ Q. No atomics: every dK/dV row is written once (zeros for never-selected key blocks). The
  programs are launched by decreasing work (a 1-D grid through a permutation sorted on the counts).

Inputs keep their strides (the last dim must be contiguous, else it is copied). fp32 inputs use IEEE fp32 dot
products; fp16/bf16 use tensor cores with P and dS cast to the input dtype (as FlashAttention). Head dims that are
not powers of two are padded to the next one (≥ 16) with masked loads; D and Dv may differ.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._backend import cdiv, next_pow2
from .._launch import launch
from ..neighborhood_attention.triton_na import _dot, _precision

LOG2E = 1.4426950408889634

# Tile overrides for sweeps: {"fwd": {...}, "dq": {...}, "dkdv": {...}} with keys TM, TN, num_warps, num_stages.
CONFIG_OVERRIDE: dict = {}


def launch_config(kind: str, block_q: int, block_k: int, bd: int, bdv: int, fp32: bool) -> dict:
    """Tile sizes (TM query rows, TN key rows; each ≤ and dividing its block size) and launch options."""
    wide = max(bd, bdv)
    # fp32 heads over 128: IEEE (FMA) dot products hold whole operand rows per thread; 64-row tiles spilled
    # 6.9 KB (forward) and 10.6 KB (dQ) per thread on sm_90, these tiles none (tests/kernels/kernel_codegen.py)
    fp32_wide = fp32 and wide > 128
    if kind == "fwd":
        tm = 32 if fp32_wide else 64 if (fp32 or wide > 128) else 128
        tn = 16 if fp32_wide else 32 if (fp32 or wide > 128) else 64
        cfg = dict(TM=min(block_q, tm), TN=min(block_k, tn), num_stages=2 if wide > 128 else 3)
        cfg["num_warps"] = 8 if cfg["TM"] * wide >= 128 * 128 else 4
    elif kind == "dq":
        tn = 32 if (fp32 or wide > 64) else 64
        cfg = dict(TM=min(block_q, 32 if fp32_wide else 64), TN=min(block_k, tn), num_stages=2)
        cfg["num_warps"] = 8 if wide >= 128 else 4
    else:  # dkdv: TN key rows own fp32 dK and dV accumulators, TM query rows are streamed
        tm = 16 if wide > 128 else 32 if (fp32 or wide > 64) else 64  # d 256 with 32 rows spilled 8-32 B
        cfg = dict(TM=min(block_q, tm), TN=min(block_k, 64), num_stages=2)
        cfg["num_warps"] = 8 if wide >= 128 else 4
    if fp32:  # IEEE fp32 dot products hold their operands in registers: 4 warps spilled 200-400 B per thread
        cfg["num_warps"] = 8
    cfg.update(CONFIG_OVERRIDE.get(kind, {}))
    return cfg


@triton.jit
def _sla_fwd_kernel(
    Q, K, V, Out, LSE, LUT,
    s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh, s_on,
    n_heads, n_mt, LQ, LK, n_qb, n_sel, qk_scale,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, TM: tl.constexpr, TN: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0) % n_mt  # one grid axis (up to 2^31 - 1 programs: axis 1 allows only 65535)
    bh = tl.program_id(0) // n_mt
    b = (bh // n_heads).to(tl.int64)
    h = (bh % n_heads).to(tl.int64)
    m0 = pid_m * TM
    offs_m = m0 + tl.arange(0, TM)
    m_ok = offs_m < LQ
    offs_d = tl.arange(0, BD)
    offs_dv = tl.arange(0, BDV)
    d_ok = offs_d < D
    dv_ok = offs_dv < DV
    q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qn + offs_d[None, :],
                mask=m_ok[:, None] & d_ok[None, :], other=0.0)  # fmt: skip
    k_base = K + b * s_kb + h * s_kh
    v_base = V + b * s_vb + h * s_vh
    lut_row = LUT + (bh.to(tl.int64) * n_qb + m0 // BLOCK_Q) * n_sel
    m_i = tl.full([TM], float("-inf"), tl.float32)
    l_i = tl.zeros([TM], tl.float32)
    acc = tl.zeros([TM, BDV], tl.float32)
    SUBS: tl.constexpr = BLOCK_K // TN
    for it in range(n_sel * SUBS):  # one flat loop (pipelined across key blocks); tiles past Lk are masked
        offs_n = tl.load(lut_row + it // SUBS) * BLOCK_K + (it % SUBS) * TN + tl.arange(0, TN)
        n_ok = offs_n < LK
        k = tl.load(k_base + offs_n[:, None] * s_kn + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :],
                    other=0.0)  # fmt: skip
        v = tl.load(v_base + offs_n[:, None] * s_vn + offs_dv[None, :], mask=n_ok[:, None] & dv_ok[None, :],
                    other=0.0)  # fmt: skip
        s = _dot(q, tl.trans(k), PREC) * qk_scale
        s = tl.where(n_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(Out + b * s_ob + h * s_oh + offs_m[:, None] * s_on + offs_dv[None, :], acc.to(Out.dtype.element_ty),
             mask=m_ok[:, None] & dv_ok[None, :])  # fmt: skip
    tl.store(LSE + bh.to(tl.int64) * LQ + offs_m, m_i + tl.log2(l_i), mask=m_ok)


@triton.jit
def _sla_bwd_dq_kernel(
    Q, K, V, Out, DO, DQ, LSE, DELTA, LUT,
    s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_ob, s_oh, s_on, s_gb, s_gh, s_gn,
    s_dqb, s_dqh, s_dqn, n_heads, n_mt, LQ, LK, n_qb, n_sel, qk_scale, scale,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, TM: tl.constexpr, TN: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid_m = tl.program_id(0) % n_mt  # one grid axis (up to 2^31 - 1 programs: axis 1 allows only 65535)
    bh = tl.program_id(0) // n_mt
    b = (bh // n_heads).to(tl.int64)
    h = (bh % n_heads).to(tl.int64)
    m0 = pid_m * TM
    offs_m = m0 + tl.arange(0, TM)
    m_ok = offs_m < LQ
    offs_d = tl.arange(0, BD)
    offs_dv = tl.arange(0, BDV)
    d_ok = offs_d < D
    dv_ok = offs_dv < DV
    qmask = m_ok[:, None] & d_ok[None, :]
    omask = m_ok[:, None] & dv_ok[None, :]
    q = tl.load(Q + b * s_qb + h * s_qh + offs_m[:, None] * s_qn + offs_d[None, :], mask=qmask, other=0.0)
    do = tl.load(DO + b * s_gb + h * s_gh + offs_m[:, None] * s_gn + offs_dv[None, :], mask=omask, other=0.0)
    o = tl.load(Out + b * s_ob + h * s_oh + offs_m[:, None] * s_on + offs_dv[None, :], mask=omask, other=0.0)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    row = bh.to(tl.int64) * LQ + offs_m
    tl.store(DELTA + row, delta, mask=m_ok)
    lse = tl.load(LSE + row, mask=m_ok, other=0.0)
    k_base = K + b * s_kb + h * s_kh
    v_base = V + b * s_vb + h * s_vh
    lut_row = LUT + (bh.to(tl.int64) * n_qb + m0 // BLOCK_Q) * n_sel
    dq = tl.zeros([TM, BD], tl.float32)
    SUBS: tl.constexpr = BLOCK_K // TN
    for it in range(n_sel * SUBS):  # one flat loop (pipelined across key blocks); tiles past Lk are masked
        offs_n = tl.load(lut_row + it // SUBS) * BLOCK_K + (it % SUBS) * TN + tl.arange(0, TN)
        n_ok = offs_n < LK
        k = tl.load(k_base + offs_n[:, None] * s_kn + offs_d[None, :], mask=n_ok[:, None] & d_ok[None, :],
                    other=0.0)  # fmt: skip
        v = tl.load(v_base + offs_n[:, None] * s_vn + offs_dv[None, :], mask=n_ok[:, None] & dv_ok[None, :],
                    other=0.0)  # fmt: skip
        s = _dot(q, tl.trans(k), PREC) * qk_scale
        p = tl.where(n_ok[None, :], tl.exp2(s - lse[:, None]), 0.0)
        dp = _dot(do, tl.trans(v), PREC)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, PREC)
    tl.store(DQ + b * s_dqb + h * s_dqh + offs_m[:, None] * s_dqn + offs_d[None, :],
             (dq * scale).to(DQ.dtype.element_ty), mask=qmask)  # fmt: skip


@triton.jit
def _sla_bwd_dkdv_kernel(
    Q, K, V, DO, DK_, DV_, LSE, DELTA, QIDX, QCNT, ORDER,
    s_qb, s_qh, s_qn, s_kb, s_kh, s_kn, s_vb, s_vh, s_vn, s_gb, s_gh, s_gn,
    s_dkb, s_dkh, s_dkn, s_dvb, s_dvh, s_dvn, n_heads, LQ, LK, n_qb, n_kb, n_kt, qk_scale, scale,
    BLOCK_Q: tl.constexpr, BLOCK_K: tl.constexpr, TM: tl.constexpr, TN: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    tile = tl.load(ORDER + tl.program_id(0))  # key tiles by decreasing work: the long ones start first
    pid_n = tile % n_kt
    bh = tile // n_kt
    b = (bh // n_heads).to(tl.int64)
    h = (bh % n_heads).to(tl.int64)
    n0 = pid_n * TN
    offs_n = n0 + tl.arange(0, TN)
    n_ok = offs_n < LK
    offs_d = tl.arange(0, BD)
    offs_dv = tl.arange(0, BDV)
    d_ok = offs_d < D
    dv_ok = offs_dv < DV
    kmask = n_ok[:, None] & d_ok[None, :]
    vmask = n_ok[:, None] & dv_ok[None, :]
    k = tl.load(K + b * s_kb + h * s_kh + offs_n[:, None] * s_kn + offs_d[None, :], mask=kmask, other=0.0)
    v = tl.load(V + b * s_vb + h * s_vh + offs_n[:, None] * s_vn + offs_dv[None, :], mask=vmask, other=0.0)
    q_base = Q + b * s_qb + h * s_qh
    g_base = DO + b * s_gb + h * s_gh
    head_row = bh.to(tl.int64) * LQ
    col = bh.to(tl.int64) * n_kb + n0 // BLOCK_K
    count = tl.load(QCNT + col)
    q_list = QIDX + col * n_qb
    dk = tl.zeros([TN, BD], tl.float32)
    dv = tl.zeros([TN, BDV], tl.float32)
    SUBS: tl.constexpr = BLOCK_Q // TM
    for it in range(count * SUBS):  # one flat loop (pipelined across query blocks); tiles past Lq are masked
        offs_m = tl.load(q_list + it // SUBS) * BLOCK_Q + (it % SUBS) * TM + tl.arange(0, TM)
        m_ok = offs_m < LQ
        q = tl.load(q_base + offs_m[:, None] * s_qn + offs_d[None, :], mask=m_ok[:, None] & d_ok[None, :],
                    other=0.0)  # fmt: skip
        do = tl.load(g_base + offs_m[:, None] * s_gn + offs_dv[None, :], mask=m_ok[:, None] & dv_ok[None, :],
                     other=0.0)  # fmt: skip
        lse = tl.load(LSE + head_row + offs_m, mask=m_ok, other=0.0)
        delta = tl.load(DELTA + head_row + offs_m, mask=m_ok, other=0.0)
        st = _dot(k, tl.trans(q), PREC) * qk_scale
        pt = tl.where(m_ok[None, :], tl.exp2(st - lse[None, :]), 0.0)
        dv += _dot(pt.to(do.dtype), do, PREC)
        dpt = _dot(v, tl.trans(do), PREC)
        dst = pt * (dpt - delta[None, :])
        dk += _dot(dst.to(q.dtype), q, PREC)
    tl.store(DK_ + b * s_dkb + h * s_dkh + offs_n[:, None] * s_dkn + offs_d[None, :],
             (dk * scale).to(DK_.dtype.element_ty), mask=kmask)  # fmt: skip
    tl.store(DV_ + b * s_dvb + h * s_dvh + offs_n[:, None] * s_dvn + offs_dv[None, :], dv.to(DV_.dtype.element_ty),
             mask=vmask)  # fmt: skip


def _rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its channels are contiguous (any other strides are passed to the kernels), else a copy.

    Row offsets inside one (batch, head) are int32 in the kernels (the batch and head offsets are int64): a
    layout whose rows span 2³¹ elements or more (e.g. (B, L, H, D) viewed as (B, H, L, D) at huge L·H·D) is copied
    to (B, H, L, D), where a row is D elements apart."""
    if x.stride(-1) == 1 and x.stride(2) * x.shape[2] < 2**31:
        return x
    return x.contiguous()


def _dims(q: torch.Tensor, v: torch.Tensor) -> dict:
    d, dv = q.shape[-1], v.shape[-1]
    return dict(D=d, DV=dv, BD=max(16, next_pow2(d)), BDV=max(16, next_pow2(dv)), PREC=_precision(q.dtype))


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def forward(q, k, v, lut, block_q: int, block_k: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward kernel; returns ``O_s (B, H, Lq, Dv)`` in q's dtype and the base-2 ``lse (B, H, Lq)``."""
    q, k, v = _rows(q), _rows(k), _rows(v)
    lut = lut.to(torch.int32).contiguous()
    bsz, heads, lq, _ = q.shape
    lk = k.shape[2]
    dims = _dims(q, v)
    cfg = launch_config("fwd", block_q, block_k, dims["BD"], dims["BDV"], q.dtype == torch.float32)
    out = torch.empty((bsz, heads, lq, v.shape[-1]), device=q.device, dtype=q.dtype)
    lse = torch.empty((bsz, heads, lq), device=q.device, dtype=torch.float32)
    n_mt = cdiv(lq, cfg["TM"])
    launch(_sla_fwd_kernel, (n_mt * bsz * heads,),
        q, k, v, out, lse, lut, *_strides(q), *_strides(k), *_strides(v), *_strides(out),
        heads, n_mt, lq, lk, lut.shape[2], lut.shape[3], scale * LOG2E,
        BLOCK_Q=block_q, BLOCK_K=block_k, **cfg, **dims,
    )  # fmt: skip
    return out, lse


def transpose_lut(lut: torch.Tensor, n_key_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each key block, the query blocks whose LUT row lists it: ``qidx (B, H, Nk, Mq)`` int32 (the selecting
    query blocks first, ascending; the rest is padding) and ``qcnt (B, H, Nk)`` int32 counts."""
    n_qb = lut.shape[2]
    sel = torch.zeros((*lut.shape[:2], n_key_blocks, n_qb), dtype=torch.bool, device=lut.device)
    rows = torch.arange(n_qb, device=lut.device).view(1, 1, n_qb, 1).expand(lut.shape)
    sel[torch.arange(lut.shape[0], device=lut.device)[:, None, None, None],
        torch.arange(lut.shape[1], device=lut.device)[None, :, None, None], lut.long(), rows] = True  # fmt: skip
    key = torch.where(sel, torch.arange(n_qb, device=lut.device, dtype=torch.int32), n_qb)
    return key.sort(dim=-1).values.to(torch.int32).contiguous(), sel.sum(-1, dtype=torch.int32).contiguous()


def dkdv_order(qcnt: torch.Tensor, n_key_tiles: int, tile: int, block_k: int) -> torch.Tensor:
    """Launch order of the dK/dV programs: ``(b·H + h)·n_key_tiles + key tile`` by decreasing count of selecting
    query blocks (longest-first scheduling: a key block that every query block selected, e.g. a sink, is
    ``Mq / T`` times the average work and would otherwise finish last), int32."""
    work = qcnt.repeat_interleave(block_k // tile, dim=-1)[..., :n_key_tiles]  # (B, H, key tiles)
    return torch.argsort(work.flatten(), descending=True, stable=True).to(torch.int32)


def backward(grad_out, q, k, v, out, lse, lut, block_q: int, block_k: int, scale: float):
    """Launch the two backward kernels; returns ``(dq, dk, dv)`` in the inputs' dtype."""
    q, k, v, grad_out, out = _rows(q), _rows(k), _rows(v), _rows(grad_out), _rows(out)
    lut = lut.to(torch.int32).contiguous()
    bsz, heads, lq, _ = q.shape
    lk = k.shape[2]
    n_qb, n_kb = lut.shape[2], cdiv(lk, block_k)
    dims = _dims(q, v)
    fp32 = q.dtype == torch.float32
    dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    dk = torch.empty(k.shape, device=q.device, dtype=q.dtype)
    dv = torch.empty(v.shape, device=q.device, dtype=q.dtype)
    delta = torch.empty_like(lse)
    cfg = launch_config("dq", block_q, block_k, dims["BD"], dims["BDV"], fp32)
    n_mt = cdiv(lq, cfg["TM"])
    launch(_sla_bwd_dq_kernel, (n_mt * bsz * heads,),
        q, k, v, out, grad_out, dq, lse, delta, lut,
        *_strides(q), *_strides(k), *_strides(v), *_strides(out), *_strides(grad_out), *_strides(dq),
        heads, n_mt, lq, lk, n_qb, lut.shape[3], scale * LOG2E, scale,
        BLOCK_Q=block_q, BLOCK_K=block_k, **cfg, **dims,
    )  # fmt: skip
    qidx, qcnt = transpose_lut(lut, n_kb)
    cfg = launch_config("dkdv", block_q, block_k, dims["BD"], dims["BDV"], fp32)
    n_kt = cdiv(lk, cfg["TN"])
    order = dkdv_order(qcnt, n_kt, cfg["TN"], block_k)
    launch(_sla_bwd_dkdv_kernel, (order.numel(),),
        q, k, v, grad_out, dk, dv, lse, delta, qidx, qcnt, order,
        *_strides(q), *_strides(k), *_strides(v), *_strides(grad_out), *_strides(dk), *_strides(dv),
        heads, lq, lk, n_qb, n_kb, n_kt, scale * LOG2E, scale,
        BLOCK_Q=block_q, BLOCK_K=block_k, **cfg, **dims,
    )  # fmt: skip
    return dq, dk, dv
