"""benchmarks/gla.py on the CPU: memory floor, case selection, peers' availability, loading the official file by
path without the fla package, and the rendered table (kept hand-written notes)."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from ..conftest import load_benchmark


def _row(case: str, mode: str) -> dict:
    return dict(
        case=case, B=2, H=3, L=196, dk=32, dv=64, dtype="bfloat16", mode=mode,
        ms={"ours": 0.5, "chunked": 2.0, "official": 1.0}, graph_ms={"ours": 0.25, "official": 0.75},
        na={"compiled": "skipped (this run)"}, err={"ours": 1e-3, "official": 2e-3}, gbps=100.0, pct_floor=3.0,
    )  # fmt: skip


def test_floor_bytes():
    bench = load_benchmark("gla.py")
    assert bench.floor_bytes(1, 1, 10, 4, 8, 2, "fwd") == 2 * 10 * (4 * 4 + 2 * 8)
    assert bench.floor_bytes(1, 1, 10, 4, 8, 2, "fwd+bwd") == 2 * 10 * (4 * 4 + 2 * 8 + 8 * 4 + 3 * 8)


def test_case_selection():
    bench = load_benchmark("gla.py")
    assert bench.select_cases(False, None) == bench.CASES
    assert [c[0] for c in bench.select_cases(True, None)] == list(bench.QUICK_CASES)
    assert bench.select_cases(False, "0,2-3") == [bench.CASES[i] for i in (0, 2, 3)]
    with pytest.raises(SystemExit, match="out of range"):
        bench.select_cases(True, "5")
    with pytest.raises(SystemExit, match="expected indices"):
        bench.select_cases(False, "ViG")


def test_peers_without_official_files_or_fla():
    bench = load_benchmark("gla.py")
    peers = bench.make_peers(8192, None, compiled=lambda *a: None)
    assert callable(peers["ours"]) and callable(peers["chunked"])
    assert peers["compiled"].startswith("n/a (L > ")
    assert peers["official"].startswith("n/a") and peers["official_pair"].startswith("n/a")
    assert callable(bench.make_peers(196, None, compiled=lambda *a: None)["compiled"])
    assert peers["ours_unsplit"].startswith("n/a") and callable(
        bench.make_peers(8192, None, None, split=True)["ours_unsplit"]
    )


def test_unsplit_restores_the_segment_setting(monkeypatch):
    from linzoo.kernels.gla import triton_gla

    bench = load_benchmark("gla.py")
    monkeypatch.setattr(triton_gla, "FORCE_SEGMENT", 5)
    seen = []
    bench.unsplit(lambda q: seen.append(triton_gla.FORCE_SEGMENT))(torch.empty(1, 1, 37, 4))
    assert seen == [37] and triton_gla.FORCE_SEGMENT == 5


def test_load_official_serves_its_one_import(tmp_path, monkeypatch):
    """The official file imports ``fla.ops.utils``; it is served from the given tree, and any ``fla`` module already
    imported (fla 0.6 is a different package) is left as it was."""
    (tmp_path / "fla" / "ops" / "gla").mkdir(parents=True)
    (tmp_path / "fla" / "ops" / "utils.py").write_text("def contiguous(fn):\n    return fn\n")
    (tmp_path / "fla" / "ops" / "gla" / "recurrent_fuse.py").write_text(
        "from fla.ops.utils import contiguous\n\n\n@contiguous\ndef bid_fused_recurrent_gla(*args):\n    return 42\n"
    )
    sentinel = type(sys)("fla")
    monkeypatch.setitem(sys.modules, "fla", sentinel)
    module = load_benchmark("gla.py").load_official(tmp_path)
    assert module.bid_fused_recurrent_gla() == 42
    assert sys.modules["fla"] is sentinel and "fla.ops.utils" not in sys.modules


def test_official_source_line(tmp_path):
    """fetch_official.sh records the provenance in .official/SOURCES, one folder above .official/vig."""
    bench = load_benchmark("gla.py")
    root = tmp_path / "vig"
    root.mkdir()
    assert bench.official_source(root) == str(root)
    line = "vig/fla from hustvl/ViG@dfb9d32:flash-linear-attention/fla"
    (tmp_path / "SOURCES").write_text("rala/RALA.py from qhfan/RALA@1:x\n" + line + "\n")
    assert bench.official_source(root) == line


def test_render_table_and_kept_notes(tmp_path):
    bench = load_benchmark("gla.py")
    env = dict(gpu="GPU", torch="2", triton="3", date="2026-12-08", bandwidth_gbps=3000.0, official="ViG@dfb9d32")
    rows = [_row("ViG-S @224", "fwd"), dict(_row("ViG-S @224", "fwd+bwd"), ms={"ours": 1.0, "chunked": 4.0})]
    sweep = [dict(_row(f"sweep L={n}", "fwd"), L=n) for n in (196, 784)]
    md = tmp_path / "gla.md"
    md.write_text("old table\n\n" + bench.MARKER + "\n\n## Notes\nhand-written\n")
    bench.render(dict(env=env, rows=rows, sweep=sweep), [tmp_path], plot=False)
    text = md.read_text()
    assert "old table" not in text and text.endswith(bench.MARKER + "\n\n## Notes\nhand-written\n")
    assert "| ViG-S @224 | 2·3·196·32/64 | bfloat16 | fwd | 0.500 [0.250 graph] | n/a | 2.000 (4.00×) |" in text
    assert "1.000 (2.00×) [0.750 graph (3.00×)]" in text and "skipped (this run)" in text
    assert "- chunked: 4.00× over 2 rows" in text and "| 784 |" in text and "ViG@dfb9d32" in text
    assert json.loads((tmp_path / "gla.json").read_text())["rows"][1]["mode"] == "fwd+bwd"


def test_tune_candidates():
    bench = load_benchmark("gla.py")
    fwd = bench.tune_candidates("fwd", 32)
    assert (32, 1) in fwd and (64, 1) not in fwd and (8, 4) in fwd
    bwd = bench.tune_candidates("bwd", 64)
    assert (64, 2) in bwd and all(bv >= 8 for bv, _ in bwd)


def test_render_names_the_tuned_launches(tmp_path):
    bench = load_benchmark("gla.py")
    env = dict(gpu="GPU", torch="2", triton="3", date="2026-12-08", bandwidth_gbps=3000.0)
    tuning = {"TUNING": {"fwd,32,64": [16, 1]}, "log": {}}
    bench.render(dict(env=env, rows=[_row("ViG-S @224", "fwd")], sweep=[], tuning=tuning), [tmp_path], plot=False)
    assert "Launches chosen by `--tune`" in (tmp_path / "gla.md").read_text()
