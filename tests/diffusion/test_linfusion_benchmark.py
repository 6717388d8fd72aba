"""benchmarks/linfusion.py: its UNet configs are the official ones, and a tiny CPU run writes table and plot."""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from ..conftest import load_benchmark, load_manifest


@pytest.mark.parametrize("name", ["sd15", "sdxl"])
def test_benchmark_configs_are_the_official_unets(name):
    bench = load_benchmark("linfusion.py")
    assert bench.UNET_CONFIGS[name] == load_manifest(f"linfusion_{name}")["unet_config"]


def _tiny_unet(bench, name="sd15"):
    torch.manual_seed(0)
    return bench.build_unet(bench.tiny_config(name), torch.device("cpu"), torch.float32)


def test_floor_processor_is_the_output_projection():
    """The floor's self-attention is ``to_out(x)`` only, and the variants restore the default processors."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    from linzoo.diffusion.attention import iter_attention_modules

    bench = load_benchmark("linfusion.py")
    unet = _tiny_unet(bench)
    inputs = bench.unet_inputs(unet, 64, 1, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        before = unet(**inputs).sample
        name, attn = next(iter_attention_modules(unet, "self"))
        x = torch.randn(1, 16, attn.to_q.in_features)
        with bench.variant(unet, "floor", "sd15") as changed:
            assert changed == len(list(iter_attention_modules(unet, "self"))) > 0
            torch.testing.assert_close(attn(x), attn.to_out[0](x), rtol=0, atol=0)
            floor = unet(**inputs).sample
        with bench.variant(unet, "linfusion", "sd15") as replaced:
            assert replaced == changed
        after = unet(**inputs).sample
    assert all(isinstance(a.processor, AttnProcessor2_0) for _, a in iter_attention_modules(unet, "all"))
    assert not torch.equal(floor, before)
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def _entry(ms, status="ok", reason=None, **extra):
    entry = {"ms": ms if status == "ok" else None, "peak_gib": 1.5 if status == "ok" else None, "status": status}
    return {**entry, **({"reason": reason} if reason else {}), **extra}


def _row(res, sdpa, sdpa_graph, lin, lin_graph, floor, floor_graph):
    return {
        "resolution": res,
        "tokens": (res // 8) ** 2,
        "layers_replaced": 16,
        "sdpa": sdpa,
        "sdpa_graph": sdpa_graph,
        "linfusion": lin,
        "linfusion_graph": lin_graph,
        "floor": floor,
        "floor_graph": floor_graph,
    }


def test_markdown_and_plot_of_a_gpu_shaped_run(tmp_path):
    """Graph / GPU-bound / OOM / skipped / failed entries as a GPU run produces them (this machine has no GPU)."""
    bench = load_benchmark("linfusion.py")
    gpu_bound = _entry(None, "skipped", "GPU-bound: eager step > 400 ms")
    rows = [
        _row(
            512,
            _entry(57.0),
            _entry(9.0, max_abs_diff=0.0),
            _entry(63.0),
            _entry(10.0, max_abs_diff=2e-3),
            _entry(50.0),
            _entry(8.0, max_abs_diff=0.0),
        ),
        _row(2048, _entry(165.0), _entry(150.0), _entry(96.0), _entry(80.0), _entry(75.0), _entry(60.0)),
        _row(
            4096,
            _entry(2040.0),
            gpu_bound,
            _entry(275.0),
            _entry(260.0),
            _entry(240.0),
            _entry(None, "failed", "RuntimeError: capture"),
        ),
    ]
    oom_rows = [
        _row(
            4096,
            _entry(None, "OOM"),
            _entry(None, "skipped", "eager OOM"),
            _entry(350.0),
            _entry(None, "skipped", "time budget of 130 s spent"),
            _entry(300.0),
            gpu_bound,
        )
    ]
    results = {
        "device": "NVIDIA H100",
        "torch": "2.x",
        "diffusers": "0.42.1",
        "dtype": "float16",
        "batch": 1,
        "kernel_backend": "triton",
        "tiny": False,
        "graphs": True,
        "graph_max_ms": 400.0,
        "time_budget_s": 130.0,
        "wall_s": 99.0,
        "models": {"sd15": rows, "sdxl": oom_rows},
    }
    md = bench.to_markdown(results)
    assert "| 512² | 4,096 | 57.0 ms | 9.0 ms | 63.0 ms | 10.0 ms | 50.0 ms | 8.0 ms | 1.11× | 1.11× | 0.89× |" in md
    # 4096²: SDPA's graph skipped as GPU-bound -> its eager time is used and the ratios are marked
    assert "| 4096² | 262,144 | 2040.0 ms | = eager† | 275.0 ms | 260.0 ms | 240.0 ms | failed | 0.13× | 0.13×† |" in md
    assert "SD-1.5 2048²: LinFusion / SDPA = 0.53× (target ≤ 0.33×: not met); the floor is 0.40× SDPA" in md
    assert "LinFusion is 1.33× the floor" in md
    assert "no attention method that keeps this UNet could meet the target" in md
    assert "SD-1.5 4096²: LinFusion / SDPA = 0.13× (target ≤ 0.25×: met); the floor is 0.12× SDPA" in md
    assert "SDXL 4096²: SDPA OOM, LinFusion 350.0 ms." in md
    assert (
        "| 4096² | 262,144 | **OOM** | skipped | 350.0 ms | skipped | 300.0 ms | = eager† | SDPA OOM | — | SDPA OOM |"
        in md
    )
    assert "SD-1.5 4096² floor_graph: failed (RuntimeError: capture)" in md
    assert "SDXL 4096² linfusion_graph: skipped (time budget of 130 s spent)" in md
    assert "max |Δ| = 2.00e-03" in md
    assert "eager OOM" not in md  # the OOM cell says it
    bench.write(results, tmp_path)
    assert (tmp_path / "linfusion.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "linfusion.json").read_text())["models"]["sdxl"][0]["sdpa"]["status"] == "OOM"


@pytest.mark.slow
def test_tiny_cpu_run_writes_table_and_plot(tmp_path, monkeypatch):
    from linzoo.kernels import ENV_VAR

    monkeypatch.setenv(ENV_VAR, "auto")  # restored after the test (--kernel-backend sets it)
    bench = load_benchmark("linfusion.py")
    results = bench.main(["--tiny", "--quick", "--device", "cpu", "--out", str(tmp_path), "--kernel-backend", "torch"])
    for name in ("sd15", "sdxl"):
        rows = results["models"][name]
        assert [r["resolution"] for r in rows] == bench.TINY_RESOLUTIONS[name]
        assert all(r[v]["status"] == "ok" and r[v]["ms"] > 0 for r in rows for v in bench.VARIANTS)
        assert all(r[f"{v}_graph"]["status"] == "skipped" for r in rows for v in bench.VARIANTS)  # no CUDA here
        assert rows[0]["layers_replaced"] > 0
    table = (tmp_path / "linfusion.md").read_text()
    assert "| 128² | 256 |" in table and "tiny configs" in table and "floor graph" in table
    assert json.loads((tmp_path / "linfusion.json").read_text())["kernel_backend"] == "torch"
    assert (tmp_path / "linfusion.png").stat().st_size > 10_000


def test_time_budget_skips_and_lists_the_rest(tmp_path):
    bench = load_benchmark("linfusion.py")
    args = bench.parse_args(["--tiny", "--quick", "--device", "cpu", "--models", "sd15", "--time-budget", "1e-9"])
    results = bench.run(args)
    row = results["models"]["sd15"][0]
    assert all(row[v]["status"] == "skipped" and "time budget" in row[v]["reason"] for v in bench.VARIANTS)
    assert "sdpa: skipped (time budget" in bench.to_markdown(results)


def test_graph_timing_control_flow_with_stand_ins_for_the_cuda_api(monkeypatch):
    """The CUDA-graph path on the CPU: capture/replay replaced by stand-ins that run the forward once during
    'capture' (the real thing needs a GPU: `pytest -m gpu` / the GPU benchmark run cover it there)."""
    bench = load_benchmark("linfusion.py")
    unet = _tiny_unet(bench)
    inputs = bench.unet_inputs(unet, 64, 1, torch.device("cpu"), torch.float32)
    calls = []

    class FakeGraph:
        def replay(self):
            calls.append("replay")

    class FakeStream:
        def wait_stream(self, other):
            calls.append("wait")

    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: FakeStream())
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: FakeStream())
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "graph", lambda g: contextlib.nullcontext(calls.append("capture")))
    monkeypatch.setattr(torch.cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: 3 * 2**30)
    eager = bench.time_eager(unet, inputs, torch.device("cpu"), 2, 10.0)
    reference = eager.pop("_output")
    entry = bench.time_graph(unet, inputs, torch.device("cpu"), 2, 10.0, reference)
    assert entry["status"] == "ok" and entry["reps"] == 2 and entry["peak_gib"] == 3.0
    assert entry["max_abs_diff"] == 0.0 and entry["ms"] >= 0 and entry["capture_ms"] > 0
    assert calls == ["wait", "wait", "capture", "replay", "replay", "replay"]
    monkeypatch.setattr(torch.cuda, "CUDAGraph", lambda: (_ for _ in ()).throw(RuntimeError("capture refused\nmore")))
    failed = bench.time_graph(unet, inputs, torch.device("cpu"), 2, 10.0, reference)
    assert failed == {"ms": None, "status": "failed", "reason": "RuntimeError: capture refused"}
