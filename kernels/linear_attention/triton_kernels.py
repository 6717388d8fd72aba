"""Triton kernels of non-causal linear attention (device code; the host side is :mod:`.triton_fused`).

One family of kernels covers every feature map × normaliser through ``tl.constexpr`` flags. The head dims
DK and DV are compile-time constants too (one compile per head dim), so the compiler sees that the column
masks of non-power-of-two dims (40, 80, 96, 160) are constant over aligned groups and vectorises the loads.

``FMAP``: 0 identity, 1 relu, 2 elu+1.  ``NORM``: 0 standard, 1 none, 2 clamp, 3 injective, 4 rala.

Every pass splits N into ``C`` chunks of ``CHUNK`` rows (grid axis 0) per (batch, head) (grid axis 1)
and, where the pass needs a tile of the value dimension, per ``BDV``-wide dv tile (grid axis 2). Global
reductions over N (the states S = Σφkᵀv, z = Σφk and their gradients) are written as per-chunk fp32
partials and combined by a small reduce kernel, so nothing of size N×N or N×D is ever kept besides the
inputs and outputs. All arithmetic is fp32; the dot products that sum over N take bf16 operands for
bf16 inputs (fp32 accumulation); those with a state take bf16 operands too for bf16 inputs when
``LOWS`` (the state rounded to bf16, as a bf16 PyTorch matmul would), else fp32 (TF32 or IEEE) operands —
fp16 inputs keep fp32 states, which could overflow fp16.

RoPE rotates interleaved channel pairs (2i, 2i+1): tiles are split into their even and odd channels in
registers (reshape + split), rotated with (N, dk/2) cos/sin tiles and joined back; the gradient applies
the transposed rotation the same way.
"""

from __future__ import annotations

import triton
import triton.language as tl

from .._backend import next_pow2

try:  # Triton >= 3.4 exposes knobs; older versions only read the environment variable
    from triton import knobs as _knobs

    _INTERPRET = bool(_knobs.runtime.interpret)
except (ImportError, AttributeError):  # pragma: no cover - old Triton
    import os

    _INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

MAX_BLOCK_N = 128  # chunk sizes are multiples of this so every BLOCK_N divides them
# The defaults below were chosen by `benchmarks/linear_attention.py --tune` on an H100 (2026-11-23; GPU time
# of three (64, 64)-tile shapes: DiT@2048, RAVLT s1@224 with RALA+RoPE, SD-1.5 d=40; the log is
# docs/benchmarks/la_tuning.json): 8 programs per SM beat 2/4/16 (DiT fwd+bwd 1.03 vs 1.12 ms at 4), and bf16
# state dots beat TF32 ones (1.12 vs 1.44 ms).
PROGRAMS_PER_SM = 8  # N is split into chunks until there are about this many programs per SM
BF16_STATE_DOTS = True  # bf16 inputs: bf16 operands for the dots with the state too (see LOWS below)

# (BLOCK_N, num_warps, num_stages) per kernel kind and (DKP, BDV) tile; a launch not listed here takes
# the size-based default of :func:`launch_config`. Benchmarks may edit this table to try other configs.
TUNING: dict[tuple[str, int, int], tuple[int, int, int]] = {
    ("state", 64, 64): (32, 4, 3),  # pipelined: 140 vs 180 us at DiT@2048, 51 vs 60 us at RAVLT s1 (below)
    ("out", 64, 64): (32, 4, 1),  # 0.88
    ("bwd_q", 64, 64): (64, 4, 2),  # 0.93
    ("bwd_kv", 64, 64): (32, 4, 1),  # 0.98
}
# Stages, H100 (session 3): the 1.2-2.2x slowdown of the d=64 passes seen after the head dims became
# compile-time constants was not pipelining but the alignment hints (2-byte loads under Triton 3.6; see
# triton_fused._row_align). With that fixed, one breakdown per setting (docs/benchmarks/la_breakdown.json):
# the state pass is faster pipelined (3 stages: DiT@2048 140 us, RAVLT s1 51 us; 1 stage: 180 / 60 us), the
# out pass without (1 stage: 101 / 32 us; 3 stages: 121 / 31 us), the (k, v) pass about equal (230 vs 219 us).


# fp32 inputs: (BLOCK_N, num_warps, num_stages) per kernel kind and padded dk. fp32 row tiles take twice the
# registers of bf16 ones and IEEE fp32 dots (PyTorch's default, allow_tf32 off) are lowered to FMAs with their
# operands in registers, so the bf16 tiles above spill kilobytes per thread (ptxas, sm_90, Triton 3.6: bwd_q
# at 64x64 6 KB of stack; H100 DiT@2048 fp32 forward+backward 40.8 ms against 7.1 ms for eager PyTorch).
# Each entry is the largest BLOCK_N without spills for RALA+RoPE (the heaviest variant) in both IEEE and TF32
# (scan: tests/kernels/kernel_codegen.py reports the stack bytes). dk 128 takes 64-wide dv tiles in fp32
# (:func:`value_tile`): with one 128x128 state and its gradient in registers every row count spilled.
# Kinds and sizes not listed take the bf16 choice (TUNING or the size-based default), which does not spill in
# fp32 (H100, DiT@2048 fp32 forward: 0.585 ms with the 64x64 TUNING entries, 0.731 ms with (64, 8, 1)).
FP32_TUNING: dict[tuple[str, int], tuple[int, int, int]] = {
    ("state", 256): (32, 8, 1),
    ("out", 64): (32, 8, 1),  # (32, 4, 1) spills 3.3 KB with RALA + RoPE under Triton 3.8
    ("out", 128): (32, 8, 1),
    ("out", 256): (32, 8, 1),
    ("bwd_q", 32): (64, 8, 1),
    ("bwd_q", 64): (32, 8, 1),
    ("bwd_q", 128): (32, 8, 1),
    ("bwd_q", 256): (16, 8, 1),
    ("bwd_ds", 128): (16, 8, 1),  # the dS half of the (q, dO) pass when dv takes two or more tiles
    ("bwd_ds", 256): (16, 8, 1),
    ("bwd_kv", 32): (64, 8, 1),
    ("bwd_kv", 64): (16, 4, 1),
    ("bwd_kv", 128): (32, 8, 1),
    ("bwd_kv", 256): (16, 8, 1),
}


# The reduce kernels (chunk partials -> state / state gradient): fp32 elements of partials one program loads
# at once, and rows of the state per program where the reduction allows splitting them.
REDUCE_TILE = 8192
REDUCE_ROWS = 16


def reduce_blocks(dkp: int, bdv: int, chunks: int, split_rows: bool = True) -> dict:
    """``RB`` state rows per program, ``CB`` chunk partials per load and the warps of a reduce launch."""
    rows = min(dkp, REDUCE_ROWS) if split_rows else dkp
    per_load = max(1, min(next_pow2(max(chunks, 1)), REDUCE_TILE // (rows * bdv)))
    return {"RB": rows, "CB": per_load, "num_warps": 4 if rows * bdv * per_load <= REDUCE_TILE else 8}


def value_tile(dkp: int, dvp: int, fp32: bool) -> int:
    """BDV, the dv columns per program: the fp32 state tile (dkp x BDV) and its gradient must fit registers."""
    return min(dvp, 64 if dkp > 128 or (fp32 and dkp >= 128) else 128)


def launch_config(kind: str, dkp: int, bdv: int, fp32: bool = False) -> dict:
    """Launch meta-parameters: BLOCK_N rows per step, warps and pipeline stages (Triton's autotuner is not
    used: its per-shape benchmarking would multiply compile time by the number of configs). ``fp32``: the
    inputs are fp32 (fp32 dot operands), which takes the ``FP32_TUNING`` table."""
    if _INTERPRET:
        return {"BLOCK_N": 16, "num_warps": 4, "num_stages": 1}
    if fp32 and (kind, dkp) in FP32_TUNING:
        block_n, warps, stages = FP32_TUNING[(kind, dkp)]
        return {"BLOCK_N": block_n, "num_warps": warps, "num_stages": stages}
    if kind == "bwd_ds":  # bf16/fp16: the dS launch takes the (q, dO) pass's config
        kind = "bwd_q"
    if (kind, dkp, bdv) in TUNING:
        block_n, warps, stages = TUNING[(kind, dkp, bdv)]
    else:
        tile = dkp * bdv  # fp32 state tile held by each program
        warps = 4 if tile <= 64 * 64 else 8
        block_n = 128 if tile <= 32 * 64 else (64 if tile <= 128 * 128 else 32)
        stages = 1 if kind != "bwd_q" else (3 if tile <= 64 * 64 else 2)  # see the note under TUNING
        if kind in ("bwd_q", "bwd_kv"):
            # The backward passes hold the state, its gradient and ~6 row tiles. Register use reported by
            # ptxas -v (sm_90a, Triton 3.8 codegen, bf16, rope+rala / standard): at 64×64 the old
            # 64 rows × 4 warps took 255 registers and spilled 216–468 B in bwd_q; 32 rows × 8 warps fit in
            # 172–184 (bwd_q) / 126–166 (bwd_kv) registers without spills. dk > 128 (padded to 256) still
            # spills (~500 B at 16 rows × 8 warps): a correct but slower path.
            if tile < 64 * 64:
                block_n, warps = 64, 4
            elif dkp <= 128:
                block_n, warps = 32, 8
            else:
                block_n, warps = 16, 8
    return {"BLOCK_N": block_n, "num_warps": warps, "num_stages": stages}


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
@triton.jit
def _feat(x, FMAP: tl.constexpr):
    """φ(x): identity, relu or elu+1."""
    if FMAP == 1:
        x = tl.maximum(x, 0.0)
    elif FMAP == 2:
        x = tl.where(x > 0, x + 1.0, tl.exp(tl.minimum(x, 0.0)))
    return x


@triton.jit
def _feat_grad(dfx, x, FMAP: tl.constexpr):
    """dfx · φ'(x) (torch's conventions: relu'(0) = 0, elu'(0) = 1)."""
    if FMAP == 1:
        dfx = tl.where(x > 0, dfx, 0.0)
    elif FMAP == 2:
        dfx = tl.where(x > 0, dfx, dfx * tl.exp(tl.minimum(x, 0.0)))
    return dfx


@triton.jit
def _base(ptr, b, h, s_b, s_h, RV: tl.constexpr):
    """``ptr + b·s_b + h·s_h``: the (batch, head) slice. RV (host-checked) divides both strides, which lets
    the compiler prove aligned, vectorisable rows even where it cannot see it in the strides (dk = 40)."""
    off = b * s_b + h * s_h
    if RV > 1:
        off = tl.multiple_of(off, RV)
    return ptr + off


@triton.jit
def _offs(rows, cols, stride_n, stride_d, RV: tl.constexpr):
    """Element offsets of a (rows, cols) tile; RV divides the row stride (see :func:`_base`)."""
    roff = rows[:, None].to(tl.int64) * stride_n
    if RV > 1:
        roff = tl.multiple_of(roff, [RV, 1])
    return roff + cols[None, :].to(tl.int64) * stride_d


@triton.jit
def _load_rows(ptr, rows, cols, stride_n, stride_d, N, D, RV: tl.constexpr):
    """A (rows, cols) tile of a (N, D) matrix as fp32, zero outside."""
    mask = (rows[:, None] < N) & (cols[None, :] < D)
    return tl.load(ptr + _offs(rows, cols, stride_n, stride_d, RV), mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _load_feat(ptr, rows, cols, stride_n, stride_d, N, D, FMAP: tl.constexpr, RV: tl.constexpr):
    """(x, φ(x)) for a tile, φ(x) zeroed outside the (N, D) matrix (elu+1 would give 1 there)."""
    x = _load_rows(ptr, rows, cols, stride_n, stride_d, N, D, RV)
    mask = (rows[:, None] < N) & (cols[None, :] < D)
    return x, tl.where(mask, _feat(x, FMAP), 0.0)


@triton.jit
def _rope_tables(cos_ptr, sin_ptr, rows, s_cn, s_cd, s_sn, s_sd, N, DK, DKP: tl.constexpr):
    """cos and sin of the rows' angles, (rows, DKP/2) tiles of the (N, dk/2) tables, zero outside."""
    half = tl.arange(0, DKP // 2)
    mask = (rows[:, None] < N) & (half[None, :] < DK // 2)
    r64 = rows[:, None].to(tl.int64)
    c = tl.load(cos_ptr + r64 * s_cn + half[None, :] * s_cd, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + r64 * s_sn + half[None, :] * s_sd, mask=mask, other=0.0).to(tl.float32)
    return c, s


@triton.jit
def _rope(x, c, s, BLOCK_N: tl.constexpr, DKP: tl.constexpr, TRANSPOSE: tl.constexpr):
    """Rotate channel pairs (2i, 2i+1) of a (BLOCK_N, DKP) tile: R(x) = (a cos − b sin, a sin + b cos); Rᵀ
    turns the other way (the gradient of R). The pairs are split in registers (no second load)."""
    a, b = tl.split(tl.reshape(x, (BLOCK_N, DKP // 2, 2)))
    if TRANSPOSE:
        ra = a * c + b * s
        rb = b * c - a * s
    else:
        ra = a * c - b * s
        rb = a * s + b * c
    return tl.reshape(tl.join(ra, rb), (BLOCK_N, DKP))


@triton.jit
def _mm(a, b, LOW: tl.constexpr, PREC: tl.constexpr):
    """a @ b with fp32 accumulation; bf16 operands when LOW, else fp32 operands at precision PREC."""
    if LOW:
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    else:
        out = tl.dot(a, b, input_precision=PREC)
    return out


@triton.jit
def _load_mat(ptr, rows, cols, R, Cn):
    """A tile of a row-major fp32 (R, Cn) matrix, zero outside."""
    mask = (rows[:, None] < R) & (cols[None, :] < Cn)
    return tl.load(ptr + rows[:, None] * Cn + cols[None, :], mask=mask, other=0.0)


# --------------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------------
@triton.jit
def _qsum_kernel(
    Q, s_qb, s_qh, s_qn, s_qd, QP,
    N, H, DK: tl.constexpr, C, CHUNK,
    FMAP: tl.constexpr, DKP: tl.constexpr, BLOCK_N: tl.constexpr, RV: tl.constexpr,
):  # fmt: skip
    """RALA: per-chunk partial sums of φ(q) over N -> QP (BH, C, DK)."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    qb = _base(Q, b, h, s_qb, s_qh, RV)
    cols = tl.arange(0, DKP)
    acc = tl.zeros((DKP,), tl.float32)
    start_row = c * CHUNK
    end_row = tl.minimum(start_row + CHUNK, N)
    for start in range(start_row, end_row, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        _, fq = _load_feat(qb, rows, cols, s_qn, s_qd, N, DK, FMAP, RV)
        acc += tl.sum(fq, 0)
    tl.store(QP + (bh * C + c) * DK + cols, acc, mask=cols < DK)


@triton.jit
def _state_kernel(
    K, s_kb, s_kh, s_kn, s_kd,
    V, s_vb, s_vh, s_vn, s_vd,
    COS, s_cn, s_cd, SIN, s_sn, s_sd,
    QP, SP, ZP, VP, MP,
    N, H, DK: tl.constexpr, DV: tl.constexpr, C, CHUNK, scale,
    FMAP: tl.constexpr, NORM: tl.constexpr, ROPE: tl.constexpr, LOW: tl.constexpr, PREC: tl.constexpr,
    DKP: tl.constexpr, BDV: tl.constexpr, NUM_DVT: tl.constexpr, BLOCK_N: tl.constexpr, RV: tl.constexpr,
):  # fmt: skip
    """Pass 1: per-chunk partial states.

    SP (BH, C, DK, DV) = Σ w_j R(φk_j) v_jᵀ, ZP (BH, C, DK) = Σ w_j φk_j, VP (BH, C, DV) = Σ v_j (injective),
    MP (BH, C, 2) = (running max, Σ w_j) of the RALA softmax, whose unnormalised weights are
    w_j = exp(s·q̄·φk_j − max) (w_j = 1 otherwise).
    """
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    t = tl.program_id(2)
    b, h = bh // H, bh % H
    kb = _base(K, b, h, s_kb, s_kh, RV)
    vb = _base(V, b, h, s_vb, s_vh, RV)
    ck = tl.arange(0, DKP)
    cv = t * BDV + tl.arange(0, BDV)
    if NORM == 4:
        qbar = tl.zeros((DKP,), tl.float32)
        for cc in range(0, C):
            qbar += tl.load(QP + (bh * C + cc) * DK + ck, mask=ck < DK, other=0.0)
        qbar = qbar * (scale / N)
    acc = tl.zeros((DKP, BDV), tl.float32)
    zk = tl.zeros((DKP,), tl.float32)
    zv = tl.zeros((BDV,), tl.float32)
    m = tl.full((), -1e30, tl.float32)
    lsum = tl.zeros((), tl.float32)
    start_row = c * CHUNK
    end_row = tl.minimum(start_row + CHUNK, N)
    for start in range(start_row, end_row, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        _, fk = _load_feat(kb, rows, ck, s_kn, s_kd, N, DK, FMAP, RV)
        v = _load_rows(vb, rows, cv, s_vn, s_vd, N, DV, RV)
        if ROPE:
            rc, rs = _rope_tables(COS, SIN, rows, s_cn, s_cd, s_sn, s_sd, N, DK, DKP)
            rk = _rope(fk, rc, rs, BLOCK_N, DKP, False)
        else:
            rk = fk
        if NORM == 4:
            logit = tl.sum(fk * qbar[None, :], 1)
            logit = tl.where(rows < N, logit, float("-inf"))
            m_new = tl.maximum(m, tl.max(logit, 0))
            alpha = tl.exp(m - m_new)
            p = tl.exp(logit - m_new)
            acc = acc * alpha
            zk = zk * alpha
            lsum = lsum * alpha + tl.sum(p, 0)
            m = m_new
            rk = rk * p[:, None]
            fk = fk * p[:, None]
        acc += _mm(tl.trans(rk), v, LOW, PREC)
        zk += tl.sum(fk, 0)
        if NORM == 3:
            zv += tl.sum(v, 0)
    part = bh * C + c
    tl.store(SP + part * DK * DV + ck[:, None] * DV + cv[None, :], acc, mask=(ck[:, None] < DK) & (cv[None, :] < DV))
    tl.store(ZP + part * DK + ck, zk, mask=(ck < DK) & (t == 0))
    if NORM == 3:
        tl.store(VP + part * DV + cv, zv, mask=cv < DV)
    if NORM == 4:
        if t == 0:
            tl.store(MP + part * 2, m)
            tl.store(MP + part * 2 + 1, lsum)


@triton.jit
def _state_reduce_kernel(
    QP, SP, ZP, VP, MP, S, Z, AUX,
    N, DK: tl.constexpr, DV: tl.constexpr, C, scale,
    NORM: tl.constexpr, DKP: tl.constexpr, BDV: tl.constexpr, RB: tl.constexpr, CB: tl.constexpr,
):  # fmt: skip
    """Combine the C chunk partials into the state used by the output pass.

    S (BH, DK, DV): standard/none/clamp s·Σ R(φk)vᵀ; rala Σ α R(φk)vᵀ; injective W = (s/N)(Σφk vᵀ − Σφk Σvᵀ/N).
    Z (BH, DK): standard/none/clamp s·Σφk; rala ζ = Σ α φk; injective k̄.
    AUX (BH, DK + DV + 2): [q̄ (rala) | v̄ (injective) | softmax max | softmax sum].
    Grid (BH, dv tiles, DKP / RB): each program owns RB rows of one (DKP, BDV) tile and reads the partials
    of CB chunks per load (one (CB, RB, BDV) block), so a head's C partials take C / CB dependent loads
    instead of C (H100, session 4: the one-program-per-head loop took 23–29 µs, latency-bound).
    """
    bh = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1)
    r = tl.program_id(2)
    ck = r * RB + tl.arange(0, RB)
    cv = t * BDV + tl.arange(0, BDV)
    mk = ck < DK
    mv = cv < DV
    m2 = mk[:, None] & mv[None, :]
    acc = tl.zeros((RB, BDV), tl.float32)
    zk = tl.zeros((RB,), tl.float32)
    zv = tl.zeros((BDV,), tl.float32)
    naux = DK + DV + 2
    if NORM == 4:  # the chunks' softmax maxima first: each partial is rescaled to the global one
        mx = tl.full((), -1e30, tl.float32)
        for c0 in range(0, C, CB):
            cc = c0 + tl.arange(0, CB)
            mx = tl.maximum(mx, tl.max(tl.load(MP + (bh * C + cc) * 2, mask=cc < C, other=-1e30), 0))
        lsum = tl.zeros((), tl.float32)
        qbar = tl.zeros((RB,), tl.float32)
    for c0 in range(0, C, CB):
        cc = c0 + tl.arange(0, CB)
        mc = cc < C
        part = bh * C + cc
        w = tl.full((CB,), 1.0, tl.float32)
        if NORM == 4:
            w = tl.where(mc, tl.exp(tl.load(MP + part * 2, mask=mc, other=0.0) - mx), 0.0)
            lsum += tl.sum(w * tl.load(MP + part * 2 + 1, mask=mc, other=0.0), 0)
            q_part = tl.load(QP + part[:, None] * DK + ck[None, :], mask=mc[:, None] & mk[None, :], other=0.0)
            qbar += tl.sum(q_part, 0)
        s_part = tl.load(
            SP + part[:, None, None] * DK * DV + ck[None, :, None] * DV + cv[None, None, :],
            mask=mc[:, None, None] & m2[None, :, :],
            other=0.0,
        )
        acc += tl.sum(s_part * w[:, None, None], 0)
        z_part = tl.load(ZP + part[:, None] * DK + ck[None, :], mask=mc[:, None] & mk[None, :], other=0.0)
        zk += tl.sum(z_part * w[:, None], 0)
        if NORM == 3:
            zv += tl.sum(tl.load(VP + part[:, None] * DV + cv[None, :], mask=mc[:, None] & mv[None, :], other=0.0), 0)
    # every slot of AUX is written (zeros where the normaliser has no use for it): it is an op output
    vbar = tl.zeros((BDV,), tl.float32)
    aux_q = tl.zeros((RB,), tl.float32)
    aux_m = 0.0
    aux_l = 0.0
    if NORM == 3:
        acc = (scale / N) * (acc - zk[:, None] * zv[None, :] / N)
        zk = zk / N
        vbar = zv / N
    elif NORM == 4:
        acc = acc / lsum
        zk = zk / lsum
        aux_q = qbar / N
        aux_m = mx
        aux_l = lsum
    else:
        acc = scale * acc
        zk = scale * zk
    tl.store(AUX + bh * naux + DK + cv, vbar, mask=mv & (r == 0))
    if t == 0:
        tl.store(AUX + bh * naux + ck, aux_q, mask=mk)
        if r == 0:
            tl.store(AUX + bh * naux + DK + DV, aux_m)
            tl.store(AUX + bh * naux + DK + DV + 1, aux_l)
    tl.store(S + bh * DK * DV + ck[:, None] * DV + cv[None, :], acc, mask=m2)
    tl.store(Z + bh * DK + ck, zk, mask=mk & (t == 0))


@triton.jit
def _out_kernel(
    Q, s_qb, s_qh, s_qn, s_qd,
    OUT, s_ob, s_oh, s_on, s_od,
    COS, s_cn, s_cd, SIN, s_sn, s_sd,
    S, Z, AUX, TEMP,
    N, H, DK: tl.constexpr, DV: tl.constexpr, CHUNK, eps, clamp_min,
    FMAP: tl.constexpr, NORM: tl.constexpr, ROPE: tl.constexpr, HAS_TEMP: tl.constexpr, PREC: tl.constexpr,
    LOWS: tl.constexpr, DKP: tl.constexpr, BDV: tl.constexpr, NUM_DVT: tl.constexpr, BLOCK_N: tl.constexpr,
    RV: tl.constexpr,
):  # fmt: skip
    """Pass 2: o_i = τ R(φq_i)·S / D_i (D_i from φq_i·z and the normaliser), or φq_i·W + v̄ (injective)."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    t = tl.program_id(2)
    b, h = bh // H, bh % H
    qb = _base(Q, b, h, s_qb, s_qh, RV)
    ob = _base(OUT, b, h, s_ob, s_oh, RV)
    ck = tl.arange(0, DKP)
    cv = t * BDV + tl.arange(0, BDV)
    st = _load_mat(S + bh * DK * DV, ck, cv, DK, DV)
    z = tl.load(Z + bh * DK + ck, mask=ck < DK, other=0.0)
    if NORM == 3:
        vbar = tl.load(AUX + bh * (DK + DV + 2) + DK + cv, mask=cv < DV, other=0.0)
    tau = 1.0
    if HAS_TEMP:
        tau = tl.load(TEMP + h).to(tl.float32)
    start_row = c * CHUNK
    end_row = tl.minimum(start_row + CHUNK, N)
    for start in range(start_row, end_row, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        rmask = rows < N
        _, fq = _load_feat(qb, rows, ck, s_qn, s_qd, N, DK, FMAP, RV)
        if ROPE:
            rc, rs = _rope_tables(COS, SIN, rows, s_cn, s_cd, s_sn, s_sd, N, DK, DKP)
            rq = _rope(fq, rc, rs, BLOCK_N, DKP, False)
        else:
            rq = fq
        u = _mm(rq, st, LOWS, PREC)
        if NORM == 3:
            o = u + vbar[None, :]
        elif NORM == 1:
            o = u * tau
        else:
            den = tl.sum(fq * z[None, :], 1)
            if NORM == 2:
                d = tl.maximum(den, clamp_min)
            else:
                d = den + eps
            d = tl.where(rmask, d, 1.0)
            o = u * (tau / d)[:, None]
        offs = _offs(rows, cv, s_on, s_od, RV)
        tl.store(ob + offs, o.to(OUT.dtype.element_ty), mask=rmask[:, None] & (cv[None, :] < DV))


# --------------------------------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------------------------------
@triton.jit
def _bwd_q_kernel(
    Q, s_qb, s_qh, s_qn, s_qd,
    DO, s_gb, s_gh, s_gn, s_gd,
    DQ, s_dqb, s_dqh, s_dqn, s_dqd,
    COS, s_cn, s_cd, SIN, s_sn, s_sd,
    S, Z, TEMP, DSP, DZP, GP, DTP,
    N, H, DK: tl.constexpr, DV: tl.constexpr, C, CHUNK, eps, clamp_min,
    FMAP: tl.constexpr, NORM: tl.constexpr, ROPE: tl.constexpr, HAS_TEMP: tl.constexpr, LOW: tl.constexpr,
    PREC: tl.constexpr, LOWS: tl.constexpr, DKP: tl.constexpr, BDV: tl.constexpr, NUM_DVT: tl.constexpr,
    T_LOOP: tl.constexpr,
    DO_DQ: tl.constexpr, DO_DS: tl.constexpr, BLOCK_N: tl.constexpr, RV: tl.constexpr,
):  # fmt: skip
    """Backward pass over (q, dO).

    With du_i = τ dO_i / D_i:  dq_i = φ'(q_i)·(Rᵀ(du_i Sᵀ) + dden_i z) (DO_DQ; dO Sᵀ is computed once and
    also gives g·u = R(φq)·(dO Sᵀ) for dden), and per-chunk partials
    dS = Σ R(φq_i)ᵀ du_i (DO_DS), dz = Σ dden_i φq_i, G = Σ dO_i (injective), dτ = Σ dO_i·u_i / D_i.
    The dv tiles are looped inside (T_LOOP = NUM_DVT) when dq needs all of them; dS is then computed by
    a second launch with one dv tile per program (T_LOOP = 1, DO_DQ = 0).
    """
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    pt = tl.program_id(2)
    b, h = bh // H, bh % H
    qb = _base(Q, b, h, s_qb, s_qh, RV)
    gb = _base(DO, b, h, s_gb, s_gh, RV)
    dqb = _base(DQ, b, h, s_dqb, s_dqh, RV)
    ck = tl.arange(0, DKP)
    sb = S + bh * DK * DV
    z = tl.load(Z + bh * DK + ck, mask=ck < DK, other=0.0)
    tau = 1.0
    if HAS_TEMP:
        tau = tl.load(TEMP + h).to(tl.float32)
    if T_LOOP == 1:
        cv0 = pt * BDV + tl.arange(0, BDV)
        st0 = _load_mat(sb, ck, cv0, DK, DV)
    ds_acc = tl.zeros((DKP, BDV), tl.float32)
    g_acc = tl.zeros((BDV,), tl.float32)
    dz_acc = tl.zeros((DKP,), tl.float32)
    dt_acc = tl.zeros((), tl.float32)
    start_row = c * CHUNK
    end_row = tl.minimum(start_row + CHUNK, N)
    for start in range(start_row, end_row, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        rmask = rows < N
        q, fq = _load_feat(qb, rows, ck, s_qn, s_qd, N, DK, FMAP, RV)
        if ROPE:
            rc, rs = _rope_tables(COS, SIN, rows, s_cn, s_cd, s_sn, s_sd, N, DK, DKP)
            rq = _rope(fq, rc, rs, BLOCK_N, DKP, False)
        else:
            rq = fq
        if NORM == 1 or NORM == 3:
            d = tl.full((BLOCK_N,), 1.0, tl.float32)
        else:
            den = tl.sum(fq * z[None, :], 1)
            if NORM == 2:
                d = tl.maximum(den, clamp_min)
            else:
                d = den + eps
            d = tl.where(rmask, d, 1.0)
        gs = tl.zeros((BLOCK_N, DKP), tl.float32)  # dO Sᵀ, summed over the dv tiles
        for tt in range(T_LOOP):  # not unrolled: one tile's operands live at a time (dk > 128 runs 4 tiles)
            cv = (pt * T_LOOP + tt) * BDV + tl.arange(0, BDV)
            if T_LOOP == 1:
                st = st0
            else:
                st = _load_mat(sb, ck, cv, DK, DV)
            g = _load_rows(gb, rows, cv, s_gn, s_gd, N, DV, RV)
            if DO_DQ:
                gs += _mm(g, tl.trans(st), LOWS, PREC)
            if DO_DS:
                ds_acc += _mm(tl.trans(rq), g * (tau / d)[:, None], LOW, PREC)
                if NORM == 3:
                    g_acc += tl.sum(g, 0)
        if DO_DQ:
            # one dot serves both: dR(φq) = (τ/D) dO Sᵀ, and g·u = dO·(R(φq) S) = R(φq)·(dO Sᵀ) for dden / dτ
            drq = gs * (tau / d)[:, None]
            gu = tl.sum(rq * gs, 1)
            if ROPE:
                dfq = _rope(drq, rc, rs, BLOCK_N, DKP, True)
            else:
                dfq = drq
            if NORM == 0 or NORM == 2 or NORM == 4:
                dden = -tau * gu / (d * d)
                if NORM == 2:
                    dden = tl.where(den >= clamp_min, dden, 0.0)
                dfq += dden[:, None] * z[None, :]
                dz_acc += tl.sum(dden[:, None] * fq, 0)
            if HAS_TEMP:
                dt_acc += tl.sum(gu / d, 0)
            dq = _feat_grad(dfq, q, FMAP)
            offs = _offs(rows, ck, s_dqn, s_dqd, RV)
            tl.store(dqb + offs, dq.to(DQ.dtype.element_ty), mask=rmask[:, None] & (ck[None, :] < DK))
    part = bh * C + c
    if DO_DS:
        cv = pt * BDV + tl.arange(0, BDV)
        tl.store(
            DSP + part * DK * DV + ck[:, None] * DV + cv[None, :],
            ds_acc,
            mask=(ck[:, None] < DK) & (cv[None, :] < DV),
        )
        if NORM == 3:
            tl.store(GP + part * DV + cv, g_acc, mask=cv < DV)
    if DO_DQ:
        tl.store(DZP + part * DK + ck, dz_acc, mask=ck < DK)
        if HAS_TEMP:
            tl.store(DTP + part, dt_acc)


@triton.jit
def _bwd_reduce_kernel(
    DSP, DZP, GP, DTP, S, Z, AUX, DSE, ZV, CV, CR, DT,
    N, DK: tl.constexpr, DV: tl.constexpr, C, scale,
    NORM: tl.constexpr, HAS_TEMP: tl.constexpr, DKP: tl.constexpr, BDV: tl.constexpr, NUM_DVT: tl.constexpr,
    RB: tl.constexpr, CB: tl.constexpr,
):  # fmt: skip
    """Combine the backward partials into what the (k, v) pass needs.

    DSE (BH, DK, DV) and ZV (BH, DK), CV (BH, DV) such that, with w_j = α_j (rala) or 1:
    dv_j = w_j R(φk_j)·DSE + CV,  dφk_j = Rᵀ(w_j DSE v_j) + w_j ZV (+ the rala softmax term with CR).
    Grid (BH, DKP / RB); the partials are read CB chunks per load, as in the forward reduce. The injective
    CV and the rala CR sum over every row of dS: those normalisers take RB = DKP (one program per head).
    """
    bh = tl.program_id(0).to(tl.int64)
    r = tl.program_id(1)
    ck = r * RB + tl.arange(0, RB)
    mk = ck < DK
    naux = DK + DV + 2
    dz = tl.zeros((RB,), tl.float32)
    dt = tl.zeros((), tl.float32)
    for c0 in range(0, C, CB):
        cc = c0 + tl.arange(0, CB)
        mc = cc < C
        part = bh * C + cc
        dz += tl.sum(tl.load(DZP + part[:, None] * DK + ck[None, :], mask=mc[:, None] & mk[None, :], other=0.0), 0)
        if HAS_TEMP:
            dt += tl.sum(tl.load(DTP + part, mask=mc, other=0.0), 0)
    if HAS_TEMP:
        if r == 0:
            tl.store(DT + bh, dt)
    zvec = tl.zeros((RB,), tl.float32)
    cr = tl.zeros((), tl.float32)
    if NORM == 3:
        kbar = tl.load(Z + bh * DK + ck, mask=mk, other=0.0)
    for t in tl.static_range(NUM_DVT):
        cv = t * BDV + tl.arange(0, BDV)
        mv = cv < DV
        m2 = mk[:, None] & mv[None, :]
        ds = tl.zeros((RB, BDV), tl.float32)
        g = tl.zeros((BDV,), tl.float32)
        for c0 in range(0, C, CB):
            cc = c0 + tl.arange(0, CB)
            mc = cc < C
            part = bh * C + cc
            ds_part = tl.load(
                DSP + part[:, None, None] * DK * DV + ck[None, :, None] * DV + cv[None, None, :],
                mask=mc[:, None, None] & m2[None, :, :],
                other=0.0,
            )
            ds += tl.sum(ds_part, 0)
            if NORM == 3:
                g_part = tl.load(GP + part[:, None] * DV + cv[None, :], mask=mc[:, None] & mv[None, :], other=0.0)
                g += tl.sum(g_part, 0)
        cvec = tl.zeros((BDV,), tl.float32)
        if NORM == 3:
            a = scale / N
            vbar = tl.load(AUX + bh * naux + DK + cv, mask=mv, other=0.0)
            zvec += -a * tl.sum(ds * vbar[None, :], 1)
            cvec = -a * tl.sum(kbar[:, None] * ds, 0) + g / N
            ds = a * ds
        elif NORM == 4:
            st = tl.load(S + bh * DK * DV + ck[:, None] * DV + cv[None, :], mask=m2, other=0.0)
            cr += tl.sum(tl.sum(ds * st, 1), 0)
        else:
            ds = scale * ds
        tl.store(DSE + bh * DK * DV + ck[:, None] * DV + cv[None, :], ds, mask=m2)
        tl.store(CV + bh * DV + cv, cvec, mask=mv & (r == 0))
    if NORM == 3:
        tl.store(ZV + bh * DK + ck, zvec, mask=mk)
    elif NORM == 4:
        zeta = tl.load(Z + bh * DK + ck, mask=mk, other=0.0)
        cr += tl.sum(dz * zeta, 0)
        tl.store(ZV + bh * DK + ck, dz, mask=mk)
        tl.store(CR + bh, cr)
    else:
        tl.store(ZV + bh * DK + ck, scale * dz, mask=mk)


@triton.jit
def _bwd_kv_kernel(
    K, s_kb, s_kh, s_kn, s_kd,
    V, s_vb, s_vh, s_vn, s_vd,
    DK_, s_dkb, s_dkh, s_dkn, s_dkd,
    DV_, s_dvb, s_dvh, s_dvn, s_dvd,
    COS, s_cn, s_cd, SIN, s_sn, s_sd,
    DSE, ZV, CV, CR, AUX, DQBP,
    N, H, DK: tl.constexpr, DV: tl.constexpr, C, CHUNK, scale,
    FMAP: tl.constexpr, NORM: tl.constexpr, ROPE: tl.constexpr, PREC: tl.constexpr, LOWS: tl.constexpr,
    DKP: tl.constexpr, BDV: tl.constexpr, NUM_DVT: tl.constexpr, BLOCK_N: tl.constexpr, RV: tl.constexpr,
):  # fmt: skip
    """Backward pass over (k, v): dk, dv, and for rala the partials of dq̄ = s Σ_j dl_j φk_j (DQBP)."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    kb = _base(K, b, h, s_kb, s_kh, RV)
    vb = _base(V, b, h, s_vb, s_vh, RV)
    dkb = _base(DK_, b, h, s_dkb, s_dkh, RV)
    dvb = _base(DV_, b, h, s_dvb, s_dvh, RV)
    ck = tl.arange(0, DKP)
    sb = DSE + bh * DK * DV
    zvec = tl.load(ZV + bh * DK + ck, mask=ck < DK, other=0.0)
    if NORM == 4:
        naux = DK + DV + 2
        qbar = tl.load(AUX + bh * naux + ck, mask=ck < DK, other=0.0) * scale
        mx = tl.load(AUX + bh * naux + DK + DV)
        lsum = tl.load(AUX + bh * naux + DK + DV + 1)
        cr = tl.load(CR + bh)
        dqbar = tl.zeros((DKP,), tl.float32)
    if NUM_DVT == 1:
        cv0 = tl.arange(0, BDV)
        ds0 = _load_mat(sb, ck, cv0, DK, DV)
        cvec0 = tl.load(CV + bh * DV + cv0, mask=cv0 < DV, other=0.0)
    start_row = c * CHUNK
    end_row = tl.minimum(start_row + CHUNK, N)
    for start in range(start_row, end_row, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        rmask = rows < N
        k, fk = _load_feat(kb, rows, ck, s_kn, s_kd, N, DK, FMAP, RV)
        if ROPE:
            rc, rs = _rope_tables(COS, SIN, rows, s_cn, s_cd, s_sn, s_sd, N, DK, DKP)
            rk = _rope(fk, rc, rs, BLOCK_N, DKP, False)
        else:
            rk = fk
        if NORM == 4:
            logit = tl.sum(fk * qbar[None, :], 1)
            w = tl.where(rmask, tl.exp(logit - mx) / lsum, 0.0)
        else:
            w = tl.full((BLOCK_N,), 1.0, tl.float32)
        tv = tl.zeros((BLOCK_N, DKP), tl.float32)
        for t in range(NUM_DVT):  # not unrolled, as in the (q, dO) pass
            cv = t * BDV + tl.arange(0, BDV)
            if NUM_DVT == 1:
                ds = ds0
                cvec = cvec0
            else:
                ds = _load_mat(sb, ck, cv, DK, DV)
                cvec = tl.load(CV + bh * DV + cv, mask=cv < DV, other=0.0)
            v = _load_rows(vb, rows, cv, s_vn, s_vd, N, DV, RV)
            tv += _mm(v, tl.trans(ds), LOWS, PREC)
            dv = _mm(rk, ds, LOWS, PREC) * w[:, None] + cvec[None, :]
            offs = _offs(rows, cv, s_dvn, s_dvd, RV)
            tl.store(dvb + offs, dv.to(DV_.dtype.element_ty), mask=rmask[:, None] & (cv[None, :] < DV))
        if ROPE:
            dfk = _rope(tv, rc, rs, BLOCK_N, DKP, True) * w[:, None]
        else:
            dfk = tv * w[:, None]
        dfk += w[:, None] * zvec[None, :]
        if NORM == 4:
            dalpha = tl.sum(rk * tv, 1) + tl.sum(fk * zvec[None, :], 1)
            dl = w * (dalpha - cr)
            dfk += dl[:, None] * qbar[None, :]
            dqbar += tl.sum(dl[:, None] * fk, 0)
        dk = _feat_grad(dfk, k, FMAP)
        offs = _offs(rows, ck, s_dkn, s_dkd, RV)
        tl.store(dkb + offs, dk.to(DK_.dtype.element_ty), mask=rmask[:, None] & (ck[None, :] < DK))
    if NORM == 4:
        tl.store(DQBP + (bh * C + c) * DK + ck, dqbar * scale, mask=ck < DK)


@triton.jit
def _bwd_dq_fix_kernel(
    Q, s_qb, s_qh, s_qn, s_qd,
    DQ, s_dqb, s_dqh, s_dqn, s_dqd,
    DQBP, N, H, DK: tl.constexpr, C, CHUNK,
    FMAP: tl.constexpr, DKP: tl.constexpr, BLOCK_N: tl.constexpr, RV: tl.constexpr,
):  # fmt: skip
    """RALA: dq_i += φ'(q_i)·dq̄/N, the gradient through q̄ = mean_i φq_i, known only after the (k, v) pass."""
    c = tl.program_id(0)
    bh = tl.program_id(1).to(tl.int64)
    b, h = bh // H, bh % H
    qb = _base(Q, b, h, s_qb, s_qh, RV)
    dqb = _base(DQ, b, h, s_dqb, s_dqh, RV)
    ck = tl.arange(0, DKP)
    dqbar = tl.zeros((DKP,), tl.float32)
    for cc in range(0, C):
        dqbar += tl.load(DQBP + (bh * C + cc) * DK + ck, mask=ck < DK, other=0.0)
    dqbar = dqbar / N
    start_row = c * CHUNK
    end_row = tl.minimum(start_row + CHUNK, N)
    for start in range(start_row, end_row, BLOCK_N):
        rows = start + tl.arange(0, BLOCK_N)
        q = _load_rows(qb, rows, ck, s_qn, s_qd, N, DK, RV)
        dq = _load_rows(dqb, rows, ck, s_dqn, s_dqd, N, DK, RV)
        dq += _feat_grad(tl.zeros((BLOCK_N, DKP), tl.float32) + dqbar[None, :], q, FMAP)
        offs = _offs(rows, ck, s_dqn, s_dqd, RV)
        tl.store(dqb + offs, dq.to(DQ.dtype.element_ty), mask=(rows[:, None] < N) & (ck[None, :] < DK))
