"""benchmarks/linear_attention.py on the CPU: case selection, resumed tables and kept hand-written notes."""

from __future__ import annotations

import json

import pytest

from ..conftest import load_benchmark


def _row(case: str, mode: str, run: str) -> dict:
    return dict(
        case=case, B=1, H=2, N=64, dk=16, dv=16, feature_map="elu+1", normalizer="standard", rope=False,
        dtype="bfloat16", mode=mode, ms={"ours": 1.0, "eager": 3.0}, graph_ms={}, na={}, err=1e-3, run=run,
    )  # fmt: skip


def test_case_indices():
    bench = load_benchmark("linear_attention.py")
    assert bench._indices("0,3,5-7", 10) == [0, 3, 5, 6, 7]
    with pytest.raises(SystemExit, match="out of range"):
        bench._indices("2,12", 10)
    with pytest.raises(SystemExit, match="expected indices"):
        bench._indices("DiT", 10)


def test_render_keeps_notes_and_marks_runs(tmp_path):
    bench = load_benchmark("linear_attention.py")
    env = dict(gpu="GPU", torch="2", triton="3", date="2026-11-23", bandwidth_gbps=3000.0)
    results = dict(env=env, rows=[_row("A", "fwd", "r1"), _row("B", "fwd", "r2")], sweep=[], tuning=None)
    md = tmp_path / "linear_attention.md"
    md.write_text("old table\n\n" + bench.MARKER + "\n\n## Notes\nhand-written\n")
    bench.render(results, [tmp_path], plot=False)
    text = md.read_text()
    assert "old table" not in text and text.endswith(bench.MARKER + "\n\n## Notes\nhand-written\n")
    assert "Rows from 2 runs" in text and "| A (run r1) |" in text and "| B (run r2) |" in text
    assert "eager: 3.00× over 2 rows" in text
    assert json.loads((tmp_path / "linear_attention.json").read_text())["rows"][1]["run"] == "r2"
    # one run: plain case labels; no marker yet: the generated part only
    md.unlink()
    results["rows"] = [_row("A", "fwd", "r1")]
    bench.render(results, [tmp_path], plot=False)
    text = md.read_text()
    assert "| A |" in text and "Rows from" not in text and text.rstrip().endswith(bench.MARKER)


def test_render_marks_rows_run_with_the_wave_split(tmp_path):
    bench = load_benchmark("linear_attention.py")
    env = dict(gpu="GPU", torch="2", triton="3", date="2026-12-08", bandwidth_gbps=3000.0)
    rows = [_row("A", "fwd", "r1"), dict(_row("B", "fwd", "r1"), waves=True)]
    bench.render(dict(env=env, rows=rows, sweep=[], tuning=None), [tmp_path], plot=False)
    text = (tmp_path / "linear_attention.md").read_text()
    assert "| A |" in text and "| B † |" in text and "Rows marked † ran with the per-pass one-wave split" in text
