"""Fused Triton kernels for 2-D neighborhood attention (forward and backward).

Tiling. Dilation δ splits each axis into δ interleaved groups and a query only attends inside its group,
so every program works in *group coordinates*: a program owns a TH×TW tile of one group (the grid is
``(δ_h·δ_w·tiles, B·heads)``). NATTEN's window start ``clamp(i − k//2, 0, L_g − k)`` is monotone in i,
so the union of the tile's windows is a rectangle of at most (TH + k_h − 1)×(TW + k_w − 1) keys (the
"halo"); it is flattened and streamed in blocks of BLOCK_N keys with an online softmax (FlashAttention-2),
masking each (query, key) pair by its own window. Bias ``rpb[h, Δy + k_h − 1, Δx + k_w − 1]`` is gathered
per pair from the (small, cache-resident) table. The extra keys (``extra_kv``) are streamed after the
halo in the same softmax. The forward saves the base-2 log-sum-exp per query.

Backward (FlashAttention-2 style, recomputing the probabilities from the saved log-sum-exp):
- ``_na_bwd_dq_kernel``: per query tile, Δ = rowsum(dO·Out) (stored for the next kernel), dQ over the halo
  and the extra keys, and the bias gradient (atomic adds of dS into ``NSLICE`` copies of the table to
  spread contention; summed on the host);
- ``_na_bwd_dkv_kernel``: per key tile, the queries whose windows can contain the tile form again a
  rectangle (inverse of the clamp), streamed in blocks: dK, dV;
- ``_na_bwd_dkv_extra_kernel``: dK, dV of the extra keys, streaming all queries (split over several
  programs per key block, fp32 partial sums reduced on the host).

All accumulation is fp32; fp32 inputs use IEEE fp32 dot products (no TF32), fp16/bf16 inputs use tensor
cores with the probabilities cast to the input dtype for the P·V and dS·K products (as FlashAttention).
Head dims that are not powers of two are padded to the next power of two inside the kernel (masked loads).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from .._backend import cdiv, next_pow2
from .._launch import launch

LOG2E = 1.4426950408889634
NSLICE = 16  # copies of the bias-gradient table (fewer atomic collisions)
EXTRA_BWD_PROGRAMS = 1024  # target program count of the extra-key dK/dV kernel (query stream split)
EXTRA_MIN_BLOCKS = 16  # at least this many query blocks per split of that kernel

# Tile configuration; ``CONFIG_OVERRIDE`` (a dict with the same keys) lets benchmarks sweep tiles.
CONFIG_OVERRIDE: dict = {}


def _config(head_dim: int, kind: str) -> dict:
    # Best of the H100 sweeps in docs/benchmarks/neighborhood_attention.md (bf16): forward 8x16 query tiles
    # streaming 32-key blocks (d 32/64), backward 8x8 tiles with 32-row blocks. At d = 128 the forward takes 4x16
    # tiles (a smaller halo per query, and a 64x128 fp32 accumulator that leaves registers for 64-key blocks):
    # CLEAR r8 0.784 -> 0.675 ms, r16 1.504 -> 1.325 ms (session 4, sweep "d128"; 8x16 tiles with 64-key
    # blocks spill).
    if kind == "fwd" and head_dim >= 128:
        cfg = dict(TH=4, TW=16, BLOCK_N=64, BLOCK_E=64, num_warps=4, num_stages=3)
    elif kind == "fwd":
        cfg = dict(TH=8, TW=16, BLOCK_N=32, BLOCK_E=32, num_warps=4, num_stages=3)
    else:
        cfg = dict(TH=8, TW=8, BLOCK_N=32, num_warps=4, num_stages=2)
    cfg.update(CONFIG_OVERRIDE.get(kind, {}))
    return cfg


@triton.jit
def _dot(a, b, PREC: tl.constexpr):
    """a @ b with fp32 accumulation. ``PREC="upcast"`` multiplies in fp32: Triton's CPU interpreter
    (TRITON_INTERPRET=1) mis-computes dot products of bf16 operands, so tests run them upcast."""
    if PREC == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=PREC)


@triton.jit
def _window_start(i, group_len, K: tl.constexpr, CIRCLE: tl.constexpr):
    """First key (group units) of the window of query i: centred, clamped inward unless circular."""
    if CIRCLE:
        return i - K // 2
    else:
        return tl.minimum(tl.maximum(i - K // 2, 0), group_len - K)


@triton.jit
def _pair_mask(qi, qj, kr, kc, sy, sx, KH: tl.constexpr, KW: tl.constexpr, CIRCLE: tl.constexpr):
    """Whether key (kr, kc) is in the window of query (qi, qj) (all broadcast to one 2-D shape)."""
    if CIRCLE:
        dy = kr - qi
        dx = kc - qj
        return 4 * (dy * dy + dx * dx) < (KH + 1) * (KH + 1)
    else:
        return (kr >= sy) & (kr < sy + KH) & (kc >= sx) & (kc < sx + KW)


@triton.jit
def _tile_of(pid, n_ty, n_tx, DW: tl.constexpr):
    tx = pid % n_tx
    t = pid // n_tx
    ty = t % n_ty
    t = t // n_ty
    return t // DW, t % DW, ty, tx


@triton.jit
def _halo(i0, i1, group_len, K: tl.constexpr, CIRCLE: tl.constexpr):
    """Key range [lo, hi) covering the windows of queries i0..i1 (group units)."""
    if CIRCLE:
        return tl.maximum(i0 - K // 2, 0), tl.minimum(i1 + K // 2 + 1, group_len)
    else:
        lo = tl.minimum(tl.maximum(i0 - K // 2, 0), group_len - K)
        hi = tl.minimum(tl.maximum(i1 - K // 2, 0), group_len - K) + K
        return lo, hi


@triton.jit
def _inverse_halo(j0, j1, group_len, K: tl.constexpr, CIRCLE: tl.constexpr):
    """Query range [lo, hi] whose windows can contain keys j0..j1 (group units)."""
    if CIRCLE:
        return tl.maximum(j0 - K // 2, 0), tl.minimum(j1 + K // 2, group_len - 1)
    else:
        lo = tl.where(j0 <= K - 1, 0, j0 - K // 2)
        hi = tl.where(j1 >= group_len - K, group_len - 1, j1 + K // 2)
        return lo, hi


@triton.jit
def _na_fwd_kernel(
    Q, K, V, Out, LSE, RPB, KE, VE,
    H, W, M_EXTRA, n_ty, n_tx, n_heads, qk_scale,
    KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    CIRCLE: tl.constexpr, HAS_RPB: tl.constexpr, HAS_EXTRA: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_E: tl.constexpr, EVEN_E: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid_t = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    head = tl.program_id(1) % n_heads
    gy, gx, ty, tx = _tile_of(pid_t, n_ty, n_tx, DW)
    lgy = (H - gy + DH - 1) // DH
    lgx = (W - gx + DW - 1) // DW
    qi0 = ty * TH
    qj0 = tx * TW
    if (qi0 >= lgy) | (qj0 >= lgx):
        return
    n_tok = H * W
    BM: tl.constexpr = TH * TW
    offs_m = tl.arange(0, BM)
    qi = qi0 + offs_m // TW
    qj = qj0 + offs_m % TW
    q_ok = (qi < lgy) & (qj < lgx)
    q_tok = (qi * DH + gy) * W + qj * DW + gx
    offs_d = tl.arange(0, BD)
    offs_dv = tl.arange(0, BDV)
    q = tl.load(
        Q + bh * n_tok * D + q_tok[:, None] * D + offs_d[None, :], mask=q_ok[:, None] & (offs_d < D)[None, :], other=0.0
    )
    sy = _window_start(qi, lgy, KH, CIRCLE)
    sx = _window_start(qj, lgx, KW, CIRCLE)
    ry0, ry1 = _halo(qi0, tl.minimum(qi0 + TH, lgy) - 1, lgy, KH, CIRCLE)
    rx0, rx1 = _halo(qj0, tl.minimum(qj0 + TW, lgx) - 1, lgx, KW, CIRCLE)
    ncols = rx1 - rx0
    nkeys = (ry1 - ry0) * ncols

    m_i = tl.full([BM], float("-inf"), tl.float32)
    l_i = tl.zeros([BM], tl.float32)
    acc = tl.zeros([BM, BDV], tl.float32)
    for n0 in range(0, nkeys, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        k_ok = offs_n < nkeys
        kr = ry0 + offs_n // ncols
        kc = rx0 + offs_n % ncols
        k_tok = (kr * DH + gy) * W + kc * DW + gx
        k = tl.load(
            K + bh * n_tok * D + k_tok[:, None] * D + offs_d[None, :],
            mask=k_ok[:, None] & (offs_d < D)[None, :],
            other=0.0,
        )
        v = tl.load(
            V + bh * n_tok * DV + k_tok[:, None] * DV + offs_dv[None, :],
            mask=k_ok[:, None] & (offs_dv < DV)[None, :],
            other=0.0,
        )
        s = _dot(q, tl.trans(k), PREC) * qk_scale
        allowed = _pair_mask(
            qi[:, None], qj[:, None], kr[None, :], kc[None, :], sy[:, None], sx[:, None], KH, KW, CIRCLE
        )
        # Rows of queries outside the map (q_ok false) are computed on zero queries and never stored; only the
        # bias gather must skip them (their offsets fall outside the table).
        allowed = allowed & k_ok[None, :]
        if HAS_RPB:
            allowed = allowed & q_ok[:, None]
            rel = (kr[None, :] - qi[:, None] + KH - 1) * (2 * KW - 1) + kc[None, :] - qj[:, None] + KW - 1
            s += tl.load(RPB + head * (2 * KH - 1) * (2 * KW - 1) + rel, mask=allowed, other=0.0) * 1.4426950408889634
        s = tl.where(allowed, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_safe)
        p = tl.exp2(s - m_safe[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC)
        m_i = m_new
    if HAS_EXTRA:
        # Every query sees every extra key: no pair mask, and with EVEN_E (M_EXTRA % BLOCK_E == 0) no key mask;
        # blocks of their own size BLOCK_E (larger than the halo's at d = 128: fewer, fuller MMAs).
        for n0 in range(0, M_EXTRA, BLOCK_E):
            offs_e = n0 + tl.arange(0, BLOCK_E)
            e_ok = offs_e < M_EXTRA
            k = tl.load(
                KE + bh * M_EXTRA * D + offs_e[:, None] * D + offs_d[None, :],
                mask=e_ok[:, None] & (offs_d < D)[None, :],
                other=0.0,
            )
            v = tl.load(
                VE + bh * M_EXTRA * DV + offs_e[:, None] * DV + offs_dv[None, :],
                mask=e_ok[:, None] & (offs_dv < DV)[None, :],
                other=0.0,
            )
            s = _dot(q, tl.trans(k), PREC) * qk_scale
            if not EVEN_E:
                s = tl.where(e_ok[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_safe)
            p = tl.exp2(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC)
            m_i = m_new
    l_safe = tl.where(l_i == 0.0, 1.0, l_i)
    out = acc / l_safe[:, None]
    tl.store(
        Out + bh * n_tok * DV + q_tok[:, None] * DV + offs_dv[None, :],
        out.to(Out.dtype.element_ty),
        mask=q_ok[:, None] & (offs_dv < DV)[None, :],
    )
    tl.store(LSE + bh * n_tok + q_tok, m_i + tl.log2(l_safe), mask=q_ok)


@triton.jit
def _na_bwd_dq_kernel(
    Q, K, V, Out, DO, LSE, DELTA, DQ, RPB, DRPB, KE, VE,
    H, W, M_EXTRA, n_ty, n_tx, n_heads, qk_scale, scale,
    KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    CIRCLE: tl.constexpr, HAS_RPB: tl.constexpr, HAS_EXTRA: tl.constexpr, NSLICE_C: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr, BLOCK_N: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid_t = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    head = tl.program_id(1) % n_heads
    gy, gx, ty, tx = _tile_of(pid_t, n_ty, n_tx, DW)
    lgy = (H - gy + DH - 1) // DH
    lgx = (W - gx + DW - 1) // DW
    qi0 = ty * TH
    qj0 = tx * TW
    if (qi0 >= lgy) | (qj0 >= lgx):
        return
    n_tok = H * W
    BM: tl.constexpr = TH * TW
    offs_m = tl.arange(0, BM)
    qi = qi0 + offs_m // TW
    qj = qj0 + offs_m % TW
    q_ok = (qi < lgy) & (qj < lgx)
    q_tok = (qi * DH + gy) * W + qj * DW + gx
    offs_d = tl.arange(0, BD)
    offs_dv = tl.arange(0, BDV)
    dmask = q_ok[:, None] & (offs_d < D)[None, :]
    dvmask = q_ok[:, None] & (offs_dv < DV)[None, :]
    q = tl.load(Q + bh * n_tok * D + q_tok[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
    do = tl.load(DO + bh * n_tok * DV + q_tok[:, None] * DV + offs_dv[None, :], mask=dvmask, other=0.0)
    o = tl.load(Out + bh * n_tok * DV + q_tok[:, None] * DV + offs_dv[None, :], mask=dvmask, other=0.0)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)
    tl.store(DELTA + bh * n_tok + q_tok, delta, mask=q_ok)
    lse = tl.load(LSE + bh * n_tok + q_tok, mask=q_ok, other=0.0)
    sy = _window_start(qi, lgy, KH, CIRCLE)
    sx = _window_start(qj, lgx, KW, CIRCLE)
    ry0, ry1 = _halo(qi0, tl.minimum(qi0 + TH, lgy) - 1, lgy, KH, CIRCLE)
    rx0, rx1 = _halo(qj0, tl.minimum(qj0 + TW, lgx) - 1, lgx, KW, CIRCLE)
    ncols = rx1 - rx0
    nkeys = (ry1 - ry0) * ncols
    drpb_base = DRPB + ((pid_t + tl.program_id(1)) % NSLICE_C * n_heads + head) * (2 * KH - 1) * (2 * KW - 1)

    dq = tl.zeros([BM, BD], tl.float32)
    for n0 in range(0, nkeys, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        k_ok = offs_n < nkeys
        kr = ry0 + offs_n // ncols
        kc = rx0 + offs_n % ncols
        k_tok = (kr * DH + gy) * W + kc * DW + gx
        k = tl.load(
            K + bh * n_tok * D + k_tok[:, None] * D + offs_d[None, :],
            mask=k_ok[:, None] & (offs_d < D)[None, :],
            other=0.0,
        )
        v = tl.load(
            V + bh * n_tok * DV + k_tok[:, None] * DV + offs_dv[None, :],
            mask=k_ok[:, None] & (offs_dv < DV)[None, :],
            other=0.0,
        )
        s = _dot(q, tl.trans(k), PREC) * qk_scale
        allowed = _pair_mask(
            qi[:, None], qj[:, None], kr[None, :], kc[None, :], sy[:, None], sx[:, None], KH, KW, CIRCLE
        )
        allowed = allowed & k_ok[None, :] & q_ok[:, None]
        if HAS_RPB:
            rel = (kr[None, :] - qi[:, None] + KH - 1) * (2 * KW - 1) + kc[None, :] - qj[:, None] + KW - 1
            s += tl.load(RPB + head * (2 * KH - 1) * (2 * KW - 1) + rel, mask=allowed, other=0.0) * 1.4426950408889634
        p = tl.where(allowed, tl.exp2(s - lse[:, None]), 0.0)
        dp = _dot(do, tl.trans(v), PREC)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, PREC)
        if HAS_RPB:
            tl.atomic_add(drpb_base + rel, ds, mask=allowed)
    if HAS_EXTRA:
        for n0 in range(0, M_EXTRA, BLOCK_N):
            offs_n = n0 + tl.arange(0, BLOCK_N)
            e_ok = offs_n < M_EXTRA
            k = tl.load(
                KE + bh * M_EXTRA * D + offs_n[:, None] * D + offs_d[None, :],
                mask=e_ok[:, None] & (offs_d < D)[None, :],
                other=0.0,
            )
            v = tl.load(
                VE + bh * M_EXTRA * DV + offs_n[:, None] * DV + offs_dv[None, :],
                mask=e_ok[:, None] & (offs_dv < DV)[None, :],
                other=0.0,
            )
            s = _dot(q, tl.trans(k), PREC) * qk_scale
            p = tl.where(e_ok[None, :] & q_ok[:, None], tl.exp2(s - lse[:, None]), 0.0)
            dp = _dot(do, tl.trans(v), PREC)
            ds = p * (dp - delta[:, None])
            dq += _dot(ds.to(k.dtype), k, PREC)
    tl.store(
        DQ + bh * n_tok * D + q_tok[:, None] * D + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty), mask=dmask
    )


@triton.jit
def _na_bwd_dkv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV_, RPB,
    H, W, n_ty, n_tx, n_heads, qk_scale, scale,
    KH: tl.constexpr, KW: tl.constexpr, DH: tl.constexpr, DW: tl.constexpr,
    CIRCLE: tl.constexpr, HAS_RPB: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr, BLOCK_N: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid_t = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    head = tl.program_id(1) % n_heads
    gy, gx, ty, tx = _tile_of(pid_t, n_ty, n_tx, DW)
    lgy = (H - gy + DH - 1) // DH
    lgx = (W - gx + DW - 1) // DW
    kr0 = ty * TH
    kc0 = tx * TW
    if (kr0 >= lgy) | (kc0 >= lgx):
        return
    n_tok = H * W
    BM: tl.constexpr = TH * TW
    offs_m = tl.arange(0, BM)
    kr = kr0 + offs_m // TW
    kc = kc0 + offs_m % TW
    k_ok = (kr < lgy) & (kc < lgx)
    k_tok = (kr * DH + gy) * W + kc * DW + gx
    offs_d = tl.arange(0, BD)
    offs_dv = tl.arange(0, BDV)
    dmask = k_ok[:, None] & (offs_d < D)[None, :]
    dvmask = k_ok[:, None] & (offs_dv < DV)[None, :]
    k = tl.load(K + bh * n_tok * D + k_tok[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
    v = tl.load(V + bh * n_tok * DV + k_tok[:, None] * DV + offs_dv[None, :], mask=dvmask, other=0.0)
    qy0, qy1 = _inverse_halo(kr0, tl.minimum(kr0 + TH, lgy) - 1, lgy, KH, CIRCLE)
    qx0, qx1 = _inverse_halo(kc0, tl.minimum(kc0 + TW, lgx) - 1, lgx, KW, CIRCLE)
    ncols = qx1 - qx0 + 1
    nq = (qy1 - qy0 + 1) * ncols

    dk = tl.zeros([BM, BD], tl.float32)
    dv = tl.zeros([BM, BDV], tl.float32)
    for n0 in range(0, nq, BLOCK_N):
        offs_n = n0 + tl.arange(0, BLOCK_N)
        qv_ok = offs_n < nq
        qi = qy0 + offs_n // ncols
        qj = qx0 + offs_n % ncols
        q_tok = (qi * DH + gy) * W + qj * DW + gx
        q = tl.load(
            Q + bh * n_tok * D + q_tok[:, None] * D + offs_d[None, :],
            mask=qv_ok[:, None] & (offs_d < D)[None, :],
            other=0.0,
        )
        do = tl.load(
            DO + bh * n_tok * DV + q_tok[:, None] * DV + offs_dv[None, :],
            mask=qv_ok[:, None] & (offs_dv < DV)[None, :],
            other=0.0,
        )
        lse = tl.load(LSE + bh * n_tok + q_tok, mask=qv_ok, other=0.0)
        delta = tl.load(DELTA + bh * n_tok + q_tok, mask=qv_ok, other=0.0)
        sy = _window_start(qi, lgy, KH, CIRCLE)
        sx = _window_start(qj, lgx, KW, CIRCLE)
        st = _dot(k, tl.trans(q), PREC) * qk_scale
        allowed = _pair_mask(
            qi[None, :], qj[None, :], kr[:, None], kc[:, None], sy[None, :], sx[None, :], KH, KW, CIRCLE
        )
        allowed = allowed & k_ok[:, None] & qv_ok[None, :]
        if HAS_RPB:
            rel = (kr[:, None] - qi[None, :] + KH - 1) * (2 * KW - 1) + kc[:, None] - qj[None, :] + KW - 1
            st += tl.load(RPB + head * (2 * KH - 1) * (2 * KW - 1) + rel, mask=allowed, other=0.0) * 1.4426950408889634
        pt = tl.where(allowed, tl.exp2(st - lse[None, :]), 0.0)
        dv += _dot(pt.to(do.dtype), do, PREC)
        dpt = _dot(v, tl.trans(do), PREC)
        dst = pt * (dpt - delta[None, :])
        dk += _dot(dst.to(q.dtype), q, PREC)
    tl.store(
        DK + bh * n_tok * D + k_tok[:, None] * D + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty), mask=dmask
    )
    tl.store(DV_ + bh * n_tok * DV + k_tok[:, None] * DV + offs_dv[None, :], dv.to(DV_.dtype.element_ty), mask=dvmask)


@triton.jit
def _na_bwd_dkv_extra_kernel(
    Q, KE, VE, DO, LSE, DELTA, DKE, DVE,
    N_TOK, M_EXTRA, Q_PER_SPLIT, n_bh, qk_scale, scale,
    BM: tl.constexpr, BLOCK_N: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    offs_m = pid * BM + tl.arange(0, BM)
    e_ok = offs_m < M_EXTRA
    offs_d = tl.arange(0, BD)
    offs_dv = tl.arange(0, BDV)
    dmask = e_ok[:, None] & (offs_d < D)[None, :]
    dvmask = e_ok[:, None] & (offs_dv < DV)[None, :]
    k = tl.load(KE + bh * M_EXTRA * D + offs_m[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
    v = tl.load(VE + bh * M_EXTRA * DV + offs_m[:, None] * DV + offs_dv[None, :], mask=dvmask, other=0.0)
    dk = tl.zeros([BM, BD], tl.float32)
    dv = tl.zeros([BM, BDV], tl.float32)
    q_start = tl.program_id(2) * Q_PER_SPLIT
    for n0 in range(q_start, tl.minimum(q_start + Q_PER_SPLIT, N_TOK), BLOCK_N):
        q_tok = n0 + tl.arange(0, BLOCK_N)
        qv_ok = q_tok < N_TOK
        q = tl.load(
            Q + bh * N_TOK * D + q_tok[:, None] * D + offs_d[None, :],
            mask=qv_ok[:, None] & (offs_d < D)[None, :],
            other=0.0,
        )
        do = tl.load(
            DO + bh * N_TOK * DV + q_tok[:, None] * DV + offs_dv[None, :],
            mask=qv_ok[:, None] & (offs_dv < DV)[None, :],
            other=0.0,
        )
        lse = tl.load(LSE + bh * N_TOK + q_tok, mask=qv_ok, other=0.0)
        delta = tl.load(DELTA + bh * N_TOK + q_tok, mask=qv_ok, other=0.0)
        st = _dot(k, tl.trans(q), PREC) * qk_scale
        pt = tl.where(e_ok[:, None] & qv_ok[None, :], tl.exp2(st - lse[None, :]), 0.0)
        dv += _dot(pt.to(do.dtype), do, PREC)
        dpt = _dot(v, tl.trans(do), PREC)
        dst = pt * (dpt - delta[None, :])
        dk += _dot(dst.to(q.dtype), q, PREC)
    part = (tl.program_id(2) * n_bh + bh) * M_EXTRA  # fp32 partial sums, one slab per query split
    tl.store(DKE + (part + offs_m[:, None]) * D + offs_d[None, :], dk * scale, mask=dmask)
    tl.store(DVE + (part + offs_m[:, None]) * DV + offs_dv[None, :], dv, mask=dvmask)


def _precision(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return "ieee"
    return "upcast" if os.environ.get("TRITON_INTERPRET", "0") == "1" else "tf32"


def _common(q, v, dh, dw, cfg):
    bsz, heads, height, width, dim = q.shape
    n_ty = cdiv(cdiv(height, dh), cfg["TH"])
    n_tx = cdiv(cdiv(width, dw), cfg["TW"])
    dims = dict(
        D=dim,
        DV=v.shape[-1],
        BD=max(16, next_pow2(dim)),
        BDV=max(16, next_pow2(v.shape[-1])),
        PREC=_precision(q.dtype),
    )
    return (dh * dw * n_ty * n_tx, bsz * heads), n_ty, n_tx, dims


def forward(q, k, v, kh, kw, dh, dw, circle, scale, rpb, k_extra, v_extra):
    """Launch the forward kernel; returns ``(out, lse)`` (lse: base-2 log-sum-exp of the scaled logits)."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    bsz, heads, height, width, _ = q.shape
    out = torch.empty((*q.shape[:-1], v.shape[-1]), device=q.device, dtype=q.dtype)
    lse = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
    cfg = _config(max(q.shape[-1], v.shape[-1]), "fwd")
    grid, n_ty, n_tx, dims = _common(q, v, dh, dw, cfg)
    rpb_t = rpb.detach().float().contiguous() if rpb is not None else q
    ke = k_extra.contiguous() if k_extra is not None else q
    ve = v_extra.contiguous() if v_extra is not None else q
    m_extra = k_extra.shape[2] if k_extra is not None else 0
    launch(_na_fwd_kernel, grid,
        q, k, v, out, lse, rpb_t, ke, ve,
        height, width, m_extra, n_ty, n_tx, heads, scale * LOG2E,
        KH=kh, KW=kw, DH=dh, DW=dw, CIRCLE=circle, HAS_RPB=rpb is not None, HAS_EXTRA=k_extra is not None,
        TH=cfg["TH"], TW=cfg["TW"], BLOCK_N=cfg["BLOCK_N"], BLOCK_E=cfg["BLOCK_E"],
        EVEN_E=m_extra % cfg["BLOCK_E"] == 0, num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **dims,
    )  # fmt: skip
    return out, lse


def backward(grad_out, q, k, v, out, lse, kh, kw, dh, dw, circle, scale, rpb, k_extra, v_extra):
    """Launch the backward kernels; returns ``(dq, dk, dv, drpb, dk_extra, dv_extra)`` (empty when absent)."""
    q, k, v, out, grad_out = (t.contiguous() for t in (q, k, v, out, grad_out))
    bsz, heads, height, width, _ = q.shape
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    delta = torch.empty(q.shape[:-1], device=q.device, dtype=torch.float32)
    cfg = _config(max(q.shape[-1], v.shape[-1]), "bwd")
    grid, n_ty, n_tx, dims = _common(q, v, dh, dw, cfg)
    has_rpb, has_extra = rpb is not None, k_extra is not None
    rpb_t = rpb.detach().float().contiguous() if has_rpb else q
    table = (2 * kh - 1) * (2 * kw - 1)
    drpb_part = torch.zeros((NSLICE, heads, table), device=q.device, dtype=torch.float32) if has_rpb else delta
    ke = k_extra.contiguous() if has_extra else q
    ve = v_extra.contiguous() if has_extra else q
    m_extra = k_extra.shape[2] if has_extra else 0
    opts = dict(KH=kh, KW=kw, DH=dh, DW=dw, CIRCLE=circle, HAS_RPB=has_rpb, TH=cfg["TH"], TW=cfg["TW"])
    launch_opts = dict(BLOCK_N=cfg["BLOCK_N"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **dims)
    launch(_na_bwd_dq_kernel, grid,
        q, k, v, out, grad_out, lse, delta, dq, rpb_t, drpb_part, ke, ve,
        height, width, m_extra, n_ty, n_tx, heads, scale * LOG2E, scale,
        HAS_EXTRA=has_extra, NSLICE_C=NSLICE, **opts, **launch_opts,
    )  # fmt: skip
    launch(_na_bwd_dkv_kernel, grid,
        q, k, v, grad_out, lse, delta, dk, dv, rpb_t,
        height, width, n_ty, n_tx, heads, scale * LOG2E, scale, **opts, **launch_opts,
    )  # fmt: skip
    drpb = drpb_part.sum(0).view(heads, 2 * kh - 1, 2 * kw - 1).to(rpb.dtype) if has_rpb else q.new_empty(0)
    dke, dve = q.new_empty(0), q.new_empty(0)
    if has_extra:
        # Every query sees every extra key: split the query stream over ``nsplit`` programs per key block
        # (enough programs to fill the GPU when B·heads·M is small, as for CLEAR) and sum fp32 partials.
        bm, n_tok, bn = 64, height * width, cfg["BLOCK_N"]
        programs = cdiv(m_extra, bm) * bsz * heads
        nsplit = max(1, min(cdiv(EXTRA_BWD_PROGRAMS, programs), cdiv(n_tok, EXTRA_MIN_BLOCKS * bn)))
        q_per_split = cdiv(cdiv(n_tok, nsplit), bn) * bn
        nsplit = cdiv(n_tok, q_per_split)
        dke_part = torch.empty((nsplit, *ke.shape), device=q.device, dtype=torch.float32)
        dve_part = torch.empty((nsplit, *ve.shape), device=q.device, dtype=torch.float32)
        launch(_na_bwd_dkv_extra_kernel, (cdiv(m_extra, bm), bsz * heads, nsplit),
            q, ke, ve, grad_out, lse, delta, dke_part, dve_part,
            n_tok, m_extra, q_per_split, bsz * heads, scale * LOG2E, scale, BM=bm, **launch_opts,
        )  # fmt: skip
        dke, dve = dke_part.sum(0).to(ke.dtype), dve_part.sum(0).to(ve.dtype)
    return dq, dk, dv, drpb, dke, dve
