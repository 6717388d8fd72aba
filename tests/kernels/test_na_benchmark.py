"""CPU tests of benchmarks/neighborhood_attention.py: case selection, resume from JSON or log, the md/json
writing after every case (with the hand-written tail kept), the time limit, and the rows' environments.

The GPU measurement itself (``run_case``) is replaced by a fake that fills fabricated timings."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch

from ..conftest import load_benchmark


@pytest.fixture(scope="module")
def na():
    return load_benchmark("neighborhood_attention.py")


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


def test_resume_with_redo_measures_a_done_case_again(na, tmp_path, monkeypatch):
    gpu = FakeGPU(na, tmp_path, case_seconds=1.0)
    gpu.install(monkeypatch)
    assert na.main(["--no-docs", "--out", str(tmp_path), "--cases", "0,1"]) == 0
    json_path = tmp_path / "neighborhood_attention.json"
    first = {r["index"]: r["env"]["id"] for r in json.loads(json_path.read_text())["rows"]}
    for c in na.CASES:
        c.results = {}
    gpu2 = FakeGPU(na, tmp_path, case_seconds=1.0)
    gpu2.install(monkeypatch)
    argv = ["--no-docs", "--out", str(tmp_path), "--resume", str(json_path), "--cases", "0,1,2", "--redo", "1"]
    assert na.main(argv) == 0
    assert gpu2.ran == [1, 2]  # case 0 kept, case 1 measured again, case 2 new
    rows = {r["index"]: r["env"]["id"] for r in json.loads(json_path.read_text())["rows"]}
    assert rows[0] == first[0] and rows[1] != first[1] and rows[1] == rows[2]


# ---------------------------------------------------------------------------------------------- CUDA-graph times
def graph_results(index: int) -> dict:
    """``fake_results`` of a host-bound case with CUDA-graph times (ours, flex; timm's fwd+bwd capture failed)."""
    res = fake_results(index)
    base = 0.1 * (index + 1)
    res.update(
        {
            "ours/fwd/graph": base / 2,
            "flex/fwd/graph": base,
            "ours/fwdbwd/graph": base,
            "flex/fwdbwd/graph": "n/a (RuntimeError: operation not permitted when stream is capturing)",
            "timm/fwd": 2 * base,
            "timm/fwd/graph": 0.75 * base,
            "timm/fwdbwd": 6 * base,
            "timm/fwdbwd/graph": "n/a (RuntimeError: capture failed)",
            "gbps/fwd/graph": 1000.0,
            "tflops/fwd/graph": 25.0,
            "limit/fwd/graph": 0.4,
        }
    )
    return res


def table_row(text: str, section: str, label: str) -> list[str]:
    """Cells of ``label``'s row in the table under ``## {section}``."""
    part = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    line = next(x for x in part.splitlines() if x.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_with_and_without_graph_times(na):
    old, new = row(na, 0, env("a")), dict(row(na, 1, env("a")), results=graph_results(1))
    text = na.report([old, new], None, None)
    assert "`[x graph]` = the same call replayed in a CUDA graph" in text
    assert "% limit use our CUDA-graph time where there is one" in text
    fwd = table_row(text, "Forward", na.CASES[1].label())
    # case | ours | flex | naive | sdpa | timm | timm sdpa | vs flex | vs timm | vs timm sdpa | vs sdpa | GB/s | TFLOP/s
    # | % limit | rel. err
    assert fwd[1:3] == ["0.200 [0.100 graph]", "0.500 [0.200 graph]"]
    assert fwd[5] == "0.400 [0.150 graph]" and fwd[6] == "—"
    assert fwd[7:11] == ["2.50× [2.00× graph]", "2.00× [1.50× graph]", "—", "4.00×"]
    assert fwd[11:14] == ["1000", "25.0", "40"]  # on our graph time (the eager ones are 500, 12.5, 20)
    bwd = table_row(text, "Forward + backward", na.CASES[1].label())
    # case | ours | flex | naive | timm | vs flex | vs timm | vs naive | GB/s | TFLOP/s | % limit
    assert bwd[1:3] == ["0.600 [0.200 graph]", "1.500 [graph n/a]"]
    assert bwd[4:7] == ["1.200 [graph n/a]", "2.50×", "2.00×"]  # no graph ratio without both graph times
    assert bwd[10] == "—"  # the fabricated rows have no fwd+bwd limit
    failures = text.split("CUDA-graph capture failed (eager time only): ", 1)[1].splitlines()[0]
    assert f"{na.CASES[1].label()}, flex fwd+bwd: n/a (RuntimeError: operation not permitted" in failures
    assert f"{na.CASES[1].label()}, timm fwd+bwd: n/a (RuntimeError: capture failed)" in failures
    # a row of an earlier run without graph times renders as before
    fwd_old = table_row(text, "Forward", na.CASES[0].label())
    assert fwd_old[1:3] == ["0.100", "0.250"] and fwd_old[7] == "2.50×" and fwd_old[11:14] == ["500", "12.5", "20"]
    assert "graph" not in " ".join(table_row(text, "Forward + backward", na.CASES[0].label()))
    # only rows without graph times: no capture-failure line
    assert "capture failed (eager" not in na.report([old], None, None)


def test_render_and_resume_mix_rows_with_and_without_graph_times(na, tmp_path, monkeypatch):
    src = tmp_path / "src"
    na.write_outputs(src, [row(na, 0, env("a")), dict(row(na, 1, env("a")), results=graph_results(1))], None, False)
    dst = tmp_path / "dst"
    assert na.main(["--render", str(src / "neighborhood_attention.json"), "--no-docs", "--out", str(dst)]) == 0
    text = (dst / "neighborhood_attention.md").read_text()
    assert "0.200 [0.100 graph]" in text and f"| {na.CASES[0].label()} | 0.100 | 0.250 |" in text
    back, _ = na.load_rows(dst / "neighborhood_attention.json")
    assert back[1]["results"] == graph_results(1) and back[0]["results"] == fake_results(0)
    # --resume from the log of a run that printed graph times (the results dict on the case line)
    log = tmp_path / "run.log"
    log.write_text(f"[  10.0 s] {na.CASES[1].label()} (9.0 s): {graph_results(1)!r}\n")
    gpu = FakeGPU(na, tmp_path / "out", case_seconds=1.0)
    gpu.install(monkeypatch)
    assert na.main(["--no-docs", "--out", str(tmp_path / "out"), "--resume", str(log), "--cases", "0,1"]) == 0
    assert gpu.ran == [0]
    text = (tmp_path / "out" / "neighborhood_attention.md").read_text()
    assert "0.200 [0.100 graph]" in text and "in 2 runs" in text


class GraphBench:
    """Fake ``bench``: runs ``fn`` once, returns ``eager`` ms, or ``graph`` ms for ``graph=True``; a capture
    "fails" (raises) for the calls that pass ``grad_to_none`` (fwd+bwd) when ``fail_bwd``."""

    def __init__(self, eager: float, graph: float, fail_bwd: bool = False):
        self.eager, self.graph, self.fail_bwd, self.graph_calls = eager, graph, fail_bwd, []

    def __call__(self, fn, grad_to_none=None, quick=False, graph=False):
        fn()
        if not graph:
            return self.eager
        self.graph_calls.append("fwdbwd" if grad_to_none is not None else "fwd")
        if grad_to_none is not None:
            assert torch.is_grad_enabled() and all(t.requires_grad for t in grad_to_none)
            if self.fail_bwd:
                raise RuntimeError("operation not permitted when stream is capturing")
        else:
            assert not torch.is_grad_enabled()  # forward timings run under no_grad, as the eager ones
        return self.graph


@pytest.fixture
def cpu_ops(na, monkeypatch):
    """The real ``run_case`` on CPU: our ops on the PyTorch backend, Flex eager (its block mask uncompiled)."""
    import torch.nn.attention.flex_attention as flex_module

    from linzoo import kernels

    def torch_backend(op):  # run_case passes backend="triton" itself: override it, not just default it
        return lambda *args, backend=None, **kwargs: op(*args, backend="torch", **kwargs)

    monkeypatch.setattr(na, "neighborhood_attention_2d", torch_backend(kernels.neighborhood_attention_2d))
    monkeypatch.setattr(na, "window_attention_2d", torch_backend(kernels.window_attention_2d))
    create = flex_module.create_block_mask
    monkeypatch.setattr(flex_module, "create_block_mask", lambda *a, _compile=False, **kw: create(*a, **kw))
    return flex_module.flex_attention


def run_small(na, case, bench, flex=None) -> dict:
    args = types.SimpleNamespace(quick=True)
    na.run_case(case, torch.device("cpu"), torch.float32, bench, args, flex, na.time.monotonic() + 600)
    return case.results


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_run_case_times_graphs_of_ours_flex_timm_only(na, cpu_ops):
    bench = GraphBench(eager=1.0, graph=0.25)
    res = run_small(na, na.Case("t", "window", 1, 2, 8, 8, 8, 4, rpb=True, shift=2), bench, flex=cpu_ops)
    for key in ("ours/fwd", "ours/fwdbwd", "flex/fwd", "timm/fwd", "timm/fwdbwd"):
        assert res[key] == 1.0 and res[key + "/graph"] == 0.25, key
    assert not any(k.endswith("/graph") for k in res if k.split("/")[0] in ("naive", "sdpa", "timm_sdpa"))
    assert res["naive/fwd"] == res["sdpa/fwd"] == res["timm_sdpa/fwd"] == 1.0
    assert res["err_vs_timm"] < 1e-5 and res["err_vs_flex"] < 1e-5  # the peers compute the same attention
    for mode in ("fwd", "fwdbwd"):  # the metrics on the graph time: 4x those on the eager time
        for name in ("gbps", "tflops", "limit"):
            assert res[f"{name}/{mode}/graph"] == pytest.approx(4 * res[f"{name}/{mode}"])


def test_run_case_graph_threshold_and_capture_failure(na, cpu_ops):
    slow = GraphBench(eager=na.GRAPH_UNDER_MS + 0.5, graph=0.25)
    res = run_small(na, na.Case("t", "na", 1, 2, 8, 8, 8, 3, rpb=True), slow)
    assert slow.graph_calls == [] and not any(k.endswith("/graph") for k in res)
    assert res.get("limit/fwd", 0) > 0 and "limit/fwd/graph" not in res, res

    failing = GraphBench(eager=1.0, graph=0.25, fail_bwd=True)
    res = run_small(na, na.Case("t", "window", 1, 2, 8, 8, 8, 4, shift=2), failing)
    assert failing.graph_calls == ["fwd", "fwdbwd", "fwd", "fwdbwd"]  # ours, then timm
    assert res["ours/fwd/graph"] == res["timm/fwd/graph"] == 0.25
    for key in ("ours/fwdbwd/graph", "timm/fwdbwd/graph"):
        assert res[key] == "n/a (RuntimeError: operation not permitted when stream is capturing)"
    assert res["ours/fwdbwd"] == res["timm/fwdbwd"] == 1.0  # the eager timings are kept, nothing else failed
    assert not any(isinstance(v, str) and v.startswith("error") for v in res.values())
    assert "limit/fwdbwd/graph" not in res and res["limit/fwd/graph"] == pytest.approx(4 * res["limit/fwd"])
    text = na.report([{"case": "t", "index": None, "env": env("a"), "results": res}], None, None)
    assert "| t | 1.000 [0.250 graph] |" in text and "| t | 1.000 [graph n/a] |" in text
    assert "t, ours fwd+bwd: n/a (RuntimeError: operation not permitted" in text
