"""benchmarks/sparse_linear_attention.py on the CPU: work/floor formulas, case selection, the rendered table."""

from __future__ import annotations

import json
import os

import pytest
import torch

from ..conftest import load_benchmark


def _row(case: str, mode: str, ms: dict) -> dict:
    return dict(
        case=case, B=1, H=12, N=32760, d=128, block_q=128, block_k=64, sparsity=0.95, T=25, rho=25 / 512,
        dtype="bfloat16", mode=mode, ms=ms, graph_ms={}, na={"official": "n/a (not carried)"}, peer_s={},
    )  # fmt: skip


def test_work_matches_kernels_md():
    bench = load_benchmark("sparse_linear_attention.py")
    # kernels.md §5.3: SLA fwd Wan-1.3B B1 H12 N32760 d128 at 5 % of the blocks: 355 GFLOP, 503 MB, compute-bound
    flops, moved = bench.work(1, 12, 32760, 128, 0.05, 2, "fwd")
    assert round(flops / 1e9) == 355 and round(moved / 1e6) == 503
    assert bench.floor_ms(flops, moved, 798e12, 3.0e12) == pytest.approx(0.445, abs=1e-3)
    assert bench.selected_fraction(32760, 64, 0.95) == (25, 25 / 512)  # int(0.05 · 512) blocks
    assert bench.dense_flops(2, 16, 32760, 128, "fwd+bwd") == pytest.approx(3.5 * 4 * 2 * 16 * 32760**2 * 128)
    assert bench._indices("0,2-3", 7) == [0, 2, 3]
    with pytest.raises(SystemExit, match="out of range"):
        bench._indices("9", 7)


def test_render_table_ratios_backward_and_notes(tmp_path):
    bench = load_benchmark("sparse_linear_attention.py")
    env = dict(gpu="GPU", torch="2", triton="3", date="2026-12-08", peak_tflops=800.0, bandwidth_gbps=3000.0)
    rows = [
        _row("Wan", "fwd", {"ours": 1.0, "ours_sparse": 0.8, "flex_sparse": 1.6, "sdpa_flash": 20.0}),
        _row("Wan", "fwd+bwd", {"ours": 3.0, "ours_sparse": 2.8, "flex_sparse": 4.0, "sdpa_flash": 70.0}),
    ]
    for r in rows:
        bench.add_derived(r, 800e12, 3.0e12)
    rows[0]["err"] = {"ours_o_s": 1e-3}
    rows[0]["map_ms"] = 0.125
    md = tmp_path / "sparse_linear_attention.md"
    md.write_text("old\n\n" + bench.MARKER + "\n\n## Notes\nkept\n")
    bench.render(dict(env=env, rows=rows), [tmp_path], plot=False)
    text = md.read_text()
    assert "old" not in text.split(bench.MARKER)[0] and text.endswith(bench.MARKER + "\n\n## Notes\nkept\n")
    assert "1.600 (2.00×)" in text  # Flex sparse against ours' sparse branch
    assert "20.000 (20.00×)" in text and "n/a (not carried)" in text
    assert "| Wan | 2.000 | 2.000 | 2.400 | 50.000 |" in text  # fwd+bwd − fwd per peer
    dense = 4 * 12 * 32760**2 * 128
    assert f"| 0.125 | {dense / 1e-3 / 1e12:.0f} |" in text  # block map ms, dense-equivalent TFLOP/s (fwd row)
    assert "ours_o_s 1.0e-03" in text and "flex_sparse / ours_sparse: 1.69×" in text
    saved = json.loads((tmp_path / "sparse_linear_attention.json").read_text())
    assert saved["rows"][0]["pct_floor"] == pytest.approx(100 * rows[0]["floor_ms"] / 1.0)


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="the Triton peers run on the CPU interpreter")
def test_peers_agree_on_a_small_case(monkeypatch):
    """Every peer the benchmark builds (official ones where carried) computes the same o_s on a tiny CPU case."""
    from torch.nn.attention.flex_attention import flex_attention

    bench = load_benchmark("sparse_linear_attention.py")
    monkeypatch.setattr(bench, "DEVICE", "cpu")
    case = ("tiny", 1, 2, 200, 32, 64, 64, 0.5)
    inputs, peers, lut = bench._make_peers(case, torch.float32, flex_attention)
    assert lut.shape == (1, 2, 4, 2)
    ours = peers["ours"](*inputs)
    errs = bench._errors(inputs, peers, lut, case)
    assert errs["ours_o_s"] < 1e-5 and errs["ours_o_l"] < 1e-5 and errs["flex_sparse_o_s"] < 1e-5
    for name in ("ours_sparse", "flex_sparse", "sdpa_flash"):
        assert callable(peers[name])
    assert torch.allclose(peers["ours_sparse"](*inputs), ours[0], atol=1e-6)
    flex_o, flex_l = peers["flex_linear"](*inputs)
    assert torch.allclose(flex_l, ours[1], atol=1e-5)
    if callable(peers["official"]):
        assert errs["official_o_s"] < 1e-5
    else:
        assert peers["official"].startswith("n/a")
    if callable(peers["official_sla1"]):  # SLA-1: no eps in its denominator (ours: 1e-5)
        o_s, o_l = peers["official_sla1"](*inputs)
        ours_c = peers["ours_compl"](*inputs)
        assert torch.allclose(o_s, ours_c[0], atol=1e-5) and torch.allclose(o_l, ours_c[1], atol=1e-4)
