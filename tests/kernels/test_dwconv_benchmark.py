"""CPU smoke test of benchmarks/depthwise_conv.py (the Triton kernel in the interpreter): cases, report, JSON."""

from __future__ import annotations

import json
import os

import pytest

from ..conftest import load_benchmark


@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET", "0") != "1", reason="the kernel on the CPU needs the interpreter"
)
def test_quick_run_writes_the_table(tmp_path):
    bench = load_benchmark("depthwise_conv.py")
    full = bench.cases(quick=False)
    assert {c["layer"] for c in full} == {name for name, *_ in bench.LAYERS}
    mlp_1024_s1 = next(c for c in full if c["res"] == 1024 and c["stage"] == 1 and c["gelu"])
    assert (mlp_1024_s1["channels"], mlp_1024_s1["size"]) == (512, 256)  # VAN-B2: 64 channels x 8, 1024 / 4
    bench.main(["--device", "cpu", "--quick", "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "depthwise_conv.json").read_text())
    assert len(rows) == len(bench.cases(quick=True))
    assert all(r["rel_err"] < 1e-5 for r in rows)  # fp32 on the CPU: the kernel equals F.conv2d
    assert (tmp_path / "depthwise_conv.png").stat().st_size > 0
    md = tmp_path / "depthwise_conv.md"
    table = md.read_text()
    assert table.count("| 1 × 32 |") == len(rows) and "LKA 7x7 d3" in table
    md.write_text(table + "\nhand-written reading\n")
    bench.write_report(tmp_path, rows, 1e12, "CPU", "fp32")  # a rewrite keeps the notes under the marker
    assert md.read_text().endswith("hand-written reading\n") and md.read_text().count(bench.MARKER) == 1
