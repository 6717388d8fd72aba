"""Benchmark of the 2-D neighborhood / window attention kernels against their peers (one run, ratios).

Peers (kernels.md §6): compiled FlexAttention with the equivalent ``mask_mod`` / ``score_mod`` (raster token
order, default 128×128 sparse blocks, block mask built once outside the timing), the naive reference
(``backend="torch"``, skipped where its gathered windows would not fit), full SDPA (dense attention over the
whole map: the upper reference), and for window attention timm's Swin path (roll + ``window_partition`` +
bias gather + SW-MSA mask + SDPA with ``attn_mask`` as timm's fused path + ``window_reverse`` + roll back),
plus that path's SDPA call alone.

Timing: ``triton.testing.do_bench`` medians (L2 flushed between repetitions); forward under ``no_grad``,
forward+backward with a fixed random upstream gradient. Metrics: achieved GB/s and TFLOP/s from the
compulsory bytes and useful FLOPs (kernels.md §5.2: fwd 4·BHN·K·d FLOPs, e·BHN·4d bytes (+4 B LSE when
training); bwd 8·BHN·K·d, e·BHN·8d + 8 B), % of the physical limit max(F/798e12, B/3.0e12)/t (H100 machine).

Usage::

    python benchmarks/neighborhood_attention.py [--quick] [--out DIR] [--budget SECONDS] [--sweep]

writes ``docs/benchmarks/neighborhood_attention.md`` and ``.png`` (and the same files into ``--out``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass, field
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
    if device.type == "cuda":
        import triton

        def run(fn, grad_to_none=None, quick=False):
            return triton.testing.do_bench(
                fn,
                warmup=10 if quick else 25,
                rep=40 if quick else 100,
                grad_to_none=grad_to_none,
                return_mode="median",
            )

        return run

    def run_cpu(fn, grad_to_none=None, quick=False):
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return run_cpu


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
            res[f"{key}/{mode}"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"

    def timed(key, f, with_bwd=True):
        mode, out = "fwd", None
        try:
            with torch.no_grad():
                out = f()
                res[key + "/fwd"] = bench(f, quick=args.quick)
            if with_bwd:
                mode = "fwdbwd"
                for t in leaves:
                    t.requires_grad_(True)
                res[key + "/fwdbwd"] = bench(fwd_bwd(f), grad_to_none=leaves, quick=args.quick)
        except Exception as exc:
            failed(key, mode, exc)
        for t in leaves:
            t.requires_grad_(t is rpb)
        return out

    out_ours = timed("ours", ours)
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
            res["flex/fwd"] = bench(flex_call, quick=args.quick)
            mode = "fwdbwd"
            for t in flex_leaves:
                t.requires_grad_(True)
            t0 = time.monotonic()
            flex_call().backward(grad.flatten(2, 3))  # compile the backward outside the timing
            res["flex_compile_s"] += time.monotonic() - t0
            res["flex/fwdbwd"] = bench(
                lambda: flex_call().backward(grad.flatten(2, 3)), grad_to_none=flex_leaves, quick=args.quick
            )
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
                qw, kw, vw = split(qc), split(kc), split(vc)
                res["timm_sdpa/fwd"] = bench(lambda: core(qw, kw, vw, table, mask), quick=args.quick)
            mode = "fwdbwd"
            for t in timm_leaves:
                t.requires_grad_(True)
            res["timm/fwdbwd"] = bench(lambda: timm_full().backward(gc), grad_to_none=timm_leaves, quick=args.quick)
        except Exception as exc:
            failed("timm", mode, exc)
    for mode in ("fwd", "fwdbwd"):
        t = res.get(f"ours/{mode}")
        if isinstance(t, float):
            nbytes, flops = bytes_and_flops(c, e, mode)
            res[f"gbps/{mode}"] = nbytes / (t * 1e-3) / 1e9
            res[f"tflops/{mode}"] = flops / (t * 1e-3) / 1e12
            res[f"limit/{mode}"] = max(flops / PEAK_FLOPS, nbytes / PEAK_BYTES) / (t * 1e-3)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sweep(device, dtype, bench) -> list[str]:
    """Tile-configuration sweep for the forward and backward NA kernels on three shapes (tuning aid)."""
    lines = ["| shape | kind | TH×TW, BLOCK_N, warps, stages | ms |", "|---|---|---|---|"]
    shapes = [(64, 2, 56, 56, 32, 7), (8, 4, 128, 128, 64, 13), (1, 24, 128, 128, 128, 15)]
    fwd_cfgs = [(8, 8, 64, 4, 2), (8, 16, 64, 4, 2), (16, 8, 64, 4, 2), (8, 16, 32, 4, 3), (16, 16, 64, 8, 2)]
    bwd_cfgs = [(8, 8, 64, 4, 2), (8, 8, 32, 4, 2), (8, 16, 64, 8, 2), (4, 16, 64, 4, 2), (16, 8, 32, 8, 2)]
    for b, heads, h, w, d, k in shapes:
        q, kk, v = (torch.randn(b, heads, h, w, d, device=device, dtype=dtype) for _ in range(3))
        grad = torch.randn_like(q)
        fixed = (k, k, 1, 1, False, d**-0.5, None, None, None)
        for kind, cfgs in (("fwd", fwd_cfgs), ("bwd", bwd_cfgs)):
            for th, tw, bn, nw, ns in cfgs:
                _triton_na.CONFIG_OVERRIDE = {kind: dict(TH=th, TW=tw, BLOCK_N=bn, num_warps=nw, num_stages=ns)}
                row = f"| B{b} H{heads} {h}x{w} d{d} k{k} | {kind} | {th}x{tw}, {bn}, {nw}, {ns} |"
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


# ---------------------------------------------------------------------------------------------- report
def fmt(x, digits=3):
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if x is None:
        return "—"
    return str(x) if len(str(x)) <= 40 else str(x)[:37] + "..."


def ratio(res, peer, mode):
    a, b = res.get(f"ours/{mode}"), res.get(f"{peer}/{mode}")
    return f"{b / a:.2f}×" if isinstance(a, float) and isinstance(b, float) else "—"


def report(cases, env, sweep_lines, plot_name) -> str:
    out = [
        "# Neighborhood and window attention: benchmark",
        "",
        "Produced by `python benchmarks/neighborhood_attention.py` in one process on one GPU "
        "(all ratios share clocks). Times are `triton.testing.do_bench` medians in ms, bf16, "
        "forward under `no_grad`; fwd+bwd = forward + backward with a random upstream gradient. "
        "Ratios are peer time / our time (> 1: ours faster). GB/s and TFLOP/s use the compulsory bytes and "
        'useful FLOPs of kernels.md §5.2; "% limit" = max(FLOPs/798 TFLOP/s, bytes/3.0 TB/s) / time.',
        "",
        f"Environment: {env}",
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
        "| vs sdpa | GB/s | TFLOP/s | % limit | rel. err |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        r = c.results
        err = r.get("err_vs_flex", r.get("err_vs_naive", r.get("err_vs_timm")))
        out.append(
            f"| {c.label()} | {fmt(r.get('ours/fwd'))} | {fmt(r.get('flex/fwd'))} | {fmt(r.get('naive/fwd'))} "
            f"| {fmt(r.get('sdpa/fwd'))} | {fmt(r.get('timm/fwd'))} | {fmt(r.get('timm_sdpa/fwd'))} "
            f"| {ratio(r, 'flex', 'fwd')} | {ratio(r, 'timm', 'fwd')} | {ratio(r, 'timm_sdpa', 'fwd')} "
            f"| {ratio(r, 'sdpa', 'fwd')} | {fmt(r.get('gbps/fwd'), 0)} | {fmt(r.get('tflops/fwd'), 1)} "
            f"| {fmt(100 * r['limit/fwd'] if 'limit/fwd' in r else None, 0)} | {fmt(err, 4)} |"
        )
    out += [
        "",
        "## Forward + backward",
        "",
        "| case | ours ms | flex ms | naive ms | timm ms | vs flex | vs timm | vs naive | GB/s | TFLOP/s | % limit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cases:
        r = c.results
        out.append(
            f"| {c.label()} | {fmt(r.get('ours/fwdbwd'))} | {fmt(r.get('flex/fwdbwd'))} | {fmt(r.get('naive/fwdbwd'))} "
            f"| {fmt(r.get('timm/fwdbwd'))} | {ratio(r, 'flex', 'fwdbwd')} | {ratio(r, 'timm', 'fwdbwd')} "
            f"| {ratio(r, 'naive', 'fwdbwd')} | {fmt(r.get('gbps/fwdbwd'), 0)} | {fmt(r.get('tflops/fwdbwd'), 1)} "
            f"| {fmt(100 * r['limit/fwdbwd'] if 'limit/fwdbwd' in r else None, 0)} |"
        )
    compile_s = [f"{c.label()}: {c.results['flex_compile_s']:.0f} s" for c in cases if "flex_compile_s" in c.results]
    if compile_s:
        out += ["", "Flex compile + block-mask time (outside the timings): " + "; ".join(compile_s) + "."]
    if plot_name:
        out += ["", f"![speed-ups]({plot_name})"]
    if sweep_lines:
        out += ["", "## Tile sweep (our NA kernels, bf16)", ""] + sweep_lines
    return "\n".join(out) + "\n"


def plot(cases, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels, series = [], {"fwd vs flex": [], "fwd+bwd vs flex": [], "fwd vs timm": [], "fwd+bwd vs timm": []}
    for c in cases:
        r = c.results
        labels.append(c.label().split(": ")[0] + "\n" + c.label().split(": ")[1].replace(" d", "\nd", 1))

        def val(peer, mode, r=r):
            a, b = r.get(f"ours/{mode}"), r.get(f"{peer}/{mode}")
            return b / a if isinstance(a, float) and isinstance(b, float) else 0.0

        series["fwd vs flex"].append(val("flex", "fwd"))
        series["fwd+bwd vs flex"].append(val("flex", "fwdbwd"))
        series["fwd vs timm"].append(val("timm", "fwd"))
        series["fwd+bwd vs timm"].append(val("timm", "fwdbwd"))
    fig, ax = plt.subplots(figsize=(max(8, 1.3 * len(cases)), 5))
    width = 0.2
    for i, (name, vals) in enumerate(series.items()):
        ax.bar([x + (i - 1.5) * width for x in range(len(cases))], vals, width, label=name)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(labels, fontsize=6)
    ax.set_ylabel("speed-up of ours (peer time / our time)")
    ax.set_title("2-D neighborhood / window attention, bf16")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repetitions")
    parser.add_argument("--out", type=Path, default=None, help="also write the md/png into this folder")
    parser.add_argument("--budget", type=float, default=140.0, help="seconds after which Flex is no longer compiled")
    parser.add_argument("--sweep", action="store_true", help="append a tile-configuration sweep")
    parser.add_argument("--no-docs", action="store_true", help="do not write into docs/benchmarks")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available():
        print("neighborhood_attention benchmark: needs a CUDA device", file=sys.stderr)
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
    cases = [c for c in CASES if c.quick or not args.quick]
    for c in cases:
        t0 = time.monotonic()
        run_case(c, device, dtype, bench, args, flex, deadline)
        print(
            f"[{time.monotonic() - start:6.1f} s] {c.label()} ({time.monotonic() - t0:.1f} s): {c.results}", flush=True
        )
    env = (
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton "
        f"{__import__('triton').__version__}, CUDA {torch.version.cuda}, Python {platform.python_version()}, "
        f"{'quick' if args.quick else 'full'} run, cases took {time.monotonic() - start:.0f} s"
    )
    targets = []
    if not args.no_docs:
        targets.append(REPO / "docs" / "benchmarks")
    if args.out is not None:
        targets.append(args.out)

    def write(sweep_lines):
        for folder in targets:
            folder.mkdir(parents=True, exist_ok=True)
            has_plot = plot(cases, folder / "neighborhood_attention.png")
            text = report(cases, env, sweep_lines, "neighborhood_attention.png" if has_plot else None)
            (folder / "neighborhood_attention.md").write_text(text)
            print(f"wrote {folder / 'neighborhood_attention.md'}")

    write([])  # written before the (optional, slow) sweep so a time-out keeps the tables
    sweep_lines = sweep(device, dtype, bench) if args.sweep else []
    if sweep_lines:
        write(sweep_lines)
    print(report(cases, env, sweep_lines, None))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "16")
    raise SystemExit(main())
