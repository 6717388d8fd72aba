"""benchmarks/lit.py: LiT's head count fits the fused kernel, a tiny CPU run writes table and plot, and the
table renders the OOM / skipped rows a GPU run produces."""

from __future__ import annotations

import json

import pytest

from ..conftest import load_benchmark


@pytest.mark.parametrize(("model", "heads", "head_dim"), [("S", 2, 192), ("B", 3, 256), ("L", 4, 256), ("XL", 6, 192)])
def test_default_linear_heads_are_the_fewest_the_fused_kernel_takes(model, heads, head_dim):
    bench = load_benchmark("lit.py")
    assert bench.default_linear_heads(model) == heads
    assert bench.width(model) // heads == head_dim <= bench.MAX_FUSED_HEAD_DIM
    args = bench.parse_args(["--model", model, "--device", "cpu"])
    assert args.linear_heads == heads and args.sizes == [256, 512, 1024, 2048, 4096]


def test_argument_errors():
    bench = load_benchmark("lit.py")
    with pytest.raises(SystemExit):
        bench.parse_args(["--sizes", "100"])  # not a multiple of 16
    with pytest.raises(SystemExit):
        bench.parse_args(["--linear-heads", "5"])  # does not divide 1152


@pytest.mark.slow
def test_tiny_cpu_run_writes_table_and_plot(tmp_path):
    bench = load_benchmark("lit.py")
    argv = ["--quick", "--device", "cpu", "--model", "S", "--layers", "1", "--sizes", "64", "32"]
    results = bench.main([*argv, "--no-docs", "--out", str(tmp_path), "--time-budget", "0"])
    rows = results["rows"]
    assert [(r["pixels"], r["mode"], r["model"]) for r in rows][:4] == [
        (32, "infer", "lit"),
        (32, "infer", "dit"),
        (32, "train", "lit"),
        (32, "train", "dit"),
    ]
    assert len(rows) == 8 and all(r["status"] == "ok" and r["seconds"] > 0 for r in rows)
    assert results["linear_heads"] == 2 and results["linear_head_dim"] == 192
    table = (tmp_path / "lit.md").read_text()
    assert "| infer | 64 | 16 |" in table and "| train | 32 | 4 |" in table
    assert json.loads((tmp_path / "lit.json").read_text())["rows"][0]["model"] == "lit"
    assert (tmp_path / "lit.png").stat().st_size > 10_000


def test_time_budget_skips_the_remaining_sizes(tmp_path):
    bench = load_benchmark("lit.py")
    argv = ["--device", "cpu", "--model", "S", "--layers", "1", "--sizes", "32", "--modes", "infer"]
    results = bench.main([*argv, "--no-docs", "--out", str(tmp_path), "--time-budget", "1e-9"])
    assert [r["status"] for r in results["rows"]] == ["skipped", "skipped"]
    assert "time budget" in (tmp_path / "lit.md").read_text()


def _row(kind, pixels, mode, status="ok", seconds=0.1, peak=2.0):
    row = {"model": kind, "pixels": pixels, "tokens": (pixels // 16) ** 2, "mode": mode, "status": status}
    if status == "ok":
        row.update(seconds=seconds, peak_gib=peak, warmup_s=seconds, repeats=3)
    if status == "skipped":
        row["reason"] = "time budget: needs ~30 s, 5 s left"
    return row


def test_markdown_and_plot_of_a_gpu_shaped_run(tmp_path):
    bench = load_benchmark("lit.py")
    results = {
        "model": "XL",
        "layers": 28,
        "width": 1152,
        "params_m": {"lit": 676.0, "dit": 675.1},
        "linear_heads": 6,
        "linear_head_dim": 192,
        "lit_kernel_backend": "triton",
        "dtype": "bfloat16",
        "device_type": "cuda",
        "device": "NVIDIA H100",
        "torch": "2.x",
        "time_budget_s": 75.0,
        "wall_s": 70.0,
        "rows": [
            _row("lit", 2048, "infer", seconds=0.2),
            _row("dit", 2048, "infer", seconds=0.4),
            _row("lit", 4096, "infer", seconds=0.8, peak=6.0),
            _row("dit", 4096, "infer", "skipped"),
            _row("lit", 4096, "train", seconds=2.0, peak=60.0),
            _row("dit", 4096, "train", "OOM"),
        ],
    }
    md = bench.write_markdown(results)
    assert "| infer | 2048 | 16,384 | 0.2000 | 0.4000 | 0.50 | 2.00 | 2.00 |" in md
    assert "| infer | 4096 | 65,536 | 0.8000 | skipped† | — | 6.00 | skipped† |" in md
    assert "| train | 4096 | 65,536 | 2.0000 | **OOM** | DiT OOM | 60.00 | **OOM** |" in md
    assert "- DIT infer 4096 px: time budget: needs ~30 s, 5 s left" in md
    assert "backend `triton`" in md and "Note:" not in md
    results["lit_kernel_backend"] = "torch"
    assert "**Note:** LiT's attention ran on the `torch` backend" in bench.write_markdown(results)
    bench.write(results, [tmp_path])
    assert (tmp_path / "lit.png").stat().st_size > 10_000
