"""Fused Triton kernels of the bidirectional GLA (ViG's token mixer): forward and backward, fused recurrent form.

Maths (:mod:`linzoo.kernels.gla.reference`), per (batch, head), ``a = exp(g)``, ``s`` the scale::

    S^f_t = a^f_t ⊙ S^f_{t-1} + k_t v_t^T,  S^b_t = a^b_t ⊙ S^b_{t+1} + k_t v_t^T,  o_t = s q_t^T (S^f_t + S^b_t)

**Algorithm: fused recurrent** (as ViG's own ``bid_fused_recurrent_gla``, with both scans in one launch), chosen
over a chunked tensor-core form for these reasons, with the H100 in mind:

- *exactness for any decay*: the recurrence multiplies the state by ``exp(g_t) <= 1`` token by token, so no
  exponent of a difference of cumulative log-decays appears and nothing can overflow or lose precision however
  strong the gates are (a chunked form needs sub-block references and pairwise exact diagonal blocks for that,
  see :func:`linzoo.kernels.gla.gla_chunked`);
- *ViG's shapes*: L = 49..4096 tokens (224 px: 196 for ViG-T/S/B, 3136/784/196/49 for ViG-H; 4096 at 1024 px)
  and B·heads = 192..1536 (batch 64–128), so the sequential depth is modest and ``B · heads · dv/BV`` one- or
  two-warp programs fill the 132 SMs; the op is memory-bound (kernels.md §5.3: ~13 µs floor for ViG-S @224),
  and with dk = 16/32, dv = 32/64 a 16×16 tensor-core tile would be mostly padding for the state products;
- *one launch each way, O(1) extra memory*: no per-chunk states are stored (the chunked form keeps
  ``L/C · dk · dv`` fp32 per head), and the backward recomputes the states instead of saving them.

The cost of the choice is latency: each program walks its tokens one after the other (~L dependent steps, not
bandwidth, bound a program). Where B·H·(dv tiles) programs are too few to fill the GPU (small batches at high
resolution: ViG-T @1024, batch 8, is 48 programs for 132 SMs; ViG-H-T stage 1 @224, batch 64, 192), both kernels
cut the sequence into segments run in parallel (:func:`segment_length`; the forward takes 3 launches instead of 1
and does the state recurrence twice, the backward 5 and recomputes the states and the adjoints' carries). A
chunked tensor-core kernel is the next step if the GPU benchmark (``benchmarks/gla.py``) shows the long-L stages
dominating.

Forward (:func:`_bgla_fwd_kernel`): program ``(b·H + h, i_v, segment)`` holds both states for dv columns
``[i_v·BV, (i_v+1)·BV)`` and all dk rows (a ``DKP × BV`` fp32 tile each; the q·S contraction runs over dk) and
steps the forward scan over ``t = i`` and the backward scan over ``t = n-1-i`` (``n`` tokens of its segment: all
L unless split) in the same iteration. Position ``t`` gets its two contributions at steps ``t`` and ``n-1-t``:
the loop is cut in halves; in the first half every visit is the first one to its token and its partial output
is stored in fp32 (in the output itself when that is fp32, else in a scratch buffer), and after a barrier the
second half adds its contribution to the stored partial and writes the output once (the middle token of an odd
``n`` gets both in the same step). Segments: :func:`_bgla_seg_state_kernel` scans each from a zero state (both
directions; also the summed log-decays), :func:`_bgla_combine_kernel` chains them into the states entering each
segment (``S_in,j = e^{Σg_{j-1}} ⊙ S_in,j-1 + S_local,j-1``, exponents <= 0), and the forward kernel starts there.

Backward (:func:`_bgla_bwd_kernel`, per segment: the states and the adjoints' carries entering it come from
:func:`chained_states`, and the host continues the gate gradients' sums over the later segments), with ``dH`` the
adjoint of a state (``dH^f_t = s q_t do_t^T + a^f_{t+1} ⊙ dH^f_{t+1}``,
``dH^b_t = s q_t do_t^T + a^b_{t-1} ⊙ dH^b_{t-1}``), two sweeps per program (over its segment's tokens):

- sweep A, ``t = 0 .. L-1``: ``S^f`` gives ``dq^f_t = s S^f_t do_t``; ``dH^b`` gives ``dk^b_t = dH^b_t v_t``
  and ``dv^b_t = dH^b_t^T k_t``; all three are stored (fp32);
- sweep B, ``t = L-1 .. 0``: ``S^b`` gives ``dq^b``, ``dH^f`` gives ``dk^f, dv^f``; the sweep-A terms are read
  back and the totals written. The log-decay gradients follow from ``r_t = q_t ⊙ dq_t - k_t ⊙ dk_t`` of each
  direction: ``dg^f_t = Σ_{s>=t} r^f_s`` and ``dg^b_t = Σ_{s<=t} r^b_s = -Σ_{s>t} r^b_s`` (the sum of ``r``
  over all tokens is 0: ``q ⊙ dq`` and ``k ⊙ dk`` sum the same key–query pairs), both suffix sums, so they
  accumulate in registers during sweep B (``dg^f_0`` and ``dg^b_{L-1}``, exactly 0, are written as 0). As in
  fla's fused recurrent backward, a gate gradient is a sum of many ``r`` terms, so its absolute error is about
  ``2^-24 · Σ_s |r_s|`` (relative to the largest gate gradient: ~1e-7 in fp32).

With one dv tile (dv <= 64: ViG's heads) and one segment the gradients are written once, in their inputs'
dtypes, and only sweep A's three terms pass through fp32 scratch; with several tiles (dv > 64) or segments the
programs write fp32 per-tile partials of dq, dk and the gate gradients (linear in the tile's columns) and the
host adds them (and the later segments' sums of ``r``). All state arithmetic is
fp32; inputs of any float dtype (and mixed dtypes) are read as they are, rows must have a unit last stride (other
strides are arguments).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._backend import next_pow2
from .._launch import launch

__all__ = ["MAX_HEAD_DIM_K", "backward", "forward", "launch_config"]

MAX_HEAD_DIM_K = 256  # the dk axis of the state tile is held whole by one program


@triton.jit
def _row(ptr, t, st, mask):
    """Row ``t`` of a (L, D) slice (unit last stride) in its own dtype; zero where masked."""
    return tl.load(ptr + t * st, mask=mask, other=0.0)


@triton.jit
def _f32(x):
    return x.to(tl.float32)


@triton.jit
def _bgla_fwd_kernel(
    Q, K, V, GF, GB, OUT, PART, INIT,
    H, L, STATES, SEG, NSEG,
    s_qb, s_qh, s_qt,
    s_kb, s_kh, s_kt,
    s_vb, s_vh, s_vt,
    s_fb, s_fh, s_ft,
    s_gb, s_gh, s_gt,
    scale,
    DK: tl.constexpr, DV: tl.constexpr, DKP: tl.constexpr, BV: tl.constexpr, HAS_INIT: tl.constexpr,
):  # fmt: skip
    """``OUT[b, h, t, cols] = s q_t^T (S^f_t + S^b_t)[:, cols]`` for the tokens ``[seg·SEG, seg·SEG + SEG) ∩ [0, L)``
    of segment ``seg = program_id(2)`` (one segment, ``SEG = L``, unless the host split the sequence); ``PART``:
    fp32 (B, H, L, DV) scratch for the first-visited partial (``OUT`` itself when it is fp32); ``INIT`` (with
    ``HAS_INIT``): fp32 ``(2, B·H, NSEG, DK, DV)``, the states entering each segment from the left (forward scan)
    and from the right (backward scan), written by :func:`_bgla_combine_kernel`; ``STATES = B·H·NSEG``.

    The rows of the next step are loaded one step ahead (the ``n*`` registers): a step's loads do not depend on
    the state, so their latency overlaps the current step's arithmetic instead of stalling the one warp."""
    pid = tl.program_id(0)  # b·H + h on the first axis: up to 2^31 - 1 programs (the others allow 65535)
    i_v = tl.program_id(1)
    seg = tl.program_id(2)
    b = (pid // H).to(tl.int64)
    h = (pid % H).to(tl.int64)
    rk = tl.arange(0, DKP)
    cv = i_v * BV + tl.arange(0, BV)
    mk = rk < DK
    mv = cv < DV
    q_ptr = Q + b * s_qb + h * s_qh + rk
    k_ptr = K + b * s_kb + h * s_kh + rk
    v_ptr = V + b * s_vb + h * s_vh + cv
    f_ptr = GF + b * s_fb + h * s_fh + rk
    g_ptr = GB + b * s_gb + h * s_gh + rk
    o_ptr = OUT + pid.to(tl.int64) * L * DV + cv
    p_ptr = PART + pid.to(tl.int64) * L * DV + cv
    if HAS_INIT:
        init = INIT + (pid.to(tl.int64) * NSEG + seg) * DK * DV + rk[:, None] * DV + cv[None, :]
        m_state = mk[:, None] & mv[None, :]
        s_f = tl.load(init, mask=m_state, other=0.0)
        s_b = tl.load(init + tl.cast(STATES, tl.int64) * DK * DV, mask=m_state, other=0.0)
    else:
        s_f = tl.zeros((DKP, BV), dtype=tl.float32)
        s_b = tl.zeros((DKP, BV), dtype=tl.float32)
    first = seg * SEG
    n = tl.minimum(SEG, L - first)
    last = first + n - 1
    nqf, nkf, nvf, ngf = (
        _row(q_ptr, first, s_qt, mk),
        _row(k_ptr, first, s_kt, mk),
        _row(v_ptr, first, s_vt, mv),
        _row(f_ptr, first, s_ft, mk),
    )
    nqb, nkb = _row(q_ptr, last, s_qt, mk), _row(k_ptr, last, s_kt, mk)
    nvb, ngb = _row(v_ptr, last, s_vt, mv), _row(g_ptr, last, s_gt, mk)
    half = n // 2
    for i in range(0, n):
        tf = first + i
        tb = last - i
        qf, kf, vf, gf, qb, kb, vb, gb = nqf, nkf, nvf, ngf, nqb, nkb, nvb, ngb
        ahead = i < n - 1  # rows of step i + 1 (tokens tf + 1 and tb - 1)
        nqf, nkf = _row(q_ptr, tf + 1, s_qt, mk & ahead), _row(k_ptr, tf + 1, s_kt, mk & ahead)
        nvf, ngf = _row(v_ptr, tf + 1, s_vt, mv & ahead), _row(f_ptr, tf + 1, s_ft, mk & ahead)
        nqb, nkb = _row(q_ptr, tb - 1, s_qt, mk & ahead), _row(k_ptr, tb - 1, s_kt, mk & ahead)
        nvb, ngb = _row(v_ptr, tb - 1, s_vt, mv & ahead), _row(g_ptr, tb - 1, s_gt, mk & ahead)
        s_f = s_f * tl.exp(_f32(gf))[:, None] + _f32(kf)[:, None] * _f32(vf)[None, :]
        s_b = s_b * tl.exp(_f32(gb))[:, None] + _f32(kb)[:, None] * _f32(vb)[None, :]
        o_f = tl.sum(s_f * (_f32(qf) * scale)[:, None], 0)
        o_b = tl.sum(s_b * (_f32(qb) * scale)[:, None], 0)
        if i < half:  # first visits of tokens tf and tb: store the fp32 partials
            tl.store(p_ptr + tf * DV, o_f, mask=mv)
            tl.store(p_ptr + tb * DV, o_b, mask=mv)
        else:  # second visits: partial + this direction's term, written once
            if i == half:
                tl.debug_barrier()  # the partials are read back, possibly by other threads of the program
            two = tf != tb  # the middle token of an odd segment is visited by both scans in the same step
            p_f = tl.load(p_ptr + tf * DV, mask=mv & two, other=0.0)
            p_b = tl.load(p_ptr + tb * DV, mask=mv & two, other=0.0)
            tl.store(o_ptr + tf * DV, (p_f + o_f + tl.where(two, 0.0, o_b)).to(OUT.dtype.element_ty), mask=mv)
            tl.store(o_ptr + tb * DV, (p_b + o_b).to(OUT.dtype.element_ty), mask=mv & two)


@triton.jit
def _bgla_seg_state_kernel(
    X, Y, GL, GR, LOCAL, GSUM,
    H, L, STATES, SEG, NSEG,
    s_xb, s_xh, s_xt,
    s_yb, s_yh, s_yt,
    s_lb, s_lh, s_lt,
    s_rb, s_rh, s_rt,
    x_scale,
    DK: tl.constexpr, DV: tl.constexpr, DKP: tl.constexpr, BV: tl.constexpr, ADJOINT: tl.constexpr,
):  # fmt: skip
    """Each segment's own scans from zero, of rows ``x_t`` (dk) ⊗ ``y_t`` (dv) with per-token decays: the
    left-to-right one (gates ``GL``) into ``LOCAL[0, bh, seg]``, the right-to-left one (gates ``GR``) into
    ``LOCAL[1, bh, seg]``, fp32 ``(2, B·H, NSEG, DK, DV)``; ``GSUM[d, bh, seg]`` = the segment's summed gates of
    that direction, fp32 ``(2, B·H, NSEG, DK)`` (written by the first dv tile). ``STATES = B·H·NSEG``.

    States (``x, y = k, v``; ``GL, GR = g^f, g^b``): ``S = a_t ⊙ S + k_t v_t^T``, the forward and backward scans.
    ``ADJOINT`` (``x, y = s·q, dO``; ``GL, GR = g^b, g^f``): the carries of the backward kernel's adjoints,
    ``C = a_t ⊙ (C + s q_t dO_t^T)`` (the decay after the token: what crosses into the next token)."""
    pid = tl.program_id(0)
    i_v = tl.program_id(1)
    seg = tl.program_id(2)
    b = (pid // H).to(tl.int64)
    h = (pid % H).to(tl.int64)
    rk = tl.arange(0, DKP)
    cv = i_v * BV + tl.arange(0, BV)
    mk = rk < DK
    mv = cv < DV
    x_ptr = X + b * s_xb + h * s_xh + rk
    y_ptr = Y + b * s_yb + h * s_yh + cv
    l_ptr = GL + b * s_lb + h * s_lh + rk
    r_ptr = GR + b * s_rb + h * s_rh + rk
    first = seg * SEG
    n = tl.minimum(SEG, L - first)
    last = first + n - 1
    s_l = tl.zeros((DKP, BV), dtype=tl.float32)
    s_r = tl.zeros((DKP, BV), dtype=tl.float32)
    sum_l = tl.zeros((DKP,), dtype=tl.float32)
    sum_r = tl.zeros((DKP,), dtype=tl.float32)
    nxl, nyl, ngl = _row(x_ptr, first, s_xt, mk), _row(y_ptr, first, s_yt, mv), _row(l_ptr, first, s_lt, mk)
    nxr, nyr, ngr = _row(x_ptr, last, s_xt, mk), _row(y_ptr, last, s_yt, mv), _row(r_ptr, last, s_rt, mk)
    for i in range(0, n):
        tl_ = first + i
        tr = last - i
        xl, yl, gl, xr, yr, gr = _f32(nxl) * x_scale, _f32(nyl), _f32(ngl), _f32(nxr) * x_scale, _f32(nyr), _f32(ngr)
        ahead = i < n - 1
        nxl, nyl = _row(x_ptr, tl_ + 1, s_xt, mk & ahead), _row(y_ptr, tl_ + 1, s_yt, mv & ahead)
        ngl = _row(l_ptr, tl_ + 1, s_lt, mk & ahead)
        nxr, nyr = _row(x_ptr, tr - 1, s_xt, mk & ahead), _row(y_ptr, tr - 1, s_yt, mv & ahead)
        ngr = _row(r_ptr, tr - 1, s_rt, mk & ahead)
        if ADJOINT:
            s_l = (s_l + xl[:, None] * yl[None, :]) * tl.exp(gl)[:, None]
            s_r = (s_r + xr[:, None] * yr[None, :]) * tl.exp(gr)[:, None]
        else:
            s_l = s_l * tl.exp(gl)[:, None] + xl[:, None] * yl[None, :]
            s_r = s_r * tl.exp(gr)[:, None] + xr[:, None] * yr[None, :]
        sum_l += gl
        sum_r += gr
    row = pid.to(tl.int64) * NSEG + seg
    other = tl.cast(STATES, tl.int64)  # rows of one direction, B·H·NSEG
    local = LOCAL + row * DK * DV + rk[:, None] * DV + cv[None, :]
    m_state = mk[:, None] & mv[None, :]
    tl.store(local, s_l, mask=m_state)
    tl.store(local + other * DK * DV, s_r, mask=m_state)
    tl.store(GSUM + row * DK + rk, sum_l, mask=mk & (i_v == 0))
    tl.store(GSUM + (other + row) * DK + rk, sum_r, mask=mk & (i_v == 0))


@triton.jit
def _bgla_combine_kernel(
    LOCAL, GSUM, INIT, NSEG, BH,
    DK: tl.constexpr, DV: tl.constexpr, DKP: tl.constexpr, BV: tl.constexpr,
):  # fmt: skip
    """The states entering each segment: forward ``INIT[0, bh, j] = e^{GSUM_{j-1}} ⊙ INIT[0, bh, j-1] +
    LOCAL[0, bh, j-1]`` (0 for the first), backward the same from the last segment down (decays <= 1: exact)."""
    pid = tl.program_id(0)
    i_v = tl.program_id(1)
    direction = tl.program_id(2)  # 0: forward scan (segments left to right), 1: backward (right to left)
    rk = tl.arange(0, DKP)
    cv = i_v * BV + tl.arange(0, BV)
    mk = rk < DK
    m_state = mk[:, None] & (cv < DV)[None, :]
    base = (direction * BH + pid).to(tl.int64) * NSEG
    state = tl.zeros((DKP, BV), dtype=tl.float32)
    for i in range(0, NSEG):
        j = tl.where(direction == 0, i, NSEG - 1 - i)
        tile = (base + j) * DK * DV + rk[:, None] * DV + cv[None, :]
        tl.store(INIT + tile, state, mask=m_state)
        decay = tl.exp(tl.load(GSUM + (base + j) * DK + rk, mask=mk, other=0.0))
        state = state * decay[:, None] + tl.load(LOCAL + tile, mask=m_state, other=0.0)


@triton.jit
def _bgla_bwd_kernel(
    Q, K, V, GF, GB, DO, DQ, DK_, DV_, DGF, DGB, SQ, SK, SV, INIT, AINIT, RT,
    H, L, BH, SEG, NSEG,
    s_qb, s_qh, s_qt,
    s_kb, s_kh, s_kt,
    s_vb, s_vh, s_vt,
    s_fb, s_fh, s_ft,
    s_gb, s_gh, s_gt,
    s_ob, s_oh, s_ot,
    scale,
    DK: tl.constexpr, DV: tl.constexpr, DKP: tl.constexpr, BVH: tl.constexpr, BVL: tl.constexpr,
    HAS_INIT: tl.constexpr,
):  # fmt: skip
    """Gradients of one program's dv tile and segment ``program_id(2)`` (tokens ``[seg·SEG, seg·SEG + SEG) ∩
    [0, L)``; one segment of L tokens unless the host split the sequence): ``DQ, DK_, DGF, DGB``
    ``(NV, B, H, L, DK)`` per-tile partials (with one tile, NV = 1: the gradients themselves, in any dtype), ``DV_``
    ``(B, H, L, DV)`` (complete: the tile holds every dk row). ``SQ, SK`` (shaped like ``DQ``) and ``SV`` (like
    ``DV_``): fp32 scratch for sweep A's terms, read back by sweep B (they may be the outputs themselves when those
    are fp32). With ``HAS_INIT``: ``INIT`` (the states) and ``AINIT`` (the adjoints' carries) entering each
    segment from the left ``[0]`` and the right ``[1]``, fp32 ``(2, B·H, NSEG, DK, DV)`` (:func:`chained_states`),
    and ``RT`` fp32 ``(2, NV, B·H, NSEG, DK)`` receives the segment's sums of ``r^f`` and ``r^b`` (the host adds
    the later segments' sums to the gate gradients).

    The tile's ``BV = BVH · BVL`` columns are a 3-D ``(BVH, DKP, BVL)`` state: the compiler's default layout puts
    ``BVL`` columns and ``32 / BVL`` groups of dk rows on a warp's lanes, so the contractions over dv (dq, dk) add
    ``BVH`` values in-thread before ``log2(BVL)`` shuffles, and the one over dk (dv) before ``log2(32 / BVL)``
    (a ``(DKP, BV)`` tile with all lanes on dv took 5 shuffles per dk row for each of them: ~5x more)."""
    pid = tl.program_id(0)  # b·H + h on the first axis: up to 2^31 - 1 programs (the others allow 65535)
    i_v = tl.program_id(1)
    seg = tl.program_id(2)
    b = (pid // H).to(tl.int64)
    h = (pid % H).to(tl.int64)
    rk = tl.arange(0, DKP)
    cv = i_v * BVH * BVL + tl.arange(0, BVH)[:, None] * BVL + tl.arange(0, BVL)[None, :]  # (BVH, BVL)
    mk = rk < DK
    mv = cv < DV
    q_ptr = Q + b * s_qb + h * s_qh + rk
    k_ptr = K + b * s_kb + h * s_kh + rk
    v_ptr = V + b * s_vb + h * s_vh + cv
    f_ptr = GF + b * s_fb + h * s_fh + rk
    g_ptr = GB + b * s_gb + h * s_gh + rk
    do_ptr = DO + b * s_ob + h * s_oh + cv
    part = (i_v * BH + pid).to(tl.int64) * L * DK + rk
    dq_ptr = DQ + part
    dk_ptr = DK_ + part
    df_ptr = DGF + part
    db_ptr = DGB + part
    dv_ptr = DV_ + pid.to(tl.int64) * L * DV + cv
    sq_ptr = SQ + part
    sk_ptr = SK + part
    sv_ptr = SV + pid.to(tl.int64) * L * DV + cv

    first = seg * SEG
    n = tl.minimum(SEG, L - first)
    last = first + n - 1
    entry = (pid.to(tl.int64) * NSEG + seg) * DK * DV  # this segment's (DK, DV) entry states
    if HAS_INIT:  # entering from the left
        tile = rk[None, :, None] * DV + cv[:, None, :]
        m_state = mk[None, :, None] & mv[:, None, :]
        s_f = tl.load(INIT + entry + tile, mask=m_state, other=0.0)
        dh_b = tl.load(AINIT + entry + tile, mask=m_state, other=0.0)
    else:
        s_f = tl.zeros((BVH, DKP, BVL), dtype=tl.float32)
        dh_b = tl.zeros((BVH, DKP, BVL), dtype=tl.float32)

    # sweep A, t = first .. last: forward state -> dq^f; adjoint of the backward state -> dk^b, dv^b.
    # Each step's rows are loaded one step ahead (n*), as in the forward kernel.
    nq, nk, nv, ndo = (
        _row(q_ptr, first, s_qt, mk),
        _row(k_ptr, first, s_kt, mk),
        _row(v_ptr, first, s_vt, mv),
        _row(do_ptr, first, s_ot, mv),
    )
    nf, ng = _row(f_ptr, first, s_ft, mk), _row(g_ptr, first, s_gt, mk)
    for i in range(0, n):
        t = first + i
        q, k, v, do, a_f, a_b = _f32(nq), _f32(nk), _f32(nv), _f32(ndo), tl.exp(_f32(nf)), tl.exp(_f32(ng))
        ahead = i < n - 1
        nq, nk = _row(q_ptr, t + 1, s_qt, mk & ahead), _row(k_ptr, t + 1, s_kt, mk & ahead)
        nv, ndo = _row(v_ptr, t + 1, s_vt, mv & ahead), _row(do_ptr, t + 1, s_ot, mv & ahead)
        nf, ng = _row(f_ptr, t + 1, s_ft, mk & ahead), _row(g_ptr, t + 1, s_gt, mk & ahead)
        k3 = k[None, :, None]
        v3 = v[:, None, :]
        do3 = do[:, None, :]
        s_f = s_f * a_f[None, :, None] + k3 * v3
        dh_b += (q * scale)[None, :, None] * do3
        tl.store(sq_ptr + t * DK, tl.sum(tl.sum(s_f * do3, 0), 1) * scale, mask=mk)
        tl.store(sk_ptr + t * DK, tl.sum(tl.sum(dh_b * v3, 0), 1), mask=mk)
        tl.store(sv_ptr + t * DV, tl.sum(dh_b * k3, 1), mask=mv)
        dh_b = dh_b * a_b[None, :, None]  # dH^b_{t+1} receives a^b_t ⊙ dH^b_t
    tl.debug_barrier()  # sweep B reads the stored terms back, possibly from other threads of the program

    # sweep B, t = last .. first: backward state -> dq^b; adjoint of the forward state -> dk^f, dv^f; totals
    if HAS_INIT:  # entering from the right (loaded only now: two states live at a time, not four)
        entry += tl.cast(BH, tl.int64) * NSEG * DK * DV
        tile = rk[None, :, None] * DV + cv[:, None, :]
        m_state = mk[None, :, None] & mv[:, None, :]
        s_b = tl.load(INIT + entry + tile, mask=m_state, other=0.0)
        dh_f = tl.load(AINIT + entry + tile, mask=m_state, other=0.0)
    else:
        s_b = tl.zeros((BVH, DKP, BVL), dtype=tl.float32)
        dh_f = tl.zeros((BVH, DKP, BVL), dtype=tl.float32)
    acc_f = tl.zeros((DKP,), dtype=tl.float32)  # Σ_{s>=t} r^f_s (within the segment)
    acc_b = tl.zeros((DKP,), dtype=tl.float32)  # Σ_{s>t} r^b_s (within the segment)
    nq, nk, nv, ndo = (
        _row(q_ptr, last, s_qt, mk),
        _row(k_ptr, last, s_kt, mk),
        _row(v_ptr, last, s_vt, mv),
        _row(do_ptr, last, s_ot, mv),
    )
    nf, ng = _row(f_ptr, last, s_ft, mk), _row(g_ptr, last, s_gt, mk)
    ndq, ndk, ndv = _row(sq_ptr, last, DK, mk), _row(sk_ptr, last, DK, mk), _row(sv_ptr, last, DV, mv)
    for i in range(0, n):
        t = last - i
        q, k, v, do, a_f, a_b = _f32(nq), _f32(nk), _f32(nv), _f32(ndo), tl.exp(_f32(nf)), tl.exp(_f32(ng))
        dq_f, dk_b, dv_b = ndq, ndk, ndv
        ahead = i < n - 1
        nq, nk = _row(q_ptr, t - 1, s_qt, mk & ahead), _row(k_ptr, t - 1, s_kt, mk & ahead)
        nv, ndo = _row(v_ptr, t - 1, s_vt, mv & ahead), _row(do_ptr, t - 1, s_ot, mv & ahead)
        nf, ng = _row(f_ptr, t - 1, s_ft, mk & ahead), _row(g_ptr, t - 1, s_gt, mk & ahead)
        ndq, ndk, ndv = (
            _row(sq_ptr, t - 1, DK, mk & ahead),
            _row(sk_ptr, t - 1, DK, mk & ahead),
            _row(sv_ptr, t - 1, DV, mv & ahead),
        )
        k3 = k[None, :, None]
        v3 = v[:, None, :]
        do3 = do[:, None, :]
        s_b = s_b * a_b[None, :, None] + k3 * v3
        dh_f += (q * scale)[None, :, None] * do3
        dq_b = tl.sum(tl.sum(s_b * do3, 0), 1) * scale
        dk_f = tl.sum(tl.sum(dh_f * v3, 0), 1)
        dv_f = tl.sum(dh_f * k3, 1)
        dh_f = dh_f * a_f[None, :, None]  # dH^f_{t-1} receives a^f_t ⊙ dH^f_t
        acc_f += q * dq_f - k * dk_f
        out_f = tl.where(t == 0, 0.0, acc_f)  # exactly 0 (Σ_s r^f_s = 0) at t = 0
        tl.store(df_ptr + t * DK, out_f.to(DGF.dtype.element_ty), mask=mk)
        tl.store(db_ptr + t * DK, (-acc_b).to(DGB.dtype.element_ty), mask=mk)
        acc_b += q * dq_b - k * dk_b
        tl.store(dq_ptr + t * DK, (dq_f + dq_b).to(DQ.dtype.element_ty), mask=mk)
        tl.store(dk_ptr + t * DK, (dk_f + dk_b).to(DK_.dtype.element_ty), mask=mk)
        tl.store(dv_ptr + t * DV, (dv_f + dv_b).to(DV_.dtype.element_ty), mask=mv)
    if HAS_INIT:  # the segment's sums of r^f and r^b (this dv tile's part)
        rt = RT + ((i_v * BH + pid).to(tl.int64) * NSEG + seg) * DK + rk
        tl.store(rt, acc_f, mask=mk)
        tl.store(rt + tl.cast(BH, tl.int64) * tl.num_programs(1) * NSEG * DK, acc_b, mask=mk)


# (kind "fwd" | "bwd", DKP, DVP) -> (dv tile, num_warps): overrides of launch_config's defaults, e.g. set by
# `benchmarks/gla.py --tune` (which times the candidates on the GPU and prints the table to paste here). Empty: the
# defaults below were chosen from the sm_90 compile (registers, shuffles), not yet from GPU timings.
TUNING: dict[tuple[str, int, int], tuple[int, int]] = {}


def launch_config(dk: int, dv: int, backward: bool = False) -> dict:
    """Meta-parameters of a launch: ``DKP`` (dk padded to a power of two), the dv tile (forward ``BV``; backward
    ``BVH · BVL``) and ``num_warps``.

    The forward takes 32-column dv tiles (more programs: ViG-S @224 has B·H = 384 heads, 768 programs at dv = 64),
    one warp per 1024 state elements (a thread holds the whole dk column of its dv column: the q·S contraction is
    in-thread, no shuffles). The backward takes up to 64 columns (one tile at ViG's dv, so dq/dk/dg need no
    cross-tile sum) as ``BVL = 8`` lanes × ``BVH`` in-thread columns. :data:`TUNING` overrides both."""
    dkp = max(16, next_pow2(dk))
    dvp = max(16, next_pow2(dv))
    kind = "bwd" if backward else "fwd"
    bv = min(dvp, 64 if backward else 32)
    bv, warps = TUNING.get((kind, dkp, dvp), (bv, max(1, min(8, dkp * bv // 1024))))
    if not backward:
        return {"DKP": dkp, "BV": bv, "num_warps": warps}
    return {"DKP": dkp, "BVH": max(1, bv // 8), "BVL": min(8, bv), "num_warps": warps}


def _tile(cfg: dict) -> int:
    return cfg["BV"] if "BV" in cfg else cfg["BVH"] * cfg["BVL"]


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` with a unit last stride (copied only if not) and its per-token offsets within int32."""
    if t.stride(-1) != 1:
        t = t.contiguous()
    if (t.shape[2] - 1) * t.stride(2) + t.shape[3] >= 2**31:
        raise ValueError(f"a (batch, head) slice of {tuple(t.shape)} spans more than 2^31 elements")
    return t


def _strides(t: torch.Tensor) -> tuple[int, int, int]:
    return t.stride(0), t.stride(1), t.stride(2)


# Both kernels run a long sequence as segments in parallel where B·H·(dv tiles) programs alone would leave most of
# the GPU idle (ViG-T @1024: 3 heads x batch 8 x 2 tiles = 48 one-warp programs on 132 SMs, each 4096 steps long):
# a first pass scans each segment from a zero state (its local states and summed log-decays), a small kernel
# chains them into the state entering each segment (exact: decays <= 1), and the kernels start every segment from
# those. The extra passes repeat the recurrences once, so they pay only when programs are scarce.
MIN_SEGMENT = 128  # tokens per segment at least (shorter ones spend more on the extra pass than they gain)
PROGRAMS_PER_SM = 4  # the split aims at about this many forward programs per SM
FORCE_SEGMENT: int | None = None  # a fixed segment length (tests; benchmarks), regardless of the rule above
_SM_COUNT: dict[int, int] = {}


def segment_length(programs: int, length: int, device: torch.device) -> int:
    """Tokens per segment of the forward (``length``: no split) for ``programs`` = B·H·(dv tiles)."""
    if FORCE_SEGMENT is not None:
        return max(1, min(FORCE_SEGMENT, length))
    if device.type != "cuda":
        return length
    index = device.index if device.index is not None else torch.cuda.current_device()
    sms = _SM_COUNT.get(index)
    if sms is None:
        sms = _SM_COUNT[index] = torch.cuda.get_device_properties(index).multi_processor_count
    segments = min(-(-PROGRAMS_PER_SM * sms // programs), length // MIN_SEGMENT)
    return length if segments <= 1 else -(-length // segments)


def chained_states(
    x: torch.Tensor,
    y: torch.Tensor,
    g_left: torch.Tensor,
    g_right: torch.Tensor,
    x_scale: float,
    seg: int,
    nseg: int,
    adjoint: bool,
) -> torch.Tensor:
    """fp32 ``(2, B·H, NSEG, dk, dv)``: what enters each segment of ``seg`` tokens from the left (``[0]``) and from
    the right (``[1]``) of the scans of :func:`_bgla_seg_state_kernel` (the states for ``x, y = k, v``; the
    adjoints' carries for ``x, y = s·q, dO`` with ``adjoint``), chained by :func:`_bgla_combine_kernel`."""
    b, h, length, dk = x.shape
    dv = y.shape[-1]
    bh = b * h
    cfg = launch_config(dk, dv)
    warps = cfg.pop("num_warps")
    nv = -(-dv // cfg["BV"])
    local = torch.empty((2, bh, nseg, dk, dv), device=x.device, dtype=torch.float32)
    gsum = torch.empty((2, bh, nseg, dk), device=x.device, dtype=torch.float32)
    init = torch.empty_like(local)
    launch(
        _bgla_seg_state_kernel, (bh, nv, nseg),
        x, y, g_left, g_right, local, gsum,
        h, length, bh * nseg, seg, nseg,
        *_strides(x), *_strides(y), *_strides(g_left), *_strides(g_right),
        float(x_scale),
        DK=dk, DV=dv, **cfg, ADJOINT=adjoint, num_warps=warps, num_stages=1,
    )  # fmt: skip
    launch(
        _bgla_combine_kernel, (bh, nv, 2),
        local, gsum, init, nseg, bh,
        DK=dk, DV=dv, **cfg, num_warps=warps, num_stages=1,
    )  # fmt: skip
    return init


def forward(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, gk_fwd: torch.Tensor, gk_bwd: torch.Tensor, scale: float
) -> torch.Tensor:
    """``o^f + o^b``: ``q, k, gk_*`` ``(B, H, L, dk)``, ``v`` ``(B, H, L, dv)``; returns contiguous
    ``(B, H, L, dv)`` in ``v.dtype``."""
    q, k, v, gk_fwd, gk_bwd = (_rows(t) for t in (q, k, v, gk_fwd, gk_bwd))
    b, h, length, dk = q.shape
    dv = v.shape[-1]
    out = torch.empty((b, h, length, dv), device=v.device, dtype=v.dtype)
    if out.numel() == 0 or dk == 0:  # no programs to launch (or empty sums over dk: zeros)
        return out.zero_()
    part = out if out.dtype == torch.float32 else torch.empty_like(out, dtype=torch.float32)
    cfg = launch_config(dk, dv)
    warps = cfg.pop("num_warps")
    bh, nv = b * h, -(-dv // _tile(cfg))
    seg = segment_length(bh * nv, length, q.device)
    nseg = -(-length // seg)
    init = chained_states(k, v, gk_fwd, gk_bwd, 1.0, seg, nseg, adjoint=False) if nseg > 1 else part
    launch(
        _bgla_fwd_kernel, (bh, nv, nseg),
        q, k, v, gk_fwd, gk_bwd, out, part, init,
        h, length, bh * nseg, seg, nseg,
        *_strides(q), *_strides(k), *_strides(v), *_strides(gk_fwd), *_strides(gk_bwd),
        float(scale),
        DK=dk, DV=dv, **cfg, HAS_INIT=nseg > 1, num_warps=warps, num_stages=1,
    )  # fmt: skip
    return out


def backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    gk_fwd: torch.Tensor,
    gk_bwd: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv, dgk_fwd, dgk_bwd)`` for ``grad_out`` = dL/do, each contiguous in its input's dtype."""
    dtypes = [t.dtype for t in (q, k, v, gk_fwd, gk_bwd)]
    q, k, v, gk_fwd, gk_bwd, grad_out = (_rows(t) for t in (q, k, v, gk_fwd, gk_bwd, grad_out))
    b, h, length, dk = q.shape
    dv = v.shape[-1]
    if b * h * length * dk * dv == 0:  # nothing to launch: every gradient is an empty or all-zero sum
        return tuple(
            torch.zeros(t.shape, device=t.device, dtype=dt) for t, dt in zip((q, k, v, gk_fwd, gk_bwd), dtypes)
        )
    cfg = launch_config(dk, dv, backward=True)
    warps = cfg.pop("num_warps")
    bh, nv = b * h, -(-dv // _tile(cfg))
    seg = segment_length(bh * nv, length, q.device)
    nseg = -(-length // seg)
    if nseg > 1:  # the entry states add registers (ptxas spilled at dk 32/dv 64 on 2 warps); programs are few
        warps = min(8, 2 * warps)
    new = lambda shape, dtype: torch.empty(shape, device=q.device, dtype=dtype)
    f32 = torch.float32
    if nv == 1 and nseg == 1:  # the gradients written once, in their dtypes; sweep A's terms in fp32 scratch
        outs = [new((b, h, length, dk), dt) for dt in (dtypes[0], dtypes[1], dtypes[3], dtypes[4])]
        d_v = new((b, h, length, dv), dtypes[2])
        scratch = [t if t.dtype == f32 else new(t.shape, f32) for t in (outs[0], outs[1], d_v)]
    else:  # fp32 per-tile partials of dq, dk and the gate gradients, completed below; dv is complete per tile
        outs = list(new((4, nv, b, h, length, dk), f32).unbind(0))
        d_v = new((b, h, length, dv), f32)
        scratch = [outs[0], outs[1], d_v]
    if nseg > 1:
        init = chained_states(k, v, gk_fwd, gk_bwd, 1.0, seg, nseg, adjoint=False)
        carries = chained_states(q, grad_out, gk_bwd, gk_fwd, scale, seg, nseg, adjoint=True)
        sums = new((2, nv, bh, nseg, dk), f32)
    else:
        init = carries = sums = scratch[0]  # not read without HAS_INIT
    launch(
        _bgla_bwd_kernel, (bh, nv, nseg),
        q, k, v, gk_fwd, gk_bwd, grad_out, outs[0], outs[1], d_v, outs[2], outs[3], *scratch, init, carries, sums,
        h, length, bh, seg, nseg,
        *_strides(q), *_strides(k), *_strides(v), *_strides(gk_fwd), *_strides(gk_bwd), *_strides(grad_out),
        float(scale),
        DK=dk, DV=dv, **cfg, HAS_INIT=nseg > 1, num_warps=warps, num_stages=1,
    )  # fmt: skip
    if nv == 1 and nseg == 1:
        d_q, d_k, d_gf, d_gb = outs
        return d_q, d_k, d_v, d_gf, d_gb
    d_q, d_k, d_gf, d_gb = (t.sum(0) for t in outs)
    if nseg > 1:  # the gate gradients' suffix sums continue over the later segments
        r = sums.sum(1)  # (2, B·H, NSEG, dk): Σ r^f, Σ r^b per segment
        later = (r.flip(-2).cumsum(-2).flip(-2) - r)[:, :, torch.arange(length, device=q.device) // seg]
        d_gf += later[0].view(b, h, length, dk)
        d_gf[:, :, 0] = 0  # exactly 0: no decay acts before the first token
        d_gb -= later[1].view(b, h, length, dk)
    return tuple(g.to(dt) for g, dt in zip((d_q, d_k, d_v, d_gf, d_gb), dtypes))
