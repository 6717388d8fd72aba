"""CPU tests of benchmarks/neighborhood_attention.py: case selection, resume from JSON or log, the md/json
writing after every case (with the hand-written tail kept), the time limit, and the rows' environments.

The GPU measurement itself (``run_case``) is replaced by a fake that fills fabricated timings."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "neighborhood_attention.py"


@pytest.fixture(scope="module")
def na():
    spec = importlib.util.spec_from_file_location("na_benchmark_under_test", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(autouse=True)
def fresh_results(na):
    for c in na.CASES:
        c.results = {}


def fake_results(index: int) -> dict:
    """Plausible results of one case (all floats distinct per case, strings as the script writes them)."""
    base = 0.1 * (index + 1)
    return {
        "ours/fwd": base,
        "ours/fwdbwd": 3 * base,
        "flex/fwd": 2.5 * base,
        "flex/fwdbwd": 7.5 * base,
        "naive/fwd": "n/a (memory)",
        "sdpa/fwd": 4 * base,
        "flex_compile_s": 5.0 + index,
        "err_vs_flex": 0.001,
        "gbps/fwd": 500.0,
        "tflops/fwd": 12.5,
        "limit/fwd": 0.2,
    }


def env(name: str) -> dict:
    return {
        "gpu": "Fake GPU",
        "torch": "2.0",
        "triton": "3.0",
        "cuda": "12.0",
        "python": "3.11.0",
        "quick": False,
        "started": name,
        "seconds": 42.0,
        "source": "run",
    }


def row(na, index: int, run_env: dict) -> dict:
    return {
        "case": na.CASES[index].label(),
        "index": index,
        "params": None,
        "env": run_env,
        "seconds": 10.0,
        "results": fake_results(index),
    }


def test_select_cases(na):
    n = len(na.CASES)
    assert na.select_cases(None, quick=False) == list(range(n))
    assert na.select_cases(None, quick=True) == [i for i, c in enumerate(na.CASES) if c.quick]
    assert na.select_cases("6-8,2", quick=False) == [6, 7, 8, 2]  # order as given
    clear = [i for i, c in enumerate(na.CASES) if "clear" in c.label().lower()]
    assert len(clear) == 3 and na.select_cases("clear", quick=True) == clear  # explicit: not quick-filtered
    assert na.select_cases("3, 3,CLEAR", quick=False) == [3] + [i for i in clear if i != 3]
    for bad in ("no-such-case", f"{n}", "5-2", " , "):
        with pytest.raises(ValueError, match="--cases"):
            na.select_cases(bad, quick=False)


def test_compact(na):
    assert na.compact([8, 0, 1, 2, 5, 7]) == "0-2,5,7-8"
    assert na.compact([4]) == "4"
    assert na.compact([]) == ""


def test_rows_from_log_with_device_txt(na, tmp_path):
    log = tmp_path / "bench_neighborhood_attention.log"
    labels = [na.CASES[i].label() for i in (0, 2)]
    log.write_text(
        "/x/neighborhood_attention.py:309: DeprecationWarning: _compile flag ...\n"
        f"[  50.5 s] {labels[0]} (44.2 s): {fake_results(0)!r}\n"
        "  block_mask = create_block_mask(mask_mod, None, None, c.n, kv_len, device=device, _compile=True)\n"
        f"[ 126.5 s] {labels[1]} (56.8 s): {fake_results(2)!r}\n"
        "[ 130.0 s] not a case of this script (1.0 s): {'ours/fwd': 1.0}\n"
    )
    (tmp_path / "device.txt").write_text(
        "NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04\ntorch 2.11.0+cu130 triton 3.6.0 timm 1.0.29\n"
    )
    rows, sweep = na.load_rows(log)
    assert sweep is None
    assert [r["case"] for r in rows] == labels + ["not a case of this script"]
    assert [r["index"] for r in rows] == [0, 2, None]
    assert rows[0]["results"] == fake_results(0) and rows[1]["seconds"] == pytest.approx(56.8)
    e = rows[0]["env"]
    assert (e["gpu"], e["torch"], e["triton"], e["cuda"]) == ("NVIDIA H100 80GB HBM3", "2.11.0+cu130", "3.6.0", "13.0")
    assert e["seconds"] == pytest.approx(130.0) and e["source"] == "log bench_neighborhood_attention.log"
    text = na.env_text(e)
    assert "recovered from log" in text and "CUDA 13.0" in text and "Python" not in text


def test_load_rows_rejects_other_files(na, tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"env": {}, "rows": []}))
    with pytest.raises(ValueError, match="not a JSON of this script"):
        na.load_rows(other)
    empty_log = tmp_path / "x.log"
    empty_log.write_text("nothing here\n")
    with pytest.raises(ValueError, match="neither"):
        na.load_rows(empty_log)
    with pytest.raises(ValueError, match="not a file"):
        na.load_rows(tmp_path / "missing.json")


def test_report_single_and_two_runs(na):
    a, b = env("run-a"), env("run-b")
    one = na.report([row(na, 0, a), row(na, 1, a)], None, None)
    assert "in one process on one GPU" in one and "Environment: Fake GPU, torch 2.0" in one
    assert "| run |" not in one
    assert "| 2.50× |" in one  # flex / ours of the fabricated results
    assert f"--cases {na.compact(list(range(2, len(na.CASES))))}" in one  # the cases still to measure

    rows = na.merge_rows([row(na, 3, b)], [row(na, 0, a), row(na, 1, a)])
    assert [r["index"] for r in rows] == [0, 1, 3]
    two = na.report(rows, None, "p.png")
    assert "in 2 runs" in two and "- run 1: " in two and "- run 2: " in two and "started run-b" in two
    fwd_rows = [line for line in two.splitlines() if line.startswith(f"| {na.CASES[3].label()} |")]
    assert len(fwd_rows) == 2 and all(line.endswith("| 2 |") for line in fwd_rows)
    assert two.count("| run |") == 2 and "![speed-ups](p.png)" in two
    assert "Not measured yet" in two and na.CASES[2].label() in two.split("Not measured yet")[1]


def test_merge_rows_new_wins_and_unknown_last(na):
    a, b = env("a"), env("b")
    unknown = dict(row(na, 0, a), case="gone", index=None)
    merged = na.merge_rows([row(na, 1, a), unknown], [row(na, 1, b), row(na, 0, b)])
    assert [r["case"] for r in merged] == [na.CASES[0].label(), na.CASES[1].label(), "gone"]
    assert merged[1]["env"]["started"] == "b"


def test_write_outputs_keeps_hand_written_tail(na, tmp_path):
    md = tmp_path / "neighborhood_attention.md"
    notes = "## Reading the numbers (by hand)\n\n- a note that must survive\n"
    old_sweep = "## Tile sweep (our NA kernels, bf16, no bias; edited)\n\n| a | b |\n"
    # a file from before the marker existed: generated headings, then hand-written ones
    md.write_text("# title\n\n## Forward\n\n| old |\n\n## Forward + backward\n\n| old |\n\n" + old_sweep + "\n" + notes)
    rows = [row(na, 0, env("a"))]
    na.write_outputs(tmp_path, rows, None, with_plot=False)
    text = md.read_text()
    assert "| old |" not in text and na.MARKER in text
    assert text.split(na.MARKER, 1)[1] == "\n\n" + old_sweep + "\n" + notes
    assert text.index("## Forward") < text.index(na.MARKER) < text.index("## Reading the numbers")
    # rewriting with more rows keeps the tail once, and the JSON round-trips
    rows.append(row(na, 1, env("b")))
    sweep = {"lines": ["| shape | kind | cfg | ms |", "|---|---|---|---|", "| s | fwd | 8x8 | 0.1 |"], "env": env("b")}
    na.write_outputs(tmp_path, rows, sweep, with_plot=False)
    text2 = md.read_text()
    assert text2.count("a note that must survive") == 1 and text2.count(na.MARKER) == 1
    assert "## Tile sweep (our NA kernels, bf16) (run 2)" in text2.split(na.MARKER)[0]
    back, back_sweep = na.load_rows(tmp_path / "neighborhood_attention.json")
    assert [r["case"] for r in back] == [r["case"] for r in rows] and back_sweep == sweep
    assert back[1]["env"] == env("b") and back[0]["results"] == fake_results(0)
    na.write_outputs(tmp_path, back, back_sweep, with_plot=False)
    assert md.read_text() == text2  # idempotent


def test_plot_writes_png(na, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "p.png"
    assert na.plot([row(na, 0, env("a")), row(na, 2, env("a"))], path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message printed without CUDA")
def test_main_without_cuda(na, tmp_path, capsys):
    assert na.main(["--no-docs", "--out", str(tmp_path), "--quick"]) == 1
    assert "needs a CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "neighborhood_attention.md").exists()


def test_main_render_needs_no_gpu(na, tmp_path):
    src = tmp_path / "src"
    na.write_outputs(src, [row(na, 0, env("a"))], None, with_plot=False)
    dst = tmp_path / "dst"
    assert na.main(["--render", str(src / "neighborhood_attention.json"), "--no-docs", "--out", str(dst)]) == 0
    assert na.CASES[0].label() in (dst / "neighborhood_attention.md").read_text()


class FakeGPU:
    """Stands in for the device: ``run_case`` fills fabricated results and advances a fake clock."""

    def __init__(self, na, out: Path, case_seconds: float):
        self.na, self.out, self.case_seconds, self.now, self.ran = na, out, case_seconds, 0.0, []

    def install(self, monkeypatch):
        monkeypatch.setattr(self.na.torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(self.na.torch.cuda, "get_device_name", lambda *a: "Fake GPU")
        monkeypatch.setattr(self.na.torch.cuda, "empty_cache", lambda: None)
        monkeypatch.setattr(self.na, "time", types.SimpleNamespace(monotonic=lambda: self.now))
        monkeypatch.setattr(self.na, "run_case", self.run_case)

    def run_case(self, c, device, dtype, bench, args, flex, deadline):
        index = next(i for i, x in enumerate(self.na.CASES) if x is c)
        # every case finished before this one is already on disk
        path = self.out / "neighborhood_attention.json"
        on_disk = [r["case"] for r in json.loads(path.read_text())["rows"]] if path.exists() else []
        assert all(self.na.CASES[i].label() in on_disk for i in self.ran)
        self.ran.append(index)
        c.results.update(fake_results(index))
        self.now += self.case_seconds


def test_main_writes_after_every_case_and_stops_at_time_limit(na, tmp_path, monkeypatch):
    gpu = FakeGPU(na, tmp_path, case_seconds=30.0)
    gpu.install(monkeypatch)
    code = na.main(["--no-docs", "--out", str(tmp_path), "--cases", "CLEAR,0,5", "--time-limit", "50"])
    assert code == 0
    clear = [i for i, c in enumerate(na.CASES) if "CLEAR" in c.label()]
    assert gpu.ran == clear[:2]  # started at 0 s and 30 s; the third would start at 60 s > 50 s
    data = json.loads((tmp_path / "neighborhood_attention.json").read_text())
    assert [r["index"] for r in data["rows"]] == clear[:2]
    assert all(r["env"]["gpu"] == "Fake GPU" and r["env"]["seconds"] == 60.0 for r in data["rows"])
    assert data["rows"][0]["params"]["shape"] == "circle"

    # a second call finishes the table: resumed rows are skipped and keep their run's environment
    for c in na.CASES:
        c.results = {}
    gpu2 = FakeGPU(na, tmp_path, case_seconds=1.0)
    gpu2.install(monkeypatch)
    json_path = tmp_path / "neighborhood_attention.json"
    assert na.main(["--no-docs", "--out", str(tmp_path), "--resume", str(json_path), "--cases", "CLEAR,0"]) == 0
    assert gpu2.ran == [clear[2], 0]
    data = json.loads(json_path.read_text())
    assert [r["index"] for r in data["rows"]] == sorted(clear + [0])
    started = {r["index"]: r["env"]["started"] for r in data["rows"]}
    assert len({started[clear[0]], started[clear[1]]}) == 1 and started[0] == started[clear[2]]
    text = (tmp_path / "neighborhood_attention.md").read_text()
    assert "in 2 runs" in text and "| run |" in text
