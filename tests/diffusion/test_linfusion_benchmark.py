"""benchmarks/linfusion.py: its UNet configs are the official ones, and a tiny CPU run writes table and plot."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ..conftest import load_manifest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "linfusion.py"


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("linzoo_bench_linfusion", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_benchmark_configs_are_the_official_unets(name):
    bench = _load_benchmark()
    assert bench.UNET_CONFIGS[name] == load_manifest(f"linfusion_{name}")["unet_config"]


@pytest.mark.slow
def test_tiny_cpu_run_writes_table_and_plot(tmp_path, monkeypatch):
    from linzoo.kernels import ENV_VAR

    monkeypatch.setenv(ENV_VAR, "auto")  # restored after the test (--kernel-backend sets it)
    bench = _load_benchmark()
    results = bench.main(["--tiny", "--quick", "--device", "cpu", "--out", str(tmp_path), "--kernel-backend", "torch"])
    for name in ("sd15", "sdxl"):
        rows = results["models"][name]
        assert [r["resolution"] for r in rows] == bench.TINY_RESOLUTIONS[name]
        assert all(r[v]["status"] == "ok" and r[v]["ms"] > 0 for r in rows for v in ("sdpa", "linfusion"))
        assert rows[0]["layers_replaced"] > 0
    table = (tmp_path / "linfusion.md").read_text()
    assert "| 128² | 256 |" in table and "tiny configs" in table
    assert json.loads((tmp_path / "linfusion.json").read_text())["kernel_backend"] == "torch"
    assert (tmp_path / "linfusion.png").stat().st_size > 10_000
