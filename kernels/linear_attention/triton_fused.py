"""Host side of the fused Triton linear attention: launches the kernels of :mod:`.triton_kernels`.

Forward (3 launches, 4 for ``rala``): [q̄ partials] -> chunk partial states -> reduce -> output.
Backward (3 launches, 4 for ``rala``, one more when dv > 128): (q, dO) pass -> reduce -> (k, v) pass
[-> dq correction for q̄]. The reduced forward state (S, z, aux; O(B·H·dk·dv) fp32) is returned by
:func:`forward_with_state` so the backward does not re-read K and V to rebuild it.

Importing this module raises ImportError (only) when Triton is missing. CPU tensors run in the Triton
interpreter, which Triton switches on only when ``TRITON_INTERPRET=1`` is set before it is imported.
"""

from __future__ import annotations

import math
import os
from typing import Optional

import torch

from .._backend import cdiv, next_pow2
from .._launch import launch, resident_per_sm
from . import triton_kernels as _compiled_kernels

__all__ = ["backward", "compute_state", "forward", "forward_with_state"]

_FMAPS = {"identity": 0, "relu": 1, "elu+1": 2}
_NORMS = {"standard": 0, "none": 1, "clamp": 2, "injective": 3, "rala": 4}


def _kernels(device: torch.device):
    """The kernel module; Triton decides at import time whether it is compiled or interpreted."""
    if device.type != "cuda" and not _compiled_kernels._INTERPRET:
        raise RuntimeError(
            f"the Triton linear attention needs CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 before "
            "Triton is imported to run it on the CPU"
        )
    return _compiled_kernels


def _pow2(x: int) -> int:
    return max(16, next_pow2(x))


_SM_COUNT: dict[int, int] = {}
_ALIGN_HINTS = os.environ.get("LINZOO_LA_ALIGN_HINTS", "1") != "0"
# Opt-in (not yet measured on a GPU): each pass splits N into as many chunks as its compiled kernel fills the GPU
# with in one wave (wave_chunks) instead of PROGRAMS_PER_SM for all. Session 4's breakdown fits wave tails: at
# DiT @2048 the state pass (6 resident blocks per SM by its registers, 8 programs per SM launched: 1.33 waves) ran
# at 64 % of its floor, the out pass (8 resident, 1 wave) at 89 %; at RAVLT s1 @224 (832 programs) the RALA + RoPE
# state pass (4 resident per SM: 1.58 waves) at 28 %.
WAVES = os.environ.get("LINZOO_LA_WAVES", "0") == "1"
INTERPRETER_SMS = 4  # a nominal SM count for the chunking under the interpreter (tests of the wave split)
_PLANS: dict[tuple, dict] = {}


def _plan(q: torch.Tensor, v: torch.Tensor, interpret: bool) -> dict:
    """Padded head dims, dv tiling and the split of N into chunks (memoised: it runs on every call)."""
    key = (tuple(q.shape), v.shape[-1], q.dtype, interpret, q.device, _compiled_kernels.PROGRAMS_PER_SM)
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) > 4096:  # many distinct shapes (e.g. a resolution sweep): start over
            _PLANS.clear()
        plan = _PLANS[key] = _make_plan(q, v, interpret)
    return plan


def _make_plan(q: torch.Tensor, v: torch.Tensor, interpret: bool) -> dict:
    B, H, N, DK = q.shape
    DV = v.shape[-1]
    dkp, dvp = _pow2(DK), _pow2(DV)
    bdv = _compiled_kernels.value_tile(dkp, dvp, q.dtype == torch.float32)
    num_dvt = dvp // bdv
    bh = B * H
    if interpret:
        align = 16
        chunk = 32
        sms = INTERPRETER_SMS
    else:
        align = _compiled_kernels.MAX_BLOCK_N
        idx = q.device.index if q.device.index is not None else torch.cuda.current_device()
        if idx not in _SM_COUNT:
            _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
        sms = _SM_COUNT[idx]
        chunk = _split(N, cdiv(_compiled_kernels.PROGRAMS_PER_SM * sms, bh), align)[1]
    chunk = max(align, chunk)
    c = max(1, cdiv(N, chunk))
    return dict(
        B=B, H=H, N=N, DK=DK, DV=DV, DKP=dkp, BDV=bdv, NUM_DVT=num_dvt, BH=bh, C=c, CHUNK=chunk, SMS=sms
    )  # fmt: skip


def _split(n: int, chunks: int, align: int) -> tuple[int, int]:
    """``(C, CHUNK)``: n rows in at most ``chunks`` chunks of CHUNK rows, a multiple of ``align`` (the last chunk
    may be shorter)."""
    chunks = max(1, min(chunks, cdiv(n, align)))
    chunk = max(align, cdiv(cdiv(n, chunks), align) * align)
    return max(1, cdiv(n, chunk)), chunk


def wave_chunks(n: int, programs_per_chunk: int, capacity: int, align: int) -> tuple[int, int]:
    """``(C, CHUNK)`` such that ``programs_per_chunk × C`` programs fit ``capacity`` resident blocks, i.e. run in
    one wave, with as many chunks as fit (one chunk per head when the heads alone fill the GPU)."""
    return _split(n, capacity // max(programs_per_chunk, 1), align)


def _chunking(p: dict, fn, meta: dict, programs_per_chunk: int, *block_ns: int) -> tuple[int, int]:
    """``(C, CHUNK)`` of one pass: the plan's, or with ``WAVES`` one wave of ``fn``'s resident blocks (known after
    the first launch of that specialization; the first call keeps the plan's split). ``block_ns``: the BLOCK_N
    of every kernel that walks this split (a chunk must be a multiple of each: the row loops mask only at N)."""
    if not WAVES:
        return p["C"], p["CHUNK"]
    resident = resident_per_sm(fn, **meta)
    if resident is None:
        return p["C"], p["CHUNK"]
    return wave_chunks(p["N"], programs_per_chunk, resident * p["SMS"], max(block_ns))


def _f32_buffers(device: torch.device, *sizes: int) -> list[torch.Tensor]:
    """Flat fp32 buffers of the given sizes carved from one allocation, each starting 16-byte aligned.

    One allocation and one split instead of one allocation per buffer: at 224-px shapes the op is host-bound
    and each ``torch.empty`` costs ~3–5 µs of host time (up to 10 buffers per call).
    """
    padded = [cdiv(n, 4) * 4 for n in sizes]
    return list(torch.split_with_sizes(torch.empty(sum(padded), device=device, dtype=torch.float32), padded))


def _row_align(*tensors: torch.Tensor) -> int:
    """``RV``: 1 when Triton sees the rows' alignment itself, else the largest of 8, 4, 2 dividing every batch,
    head and row stride of ``tensors`` (in elements).

    A true divisibility hint lets Triton vectorise rows whose stride it cannot see is aligned (e.g. 40 channels:
    the (q, dO) pass went from 388 to 100 µs on the H100). Where every stride is a multiple of 16 Triton's own
    launch specialization already proves it, and the hint must stay off: with Triton 3.6 (the H100 machine's)
    the ``tl.multiple_of`` hints on such strides turn the 128-bit row loads of the d = 64 kernels into 2-byte
    loads (SASS of the state / out / (k, v) passes: 16–32 ``LDG.E.U16``; RAVLT s1 state pass 51 -> 107 µs),
    while Triton 3.8 compiles both forms alike. ``LINZOO_LA_ALIGN_HINTS=0`` turns the hint off everywhere.
    """
    if not _ALIGN_HINTS:
        return 1
    g = 16
    for t in tensors:
        for stride in t.stride()[:-1]:
            g = math.gcd(g, stride)
    return 1 if g == 16 else min(g, 8)


def _precision(dtype: torch.dtype) -> tuple[bool, bool, str]:
    """(bf16 operands for the dot products that sum over N, bf16 operands for those with a state, precision
    of the fp32 dot products). bf16 dots are compiled-only: the interpreter's bf16 ``tl.dot`` is not exact."""
    low = dtype == torch.bfloat16 and not _compiled_kernels._INTERPRET
    prec = "tf32" if (dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32) else "ieee"
    return low, low and _compiled_kernels.BF16_STATE_DOTS, prec


def _rope_args(rope_cos, rope_sin, q):
    if rope_cos is None:
        return (q, 0, 0, q, 0, 0), False
    return (rope_cos, rope_cos.stride(0), rope_cos.stride(1), rope_sin, rope_sin.stride(0), rope_sin.stride(1)), True


def _check_mode(feature_map: str, normalizer: str) -> tuple[int, int]:
    if feature_map not in _FMAPS:
        raise ValueError(f"feature_map must be one of {tuple(_FMAPS)}, got {feature_map!r}")
    if normalizer not in _NORMS:
        raise ValueError(f"normalizer must be one of {tuple(_NORMS)}, got {normalizer!r}")
    return _FMAPS[feature_map], _NORMS[normalizer]


def compute_state(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: str,
    normalizer: str,
    scale: float,
    rope_cos: Optional[torch.Tensor],
    rope_sin: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reduced state ``(S (B,H,dk,dv), z (B,H,dk), aux (B,H,dk+dv+2))``, fp32 (see the reduce kernel)."""
    fmap, norm = _check_mode(feature_map, normalizer)
    kern = _kernels(q.device)
    p = _plan(q, v, kern._INTERPRET)
    B, H, N, DK, DV, BH = p["B"], p["H"], p["N"], p["DK"], p["DV"], p["BH"]
    f32 = dict(device=q.device, dtype=torch.float32)
    if N == 0:  # empty sums
        return (
            torch.zeros((B, H, DK, DV), **f32),
            torch.zeros((B, H, DK), **f32),
            torch.zeros((B, H, DK + DV + 2), **f32),
        )
    # The reduce kernel writes all of S and z, and the parts of aux its normaliser reads back: no zero fill
    # (each fill would be one more launch on the host-bound small shapes). S, z, aux are separate allocations
    # (outputs of the custom op may not alias each other); the chunk partials, freed on return, share one.
    S = torch.empty((B, H, DK, DV), **f32)
    Z = torch.empty((B, H, DK), **f32)
    aux = torch.empty((B, H, DK + DV + 2), **f32)
    low, _, prec = _precision(q.dtype)
    fp32 = q.dtype == torch.float32
    rope, has_rope = _rope_args(rope_cos, rope_sin, q)
    common = dict(DKP=p["DKP"], BDV=p["BDV"], NUM_DVT=p["NUM_DVT"], NORM=norm, ROPE=has_rope)
    state_meta = dict(
        FMAP=fmap, LOW=low, PREC=prec, RV=_row_align(k, v), **common,
        **kern.launch_config("state", p["DKP"], p["BDV"], fp32),
    )  # fmt: skip
    qsum_cfg = kern.launch_config("qsum", p["DKP"], p["BDV"]) if norm == 4 else {"BLOCK_N": 1}
    block_ns = (state_meta["BLOCK_N"], qsum_cfg["BLOCK_N"])
    C, chunk = _chunking(p, kern._state_kernel, state_meta, BH * p["NUM_DVT"], *block_ns)  # q̄ partials share it
    # Partials of C chunks: S (sp), z (zp), and for rala q̄ (qp) and the softmax max/sum (mp), for injective v̄ (vp)
    sp, zp, qp, vp, mp = _f32_buffers(
        q.device, BH * C * DK * DV, BH * C * DK, BH * C * DK * (norm == 4), BH * C * DV * (norm == 3), BH * C * 2
    )
    if norm == 4:
        launch(kern._qsum_kernel, (C, BH),
            q, *q.stride(), qp, N, H, DK, C, chunk, FMAP=fmap, DKP=p["DKP"], RV=_row_align(q), **qsum_cfg,
        )  # fmt: skip
    launch(kern._state_kernel, (C, BH, p["NUM_DVT"]),
        k, *k.stride(), v, *v.stride(), *rope, qp, sp, zp, vp, mp, N, H, DK, DV, C, chunk, float(scale), **state_meta,
    )  # fmt: skip
    red = kern.reduce_blocks(p["DKP"], p["BDV"], C)
    launch(kern._state_reduce_kernel, (BH, p["NUM_DVT"], p["DKP"] // red["RB"]),
        qp, sp, zp, vp, mp, S, Z, aux, N, DK, DV, C, float(scale), NORM=norm, DKP=p["DKP"], BDV=p["BDV"], **red,
    )  # fmt: skip
    return S, Z, aux


def forward_with_state(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: str,
    normalizer: str,
    eps: float,
    scale: float,
    clamp_min: float,
    rope_cos: Optional[torch.Tensor],
    rope_sin: Optional[torch.Tensor],
    temperature: Optional[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(o (B,H,N,dv) in v.dtype, S, z, aux)``; the last three are what :func:`backward` needs."""
    fmap, norm = _check_mode(feature_map, normalizer)
    S, Z, aux = compute_state(q, k, v, feature_map, normalizer, scale, rope_cos, rope_sin)
    kern = _kernels(q.device)
    p = _plan(q, v, kern._INTERPRET)
    B, H, N, DK, DV, BH = p["B"], p["H"], p["N"], p["DK"], p["DV"], p["BH"]
    o = torch.empty((B, H, N, DV), device=q.device, dtype=v.dtype)
    if N == 0:
        return o, S, Z, aux
    _, lows, prec = _precision(q.dtype)
    fp32 = q.dtype == torch.float32
    rope, has_rope = _rope_args(rope_cos, rope_sin, q)
    temp = temperature.reshape(-1).float().contiguous() if temperature is not None else S
    meta = dict(
        FMAP=fmap, NORM=norm, ROPE=has_rope, HAS_TEMP=temperature is not None, PREC=prec, LOWS=lows,
        DKP=p["DKP"], BDV=p["BDV"], NUM_DVT=p["NUM_DVT"], RV=_row_align(q, o),
        **kern.launch_config("out", p["DKP"], p["BDV"], fp32),
    )  # fmt: skip
    C, chunk = _chunking(p, kern._out_kernel, meta, BH * p["NUM_DVT"], meta["BLOCK_N"])
    launch(kern._out_kernel, (C, BH, p["NUM_DVT"]),
        q, *q.stride(), o, *o.stride(), *rope, S, Z, aux, temp, N, H, DK, DV, chunk, float(eps), float(clamp_min),
        **meta,
    )  # fmt: skip
    return o, S, Z, aux


def forward(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: str,
    normalizer: str,
    eps: float,
    scale: float,
    clamp_min: float,
    rope_cos: Optional[torch.Tensor],
    rope_sin: Optional[torch.Tensor],
    temperature: Optional[torch.Tensor],
) -> torch.Tensor:
    """Fused linear attention forward; ``o`` is ``(B, heads, N, dv)`` in ``v.dtype``."""
    args = (q, k, v, feature_map, normalizer, eps, scale, clamp_min, rope_cos, rope_sin, temperature)
    return forward_with_state(*args)[0]


def backward(
    grad_out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: str,
    normalizer: str,
    eps: float,
    scale: float,
    clamp_min: float,
    rope_cos: Optional[torch.Tensor],
    rope_sin: Optional[torch.Tensor],
    temperature: Optional[torch.Tensor],
    state: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(dq, dk, dv, dtemperature)``; ``dtemperature`` is empty when ``temperature`` is None.

    ``state`` is the ``(S, z, aux)`` returned by :func:`forward_with_state`; without it it is recomputed.
    """
    fmap, norm = _check_mode(feature_map, normalizer)
    if state is None:
        state = compute_state(q, k, v, feature_map, normalizer, scale, rope_cos, rope_sin)
    S, Z, aux = state
    kern = _kernels(q.device)
    p = _plan(q, v, kern._INTERPRET)
    B, H, N, DK, DV, BH = p["B"], p["H"], p["N"], p["DK"], p["DV"], p["BH"]
    dq = torch.empty(q.shape, device=q.device, dtype=q.dtype)
    dk = torch.empty(k.shape, device=k.device, dtype=k.dtype)
    dv = torch.empty(v.shape, device=v.device, dtype=v.dtype)
    has_temp = temperature is not None
    if N == 0:
        dtemp = torch.zeros(temperature.shape if has_temp else (0,), device=q.device)
        return dq, dk, dv, dtemp.to(temperature.dtype if has_temp else q.dtype)
    low, lows, prec = _precision(q.dtype)
    fp32 = q.dtype == torch.float32
    rope, has_rope = _rope_args(rope_cos, rope_sin, q)
    S, Z, aux = S.contiguous(), Z.contiguous(), aux.contiguous()
    temp = temperature.reshape(-1).float().contiguous() if has_temp else S
    dims = dict(DKP=p["DKP"], BDV=p["BDV"], NUM_DVT=p["NUM_DVT"])
    flags = dict(FMAP=fmap, NORM=norm, ROPE=has_rope, HAS_TEMP=has_temp, LOW=low, LOWS=lows, PREC=prec, **dims)
    qcfg = dict(kern.launch_config("bwd_q", p["DKP"], p["BDV"], fp32), RV=_row_align(q, grad_out, dq))
    loop = p["NUM_DVT"]  # > 1: dq needs every dv tile, dS one tile per program: two launches
    dq_meta = dict(T_LOOP=loop, DO_DQ=True, DO_DS=loop == 1, **flags, **qcfg)
    kv_meta = dict(
        FMAP=fmap, NORM=norm, ROPE=has_rope, PREC=prec, LOWS=lows, RV=_row_align(k, v, dk, dv), **dims,
        **kern.launch_config("bwd_kv", p["DKP"], p["BDV"], fp32),
    )  # fmt: skip
    # the (q, dO) pass and its dS launch share one split (their partials); so do the (k, v) pass and the dq fix
    dscfg = dict(kern.launch_config("bwd_ds", p["DKP"], p["BDV"], fp32), RV=qcfg["RV"]) if loop > 1 else {}
    fixcfg = kern.launch_config("qsum", p["DKP"], p["BDV"]) if norm == 4 else {}
    C, chunk = _chunking(p, kern._bwd_q_kernel, dq_meta, BH, qcfg["BLOCK_N"], dscfg.get("BLOCK_N", 1))
    kv_block_ns = (kv_meta["BLOCK_N"], fixcfg.get("BLOCK_N", 1))
    c_kv, chunk_kv = _chunking(p, kern._bwd_kv_kernel, kv_meta, BH, *kv_block_ns)
    # fp32 scratch, one allocation: chunk partials of dS (dsp), dz (dzp), the injective g (gp), d temperature
    # (dtp); the reduced dS (dse), and the per-head vectors and scalars the (k, v) pass reads (zv, cv, cr, dt);
    # the q̄ correction partials of rala (dqbp).
    dsp, dzp, gp, dtp, dse, zv, cv, cr, dt, dqbp = _f32_buffers(
        q.device, BH * C * DK * DV, BH * C * DK, BH * C * DV * (norm == 3), BH * C * has_temp,
        BH * DK * DV, BH * DK, BH * DV, BH, BH, BH * c_kv * DK * (norm == 4),
    )  # fmt: skip
    qargs = (q, *q.stride(), grad_out, *grad_out.stride(), dq, *dq.stride(), *rope, S, Z, temp, dsp, dzp, gp, dtp)
    sizes = (N, H, DK, DV, C, chunk, float(eps), float(clamp_min))
    launch(kern._bwd_q_kernel, (C, BH, 1), *qargs, *sizes, **dq_meta)
    if loop > 1:
        launch(kern._bwd_q_kernel, (C, BH, loop), *qargs, *sizes, T_LOOP=1, DO_DQ=False, DO_DS=True, **flags, **dscfg)
    red = kern.reduce_blocks(p["DKP"], p["BDV"], C, split_rows=norm not in (3, 4))  # see the kernel
    launch(kern._bwd_reduce_kernel, (BH, p["DKP"] // red["RB"]),
        dsp, dzp, gp, dtp, S, Z, aux, dse, zv, cv, cr, dt, N, DK, DV, C, float(scale),
        NORM=norm, HAS_TEMP=has_temp, **dims, **red,
    )  # fmt: skip
    launch(kern._bwd_kv_kernel, (c_kv, BH),
        k, *k.stride(), v, *v.stride(), dk, *dk.stride(), dv, *dv.stride(), *rope,
        dse, zv, cv, cr, aux, dqbp, N, H, DK, DV, c_kv, chunk_kv, float(scale), **kv_meta,
    )  # fmt: skip
    if norm == 4:
        launch(kern._bwd_dq_fix_kernel, (c_kv, BH),
            q, *q.stride(), dq, *dq.stride(), dqbp, N, H, DK, c_kv, chunk_kv,
            FMAP=fmap, DKP=p["DKP"], RV=_row_align(q, dq), **fixcfg,
        )  # fmt: skip
    if has_temp:
        dtemp = dt[:BH].view(B, H).sum(0).reshape(temperature.shape).to(temperature.dtype)
    else:
        dtemp = q.new_zeros(0)
    return dq, dk, dv, dtemp
