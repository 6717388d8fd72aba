"""Ahead-of-time compile of the Triton kernels for sm_90, without a GPU (linear attention: every variant;
window attention: the forward and backward per head dim; depthwise convolution: VAN's layers, channels-last;
sparse-linear attention: forward, dQ and dK/dV per head dim and block shape; bidirectional GLA: the fused recurrent
forward and backward at ViG's head dims).

The CPU interpreter runs the kernels' Python semantics but never lowers them; this compiles each kernel the
way a launch on an H100 would (Triton's own specialisation: pointers and strides divisible by 16, unit
channel strides folded to 1) and reports the vector width of its global loads and stores, so CI catches
kernels that do not compile and rows that stop being vectorised. Run as a script (without
TRITON_INTERPRET): prints one JSON line per kernel variant.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton
import triton.backends.nvidia
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from linzoo.kernels.depthwise_conv import triton_dwconv as td
from linzoo.kernels.gla import triton_gla as tg
from linzoo.kernels.linear_attention import triton_kernels as tk
from linzoo.kernels.sparse_linear_attention import triton_sla as ts
from linzoo.kernels.window_attention import triton_window as tw

_IO = {"Q", "K", "V", "OUT", "Out", "DO", "DQ", "DK_", "DV_"}  # activations in the input dtype
_FLOATS = {"scale", "eps", "clamp_min", "qk_scale"}
_INTS = {"N", "H", "W", "C", "CHUNK", "Hp", "Wp", "SH", "SW"}


def compile_variant(
    kernel, consts: dict, dtype: str, row_div16: bool, num_warps: int, num_stages: int, types: dict | None = None
):
    """``types``: explicit argument types (the depthwise kernels' lower-case names); pointers, strides and the
    channel count divisible by 16, as Triton specialises a launch on 64-channel maps."""
    params = list(inspect.signature(kernel.fn).parameters)
    consts = dict(consts)
    if types is not None:
        sig = {p: "constexpr" if p in consts else types.get(p, "i32") for p in params}
        attrs = {  # pointers and strides (names starting with "s" that are ints, not e.g. a float "scale")
            (i,): [["tt.divisibility", 16]]
            for i, p in enumerate(params)
            if types.get(p, "").startswith("*") or (p.startswith("s") and types.get(p, "i32") == "i32") or p == "C"
        }
        attrs = {k: v for k, v in attrs.items() if params[k[0]] not in consts}
        src = ASTSource(fn=kernel, signature=sig, constexprs=consts, attrs=attrs)
        return triton.compile(
            src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, num_stages=num_stages)
        )
    for p in params:  # unit channel strides are specialised to the constant 1 by Triton's launcher
        if re.fullmatch(r"s_\w*d", p):
            consts[p] = 1
    sig, attrs = {}, {}
    for i, p in enumerate(params):
        if p in consts:
            sig[p] = "constexpr"
        elif p in _IO or (p == "DK" and "DK" not in consts):  # the window kernels' dk output is named DK
            sig[p] = f"*{dtype}"
        elif p in _INTS or p.startswith("s_"):
            sig[p] = "i32"
        elif p.isupper() or p.endswith("_"):
            sig[p] = "*fp32"
        elif p in _FLOATS:
            sig[p] = "fp32"
        else:
            sig[p] = "i32"
        divisible = sig[p].startswith("*") or re.fullmatch(r"s_\w*[bh]", p) or p == "CHUNK"
        if divisible or (row_div16 and re.fullmatch(r"s_\w*n", p)):
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=kernel, signature=sig, constexprs=consts, attrs=attrs)
    return triton.compile(
        src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, num_stages=num_stages)
    )


def global_access_widths(compiled) -> dict:
    ptx = compiled.asm["ptx"]
    return {
        "loads": sorted(set(re.findall(r"ld\.global(?:\.\w+)*", ptx))),
        "stores": sorted(set(re.findall(r"st\.global(?:\.\w+)*", ptx))),
        "shared_bytes": compiled.metadata.shared,
        **register_use(compiled),
    }


def register_use(compiled) -> dict:
    """``registers`` per thread and ``stack_bytes`` (register spills) of the cubin, from Triton's bundled
    ``cuobjdump -res-usage``; empty when the tool is missing."""
    tool = Path(triton.backends.nvidia.__file__).parent / "bin" / "cuobjdump"
    if not tool.exists():
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        out = subprocess.run([str(tool), "-res-usage", f.name], capture_output=True, text=True).stdout
    m = re.search(r"REG:(\d+) STACK:(\d+)", out)
    return {"registers": int(m[1]), "stack_bytes": int(m[2])} if m else {}


def variants():
    """(name, kernel, constexprs, input dtype, launch kind) over the modes the op can launch."""
    # RV as triton_fused._row_align passes it: 1 where every stride is a multiple of 16 (Triton's own
    # specialization proves the alignment), the divisor 8 for 40-channel rows
    for dk, dv, rv, dtype in (
        (64, 64, 1, "bf16"),
        (40, 40, 8, "bf16"),
        (40, 40, 1, "bf16"),
        (160, 160, 1, "bf16"),
        (160, 160, 1, "fp32"),
        (128, 128, 1, "fp32"),
        (64, 64, 1, "fp32"),
    ):
        dkp = max(16, triton.next_power_of_2(dk))
        dvp = max(16, triton.next_power_of_2(dv))
        bdv = tk.value_tile(dkp, dvp, dtype == "fp32")
        dims = dict(DK=dk, DV=dv, DKP=dkp, BDV=bdv, NUM_DVT=dvp // bdv, RV=rv)
        for norm, rope, fmap in ((0, False, 2), (4, True, 2), (3, False, 0), (2, False, 1)):
            tag = f"{dtype}_dk{dk}_rv{rv}_norm{norm}{'_rope' if rope else ''}"
            low = dtype == "bf16"  # as triton_fused._precision: bf16 dot operands for bf16 inputs only
            prec = "tf32" if low else "ieee"
            flags = dict(FMAP=fmap, NORM=norm, ROPE=rope)
            state = dict(**flags, LOW=low, PREC=prec, **dims)
            yield f"state_{tag}", tk._state_kernel, state, dtype, "state"
            out = dict(**flags, HAS_TEMP=False, PREC=prec, LOWS=low, **dims)
            yield f"out_{tag}", tk._out_kernel, out, dtype, "out"
            bwd = dict(**flags, HAS_TEMP=norm == 0, LOW=low, LOWS=low, PREC=prec, **dims)
            loop = dims["NUM_DVT"]
            bwd_q = dict(bwd, T_LOOP=loop, DO_DQ=True, DO_DS=loop == 1)
            yield f"bwd_q_{tag}", tk._bwd_q_kernel, bwd_q, dtype, "bwd_q"
            if loop > 1:  # the second (q, dO) launch: dS one dv tile per program
                bwd_ds = dict(bwd, T_LOOP=1, DO_DQ=False, DO_DS=True)
                yield f"bwd_ds_{tag}", tk._bwd_q_kernel, bwd_ds, dtype, "bwd_ds"
            kv = dict(**flags, PREC=prec, LOWS=low, **dims)
            yield f"bwd_kv_{tag}", tk._bwd_kv_kernel, kv, dtype, "bwd_kv"
            reduce_dims = dict(NORM=norm, DK=dk, DV=dv, DKP=dkp, BDV=bdv)
            yield f"state_reduce_{tag}", tk._state_reduce_kernel, reduce_dims, dtype, "state_reduce"
            bwd_reduce = dict(reduce_dims, HAS_TEMP=norm == 0, NUM_DVT=dims["NUM_DVT"])
            yield f"bwd_reduce_{tag}", tk._bwd_reduce_kernel, bwd_reduce, dtype, "bwd_reduce"
            if norm == 4:
                small = dict(FMAP=fmap, DK=dk, DKP=dkp, RV=rv)
                yield f"qsum_{tag}", tk._qsum_kernel, small, dtype, "qsum"
                yield f"dq_fix_{tag}", tk._bwd_dq_fix_kernel, small, dtype, "qsum"


def window_variants():
    """(name, kernel, constexprs, dtype, num_warps, num_stages) as triton_window launches them (Swin 7x7)."""
    for dim in (32, 64, 128):
        dims = dict(D=dim, DV=dim, BD=max(16, dim), BDV=max(16, dim), PREC="tf32", BT=64)
        warps = 4 if dims["BT"] * dims["BD"] <= 64 * 64 else 8
        consts = dict(WH=7, WW=7, HAS_RPB=True, PAD_ZEROS=False, **dims)
        yield f"window_fwd_bf16_d{dim}", tw._win_fwd_kernel, consts, "bf16", warps, 3
        yield f"window_bwd_bf16_d{dim}", tw._win_bwd_kernel, consts, "bf16", warps, tw.bwd_num_stages(dims)


def depthwise_variants():
    """(name, kernel, constexprs, pointer types, num_warps) as triton_dwconv launches them on channels-last bf16
    maps of 64 channels: VAN's 5x5 and dilated 7x7 (forward and the flipped input gradient), the MLP's 3x3 with
    bias + GELU + shortcut and its dz pass, and the weight gradients."""
    th, tw, block_c, warps = td.launch_config(64, 64)
    unit = dict(sxc=1, sac=1, syc=1)  # channel strides of channels-last maps, folded to 1 by Triton's launcher
    io = {name: "*bf16" for name in ("x_ptr", "w_ptr", "bias_ptr", "aux_ptr", "y_ptr", "g_ptr")}
    for k, gelu, grad, flip in ((5, False, False, False), (7, False, False, False), (7, False, False, True),
                                (3, True, False, False), (3, True, True, False)):  # fmt: skip
        consts = dict(KH=k, KW=k, FLIP=flip, HAS_BIAS=not flip, GELU=gelu, HAS_AUX=gelu, GRAD=grad, **unit)
        consts.update(TH=th, TW=tw, BLOCK_C=block_c)
        name = f"dwconv_{'dz' if grad else 'dx' if flip else 'fwd'}_k{k}{'_gelu' if gelu else ''}"
        yield name, td._dw_conv_kernel, consts, io, warps
    for k in (3, 5, 7):
        consts = dict(KH=k, KW=k, KW_PAD=triton.next_power_of_2(k), TH=1, TW=16, BLOCK_C=block_c, sxc=1, sgc=1)
        yield f"dwconv_wgrad_k{k}", td._dw_weight_grad_kernel, consts, {**io, "part_ptr": "*fp32"}, warps


def sla_variants():
    """(name, kernel, constexprs, argument types, num_warps, num_stages) as triton_sla launches them: the official
    block shapes (64/64, 128/64) at d 64 and 128 in bf16, a non-power-of-two d 80, d 256, and fp32 at d 64 and 256
    (its IEEE dot products hold whole operand rows in registers: the widest head spilled 6-10 KB per thread)."""
    kernels = {"fwd": ts._sla_fwd_kernel, "dq": ts._sla_bwd_dq_kernel, "dkdv": ts._sla_bwd_dkdv_kernel}
    for dim, dtype, blocks in (
        (64, "bf16", ((64, 64), (128, 64))),
        (128, "bf16", ((64, 64), (128, 64))),
        (80, "bf16", ((128, 64),)),
        (256, "bf16", ((128, 64),)),
        (64, "fp32", ((128, 64),)),
        (256, "fp32", ((64, 64),)),
    ):
        bd = max(16, triton.next_power_of_2(dim))
        types = {p: f"*{dtype}" for p in ("Q", "K", "V", "Out", "DO", "DQ", "DK_", "DV_")}
        types.update(LSE="*fp32", DELTA="*fp32", LUT="*i32", QIDX="*i32", QCNT="*i32", ORDER="*i32")
        types.update(qk_scale="fp32", scale="fp32")
        for bq, bk in blocks:
            for kind, kernel in kernels.items():
                cfg = ts.launch_config(kind, bq, bk, bd, bd, dtype == "fp32")
                warps, stages = cfg.pop("num_warps"), cfg.pop("num_stages")
                prec = "ieee" if dtype == "fp32" else "tf32"
                consts = dict(BLOCK_Q=bq, BLOCK_K=bk, D=dim, DV=dim, BD=bd, BDV=bd, PREC=prec, **cfg)
                yield f"sla_{kind}_{dtype}_d{dim}_bq{bq}_bk{bk}", kernel, consts, types, warps, stages


def gla_variants():
    """(name, kernel, constexprs, argument types, num_warps) as triton_gla launches them: ViG's head dims (dk/dv
    32/64 in bf16 and fp32, ViG-H's 16/32), non-powers of two (24/48) and 128/128; at ViG's dims also the kernels
    of a sequence split into segments (the state and adjoint-carry passes, the chain, forward and backward from
    the chained states). The rows are 1-D vectors, one
    element per lane (coalesced across the warp: these names avoid the vectorisation check's "bf16_dk")."""
    for dk, dv, dtype in ((32, 64, "bf16"), (32, 64, "fp32"), (16, 32, "bf16"), (24, 48, "bf16"), (128, 128, "bf16")):
        types = {p: f"*{dtype}" for p in ("Q", "K", "V", "GF", "GB", "OUT", "DO")}
        fp32_args = ("PART", "SQ", "SK", "SV", "INIT", "AINIT", "RT", "LOCAL", "GSUM")
        types.update({p: "*fp32" for p in fp32_args}, scale="fp32")
        for kind, kernel in (("fwd", tg._bgla_fwd_kernel), ("bwd", tg._bgla_bwd_kernel)):
            cfg = tg.launch_config(dk, dv, backward=kind == "bwd")
            warps = cfg.pop("num_warps")
            one_tile = kind == "fwd" or dv <= cfg["BVH"] * cfg["BVL"]  # gradients in the inputs' dtype, else fp32
            types.update({p: f"*{dtype}" if one_tile else "*fp32" for p in ("DQ", "DK_", "DV_", "DGF", "DGB")})
            consts = dict(DK=dk, DV=dv, **cfg, HAS_INIT=False)
            yield f"gla_{kind}_{dtype}_k{dk}v{dv}", kernel, consts, types, warps
            if (dk, dv, dtype) in ((32, 64, "bf16"), (16, 32, "bf16")):  # split into segments
                # H = 1 as Triton specialises an int argument equal to 1 (a constant: no .to() on it)
                seg_warps = warps if kind == "fwd" else min(8, 2 * warps)  # as triton_gla.backward launches it
                yield f"gla_{kind}seg_{dtype}_k{dk}v{dv}", kernel, dict(consts, HAS_INIT=True, H=1), types, seg_warps
            if kind == "fwd" and (dk, dv, dtype) in ((32, 64, "bf16"), (16, 32, "bf16")):
                consts = dict(DK=dk, DV=dv, **cfg)
                state_types = {**types, **{p: f"*{dtype}" for p in ("X", "Y", "GL", "GR")}, "x_scale": "fp32"}
                for adjoint in (False, True):
                    name = f"gla_seg{'adjoint' if adjoint else 'state'}_{dtype}_k{dk}v{dv}"
                    yield name, tg._bgla_seg_state_kernel, dict(consts, ADJOINT=adjoint, H=1), state_types, warps
                yield f"gla_combine_{dtype}_k{dk}v{dv}", tg._bgla_combine_kernel, consts, types, warps


def _launches():
    tk._INTERPRET = False  # launch_config: the compiled-mode defaults
    for name, kernel, consts, dtype, kind in variants():
        if kind.endswith("reduce"):  # 16 chunk partials per head, as at the benchmark's DiT / RAVLT shapes
            split = kind == "state_reduce" or consts["NORM"] not in (3, 4)
            red = tk.reduce_blocks(consts["DKP"], consts["BDV"], 16, split_rows=split)
            warps = red.pop("num_warps")
            yield name, kernel, dict(consts, **red), dtype, consts["DK"] % 16 == 0, warps, 1
            continue
        cfg = tk.launch_config(kind, consts["DKP"], consts.get("BDV", 64), dtype == "fp32")
        consts = dict(consts, BLOCK_N=cfg["BLOCK_N"])
        yield name, kernel, consts, dtype, consts["DK"] % 16 == 0, cfg["num_warps"], cfg["num_stages"]
    for name, kernel, consts, dtype, warps, stages in window_variants():
        yield name, kernel, consts, dtype, consts["D"] % 16 == 0, warps, stages
    for name, kernel, consts, types, warps in depthwise_variants():
        yield name, kernel, consts, types, True, warps, 1
    for name, kernel, consts, types, warps, stages in sla_variants():
        yield name, kernel, consts, types, True, warps, stages
    for name, kernel, consts, types, warps in gla_variants():
        yield name, kernel, consts, types, True, warps, 1


def main() -> int:
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    failed = 0
    for name, kernel, consts, dtype, row_div16, warps, stages in _launches():
        if only not in name:
            continue
        try:
            if isinstance(dtype, dict):  # explicit argument types
                compiled = compile_variant(kernel, consts, "", row_div16, warps, stages, types=dtype)
            else:
                compiled = compile_variant(kernel, consts, dtype, row_div16, warps, stages)
            print(json.dumps({"variant": name, "ok": True, **global_access_widths(compiled)}), flush=True)
        except Exception as exc:  # reported per variant; the caller asserts on the JSON
            failed += 1
            print(json.dumps({"variant": name, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[-600:]}"}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
