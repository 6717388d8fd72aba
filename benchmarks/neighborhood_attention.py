"""Benchmark of the 2-D neighborhood / window attention kernels against their peers (one run, ratios).

Peers (kernels.md §6): compiled FlexAttention with the equivalent ``mask_mod`` / ``score_mod`` (raster token
order, default 128×128 sparse blocks, block mask built once outside the timing), the naive reference
(``backend="torch"``, skipped where its gathered windows would not fit), full SDPA (dense attention over the
whole map: the upper reference), and for window attention timm's Swin path (roll + ``window_partition`` +
bias gather + SW-MSA mask + SDPA with ``attn_mask`` as timm's fused path + ``window_reverse`` + roll back),
plus that path's SDPA call alone.

Timing: ``triton.testing.do_bench`` medians (L2 flushed between repetitions); forward under ``no_grad``,
forward+backward with a fixed random upstream gradient. Where the eager time of ours, compiled Flex or timm's
path is under ``GRAPH_UNDER_MS`` (small shapes: host-bound on a slow host CPU), the same call is also timed
replayed in a CUDA graph (``do_bench_cudagraph``: GPU time without launch overhead; a failed capture is recorded
as ``n/a (...)``). Metrics: achieved GB/s and TFLOP/s from the compulsory bytes and useful FLOPs (kernels.md
§5.2: fwd 4·BHN·K·d FLOPs, e·BHN·4d bytes (+4 B LSE when training); bwd 8·BHN·K·d, e·BHN·8d + 8 B), % of the
physical limit max(F/798e12, B/3.0e12)/t (H100 machine); t is our CUDA-graph time where there is one.

Usage::

    python benchmarks/neighborhood_attention.py [--quick] [--out DIR] [--budget SECONDS] [--sweep [all|d128]]
        [--cases 0,3,CLEAR,6-11] [--time-limit SECONDS] [--resume neighborhood_attention.json|LOG [--redo 3]]
    python benchmarks/neighborhood_attention.py --render neighborhood_attention.json   # md + png only, no GPU

writes ``docs/benchmarks/neighborhood_attention.{md,json,png}`` (and the same files into ``--out``) after every
case, so a run stopped by a wall-clock limit keeps every finished case. ``--time-limit``: no case starts after
that many seconds; ``--budget``: no Flex compilation after that many seconds (the case still runs without Flex).
``--resume`` takes the rows of an earlier run (its JSON, or its stdout log: the ``[ t s] case (s s): {...}``
lines, with the environment from ``device.txt`` beside the log) and runs only the cases it lacks; every row keeps
the environment it was measured in, and the md lists the runs when they are more than one. The md is generated
down to a marker line; text after the marker (hand-written notes) is kept on every rewrite.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from linzoo.kernels import neighborhood_attention_2d, window_attention_2d
from linzoo.kernels.neighborhood_attention import _triton_na

PEAK_FLOPS = 798e12  # bf16 dense matmul measured on the H100 machine (kernels.md)
PEAK_BYTES = 3.0e12  # device copy bandwidth, read + write
REPO = Path(__file__).resolve().parents[1]
NAIVE_LIMIT_BYTES = 16e9  # skip the naive reference when its gathered windows need more than this
GRAPH_UNDER_MS = 3.0  # also time ours / flex / timm replayed in a CUDA graph when their eager time is under this


@dataclass
class Case:
    name: str
    op: str  # "na" or "window"
    b: int
    heads: int
    h: int
    w: int
    d: int
    k: int  # kernel size (na) or window size (window)
    rpb: bool = False
    shape: str = "square"
    extra: int = 0
    shift: int = 0
    quick: bool = True
    results: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return self.h * self.w

    def keys_per_query(self) -> float:
        if self.op == "na" and self.shape == "circle":
            radius = (self.k + 1) / 2
            r = self.k // 2
            disc = sum(1 for y in range(-r, r + 1) for x in range(-r, r + 1) if y * y + x * x < radius * radius)
            return disc + self.extra
        return self.k * self.k + self.extra

    def label(self) -> str:
        extra = f" +{self.extra} text" if self.extra else ""
        opt = (" rpb" if self.rpb else "") + (f" shift{self.shift}" if self.shift else "")
        kname = "r" if self.shape == "circle" else ("w" if self.op == "window" else "k")
        kval = (self.k + 1) // 2 if self.shape == "circle" else self.k
        return f"{self.name}: B{self.b} H{self.heads} {self.h}x{self.w} d{self.d} {kname}{kval}{opt}{extra}"


CASES = [  # in priority order: Flex is only compiled while the time budget lasts
    Case("NAT s1 @224", "na", 64, 2, 56, 56, 32, 7),
    Case("1024px s1", "na", 8, 2, 256, 256, 32, 7),
    Case("Swin-T s1", "window", 64, 3, 56, 56, 32, 7, rpb=True, shift=3),
    Case("CLEAR", "na", 1, 24, 128, 128, 128, 15, shape="circle", extra=512),
    Case("NAT s1 @224", "na", 64, 2, 56, 56, 32, 7, rpb=True),
    Case("1024px s2", "na", 8, 4, 128, 128, 64, 13),
    Case("L2ViT s1", "window", 64, 3, 56, 56, 32, 7),
    Case("NAT s2 @224", "na", 64, 4, 28, 28, 32, 7, rpb=True, quick=False),
    Case("1024px s1", "na", 8, 2, 256, 256, 32, 13, quick=False),
    Case("Swin-T s2", "window", 64, 6, 28, 28, 32, 7, rpb=True, shift=3, quick=False),
    Case("CLEAR", "na", 1, 24, 128, 128, 128, 31, shape="circle", extra=512, quick=False),
    Case("CLEAR", "na", 1, 24, 128, 128, 128, 63, shape="circle", extra=512, quick=False),
]


def bytes_and_flops(c: Case, e: int, mode: str) -> tuple[float, float]:
    bhn = c.b * c.heads * c.n
    ka = c.keys_per_query()
    extra_bytes = 2 * e * c.b * c.heads * c.extra * c.d
    fwd_b, fwd_f = e * bhn * 4 * c.d + extra_bytes, 4 * bhn * ka * c.d
    if mode == "fwd":
        return fwd_b, fwd_f
    return fwd_b + 4 * bhn + e * bhn * 8 * c.d + 8 * bhn + 2 * extra_bytes, fwd_f + 8 * bhn * ka * c.d


# ---------------------------------------------------------------------------------------------- peers
def flex_parts(c: Case, device, rpb):
    """mask_mod / score_mod of the case in raster token order (keys: map tokens, then extra tokens)."""
    H, W, k, n = c.h, c.w, c.k, c.n
    r = k // 2
    if c.op == "na":

        def mask_mod(b, h, q_idx, kv_idx):
            qy, qx = q_idx // W, q_idx % W
            ky, kx = kv_idx // W, kv_idx % W
            if c.shape == "circle":
                inside = 4 * ((ky - qy) * (ky - qy) + (kx - qx) * (kx - qx)) < (k + 1) * (k + 1)
                return inside | (kv_idx >= n) if c.extra else inside
            cy = qy.clamp(r, H - 1 - r)
            cx = qx.clamp(r, W - 1 - r)
            return ((ky - cy).abs() <= r) & ((kx - cx).abs() <= r)

        def score_mod(score, b, h, q_idx, kv_idx):
            qy, qx = q_idx // W, q_idx % W
            ky, kx = kv_idx // W, kv_idx % W
            # Flex evaluates score_mod on masked pairs of partial blocks too: keep the index in range.
            return score + rpb[h, (ky - qy + k - 1).clamp(0, 2 * k - 2), (kx - qx + k - 1).clamp(0, 2 * k - 2)]

    else:
        s = c.shift

        def local(idx):
            y = (idx // W - s) % H  # position in the rolled map
            x = (idx % W - s) % W
            region = ((y >= H - k).int() + (y >= H - s).int()) * 3 + (x >= W - k).int() + (x >= W - s).int()
            return y, x, region

        def mask_mod(b, h, q_idx, kv_idx):
            qy, qx, qr = local(q_idx)
            ky, kx, kr = local(kv_idx)
            same = (qy // k == ky // k) & (qx // k == kx // k)
            return same & (qr == kr) if s else same

        def score_mod(score, b, h, q_idx, kv_idx):
            qy, qx, _ = local(q_idx)
            ky, kx, _ = local(kv_idx)
            return score + rpb[h, ky % k - qy % k + k - 1, kx % k - qx % k + k - 1]

    return mask_mod, (score_mod if c.rpb else None)


def timm_window_path(c: Case, device):
    """timm's Swin window attention (fused_attn path) on channels-last q, k, v ``(B, H, W, heads·d)``."""
    from timm.models.swin_transformer import get_relative_position_index, window_partition, window_reverse

    k, s, heads = c.k, c.shift, c.heads
    index = get_relative_position_index(k, k).view(-1).to(device)

    def mask_for(device, dtype):
        if not s:
            return None
        img = torch.zeros(1, c.h, c.w, 1, device=device)
        cnt = 0
        for hs in (slice(0, -k), slice(-k, -s), slice(-s, None)):
            for ws in (slice(0, -k), slice(-k, -s), slice(-s, None)):
                img[:, hs, ws, :] = cnt
                cnt += 1
        mw = window_partition(img, (k, k)).view(-1, k * k)
        m = mw.unsqueeze(1) - mw.unsqueeze(2)
        return m.masked_fill(m != 0, -100.0).to(dtype)

    def prepare(table, device, dtype):
        mask = mask_for(device, dtype)
        return mask

    def core(qw, kw, vw, table, mask):
        n_w = qw.shape[0]
        attn_mask = None
        if table is not None:
            bias = table[index].view(k * k, k * k, heads).permute(2, 0, 1).to(qw.dtype)
            attn_mask = bias.unsqueeze(0).expand(n_w, -1, -1, -1)
        if mask is not None:
            nwin = mask.shape[0]
            m = mask.view(1, nwin, 1, k * k, k * k)
            attn_mask = (
                (attn_mask.view(-1, nwin, heads, k * k, k * k) + m).view(-1, heads, k * k, k * k)
                if attn_mask is not None
                else m.expand(n_w // nwin, -1, heads, -1, -1).reshape(-1, heads, k * k, k * k)
            )
        return F.scaled_dot_product_attention(qw, kw, vw, attn_mask=attn_mask)

    def split(t):  # (B, H, W, heads*d) -> (B*nW, heads, k*k, d)
        if s:
            t = torch.roll(t, (-s, -s), (1, 2))
        t = window_partition(t, (k, k)).view(-1, k * k, heads, c.d)
        return t.transpose(1, 2)

    def full(q, kk, v, table, mask):
        o = core(split(q), split(kk), split(v), table, mask)
        o = o.transpose(1, 2).reshape(-1, k, k, heads * c.d)
        o = window_reverse(o, (k, k), c.h, c.w)
        return torch.roll(o, (s, s), (1, 2)) if s else o

    return prepare, split, core, full


# ---------------------------------------------------------------------------------------------- timing
def timer(device):
    """``bench(fn, grad_to_none=None, quick=False, graph=False) -> ms``: ``triton.testing.do_bench`` median (L2
    flushed); with ``graph=True`` the median of ``fn`` replayed in a CUDA graph (``do_bench_cudagraph``: launch
    overhead removed, L2 not flushed), which raises when ``fn`` cannot be captured."""
    if device.type == "cuda":
        import triton

        def run(fn, grad_to_none=None, quick=False, graph=False):
            if graph:
                return triton.testing.do_bench_cudagraph(
                    fn, rep=20 if quick else 40, grad_to_none=grad_to_none, return_mode="median"
                )
            return triton.testing.do_bench(
                fn,
                warmup=10 if quick else 25,
                rep=40 if quick else 100,
                grad_to_none=grad_to_none,
                return_mode="median",
            )

        return run

    def run_cpu(fn, grad_to_none=None, quick=False, graph=False):
        if graph:
            raise RuntimeError("CUDA graphs need a CUDA device")
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return run_cpu


def why(exc: BaseException, width: int = 80) -> str:
    """``"TypeName: first line of the message"``, shortened to ``width`` characters of message."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:width]}"


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp(min=1e-12)).item()


def run_case(c: Case, device, dtype, bench, args, flex, deadline) -> None:
    torch.manual_seed(0)
    e = torch.finfo(dtype).bits // 8
    q, k, v = (torch.randn(c.b, c.heads, c.h, c.w, c.d, device=device, dtype=dtype) for _ in range(3))
    grad = torch.randn_like(q)
    rpb = None
    if c.rpb:
        shape = (c.heads, 2 * c.k - 1, 2 * c.k - 1)
        rpb = (0.5 * torch.randn(shape, device=device)).requires_grad_()
    extra_kv = None
    if c.extra:
        extra_kv = tuple(torch.randn(c.b, c.heads, c.extra, c.d, device=device, dtype=dtype) for _ in range(2))
    res = c.results
    leaves = [q, k, v] + ([rpb] if rpb is not None else []) + (list(extra_kv) if extra_kv else [])

    def ours(backend="triton"):
        if c.op == "na":
            return neighborhood_attention_2d(
                q, k, v, c.k, rpb=rpb, extra_kv=extra_kv, window_shape=c.shape, backend=backend
            )
        return window_attention_2d(q, k, v, c.k, shift=c.shift, rpb=rpb, backend=backend)

    def fwd_bwd(f):
        def run():
            f().backward(grad)

        return run

    def failed(key, mode, exc) -> None:  # a failing peer is reported, not hidden
        if isinstance(exc, torch.OutOfMemoryError):
            res[f"{key}/{mode}"] = "OOM"
            torch.cuda.empty_cache()
        else:
            res[f"{key}/{mode}"] = f"error: {why(exc)}"

    def graph_time(key, mode, fn, grad_to_none=None) -> None:
        """``{key}/{mode}/graph``: ``fn`` replayed in a CUDA graph when its eager time is under GRAPH_UNDER_MS (the
        host-bound range); a failed capture is recorded as ``n/a (...)``, never raised."""
        eager = res.get(f"{key}/{mode}")
        if not (isinstance(eager, float) and eager < GRAPH_UNDER_MS):
            return
        try:
            res[f"{key}/{mode}/graph"] = bench(fn, grad_to_none=grad_to_none, quick=args.quick, graph=True)
        except Exception as exc:
            res[f"{key}/{mode}/graph"] = f"n/a ({why(exc, 60)})"
            if device.type == "cuda":
                try:  # leave the device usable for the next timings
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
                except Exception as cleanup:  # a sticky CUDA error: the row says so, the next timings will show it
                    res[f"{key}/{mode}/graph"] += f"; cleanup failed: {why(cleanup, 40)}"

    def timed(key, f, with_bwd=True, graph=False):
        mode, out = "fwd", None
        try:
            with torch.no_grad():
                out = f()
                res[key + "/fwd"] = bench(f, quick=args.quick)
                if graph:
                    graph_time(key, "fwd", f)
            if with_bwd:
                mode = "fwdbwd"
                for t in leaves:
                    t.requires_grad_(True)
                res[key + "/fwdbwd"] = bench(fwd_bwd(f), grad_to_none=leaves, quick=args.quick)
                if graph:
                    graph_time(key, "fwdbwd", fwd_bwd(f), grad_to_none=leaves)
        except Exception as exc:
            failed(key, mode, exc)
        for t in leaves:
            t.requires_grad_(t is rpb)
        return out

    out_ours = timed("ours", ours, graph=True)
    # naive reference (gathers every window: memory-bound, huge)
    naive_bytes = 4 * c.b * c.heads * c.n * c.keys_per_query() * (2 * c.d + 4)
    if naive_bytes < NAIVE_LIMIT_BYTES:
        out_naive = timed("naive", lambda: ours("torch"), with_bwd=naive_bytes < NAIVE_LIMIT_BYTES / 2)
        if out_naive is not None and out_ours is not None:
            res["err_vs_naive"] = rel_err(out_ours, out_naive)
    else:
        res["naive/fwd"] = "n/a (memory)"

    # compiled FlexAttention
    if flex is not None and time.monotonic() < deadline:
        from torch.nn.attention.flex_attention import create_block_mask

        mode = "fwd"
        try:
            mask_mod, score_mod = flex_parts(c, device, rpb)
            kv_len = c.n + c.extra
            block_mask = create_block_mask(mask_mod, None, None, c.n, kv_len, device=device, _compile=True)
            qf = q.flatten(2, 3).detach()
            kf, vf = k.flatten(2, 3), v.flatten(2, 3)
            if extra_kv:
                kf = torch.cat((kf, extra_kv[0]), 2)
                vf = torch.cat((vf, extra_kv[1]), 2)
            kf, vf = kf.detach(), vf.detach()
            flex_leaves = [qf, kf, vf] + ([rpb] if rpb is not None else [])

            def flex_call():
                return flex(qf, kf, vf, score_mod=score_mod, block_mask=block_mask)

            t0 = time.monotonic()
            with torch.no_grad():
                out_flex = flex_call()
            res["flex_compile_s"] = time.monotonic() - t0
            if out_ours is not None:
                res["err_vs_flex"] = rel_err(out_ours, out_flex.view_as(out_ours))
            with torch.no_grad():  # as ours: forward without autograd (also when the bias requires grad)
                res["flex/fwd"] = bench(flex_call, quick=args.quick)
                graph_time("flex", "fwd", flex_call)
            mode = "fwdbwd"
            for t in flex_leaves:
                t.requires_grad_(True)
            t0 = time.monotonic()
            flex_call().backward(grad.flatten(2, 3))  # compile the backward outside the timing
            res["flex_compile_s"] += time.monotonic() - t0

            def flex_fwd_bwd():
                flex_call().backward(grad.flatten(2, 3))

            res["flex/fwdbwd"] = bench(flex_fwd_bwd, grad_to_none=flex_leaves, quick=args.quick)
            graph_time("flex", "fwdbwd", flex_fwd_bwd, grad_to_none=flex_leaves)
        except Exception as exc:
            failed("flex", mode, exc)
        if rpb is not None:
            rpb.requires_grad_(True)
    elif flex is not None:
        res["flex/fwd"] = "n/a (time budget)"

    # full SDPA over the map (+ extra tokens): the dense upper reference
    def sdpa():
        kf, vf = k.flatten(2, 3), v.flatten(2, 3)
        if extra_kv:
            kf, vf = torch.cat((kf, extra_kv[0]), 2), torch.cat((vf, extra_kv[1]), 2)
        return F.scaled_dot_product_attention(q.flatten(2, 3), kf, vf)

    timed("sdpa", sdpa, with_bwd=False)

    if c.op == "window" and c.h % c.k == 0 and c.w % c.k == 0:
        prepare, split, core, full = timm_window_path(c, device)
        table = None
        if rpb is not None:  # Swin's table layout for timm: ((2w-1)^2, heads), query - key
            from linzoo.kernels import rpb_to_swin_table

            table = rpb_to_swin_table(rpb.detach()).contiguous().requires_grad_()
        mask = prepare(table, device, dtype)
        qc, kc, vc = (t.permute(0, 2, 3, 1, 4).reshape(c.b, c.h, c.w, c.heads * c.d).contiguous() for t in (q, k, v))
        gc = grad.permute(0, 2, 3, 1, 4).reshape(c.b, c.h, c.w, c.heads * c.d).contiguous()
        timm_leaves = [qc, kc, vc] + ([table] if table is not None else [])

        def timm_full():
            return full(qc, kc, vc, table, mask)

        mode = "fwd"
        try:
            with torch.no_grad():
                out_timm = timm_full()
                if out_ours is not None:
                    res["err_vs_timm"] = rel_err(out_ours.permute(0, 2, 3, 1, 4).reshape_as(out_timm), out_timm)
                res["timm/fwd"] = bench(timm_full, quick=args.quick)
                graph_time("timm", "fwd", timm_full)
                qw, kw, vw = split(qc), split(kc), split(vc)
                res["timm_sdpa/fwd"] = bench(lambda: core(qw, kw, vw, table, mask), quick=args.quick)
            mode = "fwdbwd"
            for t in timm_leaves:
                t.requires_grad_(True)

            def timm_fwd_bwd():
                timm_full().backward(gc)

            res["timm/fwdbwd"] = bench(timm_fwd_bwd, grad_to_none=timm_leaves, quick=args.quick)
            graph_time("timm", "fwdbwd", timm_fwd_bwd, grad_to_none=timm_leaves)
        except Exception as exc:
            failed("timm", mode, exc)
    for mode in ("fwd", "fwdbwd"):
        nbytes, flops = bytes_and_flops(c, e, mode)
        for timing in (mode, mode + "/graph"):  # eager time, and the CUDA-graph time where there is one
            t = res.get(f"ours/{timing}")
            if isinstance(t, float):
                res[f"gbps/{timing}"] = nbytes / (t * 1e-3) / 1e9
                res[f"tflops/{timing}"] = flops / (t * 1e-3) / 1e12
                res[f"limit/{timing}"] = max(flops / PEAK_FLOPS, nbytes / PEAK_BYTES) / (t * 1e-3)
    if device.type == "cuda":
        torch.cuda.empty_cache()


# Tile sweeps (tuning aid). Rows: (TH, TW, BLOCK_N, num_warps, num_stages[, BLOCK_E]) per kernel kind.
SWEEP_SHAPES = {
    # name: [(B, heads, H, W, d, kernel, circle, extra keys)]
    "all": [
        (64, 2, 56, 56, 32, 7, False, 0),
        (8, 4, 128, 128, 64, 13, False, 0),
        (1, 24, 128, 128, 128, 15, False, 0),
    ],
    # d = 128: CLEAR r8 / r16 (kernel 2r - 1, circular) with the 512 text tokens (the forward's extra-key block
    # size too), and a square k13 map
    "d128": [
        (1, 24, 128, 128, 128, 15, True, 512),
        (1, 24, 128, 128, 128, 31, True, 512),
        (4, 8, 128, 128, 128, 13, False, 0),
    ],
}
SWEEP_CONFIGS = {
    "all": {
        "fwd": [(8, 8, 64, 4, 2), (8, 16, 64, 4, 2), (16, 8, 64, 4, 2), (8, 16, 32, 4, 3), (16, 16, 64, 8, 2)],
        "bwd": [(8, 8, 64, 4, 2), (8, 8, 32, 4, 2), (8, 16, 64, 8, 2), (4, 16, 64, 4, 2), (16, 8, 32, 8, 2)],
    },
    "d128": {
        "fwd": [
            (4, 16, 32, 4, 3, 64),
            (4, 16, 64, 4, 3, 64),
            (4, 16, 32, 4, 4, 64),
            (4, 16, 32, 4, 2, 64),
            (4, 16, 32, 4, 3, 128),
            (4, 32, 32, 4, 3, 64),
            (2, 32, 32, 4, 3, 64),
            (4, 8, 32, 4, 3, 64),
            (4, 16, 32, 8, 3, 64),
            (8, 16, 32, 4, 3, 32),
        ],
    },
}


def sweep(device, dtype, bench, which: str = "all") -> list[str]:
    """Tile-configuration sweep of our NA kernels on the shapes of ``SWEEP_SHAPES[which]``."""
    lines = ["| shape | kind | TH×TW, BLOCK_N, warps, stages[, BLOCK_E] | ms |", "|---|---|---|---|"]
    for b, heads, h, w, d, k, circle, extra in SWEEP_SHAPES[which]:
        q, kk, v = (torch.randn(b, heads, h, w, d, device=device, dtype=dtype) for _ in range(3))
        ke, ve = (torch.randn(b, heads, extra, d, device=device, dtype=dtype) if extra else None for _ in range(2))
        grad = torch.randn_like(q)
        fixed = (k, k, 1, 1, circle, d**-0.5, None, ke, ve)
        label = f"B{b} H{heads} {h}x{w} d{d} k{k}" + (" circle" if circle else "") + (f" +{extra}" if extra else "")
        for kind, cfgs in SWEEP_CONFIGS[which].items():
            for cfg in cfgs:
                th, tw, bn, nw, ns = cfg[:5]
                over = dict(TH=th, TW=tw, BLOCK_N=bn, num_warps=nw, num_stages=ns)
                if len(cfg) > 5:
                    over["BLOCK_E"] = cfg[5]
                _triton_na.CONFIG_OVERRIDE = {kind: over}
                row = f"| {label} | {kind} | {th}x{tw}, {bn}, {nw}, {ns}{f', {cfg[5]}' if len(cfg) > 5 else ''} |"
                try:
                    out, lse = _triton_na.forward(q, kk, v, *fixed)
                    if kind == "fwd":
                        t = bench(partial(_triton_na.forward, q, kk, v, *fixed), quick=True)
                    else:
                        t = bench(partial(_triton_na.backward, grad, q, kk, v, out, lse, *fixed), quick=True)
                    lines.append(f"{row} {t:.3f} |")
                except Exception as exc:
                    lines.append(f"{row} {type(exc).__name__} |")
                print(lines[-1], flush=True)
        _triton_na.CONFIG_OVERRIDE = {}
    return lines


# ---------------------------------------------------------------------------------------------- rows
# A row is one measured case: {"case": label, "index": position in CASES or None, "params": shape,
# "env": environment of the run that measured it, "seconds": wall time of the case, "results": {...}}.
# results: "{peer}/{fwd|fwdbwd}" -> ms or a reason string; "{ours|flex|timm}/{mode}/graph" -> CUDA-graph ms or
# "n/a (...)" (absent when the eager time was not under GRAPH_UNDER_MS, and in rows of runs before it existed);
# "{gbps|tflops|limit}/{mode}[/graph]" of ours on the eager / graph time; "err_vs_*", "flex_compile_s".
JSON_FORMAT = "linzoo-neighborhood-attention/1"
MARKER = (
    "<!-- generated by benchmarks/neighborhood_attention.py down to this line; "
    "the text below it is kept when the script rewrites this file -->"
)
GENERATED_HEADINGS = ("## Forward", "## Forward + backward", "## Tile sweep (our NA kernels, bf16)")
LOG_LINE = re.compile(r"^\[\s*(?P<at>[\d.]+) s\] (?P<label>.+?) \((?P<seconds>[\d.]+) s\): (?P<results>\{.*\})\s*$")
PARAMS = ("name", "op", "b", "heads", "h", "w", "d", "k", "rpb", "shape", "extra", "shift")


def case_index(label: str) -> int | None:
    return next((i for i, c in enumerate(CASES) if c.label() == label), None)


def make_row(index: int, env: dict, seconds: float) -> dict:
    c = CASES[index]
    params = {p: getattr(c, p) for p in PARAMS}
    return {"case": c.label(), "index": index, "params": params, "env": env, "seconds": seconds, "results": c.results}


def select_cases(spec: str | None, quick: bool) -> list[int]:
    """Indices of CASES to run. ``spec``: comma-separated indices (``3``), index ranges (``6-11``) or
    case-insensitive substrings of the case labels (``CLEAR``, ``rpb``); None: every case (quick ones under
    ``--quick``). An explicit ``spec`` is not filtered by ``--quick``. Order: as given, without repeats."""
    if spec is None:
        return [i for i, c in enumerate(CASES) if c.quick or not quick]
    chosen: list[int] = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if m:
            lo, hi = int(m[1]), int(m[2] or m[1])
            if not 0 <= lo <= hi < len(CASES):
                raise ValueError(f"--cases: index range {item!r} is outside 0-{len(CASES) - 1}")
            hits = list(range(lo, hi + 1))
        else:
            hits = [i for i, c in enumerate(CASES) if item.lower() in c.label().lower()]
            if not hits:
                labels = "; ".join(f"{i}: {c.label()}" for i, c in enumerate(CASES))
                raise ValueError(f"--cases: {item!r} is neither an index nor part of a case label ({labels})")
        chosen += [i for i in hits if i not in chosen]
    if not chosen:
        raise ValueError(f"--cases: {spec!r} selects no case")
    return chosen


def _env_from_device_txt(path: Path) -> dict:
    """Environment of a log of ``scripts/gpu_run.sh``: its ``device.txt`` (nvidia-smi line, versions line)."""
    env: dict = {"gpu": None, "torch": None, "triton": None, "cuda": None, "python": None}
    if path.is_file():
        lines = path.read_text().splitlines()
        if lines:
            env["gpu"] = lines[0].split(",")[0].strip()
        m = re.search(r"torch (\S+) triton (\S+)", path.read_text())
        if m:
            env["torch"], env["triton"] = m[1], m[2]
            cu = re.search(r"\+cu(\d+)(\d)$", m[1])
            env["cuda"] = f"{cu[1]}.{cu[2]}" if cu else None
    return env


def rows_from_log(path: Path) -> list[dict]:
    """Rows printed by an earlier (possibly killed) run: its ``[ t s] label (s s): {results}`` lines. The
    environment comes from ``device.txt`` beside the log when present (as ``scripts/gpu_run.sh`` leaves it)."""
    env = _env_from_device_txt(path.with_name("device.txt"))
    env.update(quick=None, started=None, seconds=0.0, source=f"log {path.name}")
    rows = {}
    for line in path.read_text(errors="replace").splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        results = ast.literal_eval(m["results"])
        if not isinstance(results, dict):
            raise ValueError(f"--resume: {path}: not a results dict in line {line[:80]!r}")
        env["seconds"] = max(env["seconds"], float(m["at"]))
        index = case_index(m["label"])
        params = {p: getattr(CASES[index], p) for p in PARAMS} if index is not None else None
        rows[m["label"]] = {
            "case": m["label"],
            "index": index,
            "params": params,
            "env": env,
            "seconds": float(m["seconds"]),
            "results": results,
        }
    # the log's last write is about the end of its last case: its start is that minus the run's elapsed time
    started = datetime.fromtimestamp(path.stat().st_mtime - env["seconds"], timezone.utc)
    env["started"] = started.isoformat(timespec="seconds")
    return list(rows.values())


def load_rows(path: Path) -> tuple[list[dict], dict | None]:
    """Rows (and the tile sweep, if any) of an earlier run: the ``.json`` this script writes, or its log."""
    if not path.is_file():
        raise ValueError(f"--resume/--render: {path} is not a file")
    text = path.read_text(errors="replace")
    if not text.lstrip().startswith("{"):
        rows = rows_from_log(path)
        if not rows:
            raise ValueError(f"--resume/--render: {path} is neither this script's JSON nor a log with result lines")
        return rows, None
    data = json.loads(text)
    if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
        raise ValueError(f"--resume/--render: {path} is not a JSON of this script (expected format {JSON_FORMAT!r})")
    rows = data.get("rows", [])
    for row in rows:
        missing = {"case", "env", "results"} - set(row)
        if missing:
            raise ValueError(f"--resume/--render: {path}: a row lacks {sorted(missing)}")
        row["index"] = case_index(row["case"])  # CASES may have been reordered since
    return rows, data.get("sweep")


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """Rows by case label (``new`` wins), in CASES order; rows of cases no longer in CASES go last."""
    by_label = {r["case"]: r for r in old}
    by_label.update({r["case"]: r for r in new})
    return sorted(by_label.values(), key=lambda r: len(CASES) if r.get("index") is None else r["index"])


def run_key(env: dict) -> tuple:
    return tuple(env.get(k) for k in ("id", "source", "started", "gpu", "torch", "triton"))


def runs_of(rows: list[dict]) -> list[dict]:
    """Distinct environments of the rows, in table order."""
    runs: dict = {}
    for r in rows:
        runs.setdefault(run_key(r["env"]), r["env"])
    return list(runs.values())


def env_text(env: dict) -> str:
    parts = [env.get("gpu") or "unknown GPU"]
    parts += [f"{name} {env[key]}" for key, name in (("torch", "torch"), ("triton", "triton"), ("cuda", "CUDA"))]
    parts += [f"Python {env['python']}"] if env.get("python") else []
    parts = [p for p in parts if not p.endswith(" None")]
    if env.get("quick") is not None:
        parts.append("quick run" if env["quick"] else "full run")
    if env.get("seconds"):
        parts.append(f"cases took {env['seconds']:.0f} s")
    if env.get("started"):
        parts.append(f"started {env['started']}")
    if env.get("source", "run") != "run":
        parts.append(f"recovered from {env['source']}")
    return ", ".join(parts)


def compact(indices: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (the ``--cases`` syntax)."""
    out: list[str] = []
    for i in sorted(indices):
        if out and i == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{i}"
        else:
            out.append(str(i))
    return ",".join(out)


# ---------------------------------------------------------------------------------------------- report
def fmt(x, digits=3):
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if x is None:
        return "—"
    return str(x) if len(str(x)) <= 40 else str(x)[:37] + "..."


def speedup(res: dict, peer: str, timing: str) -> float | None:
    """Peer time / our time for ``timing`` (``fwd``, ``fwdbwd``, ``fwd/graph``, ...) where both are numbers."""
    a, b = res.get(f"ours/{timing}"), res.get(f"{peer}/{timing}")
    return b / a if isinstance(a, float) and isinstance(b, float) else None


def ratio(res, peer, mode):
    """``2.86×``, with the ratio of the CUDA-graph times where both have one: ``2.86× [1.20× graph]``."""
    eager, graph = speedup(res, peer, mode), speedup(res, peer, mode + "/graph")
    cell = f"{eager:.2f}×" if eager is not None else "—"
    return cell + (f" [{graph:.2f}× graph]" if graph is not None else "")


def timing_cell(res: dict, key: str, mode: str) -> str:
    """Eager time, then the CUDA-graph time when measured (``1.153 [0.490 graph]``) or ``[graph n/a]``."""
    cell = fmt(res.get(f"{key}/{mode}"))
    graph = res.get(f"{key}/{mode}/graph")
    if isinstance(graph, float):
        return f"{cell} [{graph:.3f} graph]"
    return cell + (" [graph n/a]" if graph is not None else "")


def metric(res: dict, name: str, mode: str) -> float | None:
    """``gbps`` / ``tflops`` / ``limit`` of our op on its CUDA-graph time where there is one, else eager."""
    value = res.get(f"{name}/{mode}/graph", res.get(f"{name}/{mode}"))
    return value if isinstance(value, float) else None


def pct(x: float | None) -> str:
    return fmt(100 * x if x is not None else None, 0)


def report(rows: list[dict], sweep_data: dict | None, plot_name: str | None) -> str:
    """The generated part of ``neighborhood_attention.md`` from the rows (each with its run's environment)."""
    runs = runs_of(rows)
    run_no = {run_key(env): n + 1 for n, env in enumerate(runs)}
    multi = len(runs) > 1
    if multi:
        how = (
            f"in {len(runs)} runs (`--resume`), each in one process on one GPU: the ratios within a row share "
            "clocks; rows of different runs (column *run*) were measured in different processes"
        )
        env_lines = ["Environments:", ""] + [f"- run {n + 1}: {env_text(env)}" for n, env in enumerate(runs)]
    else:
        how = "in one process on one GPU (all ratios share clocks)"
        env_lines = [f"Environment: {env_text(runs[0]) if runs else 'no case measured'}"]
    out = [
        "# Neighborhood and window attention: benchmark",
        "",
        f"Produced by `python benchmarks/neighborhood_attention.py` {how}. Times are `triton.testing.do_bench` "
        "medians in ms (L2 flushed), bf16, forward under `no_grad`; fwd+bwd = forward + backward with a random "
        "upstream gradient. `[x graph]` = the same call replayed in a CUDA graph (`triton.testing.do_bench_cudagraph`"
        " median: host launch overhead removed, i.e. GPU time; L2 not flushed), measured for ours, flex and timm "
        f"where the eager time is under {GRAPH_UNDER_MS:g} ms; `[graph n/a]` = the capture failed (reasons below "
        "the tables). Ratios are peer time / our time (> 1: ours faster), `[…× graph]` the same on the CUDA-graph "
        "times where both have one. GB/s and TFLOP/s use the compulsory bytes and useful FLOPs of kernels.md §5.2; "
        '"% limit" = max(FLOPs/798 TFLOP/s, bytes/3.0 TB/s) / time. GB/s, TFLOP/s and % limit use our CUDA-graph '
        "time where there is one, else the eager time.",
        "",
        *env_lines,
        "",
        "Peers: **flex** = `torch.compile(flex_attention)` with the equivalent `mask_mod` (+ `score_mod` for the "
        "bias, the bias tensor captured and receiving its gradient), raster token order, 128×128 sparse blocks, "
        "block mask built once outside the timing; **naive** = our PyTorch reference (gathers every window); "
        "**sdpa** = dense `F.scaled_dot_product_attention` over the whole map (+ text tokens), forward only; "
        "**timm** = timm's Swin window path (roll + `window_partition` + bias gather + SW-MSA mask + SDPA with "
        "`attn_mask`, as timm's fused path, + `window_reverse` + roll back) on channels-last q, k, v; "
        "**timm sdpa** = that path's SDPA call alone on pre-partitioned windows (its lower bound).",
        "",
        "## Forward",
        "",
        "| case | ours ms | flex ms | naive ms | sdpa ms | timm ms | timm sdpa ms | vs flex | vs timm | vs timm sdpa "
        "| vs sdpa | GB/s | TFLOP/s | % limit | rel. err |" + (" run |" if multi else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if multi else ""),
    ]
    for row in rows:
        r = row["results"]
        run = f" {run_no[run_key(row['env'])]} |" if multi else ""
        err = r.get("err_vs_flex", r.get("err_vs_naive", r.get("err_vs_timm")))
        out.append(
            f"| {row['case']} | {timing_cell(r, 'ours', 'fwd')} | {timing_cell(r, 'flex', 'fwd')} "
            f"| {fmt(r.get('naive/fwd'))} | {fmt(r.get('sdpa/fwd'))} | {timing_cell(r, 'timm', 'fwd')} "
            f"| {fmt(r.get('timm_sdpa/fwd'))} | {ratio(r, 'flex', 'fwd')} | {ratio(r, 'timm', 'fwd')} "
            f"| {ratio(r, 'timm_sdpa', 'fwd')} | {ratio(r, 'sdpa', 'fwd')} | {fmt(metric(r, 'gbps', 'fwd'), 0)} "
            f"| {fmt(metric(r, 'tflops', 'fwd'), 1)} | {pct(metric(r, 'limit', 'fwd'))} | {fmt(err, 4)} |{run}"
        )
    out += [
        "",
        "## Forward + backward",
        "",
        "| case | ours ms | flex ms | naive ms | timm ms | vs flex | vs timm | vs naive | GB/s | TFLOP/s | % limit |"
        + (" run |" if multi else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if multi else ""),
    ]
    for row in rows:
        r = row["results"]
        run = f" {run_no[run_key(row['env'])]} |" if multi else ""
        out.append(
            f"| {row['case']} | {timing_cell(r, 'ours', 'fwdbwd')} | {timing_cell(r, 'flex', 'fwdbwd')} "
            f"| {fmt(r.get('naive/fwdbwd'))} | {timing_cell(r, 'timm', 'fwdbwd')} | {ratio(r, 'flex', 'fwdbwd')} "
            f"| {ratio(r, 'timm', 'fwdbwd')} | {ratio(r, 'naive', 'fwdbwd')} | {fmt(metric(r, 'gbps', 'fwdbwd'), 0)} "
            f"| {fmt(metric(r, 'tflops', 'fwdbwd'), 1)} | {pct(metric(r, 'limit', 'fwdbwd'))} |{run}"
        )
    compile_s = [
        f"{row['case']}: {row['results']['flex_compile_s']:.0f} s"
        for row in rows
        if isinstance(row["results"].get("flex_compile_s"), float)
    ]
    if compile_s:
        out += ["", "Flex compile + block-mask time (outside the timings): " + "; ".join(compile_s) + "."]
    no_graph = [
        f"{row['case']}, {key.split('/')[0]} {key.split('/')[1].replace('fwdbwd', 'fwd+bwd')}: {value}"
        for row in rows
        for key, value in row["results"].items()
        if key.endswith("/graph") and isinstance(value, str)
    ]
    if no_graph:
        out += ["", "CUDA-graph capture failed (eager time only): " + "; ".join(no_graph) + "."]
    present = {row["case"] for row in rows}
    missing = [i for i, c in enumerate(CASES) if c.label() not in present]
    if missing:
        out += [
            "",
            f"Not measured yet ({len(missing)} of {len(CASES)} cases; add them with "
            f"`--resume neighborhood_attention.json --cases {compact(missing)}`): "
            + "; ".join(CASES[i].label() for i in missing)
            + ".",
        ]
    if plot_name:
        out += ["", f"![speed-ups]({plot_name})"]
    if sweep_data and sweep_data.get("lines"):
        note = f" (run {run_no[run_key(sweep_data['env'])]})" if multi and run_key(sweep_data["env"]) in run_no else ""
        out += ["", f"## Tile sweep (our NA kernels, bf16){note}", ""] + list(sweep_data["lines"])
    return "\n".join(out) + "\n"


def kept_tail(text: str) -> str:
    """Hand-written text of an existing md: what follows MARKER; in a file written before the marker existed,
    everything from the first ``## `` heading that the script does not generate."""
    if MARKER in text:
        return text.split(MARKER, 1)[1].lstrip("\n")
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.startswith("## ") and line.rstrip("\n") not in GENERATED_HEADINGS:
            return "".join(lines[i:])
    return ""


def _write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data)
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)  # a run killed mid-write keeps the previous complete file


def write_outputs(folder: Path, rows: list[dict], sweep_data: dict | None, with_plot: bool = True) -> Path:
    """Write ``neighborhood_attention.{json,md,png}`` into ``folder``, keeping the md's hand-written tail."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"format": JSON_FORMAT, "rows": rows, "sweep": sweep_data}
    _write_atomic(folder / "neighborhood_attention.json", json.dumps(doc, indent=1, default=str) + "\n")
    has_plot = with_plot and bool(rows) and plot(rows, folder / "neighborhood_attention.png")
    md = folder / "neighborhood_attention.md"
    tail = kept_tail(md.read_text()) if md.is_file() else ""
    text = report(rows, sweep_data, "neighborhood_attention.png" if has_plot else None)
    _write_atomic(md, text + "\n" + MARKER + "\n" + ("\n" + tail if tail else ""))
    return md


def plot(rows: list[dict], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, series = [], {"fwd vs flex": [], "fwd+bwd vs flex": [], "fwd vs timm": [], "fwd+bwd vs timm": []}
    for row in rows:
        r = row["results"]
        head, _, shape = row["case"].partition(": ")
        labels.append(head + "\n" + shape.replace(" d", "\nd", 1))

        def val(peer, mode, r=r):  # on the CUDA-graph times where both have one (the tables show both)
            return speedup(r, peer, mode + "/graph") or speedup(r, peer, mode) or 0.0

        series["fwd vs flex"].append(val("flex", "fwd"))
        series["fwd+bwd vs flex"].append(val("flex", "fwdbwd"))
        series["fwd vs timm"].append(val("timm", "fwd"))
        series["fwd+bwd vs timm"].append(val("timm", "fwdbwd"))
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(rows)), 5))
    width = 0.2
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([x + (i - 1.5) * width for x in range(len(rows))], vals, width, label=name)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=6)
    ax.set_ylabel("speed-up of ours (peer time / our time;\nCUDA-graph times where both have one)")
    ax.set_title("2-D neighborhood / window attention, bf16")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes (unless --cases) and repetitions")
    parser.add_argument("--out", type=Path, default=None, help="also write the md/json/png into this folder")
    parser.add_argument("--budget", type=float, default=140.0, help="seconds after which Flex is no longer compiled")
    parser.add_argument(
        "--time-limit", type=float, default=None, help="seconds after which no new case starts (the done ones are kept)"
    )
    parser.add_argument(
        "--cases", default=None, help="comma-separated indices, ranges (6-11) or label substrings of the cases to run"
    )
    parser.add_argument(
        "--resume", type=Path, default=None, help="JSON (or log) of an earlier run: keep its rows, skip those cases"
    )
    parser.add_argument(
        "--redo",
        default=None,
        help="with --resume: cases (as --cases) measured again although the resumed table has them (after a change)",
    )
    parser.add_argument(
        "--render", type=Path, default=None, help="only re-write the md/json/png from this JSON (or log); no GPU"
    )
    parser.add_argument(
        "--sweep",
        nargs="?",
        const="all",
        choices=sorted(SWEEP_SHAPES),
        default=None,
        help="append a tile-configuration sweep (all: three square shapes; d128: the forward at d = 128, CLEAR r8/r16)",
    )
    parser.add_argument("--no-docs", action="store_true", help="do not write into docs/benchmarks")
    args = parser.parse_args(argv)

    targets = [] if args.no_docs else [REPO / "docs" / "benchmarks"]
    if args.out is not None:
        targets.append(args.out)
    try:
        order = select_cases(args.cases, args.quick)
        redo = set(select_cases(args.redo, args.quick)) if args.redo else set()
        rows, sweep_data = load_rows(args.render or args.resume) if (args.render or args.resume) else ([], None)
    except ValueError as exc:
        parser.error(str(exc))
    rows = merge_rows([], rows)
    if args.render is not None:
        for folder in targets:
            print(f"wrote {write_outputs(folder, rows, sweep_data)} ({len(rows)} rows)")
        return 0
    done = {r["case"] for r in rows}
    todo = [i for i in order if CASES[i].label() not in done or i in redo]
    todo += [i for i in sorted(redo) if i not in todo]
    if args.resume is not None:
        print(f"resumed {len(rows)} rows from {args.resume}; to run: {compact(todo) or 'none'}", flush=True)

    if not torch.cuda.is_available():
        print(
            "neighborhood_attention benchmark: needs a CUDA device (without one only --render works)", file=sys.stderr
        )
        return 1
    device, dtype = torch.device("cuda"), torch.bfloat16
    start = time.monotonic()
    deadline = start + args.budget
    torch._dynamo.config.cache_size_limit = 256
    try:
        from torch.nn.attention.flex_attention import flex_attention

        flex = torch.compile(flex_attention, dynamic=False)
    except Exception as exc:
        print(f"FlexAttention unavailable: {exc}", file=sys.stderr)
        flex = None
    bench = timer(device)
    env = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "quick": args.quick,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": 0.0,
        "source": "run",
        "id": uuid.uuid4().hex[:12],  # tells two runs apart even when everything else matches
    }

    def write() -> None:
        for folder in targets:
            write_outputs(folder, rows, sweep_data)

    def over_time() -> bool:
        return args.time_limit is not None and time.monotonic() - start >= args.time_limit

    for n, i in enumerate(todo):
        if over_time():
            print(f"time limit ({args.time_limit:.0f} s): not started: {compact(todo[n:])}", flush=True)
            break
        c = CASES[i]
        t0 = time.monotonic()
        run_case(c, device, dtype, bench, args, flex, deadline)
        env["seconds"] = time.monotonic() - start
        rows = merge_rows(rows, [make_row(i, env, time.monotonic() - t0)])
        write()  # after every case: a run killed later keeps every finished case
        print(f"[{env['seconds']:6.1f} s] {c.label()} ({time.monotonic() - t0:.1f} s): {c.results}", flush=True)
    write()
    if args.sweep and over_time():
        print("time limit: tile sweep skipped", flush=True)
    elif args.sweep:
        sweep_data = {"lines": sweep(device, dtype, bench, args.sweep), "env": env}
        write()
    for folder in targets:
        print(f"wrote {folder / 'neighborhood_attention.md'} ({len(rows)} rows)")
    print(report(rows, sweep_data, None))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "16")
    raise SystemExit(main())
