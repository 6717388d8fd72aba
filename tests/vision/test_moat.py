"""MOAT: parameter counts, the TF-name converter, parity with the official TensorFlow model, the TF checkpoint reader.

Golden data (``tests/fixtures/golden/``), written by ``scripts/moat_tf_golden.py`` with the official deeplab2 code
(commit and TF version in the npz's ``meta``):

- ``moat_tf_golden.npz``: logits (and some stride-16/32 stage outputs) of the official model for several variants,
  sizes and options. The weights are not stored: every TF variable is a seeded function of its name and shape
  (``golden_array`` of the script, imported here), so the test rebuilds them from the reference-key manifests;
- ``moat_mini_tf/``: a real TF-written checkpoint of a shrunk MOAT (official builder with smaller widths, depths,
  head size and tables) with ``/ExponentialMovingAverage`` copies of three variables and a ``global_step``, and
  its logits computed with the EMA values.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import tarfile

import numpy as np
import pytest
import timm
import torch

import linzoo.vision  # noqa: F401  (registers the models)
from linzoo.vision import moat
from linzoo.vision.moat import MOAT, TfSameAvgPool2d, convert_tf_state_dict, relative_position_bias
from linzoo.weights import TFCheckpointError, TFCheckpointReader, load_state_dict_file, load_tf_checkpoint

from ..conftest import GOLDEN, ROOT, load_manifest

# Built trainable-parameter counts of the official TF models (1000 classes), with / without position embedding
PARAMS = {
    "moat_0": (27_846_892, 27_777_544),
    "moat_1": (41_598_448, 41_467_864),
    "moat_2": (73_422_408, 73_248_296),
    "moat_3": (189_958_040, 189_536_280),
    "moat_4": (483_214_184, 482_539_368),
    "tiny_moat_0": (3_355_348, 3_332_232),
    "tiny_moat_1": (5_122_895, 5_094_000),
    "tiny_moat_2": (9_772_741, 9_732_288),
    "tiny_moat_3": (19_534_390, 19_476_600),
}
NAMES = [n + s for n in PARAMS for s in ("", "_no_pe")]
GOLDEN_NPZ = GOLDEN / "moat_tf_golden.npz"
MINI_CKPT = GOLDEN / "moat_mini_tf" / "model.ckpt"
MINI_KWARGS = dict(
    stem_dims=(8, 8),
    dims=(8, 8, 16, 16),
    depths=(1, 1, 1, 1),
    expand_ratio=2,
    head_dim=8,
    pos_embed_sizes=(None, None, 4, 2),
    num_classes=5,
)


def _golden_script():
    """``scripts/moat_tf_golden.py`` as a module (it imports TensorFlow only inside ``main``)."""
    spec = importlib.util.spec_from_file_location("linzoo_moat_tf_golden", ROOT / "scripts" / "moat_tf_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_SCRIPT = _golden_script()
#: the weights the TF run used: a deterministic float32 array per TF variable name and shape
golden_array = _SCRIPT.golden_array


def golden_input(batch: int, height: int, width: int) -> torch.Tensor:
    """``(B, 3, H, W)``: the script's NHWC ``golden_input`` transposed."""
    return torch.from_numpy(_SCRIPT.golden_input(batch, height, width)).permute(0, 3, 1, 2).contiguous()


def _golden() -> tuple[dict[str, np.ndarray], dict]:
    data = dict(np.load(GOLDEN_NPZ))
    return data, json.loads(data.pop("meta").tobytes())


def _assert_close(actual: torch.Tensor, expected: np.ndarray, what: str, rel: float = 1e-4) -> None:
    """Max abs error within ``rel`` of the reference's max magnitude (fp32 through ~20 blocks)."""
    expected = torch.from_numpy(expected)
    err = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    assert err <= rel * scale, f"{what}: max abs error {err:.3e} > {rel} x {scale:.3f}"


def _meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


# --- structure ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_equal_the_official_models(name):
    expected = PARAMS[name.removesuffix("_no_pe")][name.endswith("_no_pe")]
    model = _meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == expected
    tables = [n for n, _ in model.named_parameters() if n.endswith("relative_position_bias_table")]
    assert bool(tables) != name.endswith("_no_pe")


@pytest.mark.parametrize("name", NAMES)
def test_converter_maps_every_official_variable(name):
    """The reference-key manifest (TF names and shapes) -> converter -> strict load. Real random arrays for the
    tiny variants (their layouts are then checked value by value by the golden tests), meta tensors for the rest."""
    keys = load_manifest(name)["keys"]
    model = _meta_model(name)
    if name.startswith("tiny"):
        gen = torch.Generator().manual_seed(0)
        official = {k: torch.randn(v, generator=gen) for k, v in keys.items()}
    else:
        official = {k: torch.empty(v, device="meta") for k, v in keys.items()}
    official["global_step"] = torch.tensor(5)  # outside moat/: ignored
    official["moat/stem/conv_0/kernel/Momentum"] = official["moat/stem/conv_0/kernel"]  # an optimizer slot
    state = convert_tf_state_dict(official)
    model.load_state_dict(state, strict=True, assign=True)
    if name.startswith("tiny"):  # spot-check the layouts
        q = official["moat/block_02_00/attention/q/weight"]
        c = q.shape[0]
        torch.testing.assert_close(model.stages[2].blocks[0].attn.qkv.weight[:c], q.reshape(c, -1).t())
        dw = official["moat/block_01_00/depthwise_conv/depthwise_kernel"]
        torch.testing.assert_close(model.stages[1].blocks[0].depthwise_conv.weight[5, 0], dw[:, :, 5, 0])
        k = official["moat/stem/conv_0/kernel"]
        torch.testing.assert_close(model.stem.conv0.weight[3, 1], k[:, :, 1, 3])


def test_converter_errors_name_the_variable():
    with pytest.raises(ValueError, match="moat/block_00_00/pre_norm/unknown_thing"):
        convert_tf_state_dict({"moat/block_00_00/pre_norm/unknown_thing": torch.zeros(3)})
    keys = {"moat/block_02_00/attention/q/weight": torch.zeros(32, 1, 32)}
    with pytest.raises(ValueError, match="needs q, k and v"):
        convert_tf_state_dict(keys)


def test_relative_position_bias_is_key_minus_query():
    """``B[n, (i, j), (x, y)] = E[n, x - i + H - 1, y - j + W - 1]`` on an un-resized table."""
    h, w = 3, 4
    table = torch.arange(2 * (2 * h - 1) * (2 * w - 1), dtype=torch.float32).view(2, 2 * h - 1, 2 * w - 1)
    bias = relative_position_bias(table, h, w)
    assert bias.shape == (2, h * w, h * w)
    for i, j, x, y in ((0, 0, 0, 1), (2, 3, 0, 0), (1, 2, 2, 0)):
        assert bias[1, i * w + j, x * w + y] == table[1, x - i + h - 1, y - j + w - 1]


def test_lookup_equals_timms():
    from timm.layers.pos_embed_rel import generate_lookup_tensor

    from linzoo.vision.moat import _lookup

    for n in (1, 2, 5, 8):
        assert torch.equal(_lookup(n, torch.device("cpu"), torch.float32), generate_lookup_tensor(n))


def test_tf_same_avg_pool_excludes_padding():
    x = torch.arange(9, dtype=torch.float32).view(1, 1, 3, 3)
    y = TfSameAvgPool2d(2, 2)(x)  # TF pads one row/column after; padded cells do not count
    assert y.shape == (1, 1, 2, 2)
    assert y[0, 0, 1, 1] == 8 and y[0, 0, 0, 1] == (2 + 5) / 2 and y[0, 0, 0, 0] == (0 + 1 + 3 + 4) / 4
    y3 = TfSameAvgPool2d(3, 2)(x)  # odd size, pool 3: one before, one after
    assert y3.shape == (1, 1, 2, 2) and y3[0, 0, 0, 0] == (0 + 1 + 3 + 4) / 4


def test_drop_path_follows_the_official_rule():
    model = _meta_model("tiny_moat_3", drop_path_rate=0.1)  # official survival_prob 0.9
    blocks = [b for s in model.stages for b in s.blocks]
    n = len(blocks)
    assert not hasattr(blocks[0].drop_path, "drop_prob")  # block 0 keeps everything
    assert blocks[-1].drop_path.drop_prob == pytest.approx(0.1 * (n - 1) / n)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="block_types"):
        MOAT(block_types=("mbconv", "moat", "attn", "moat"))
    with pytest.raises(ValueError, match="pool_size"):
        MOAT(pool_size=4)
    with pytest.raises(ValueError, match="window_size"):
        MOAT(window_size=[None, [4, 4]])
    model = MOAT(**MINI_KWARGS, window_size=[None, None, [3, 3], [2, 2]]).eval()
    with pytest.raises(ValueError, match="window_size"):
        model(torch.randn(1, 3, 64, 64))  # stride-16 map 4x4 is not a multiple of 3


# --- parity with TensorFlow ----------------------------------------------------------------------------------
def _cases() -> list[str]:
    return list(_golden()[1]["cases"])


@pytest.mark.parametrize("case", [c for c in _cases() if c != "mini_64x64"])
def test_matches_official_tensorflow(case):
    data, meta = _golden()
    info = meta["cases"][case]
    variant = case.rsplit("_", 1)[0].removesuffix("_pool3").removesuffix("_win")
    kw = info["get_model_kwargs"]
    kwargs = {}
    if "pool_size" in kw:
        kwargs["pool_size"] = kw["pool_size"]
    if "window_size" in kw:
        kwargs["window_size"] = kw["window_size"]
        kwargs["global_attn_at_stage_end"] = kw["global_attention_at_end_of_moat_stage"]
    keys = load_manifest(variant)["keys"]
    official = {k: golden_array(k, tuple(v)) for k, v in keys.items()}
    model = timm.create_model(variant, **kwargs).eval()
    model.load_state_dict(convert_tf_state_dict(official), strict=True)
    x = golden_input(meta["batch"], *info["input_hw"])
    with torch.no_grad():
        final, stages = model.forward_intermediates(x)
        logits = model.forward_head(final)
    _assert_close(logits, data[f"{case}/logits"], f"{case} logits")
    for i in (2, 3):
        if f"{case}/stage{i + 1}" in data:
            ref = data[f"{case}/stage{i + 1}"].transpose(0, 3, 1, 2)
            _assert_close(stages[i][: ref.shape[0]], ref, f"{case} stage {i + 1}")


def test_golden_detects_a_flipped_position_bias():
    """The parity data can fail: query-minus-key (Swin's sign) instead of key-minus-query changes the logits."""
    data, meta = _golden()
    case = "tiny_moat_0_96x128"
    keys = load_manifest("tiny_moat_0")["keys"]
    official = {k: golden_array(k, tuple(v)) for k, v in keys.items()}
    for k in official:
        if k.endswith("relative_position_embedding"):
            official[k] = np.ascontiguousarray(official[k][:, ::-1, ::-1])
    model = timm.create_model("tiny_moat_0").eval()
    model.load_state_dict(convert_tf_state_dict(official))
    with torch.no_grad():
        logits = model(golden_input(meta["batch"], 96, 128))
    with pytest.raises(AssertionError, match="max abs error"):
        _assert_close(logits, data[f"{case}/logits"], case)


# --- the TF checkpoint reader and pretrained loading -----------------------------------------------------------
def test_reader_reads_a_tf_written_checkpoint():
    reader = TFCheckpointReader(MINI_CKPT)
    keys = reader.keys()
    assert "global_step" in keys and "moat/stem/conv_0/kernel/ExponentialMovingAverage" in keys
    assert reader.shape("moat/block_02_00/attention/relative_position_embedding") == (2, 7, 7)
    assert reader.shape("moat/block_03_00/attention/o/weight") == (2, 8, 16)
    step = reader.get("global_step")
    assert step.dtype == torch.int64 and step.item() == 1234
    kernel = reader.get("moat/stem/conv_0/kernel")
    assert kernel.dtype == torch.float32
    np.testing.assert_array_equal(kernel.numpy(), golden_array("moat/stem/conv_0/kernel", (3, 3, 3, 8)))
    var = reader.get("moat/block_00_00/expand_norm/moving_variance")
    np.testing.assert_array_equal(var.numpy(), golden_array("moat/block_00_00/expand_norm/moving_variance", (16,)))
    with pytest.raises(KeyError, match="not_there"):
        reader.get("not_there")
    assert TFCheckpointReader(str(MINI_CKPT) + ".index").keys() == keys


def test_reader_errors(tmp_path):
    bad = tmp_path / "bad.index"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(TFCheckpointError, match="not an SSTable"):
        TFCheckpointReader(bad)
    with pytest.raises(TFCheckpointError, match="no TF checkpoint index"):
        TFCheckpointReader(tmp_path / "missing")
    # a compressed block: flip the first data block's trailer byte (compression type) to snappy
    data = bytearray((MINI_CKPT.parent / "model.ckpt.index").read_bytes())
    first_block_size = _first_block_size(bytes(data))
    data[first_block_size] = 1
    (tmp_path / "c.index").write_bytes(bytes(data))
    with pytest.raises(TFCheckpointError, match="compressed"):
        TFCheckpointReader(tmp_path / "c.index")


def _first_block_size(index: bytes) -> int:
    """Size of the data block at offset 0 (from the index block the footer points to)."""
    from linzoo.weights.tf_checkpoint import _block, _block_entries, _varint

    footer = index[-48:]
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)
    off, pos = _varint(footer, pos)
    size, _ = _varint(footer, pos)
    handle = _block_entries(_block(index, (off, size)))[0][1]
    offset, p = _varint(handle, 0)
    assert offset == 0
    return _varint(handle, p)[0]


def _mini_archive(tmp_path) -> str:
    path = tmp_path / "tiny_moat0_imagenet_1k_256_w_position_embedding.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for f in MINI_CKPT.parent.iterdir():
            tar.add(f, arcname=f"some_folder/{f.name}")
    return str(path)


def test_mini_checkpoint_matches_tensorflow_with_ema(tmp_path):
    data, meta = _golden()
    x = golden_input(meta["batch"], 64, 64)
    tf_vars = load_tf_checkpoint(_mini_archive(tmp_path))
    assert (tmp_path / "tiny_moat0_imagenet_1k_256_w_position_embedding.tar.gz.extracted").is_dir()
    model = MOAT(**MINI_KWARGS).eval()
    model.load_state_dict(convert_tf_state_dict(tf_vars), strict=True)
    with torch.no_grad():
        final, stages = model.forward_intermediates(x)
        logits = model.forward_head(final)
    _assert_close(logits, data["mini_64x64/logits"], "mini logits (EMA)")
    _assert_close(stages[3], data["mini_64x64/stage4"].transpose(0, 3, 1, 2), "mini stage 4")
    model.load_state_dict(convert_tf_state_dict(tf_vars, prefer_ema=False), strict=True)
    with torch.no_grad():
        raw = model(x)
    with pytest.raises(AssertionError):  # the EMA copies matter: the raw values do not give TF's outputs
        _assert_close(raw, data["mini_64x64/logits"], "mini logits (raw)")


def test_pretrained_true_downloads_and_converts_the_archive(tmp_path, monkeypatch):
    """``pretrained=True`` fetches the official tar.gz through timm's cache (faked: no network) and converts it."""
    import timm.models._hub as hub

    (tmp_path / "src").mkdir()
    archive = _mini_archive(tmp_path / "src")
    downloads = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        downloads.append(url)
        shutil.copy(archive, dst)

    monkeypatch.setattr(hub, "download_url_to_file", fake_download)
    monkeypatch.setattr(hub, "get_cache_dir", lambda child_dir="": str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    model = timm.create_model("tiny_moat_0", pretrained=True, **MINI_KWARGS).eval()
    assert downloads == [
        "https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/"
        "tiny_moat0_imagenet_1k_256_w_position_embedding.tar.gz"
    ]
    data, meta = _golden()
    with torch.no_grad():
        logits = model(golden_input(meta["batch"], 64, 64))
    _assert_close(logits, data["mini_64x64/logits"], "pretrained=True")
    # the generic loader reads it too (what `linzoo convert` and convert_checkpoint use)
    state = load_state_dict_file(str(tmp_path / "cache" / "tiny_moat0_imagenet_1k_256_w_position_embedding.tar.gz"))
    assert "moat/stem/conv_0/kernel" in state


# --- timm contract details ---------------------------------------------------------------------------------
def test_features_any_size_and_bias_cache(monkeypatch):
    torch.manual_seed(0)
    model = timm.create_model("tiny_moat_0", features_only=True, out_indices=(1, 2, 3)).eval()
    assert model.feature_info.reduction() == [8, 16, 32]
    assert model.feature_info.channels() == [64, 128, 256]
    for h, w in ((64, 96), (72, 100), (33, 47)):
        with torch.no_grad():
            feats = model(torch.randn(1, 3, h, w))
        for f, r in zip(feats, (8, 16, 32)):
            assert f.shape[-2:] == (math.ceil(h / r), math.ceil(w / r)), (h, w, f.shape)

    net = timm.create_model("tiny_moat_0").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = net(x)
        assert torch.equal(net(x), a)  # second call uses the cached bias
        net.stages[2].blocks[0].attn.relative_position_bias_table.mul_(3.0)  # in place: the cache must notice
        b = net(x)
    assert not torch.allclose(a, b)
    with torch.no_grad():
        net.stages[2].blocks[0].attn.relative_position_bias_table.div_(3.0)
        torch.testing.assert_close(net(x), a)
    caches = net.stages[2].blocks[0].attn._bias_caches
    assert list(caches) == [(4, 4)]
    x2 = torch.randn(1, 3, 96, 64)
    monkeypatch.setattr(moat, "BIAS_CACHE_MAX", 0)  # large biases are rebuilt per call, not kept
    with torch.no_grad():
        c = net(x2)
    assert list(caches) == [(4, 4)]
    monkeypatch.setattr(moat, "BIAS_CACHE_MAX", 1 << 24)
    with torch.no_grad():
        torch.testing.assert_close(net(x2), c)
    assert list(caches) == [(4, 4), (6, 4)]
