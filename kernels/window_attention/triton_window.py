"""Fused Triton kernels for Swin-style window attention (forward and backward).

One program handles one window of one head: it gathers the window's tokens straight from the
``(B, heads, H, W, D)`` map (padding, cyclic shift and window partition are index arithmetic: window slot
(y', x') of the rolled, padded map reads map position ((y' + s_h) mod H_p, (x' + s_w) mod W_p), zero when
that is padding), computes the whole ``w²×w²`` score tile in registers (windows of up to 128 tokens,
padded to a power of two), adds the gathered relative position bias and Swin's region mask, and writes
the output back to the map layout — no partition / roll / pad copies and no score matrix in memory.

The backward recomputes the window's probabilities (the whole row is in the tile, so no saved
statistics are needed) and produces dq, dk and dv in one pass (a window's keys are only seen by the
window's own queries, so there are no cross-program reductions). For the bias gradient each program
loops over a strided chunk of windows of one head, accumulates dS (w²×w², fp32) in registers and writes
it once; the host sums the chunks and scatters the pairs onto the ``(heads, 2w_h − 1, 2w_w − 1)`` table.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .._backend import cdiv, next_pow2
from .._launch import launch
from ..neighborhood_attention.triton_na import _dot, _precision

LOG2E = 1.4426950408889634
MAX_CHUNKS = 1024  # programs per head in the backward when a bias gradient is accumulated


@triton.jit
def _window_tokens(win, nwx, H, W, Hp, Wp, SH, SW, WH: tl.constexpr, WW: tl.constexpr, BT: tl.constexpr):
    """Slots of window ``win``: (map token index, slot valid, slot is a real token, ly, lx, region id)."""
    wy = win // nwx
    wx = win % nwx
    t = tl.arange(0, BT)
    t_ok = t < WH * WW
    ly = t // WW
    lx = t % WW
    ys = wy * WH + ly
    xs = wx * WW + lx
    y = (ys + SH) % Hp
    x = (xs + SW) % Wp
    real = t_ok & (y < H) & (x < W)
    ry = tl.where(SH > 0, (ys >= Hp - WH).to(tl.int32) + (ys >= Hp - SH).to(tl.int32), 0)
    rx = tl.where(SW > 0, (xs >= Wp - WW).to(tl.int32) + (xs >= Wp - SW).to(tl.int32), 0)
    return y * W + x, t_ok, real, ly, lx, ry * 3 + rx


@triton.jit
def _window_probs(q, k, head, ly, lx, region, t_ok, real, RPB, qk_scale,
                  WH: tl.constexpr, WW: tl.constexpr, HAS_RPB: tl.constexpr, PAD_ZEROS: tl.constexpr,
                  PREC: tl.constexpr):  # fmt: skip
    s = _dot(q, tl.trans(k), PREC) * qk_scale
    allowed = t_ok[:, None] & (region[:, None] == region[None, :])
    if PAD_ZEROS:
        allowed = allowed & t_ok[None, :]
    else:
        allowed = allowed & real[None, :]
    if HAS_RPB:
        rel = (ly[None, :] - ly[:, None] + WH - 1) * (2 * WW - 1) + lx[None, :] - lx[:, None] + WW - 1
        s += tl.load(RPB + head * (2 * WH - 1) * (2 * WW - 1) + rel, mask=allowed, other=0.0) * 1.4426950408889634
    s = tl.where(allowed, s, float("-inf"))
    m = tl.max(s, 1)
    m = tl.where(m == float("-inf"), 0.0, m)
    p = tl.exp2(s - m[:, None])
    denom = tl.sum(p, 1)
    return p / tl.where(denom == 0.0, 1.0, denom)[:, None]


@triton.jit
def _win_fwd_kernel(
    Q, K, V, Out, RPB,
    H, W, Hp, Wp, nwx, n_win_img, n_heads, SH, SW, qk_scale,
    WH: tl.constexpr, WW: tl.constexpr, HAS_RPB: tl.constexpr, PAD_ZEROS: tl.constexpr, BT: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    head = tl.program_id(1)
    b = pid // n_win_img
    bh = (b * n_heads + head).to(tl.int64)
    n_tok = H * W
    tok, t_ok, real, ly, lx, region = _window_tokens(pid % n_win_img, nwx, H, W, Hp, Wp, SH, SW, WH, WW, BT)
    offs_d = tl.arange(0, BD)
    offs_dv = tl.arange(0, BDV)
    dmask = real[:, None] & (offs_d < D)[None, :]
    dvmask = real[:, None] & (offs_dv < DV)[None, :]
    q = tl.load(Q + bh * n_tok * D + tok[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
    k = tl.load(K + bh * n_tok * D + tok[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
    v = tl.load(V + bh * n_tok * DV + tok[:, None] * DV + offs_dv[None, :], mask=dvmask, other=0.0)
    p = _window_probs(q, k, head, ly, lx, region, t_ok, real, RPB, qk_scale, WH, WW, HAS_RPB, PAD_ZEROS, PREC)
    out = _dot(p.to(v.dtype), v, PREC)
    tl.store(Out + bh * n_tok * DV + tok[:, None] * DV + offs_dv[None, :], out.to(Out.dtype.element_ty), mask=dvmask)


@triton.jit
def _win_bwd_kernel(
    Q, K, V, DO, DQ, DK, DV_, RPB, DRPB,
    H, W, Hp, Wp, nwx, n_win_img, n_windows, n_chunks, n_heads, SH, SW, qk_scale, scale,
    WH: tl.constexpr, WW: tl.constexpr, HAS_RPB: tl.constexpr, PAD_ZEROS: tl.constexpr, BT: tl.constexpr,
    D: tl.constexpr, DV: tl.constexpr, BD: tl.constexpr, BDV: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    chunk = tl.program_id(0)
    head = tl.program_id(1)
    n_tok = H * W
    offs_d = tl.arange(0, BD)
    offs_dv = tl.arange(0, BDV)
    ds_sum = tl.zeros([BT, BT], tl.float32)
    for win in range(chunk, n_windows, n_chunks):
        b = win // n_win_img
        bh = (b * n_heads + head).to(tl.int64)
        tok, t_ok, real, ly, lx, region = _window_tokens(win % n_win_img, nwx, H, W, Hp, Wp, SH, SW, WH, WW, BT)
        dmask = real[:, None] & (offs_d < D)[None, :]
        dvmask = real[:, None] & (offs_dv < DV)[None, :]
        q = tl.load(Q + bh * n_tok * D + tok[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
        k = tl.load(K + bh * n_tok * D + tok[:, None] * D + offs_d[None, :], mask=dmask, other=0.0)
        v = tl.load(V + bh * n_tok * DV + tok[:, None] * DV + offs_dv[None, :], mask=dvmask, other=0.0)
        do = tl.load(DO + bh * n_tok * DV + tok[:, None] * DV + offs_dv[None, :], mask=dvmask, other=0.0)
        p = _window_probs(q, k, head, ly, lx, region, t_ok, real, RPB, qk_scale, WH, WW, HAS_RPB, PAD_ZEROS, PREC)
        dv = _dot(tl.trans(p.to(do.dtype)), do, PREC)
        dp = _dot(do, tl.trans(v), PREC)
        ds = p * (dp - tl.sum(p * dp, 1)[:, None])
        dq = _dot(ds.to(k.dtype), k, PREC) * scale
        dk = _dot(tl.trans(ds.to(q.dtype)), q, PREC) * scale
        tl.store(DQ + bh * n_tok * D + tok[:, None] * D + offs_d[None, :], dq.to(DQ.dtype.element_ty), mask=dmask)
        tl.store(DK + bh * n_tok * D + tok[:, None] * D + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=dmask)
        tl.store(DV_ + bh * n_tok * DV + tok[:, None] * DV + offs_dv[None, :], dv.to(DV_.dtype.element_ty), mask=dvmask)
        if HAS_RPB:
            ds_sum += ds
    if HAS_RPB:
        t = tl.arange(0, BT)
        tl.store(DRPB + ((chunk * n_heads + head) * BT + t[:, None]) * BT + t[None, :], ds_sum)


def _launch_args(q, v, wh, ww):
    bsz, heads, height, width, dim = q.shape
    hp, wp = cdiv(height, wh) * wh, cdiv(width, ww) * ww
    dims = dict(
        D=dim,
        DV=v.shape[-1],
        BD=max(16, next_pow2(dim)),
        BDV=max(16, next_pow2(v.shape[-1])),
        PREC=_precision(q.dtype),
        BT=max(16, next_pow2(wh * ww)),
    )
    num_warps = 4 if dims["BT"] * max(dims["BD"], dims["BDV"]) <= 64 * 64 else 8
    return hp, wp, dims, num_warps


def bwd_num_stages(dims: dict) -> int:
    """Pipeline depth of the backward's loop over windows: 3 stages of 128-wide heads need 240 KiB of shared
    memory (over the H100's 227 KiB per block; measured by ahead-of-time compiles), 2 need 160 KiB."""
    return 3 if max(dims["BD"], dims["BDV"]) < 128 else 2


def forward(q, k, v, wh, ww, sh, sw, scale, pad_zeros, rpb):
    """Launch the forward kernel; returns the ``(B, heads, H, W, Dv)`` output."""
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    bsz, heads, height, width, _ = q.shape
    hp, wp, dims, num_warps = _launch_args(q, v, wh, ww)
    out = torch.empty((*q.shape[:-1], v.shape[-1]), device=q.device, dtype=q.dtype)
    n_win_img = (hp // wh) * (wp // ww)
    rpb_t = rpb.detach().float().contiguous() if rpb is not None else q
    launch(_win_fwd_kernel, (bsz * n_win_img, heads),
        q, k, v, out, rpb_t,
        height, width, hp, wp, wp // ww, n_win_img, heads, sh, sw, scale * LOG2E,
        WH=wh, WW=ww, HAS_RPB=rpb is not None, PAD_ZEROS=pad_zeros, num_warps=num_warps, **dims,
    )  # fmt: skip
    return out


def backward(grad_out, q, k, v, wh, ww, sh, sw, scale, pad_zeros, rpb):
    """Launch the backward kernel; returns ``(dq, dk, dv, drpb)`` (``drpb`` empty without bias)."""
    q, k, v, grad_out = (t.contiguous() for t in (q, k, v, grad_out))
    bsz, heads, height, width, _ = q.shape
    hp, wp, dims, num_warps = _launch_args(q, v, wh, ww)
    n_win_img = (hp // wh) * (wp // ww)
    n_windows = bsz * n_win_img
    has_rpb = rpb is not None
    n_chunks = min(n_windows, MAX_CHUNKS) if has_rpb else n_windows
    bt = dims["BT"]
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    rpb_t = rpb.detach().float().contiguous() if has_rpb else q
    part = torch.empty((n_chunks, heads, bt, bt), device=q.device, dtype=torch.float32) if has_rpb else q
    launch(_win_bwd_kernel, (n_chunks, heads),
        q, k, v, grad_out, dq, dk, dv, rpb_t, part,
        height, width, hp, wp, wp // ww, n_win_img, n_windows, n_chunks, heads, sh, sw, scale * LOG2E, scale,
        WH=wh, WW=ww, HAS_RPB=has_rpb, PAD_ZEROS=pad_zeros, num_warps=num_warps, num_stages=bwd_num_stages(dims),
        **dims,
    )  # fmt: skip
    if not has_rpb:
        return dq, dk, dv, q.new_empty(0)
    tokens = wh * ww
    pairs = part.sum(0)[:, :tokens, :tokens].reshape(heads, tokens * tokens)
    ly = torch.arange(wh, device=q.device).repeat_interleave(ww)
    lx = torch.arange(ww, device=q.device).repeat(wh)
    rel = ((ly[None, :] - ly[:, None] + wh - 1) * (2 * ww - 1) + lx[None, :] - lx[:, None] + ww - 1).flatten()
    drpb = torch.zeros(heads, (2 * wh - 1) * (2 * ww - 1), device=q.device, dtype=torch.float32)
    drpb.index_add_(1, rel, pairs)
    return dq, dk, dv, drpb.view(heads, 2 * wh - 1, 2 * ww - 1).to(rpb.dtype)
