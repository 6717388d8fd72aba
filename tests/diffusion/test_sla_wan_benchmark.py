"""benchmarks/sla_wan.py on CPU: the tiny smoke run, the token arithmetic and the table."""

from __future__ import annotations

import pytest

from ..conftest import load_benchmark


def test_wan_token_counts_match_the_paper_shape():
    bench = load_benchmark("sla_wan.py")
    assert bench.tokens(81, 480, 832) == 32_760  # Wan2.1-1.3B at 480p, 81 frames (SLA paper, kernels.md)
    assert bench.latent_shape(33, 480, 832) == (9, 60, 104)
    with pytest.raises(ValueError, match="4k\\+1"):
        bench.latent_shape(80, 480, 832)


def test_tiny_run_writes_table(tmp_path):
    bench = load_benchmark("sla_wan.py")
    results = bench.main(["--tiny", "--device", "cpu", "--reps", "1", "--topk", "0.5", "--out", str(tmp_path)])
    row = results["rows"][0]
    assert set(row["results"]) == {"sdpa", "sla-0.5", "floor"}
    assert all(entry["status"] == "ok" and entry["ms"] > 0 for entry in row["results"].values())
    table = (tmp_path / "sla_wan.md").read_text()
    assert "| tiny, 5 frames | 48 |" in table and "× SDPA (sla-0.5)" in table
    assert (tmp_path / "sla_wan.json").is_file()
