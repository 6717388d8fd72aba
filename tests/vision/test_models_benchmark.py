"""benchmarks/models.py on the CPU: the kernel-backend and channels_last rows measure what their labels say, and
timm peers fixed to 224 px reach other sizes through the any-size variant or the ``img_size`` fallback."""

from __future__ import annotations

import os

import pytest
import timm
import torch

from linzoo.kernels import ENV_VAR

from ..conftest import load_benchmark

SWIN = "swin_tiny_patch4_window7_224"


def test_backend_and_channels_last_rows(tmp_path, monkeypatch):
    """Each row's measurements see its environment and memory format; the variant rows follow the eager row."""
    bench = load_benchmark("models.py")
    monkeypatch.delenv(ENV_VAR, raising=False)
    calls = []

    def fake_measure(model, mode, batch, res, device, args, iters=None, channels_last=False, graph_steps=False):
        weights = [p for p in model.parameters() if p.dim() == 4]
        # 1x1 and depthwise kernels are contiguous in both formats: some kernel must tell them apart
        weights_cl = all(w.is_contiguous(memory_format=torch.channels_last) for w in weights) and not all(
            w.is_contiguous() for w in weights
        )
        calls.append((mode, res, os.environ.get(ENV_VAR), channels_last, weights_cl))
        return {"img_s": 1.0, "mem": float("nan")}

    monkeypatch.setattr(bench, "_measure", fake_measure)
    argv = ["--device", "cpu", "--quick", "--no-sweep", "--out", str(tmp_path), "--peers"]
    argv += [
        "--official-dir",
        str(tmp_path / "none"),
        "--models",
        "ravlt_s",
        "van_b2",
        "--channels-last-rows",
        "van_b2",
    ]
    bench.main(argv)

    assert os.environ.get(ENV_VAR) is None  # restored after the row
    # 4 rows × (infer 64, train 64, infer 96); no official files, no CUDA-graph or compiled rows on the CPU
    assert len(calls) == 12
    rows = [calls[i : i + 3] for i in range(0, 12, 3)]
    assert [[c[:2] for c in row] for row in rows] == [[("infer", 64), ("train", 64), ("infer", 96)]] * 4
    envs = [{c[2] for c in row} for row in rows]
    assert envs == [{None}, {"torch"}, {None}, {None}]
    formats = [{c[3:] for c in row} for row in rows]
    # VAN's weights are channels-last by default: its eager row gets an NCHW input, the variant a channels-last one
    assert formats == [{(False, False)}, {(False, False)}, {(False, True)}, {(True, True)}]

    table = (tmp_path / "models.md").read_text()
    labels = [line.split(" | ")[:2] for line in table.splitlines() if line.startswith(("| ravlt_s", "| van_b2"))]
    assert labels == [
        ["| ravlt_s", "linzoo eager"],
        ["| ravlt_s", "linzoo eager, backend torch"],
        ["| van_b2", "linzoo eager"],
        ["| van_b2", "linzoo eager channels_last"],
    ]
    assert f"sets {ENV_VAR}=torch around its measurements (torch backend)" in table


def test_env_restores_previous_value(monkeypatch):
    bench = load_benchmark("models.py")
    monkeypatch.setenv(ENV_VAR, "triton")
    with bench._env(**{ENV_VAR: "torch"}):
        assert os.environ[ENV_VAR] == "torch"
    assert os.environ[ENV_VAR] == "triton"


def test_any_size_peer_variant_and_img_size_fallback(monkeypatch):
    """timm's any-size Swin takes 96 px; without any-size switches (as timm 1.0.29's Swin lacks
    ``dynamic_img_size``) the model is rebuilt with ``img_size``, same weights, or a clear error where the size
    changes parameter shapes."""
    bench = load_benchmark("models.py")
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    fixed = timm.create_model(SWIN).eval()

    peer = bench.AnySizePeer(SWIN, fixed, cpu)
    assert peer.kwargs.get("strict_img_size") is False  # the switch both timm 1.0.29 and 1.0.31 honour
    assert peer(96) is peer.dynamic

    monkeypatch.setattr(bench, "ANY_SIZE_KWARGS", {})
    peer = bench.AnySizePeer(SWIN, fixed, cpu)
    assert peer.dynamic is None
    model = peer(256).eval()
    assert model.patch_embed.img_size == (256, 256)
    for key, value in fixed.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 256, 256)).shape == (1, 1000)
    with pytest.raises(ValueError, match="img_size=96 changes parameter shapes"):
        peer(96)  # 3×3 last-stage map: timm clips the 7×7 windows, so the bias tables change shape
    assert (
        peer.note()
        == f"{SWIN}: the high-resolution column and the sweep use the model built with img_size=<res> at 256 px."
    )


def test_compiled_first_puts_the_compiled_rows_before_the_eager_ones(tmp_path, monkeypatch):
    """--compiled-first: the rows a time budget would otherwise cut run first (torch.compile is lazy: the fake
    measurement never calls the compiled model, so nothing compiles here)."""
    bench = load_benchmark("models.py")
    monkeypatch.setattr(bench, "_measure", lambda *args, **kwargs: {"img_s": 1.0, "mem": float("nan")})
    argv = ["--device", "cpu", "--quick", "--no-sweep", "--out", str(tmp_path), "--peers", "--backend-rows"]
    argv += ["--official-dir", str(tmp_path / "none"), "--models", "van_b0", "--compile", "van_b0"]
    bench.main(argv + ["--compiled-first"])
    table = (tmp_path / "models.md").read_text()
    labels = [line.split(" | ")[1] for line in table.splitlines() if line.startswith("| van_b0")]
    assert labels == ["linzoo compiled", "linzoo eager"]
    bench.main(argv)
    table = (tmp_path / "models.md").read_text()
    labels = [line.split(" | ")[1] for line in table.splitlines() if line.startswith("| van_b0")]
    assert labels == ["linzoo eager", "linzoo compiled"]


def test_sweep_only_measures_the_curves_and_no_sweep_keeps_the_plots(tmp_path, monkeypatch):
    """--sweep-only: batch-1 inference at every sweep size for the eager rows, no table columns, and plots
    written; a later --no-sweep run leaves those plots alone (it once overwrote them with empty axes)."""
    bench = load_benchmark("models.py")
    calls = []

    def fake_measure(model, mode, batch, res, device, args, iters=None, channels_last=False, graph_steps=False):
        calls.append((mode, batch, res))
        return {"img_s": 10.0 / res, "mem": float(res)}

    monkeypatch.setattr(bench, "_measure", fake_measure)
    argv = ["--device", "cpu", "--quick", "--out", str(tmp_path), "--peers", "--official-dir", str(tmp_path / "none")]
    bench.main(argv + ["--models", "van_b0", "--sweep-only", "--compile", "van_b0"])
    assert calls == [("infer", 1, 64), ("infer", 1, 96)]
    table = (tmp_path / "models.md").read_text()
    assert not [line for line in table.splitlines() if line.startswith("| van_b0 |")]
    assert "| van_b0: linzoo eager | 0.2 / 64.0 | 0.1 / 96.0 |" in table
    plots = {name: (tmp_path / name).read_bytes() for name in ("models_memory.png", "models_throughput.png")}
    bench.main(argv + ["--models", "van_b0", "--no-sweep", "--compile"])
    assert {name: (tmp_path / name).read_bytes() for name in plots} == plots
    with pytest.raises(SystemExit):
        bench.main(argv + ["--sweep-only", "--no-sweep"])


def test_default_models_cover_every_linzoo_family():
    """Issue 12: every registered family's reference variant is in the benchmark's default --models."""
    import timm.models._registry as registry

    bench = load_benchmark("models.py")
    defaults = {*bench.OFFICIAL, *bench.NO_OFFICIAL}
    families = {}
    for name in timm.list_models():
        module = registry._model_entrypoints[name].__module__
        if module.startswith("linzoo.vision."):
            families.setdefault(module, set()).add(name)
    assert len(families) >= 7, sorted(families)
    missing = {module for module, names in families.items() if not names & defaults}
    assert not missing, f"families without a benchmark row: {sorted(missing)}"
