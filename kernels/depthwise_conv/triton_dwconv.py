"""Fused Triton kernels for the depthwise convolution ``y = act(DWConv(x) + bias) + residual`` (stride 1).

Forward (:func:`_dw_conv_kernel`): one program computes a ``TH × TW`` tile of output pixels for ``BLOCK_C``
channels of one image: for each of the ``KH·KW`` taps it loads the shifted input tile (zero outside the map; the
tile's neighbours hit in L1/L2, so HBM sees each input about once) and accumulates ``w[c, u, v] · x`` in fp32,
then applies bias, GELU and the residual in the epilogue and stores once. Strides are arguments: channels-last
maps (the fast case: a tap loads ``BLOCK_C`` contiguous channels per pixel) and NCHW maps both work.

Backward, with ``dz = dy ⊙ act'(z)`` (``z`` recomputed from ``x`` by the forward kernel in ``GRAD`` mode, so the
forward saves only its input):

- ``dx`` is the same kernel on ``dz`` with the filter flipped and padding ``d·(K − 1) − p``
  (``dx[i] = Σ_u w[u] · dz[i − d·u + p]``);
- ``dw[c, u, v] = Σ_{b, i, j} dz[b, c, i, j] · x[b, c, i + d·u − p_h, j + d·v − p_w]`` and ``dbias = Σ dz``
  (:func:`_dw_weight_grad_kernel`): a program takes one filter row ``u``, ``BLOCK_C`` channels and a run of
  tiles, accumulates the products elementwise and reduces them over pixels once; the host adds the programs'
  partial sums (no atomics).
"""

from __future__ import annotations

import weakref

import torch
import triton
import triton.language as tl

from .._backend import cdiv, next_pow2
from .._launch import launch

SQRT1_2 = tl.constexpr(0.7071067811865476)  # kernels read module globals only as constexprs
INV_SQRT_2PI = tl.constexpr(0.3989422804014327)
# programs of the weight-gradient kernel (about 16 per SM of an H100: its tile loop is latency-bound) and so the
# number of partial sums the host adds
WEIGHT_GRAD_PROGRAMS = 2048


@triton.jit
def _tile_coords(pid, TILES, TILES_W, TH: tl.constexpr, TW: tl.constexpr):
    """Image index and output (row, column) of each pixel of tile ``pid`` (tiles numbered image by image)."""
    b = pid // TILES
    t = pid % TILES
    p = tl.arange(0, TH * TW)
    oh = (t // TILES_W) * TH + p // TW
    ow = (t % TILES_W) * TW + p % TW
    return b, oh, ow


@triton.jit
def _dw_conv_kernel(
    x_ptr, w_ptr, bias_ptr, aux_ptr, y_ptr,  # w: (KH·KW, C) taps-major
    C, H, W, HO, WO, TILES, TILES_W, C_BLOCKS,
    sxb, sxc, sxh, sxw,
    sab, sac, sah, saw,
    syb, syc, syh, syw,
    PH, PW, DIL,
    KH: tl.constexpr, KW: tl.constexpr, FLIP: tl.constexpr,
    HAS_BIAS: tl.constexpr, GELU: tl.constexpr, HAS_AUX: tl.constexpr, GRAD: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """``y = act(Σ_taps w·x + bias) + aux`` on one tile; with ``GRAD``: ``y = aux ⊙ act'(z)`` (aux = dy)."""
    # channel blocks vary fastest: the programs reading one pixel row's channels run together (DRAM/L2 locality)
    pid = tl.program_id(0)
    b, oh, ow = _tile_coords(pid // C_BLOCKS, TILES, TILES_W, TH, TW)
    c = (pid % C_BLOCKS) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    out_ok = ((oh < HO) & (ow < WO))[:, None] & c_ok[None, :]
    x_img = x_ptr + b.to(tl.int64) * sxb + c[None, :] * sxc
    acc = tl.zeros((TH * TW, BLOCK_C), dtype=tl.float32)
    for u in range(KH):  # a runtime loop over rows: unrolling all KH·KW taps spills registers (ptxas)
        ih = oh + u * DIL - PH
        row_ok = (ih >= 0) & (ih < H)
        for v in tl.static_range(KW):
            iw = ow + v * DIL - PW
            ok = (row_ok & (iw >= 0) & (iw < W))[:, None] & c_ok[None, :]
            xv = tl.load(x_img + ih[:, None] * sxh + iw[:, None] * sxw, mask=ok, other=0.0)
            if FLIP:
                tap = KH * KW - 1 - (u * KW + v)
            else:
                tap = u * KW + v
            wv = tl.load(w_ptr + tap * C + c, mask=c_ok, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    if HAS_BIAS:
        acc += tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    if HAS_AUX:
        aux = tl.load(
            aux_ptr + b.to(tl.int64) * sab + c[None, :] * sac + oh[:, None] * sah + ow[:, None] * saw,
            mask=out_ok,
            other=0.0,
        ).to(tl.float32)
    if GRAD:  # dz = dy * act'(z)
        if GELU:
            cdf = 0.5 * (1.0 + tl.erf(acc * SQRT1_2))
            acc = aux * (cdf + acc * tl.exp(-0.5 * acc * acc) * INV_SQRT_2PI)
        else:
            acc = aux
    else:
        if GELU:
            acc = 0.5 * acc * (1.0 + tl.erf(acc * SQRT1_2))
        if HAS_AUX:
            acc += aux
    y = y_ptr + b.to(tl.int64) * syb + c[None, :] * syc + oh[:, None] * syh + ow[:, None] * syw
    tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=out_ok)


@triton.jit
def _dw_weight_grad_kernel(
    x_ptr, g_ptr, part_ptr,
    C, H, W, HO, WO, TILES, TILES_W, TOTAL_TILES, TILES_PER_PROG,
    sxb, sxc, sxh, sxw,
    sgb, sgc, sgh, sgw,
    PH, PW, DIL,
    KH: tl.constexpr, KW: tl.constexpr, KW_PAD: tl.constexpr,
    TH: tl.constexpr, TW: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Filter row ``u`` (``program_id(0) mod KH``) of the partial ``dw`` over tiles ``[pid·n, (pid+1)·n)`` into
    ``part[pid, u·KW + v, c]`` (and ``dbias`` into row ``KH·KW`` from the ``u = 0`` programs); ``g`` is ``dz``.

    The products ``g · x_shifted`` accumulate elementwise in a ``(KW, pixels, channels)`` register tile across the
    tiles and are reduced over pixels once at the end (no per-tile cross-warp reductions)."""
    u = tl.program_id(0) % KH  # filter rows, then channel blocks, vary fastest: programs sharing tiles run together
    pid = tl.program_id(1)
    c = (tl.program_id(0) // KH) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    v = tl.arange(0, KW_PAD)
    acc = tl.zeros((KW_PAD, TH * TW, BLOCK_C), dtype=tl.float32)
    acc_bias = tl.zeros((TH * TW, BLOCK_C), dtype=tl.float32)
    for i in range(TILES_PER_PROG):
        tile = pid * TILES_PER_PROG + i
        b, oh, ow = _tile_coords(tile, TILES, TILES_W, TH, TW)
        g_ok = ((oh < HO) & (ow < WO) & (tile < TOTAL_TILES))[:, None] & c_ok[None, :]
        g_img = g_ptr + b.to(tl.int64) * sgb + c[None, :] * sgc
        g = tl.load(g_img + oh[:, None] * sgh + ow[:, None] * sgw, mask=g_ok, other=0.0).to(tl.float32)
        acc_bias += g
        ih = oh + u * DIL - PH
        iw = ow[None, :] + v[:, None] * DIL - PW
        ok = ((ih >= 0) & (ih < H))[None, :] & (iw >= 0) & (iw < W) & (v < KW)[:, None]
        x_img = x_ptr + b.to(tl.int64) * sxb + c[None, None, :] * sxc
        xv = tl.load(
            x_img + ih[None, :, None] * sxh + iw[:, :, None] * sxw, mask=ok[:, :, None] & g_ok[None, :, :], other=0.0
        )
        acc += xv.to(tl.float32) * g[None, :, :]
    out = part_ptr + pid * (KH * KW + 1) * C
    tl.store(out + (u * KW + v)[:, None] * C + c[None, :], tl.sum(acc, 1), mask=(v < KW)[:, None] & c_ok[None, :])
    tl.store(out + KH * KW * C + c, tl.sum(acc_bias, 0), mask=c_ok & (u == 0))


def launch_config(wo: int, channels: int) -> tuple[int, int, int, int]:
    """``(TH, TW, BLOCK_C, num_warps)``: 32-pixel tiles (2×16 where the map is 16 wide, else 4×8), 64 channels.

    That is 16 outputs per thread with 4 warps: ptxas (sm_90, Triton 3.6) gives the 7×7 forward 138 registers and
    no spills, where 8×16 tiles with every tap unrolled spilled 6–7 KB per thread (measured 6.2 ms for a 7×7
    dilated layer whose memory floor is 22 µs)."""
    th, tw = (2, 16) if wo >= 16 else (4, 8)
    return th, tw, min(64, max(16, next_pow2(channels))), 4


# id(weight) -> (weak reference, version counter, taps-major copy). A model's weights are the same tensors call after
# call (parameters, or cached folded weights), so the copy is made once per update instead of one transpose launch
# per call; the entry goes when the weight is freed, and an in-place update (a new version) recomputes it.
_TAPS_CACHE: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}


def taps_major(weight: torch.Tensor) -> torch.Tensor:
    """``(C, 1, KH, KW)`` → ``(KH·KW, C)`` contiguous: a tap's weights for a channel block are one vector load."""
    if weight.is_inference():  # no version counter to notice in-place updates: no caching
        return weight.reshape(weight.shape[0], -1).t().contiguous()
    key = id(weight)
    hit = _TAPS_CACHE.get(key)
    if hit is not None and hit[0]() is weight and hit[1] == weight._version:
        return hit[2]
    with torch.no_grad():
        taps = weight.reshape(weight.shape[0], -1).t().contiguous()
    _TAPS_CACHE[key] = (weakref.ref(weight, lambda _, key=key: _TAPS_CACHE.pop(key, None)), weight._version, taps)
    return taps


def _conv(
    x: torch.Tensor,
    taps: torch.Tensor,
    kernel: tuple[int, int],
    bias: torch.Tensor | None,
    aux: torch.Tensor | None,
    out: torch.Tensor,
    padding: tuple[int, int],
    dilation: int,
    *,
    gelu: bool,
    grad: bool = False,
    flip: bool = False,
) -> torch.Tensor:
    bsz, channels, h, w = x.shape
    ho, wo = out.shape[2:]
    th, tw, block_c, warps = launch_config(wo, channels)
    tiles_w = cdiv(wo, tw)
    tiles = cdiv(ho, th) * tiles_w
    aux_t = aux if aux is not None else out
    bias_t = bias if bias is not None else taps
    launch(
        _dw_conv_kernel, (bsz * tiles * cdiv(channels, block_c),),
        x, taps, bias_t, aux_t, out,
        channels, h, w, ho, wo, tiles, tiles_w, cdiv(channels, block_c),
        *x.stride(), *aux_t.stride(), *out.stride(),
        padding[0], padding[1], dilation,
        KH=kernel[0], KW=kernel[1], FLIP=flip, HAS_BIAS=bias is not None, GELU=gelu,
        HAS_AUX=aux is not None, GRAD=grad, TH=th, TW=tw, BLOCK_C=block_c, num_warps=warps, num_stages=1,
    )  # fmt: skip
    return out


def output_size(x: torch.Tensor, kernel: tuple[int, int], padding: tuple[int, int], dilation: int) -> tuple:
    """``(B, C, H_out, W_out)`` of a stride-1 convolution."""
    bsz, channels, h, w = x.shape
    return (
        bsz,
        channels,
        h + 2 * padding[0] - dilation * (kernel[0] - 1),
        w + 2 * padding[1] - dilation * (kernel[1] - 1),
    )


def empty_output(
    x: torch.Tensor, kernel: tuple[int, int], padding: tuple[int, int], dilation: int, residual: torch.Tensor | None
) -> torch.Tensor:
    """The uninitialised output: ``x`` and ``residual``'s promoted dtype, ``x``'s memory format (also the custom
    op's fake implementation, so the two cannot disagree on strides)."""
    dtype = x.dtype if residual is None else torch.promote_types(x.dtype, residual.dtype)
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
    return torch.empty(output_size(x, kernel, padding, dilation), device=x.device, dtype=dtype, memory_format=fmt)


def forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    residual: torch.Tensor | None,
    padding: tuple[int, int],
    dilation: int,
    gelu: bool,
) -> torch.Tensor:
    """``act(DWConv(x) + bias) + residual`` in ``x``'s memory format (channels-last in, channels-last out)."""
    out = empty_output(x, weight.shape[2:], padding, dilation, residual)
    return _conv(x, taps_major(weight), weight.shape[2:], bias, residual, out, padding, dilation, gelu=gelu)


def backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int],
    dilation: int,
    gelu: bool,
    need_input_grad: bool = True,
    need_weight_grad: bool = True,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """``(dx, dweight, dbias)`` for ``grad_out`` = dL/dy (the residual's gradient is ``grad_out`` itself)."""
    kh, kw = weight.shape[2:]
    taps = taps_major(weight)
    if gelu:  # dz = dy ⊙ GELU'(z), z recomputed from x (one read of x, no saved pre-activation)
        dz = torch.empty_like(grad_out, dtype=x.dtype)
        _conv(x, taps, (kh, kw), bias, grad_out, dz, padding, dilation, gelu=True, grad=True)
    else:
        dz = grad_out
    grad_x = grad_w = grad_b = None
    if need_input_grad:
        flipped = (dilation * (kh - 1) - padding[0], dilation * (kw - 1) - padding[1])
        grad_x = torch.empty_like(x)
        _conv(dz, taps, (kh, kw), None, None, grad_x, flipped, dilation, gelu=False, flip=True)
    if need_weight_grad:
        bsz, channels, h, w = x.shape
        ho, wo = dz.shape[2:]
        th, tw = (1, 16) if wo >= 16 else (2, 8)  # 16 pixels: the (KW, pixels, channels) tile stays in registers
        block_c = min(64, max(16, next_pow2(channels)))
        tiles_w = cdiv(wo, tw)
        tiles = cdiv(ho, th) * tiles_w
        c_blocks = cdiv(channels, block_c)
        programs = max(1, min(bsz * tiles, cdiv(WEIGHT_GRAD_PROGRAMS, c_blocks * kh)))
        per_prog = cdiv(bsz * tiles, programs)
        programs = cdiv(bsz * tiles, per_prog)
        part = torch.empty((programs, kh * kw + 1, channels), device=x.device, dtype=torch.float32)
        launch(
            _dw_weight_grad_kernel, (kh * c_blocks, programs),
            x, dz, part,
            channels, h, w, ho, wo, tiles, tiles_w, bsz * tiles, per_prog,
            *x.stride(), *dz.stride(), padding[0], padding[1], dilation,
            KH=kh, KW=kw, KW_PAD=next_pow2(kw), TH=th, TW=tw, BLOCK_C=block_c, num_warps=4, num_stages=1,
        )  # fmt: skip
        sums = part.sum(0)  # (KH·KW + 1, C): the taps, then the bias
        grad_w = sums[: kh * kw].t().contiguous().view(weight.shape).to(weight.dtype)  # the custom op's strides
        if bias is not None:
            grad_b = sums[kh * kw].to(bias.dtype)
    return grad_x, grad_w, grad_b
