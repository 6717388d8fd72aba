"""Ahead-of-time compile of every linear-attention Triton kernel for sm_90, without a GPU.

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
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from linzoo.kernels.linear_attention import triton_kernels as tk

_IO = {"Q", "K", "V", "OUT", "DO", "DQ", "DK_", "DV_"}  # (B, H, N, D) tensors in the input dtype
_FLOATS = {"scale", "eps", "clamp_min"}
_INTS = {"N", "H", "C", "CHUNK"}


def compile_variant(kernel, consts: dict, dtype: str, row_div16: bool, num_warps: int, num_stages: int):
    params = list(inspect.signature(kernel.fn).parameters)
    consts = dict(consts)
    for p in params:  # unit channel strides are specialised to the constant 1 by Triton's launcher
        if re.fullmatch(r"s_\w*d", p):
            consts[p] = 1
    sig, attrs = {}, {}
    for i, p in enumerate(params):
        if p in consts:
            sig[p] = "constexpr"
        elif p in _IO:
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
    }


def variants():
    """(name, kernel, constexprs, dtype, rows 16-aligned, launch kind) over the modes the op can launch."""
    for dk, dv, rv in ((64, 64, 8), (40, 40, 8), (40, 40, 1), (160, 160, 8)):
        dkp = max(16, triton.next_power_of_2(dk))
        dvp = max(16, triton.next_power_of_2(dv))
        bdv = min(dvp, 128 if dkp <= 128 else 64)
        dims = dict(DK=dk, DV=dv, DKP=dkp, BDV=bdv, NUM_DVT=dvp // bdv, RV=rv)
        for norm, rope, fmap in ((0, False, 2), (4, True, 2), (3, False, 0), (2, False, 1)):
            tag = f"dk{dk}_rv{rv}_norm{norm}{'_rope' if rope else ''}"
            flags = dict(FMAP=fmap, NORM=norm, ROPE=rope)
            yield f"state_{tag}", tk._state_kernel, dict(**flags, LOW=True, PREC="tf32", **dims), "state"
            yield f"out_{tag}", tk._out_kernel, dict(**flags, HAS_TEMP=False, PREC="tf32", LOWS=True, **dims), "out"
            bwd = dict(**flags, HAS_TEMP=norm == 0, LOW=True, LOWS=True, PREC="tf32", **dims)
            loop = dims["NUM_DVT"]
            yield f"bwd_q_{tag}", tk._bwd_q_kernel, dict(bwd, T_LOOP=loop, DO_DQ=True, DO_DS=loop == 1), "bwd_q"
            kv = dict(**flags, PREC="tf32", LOWS=True, **dims)
            yield f"bwd_kv_{tag}", tk._bwd_kv_kernel, kv, "bwd_kv"
            if norm == 4:
                small = dict(FMAP=fmap, DK=dk, DKP=dkp, RV=rv)
                yield f"qsum_{tag}", tk._qsum_kernel, small, "qsum"
                yield f"dq_fix_{tag}", tk._bwd_dq_fix_kernel, small, "qsum"


def main() -> int:
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    failed = 0
    for name, kernel, consts, kind in variants():
        if only not in name:
            continue
        tk._INTERPRET = False  # launch_config: the compiled-mode defaults
        cfg = tk.launch_config(kind, consts["DKP"], consts.get("BDV", 64))
        consts = dict(consts, BLOCK_N=cfg["BLOCK_N"])
        row_div16 = consts["DK"] % 16 == 0
        try:
            compiled = compile_variant(kernel, consts, "bf16", row_div16, cfg["num_warps"], cfg["num_stages"])
            print(json.dumps({"variant": name, "ok": True, **global_access_widths(compiled)}), flush=True)
        except Exception as exc:  # reported per variant; the caller asserts on the JSON
            failed += 1
            print(json.dumps({"variant": name, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[-600:]}"}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
