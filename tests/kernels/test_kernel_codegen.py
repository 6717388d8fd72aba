"""The Triton kernels compile for sm_90 within its shared memory (no GPU needed); linear-attention rows
load/store vectorised.

The CPU interpreter cannot catch a kernel that fails to lower or a row access that the compiler cannot prove
aligned (e.g. 40 channels: scalar 2-byte accesses, several times slower on the GPU); this compiles every
launchable variant ahead of time in a subprocess (the interpreter must be off) and checks the PTX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
SCRIPT = Path(__file__).with_name("kernel_codegen.py")
H100_SHARED_BYTES = 232448  # opt-in shared memory per block on sm_90 (launches above it raise OutOfResources)


@pytest.mark.slow
def test_every_variant_compiles_and_rows_are_vectorised():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=900)
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert reports, proc.stdout[-2000:] + proc.stderr[-2000:]
    failed = [r for r in reports if not r["ok"]]
    assert not failed, json.dumps(failed, indent=1)[:4000]
    too_big = [r["variant"] for r in reports if r["shared_bytes"] > H100_SHARED_BYTES]
    assert not too_big, f"shared memory over the H100's {H100_SHARED_BYTES} bytes per block: {too_big}"
    # register spills (ptxas stack bytes per thread): the fp32 configs once spilled 3-26 KB and ran 6-20x
    # slower than eager PyTorch; what remains is the dS launch at dk > 128 in fp32 (~600 B at 16 rows)
    spilled = {r["variant"]: r["stack_bytes"] for r in reports if r.get("stack_bytes", 0) > 1024}
    assert not spilled, f"kernels spilling more than 1 KB of registers per thread: {spilled}"
    assert all("stack_bytes" in r for r in reports), "Triton's cuobjdump did not report register use"
    scalar = {"ld.global.b16", "st.global.b16"}  # one bf16 element per instruction
    # as launched: 16-divisible strides without a hint (dk 64, 160), 40-channel rows with RV = 8
    launched = [r for r in reports if "bf16_dk" in r["variant"] and "dk40_rv1" not in r["variant"]]
    # (the reduce kernels read only fp32 partials, no rows)
    unhinted_40 = [r for r in reports if "dk40_rv1" in r["variant"] and "reduce" not in r["variant"]]
    assert any("dk64_rv1" in r["variant"] for r in launched) and any("dk40_rv8" in r["variant"] for r in launched)
    for r in launched:
        assert not scalar & set(r["loads"] + r["stores"]), r
    # without the alignment hint the 40-channel rows fall back to scalar accesses: the check above can fail
    assert unhinted_40 and all(scalar & set(r["loads"] + r["stores"]) for r in unhinted_40)
    # the depthwise convolution on channels-last maps: a tap is a vector load of contiguous channels
    depthwise = [r for r in reports if r["variant"].startswith("dwconv_")]
    assert depthwise and all(not scalar & set(r["loads"] + r["stores"]) for r in depthwise), depthwise
    # the bidirectional GLA keeps both fp32 states of a program in registers: any spill is a slow kernel
    gla = {r["variant"]: r["stack_bytes"] for r in reports if r["variant"].startswith("gla_")}
    assert len(gla) == 20 and not any(gla.values()), gla
