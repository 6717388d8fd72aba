"""The safe loader, the registry and the converter."""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import types

import pytest
import torch

from linzoo.weights import (
    CheckpointLoadError,
    StateDictMismatchError,
    check_state_dict,
    convert_checkpoint,
    extract_state_dict,
    get_checkpoint,
    list_checkpoints,
    load_checkpoint_file,
    load_state_dict_file,
    pretrained_source,
)


def _weights():
    return {"a.weight": torch.randn(3, 2), "a.bias": torch.randn(3)}


def test_plain_and_namespace_checkpoints_load(tmp_path):
    path = tmp_path / "ckpt.pth"
    weights = _weights()
    torch.save({"model": weights, "args": argparse.Namespace(lr=0.1), "max_accuracy": 81.5}, path)
    loaded = load_state_dict_file(path)
    assert set(loaded) == set(weights)
    torch.testing.assert_close(loaded["a.weight"], weights["a.weight"])


def test_yacs_config_is_allowed_without_yacs_installed(tmp_path, monkeypatch):
    """InLine/SLAB files pickle a yacs CfgNode (a dict subclass): allowed by name, yacs not needed."""
    yacs = types.ModuleType("yacs")
    config = types.ModuleType("yacs.config")

    class CfgNode(dict):
        """Stand-in for yacs' CfgNode (a dict subclass) so the checkpoint pickles under its real name."""

    CfgNode.__module__ = "yacs.config"
    CfgNode.__qualname__ = "CfgNode"
    config.CfgNode = CfgNode
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", config)
    node = CfgNode(MODEL=CfgNode(TYPE="inline_swin"))
    path = tmp_path / "yacs.pth"
    torch.save({"model": _weights(), "config": node, "epoch": 299}, path)
    monkeypatch.delitem(sys.modules, "yacs.config")
    monkeypatch.delitem(sys.modules, "yacs")
    checkpoint = load_checkpoint_file(path)
    assert checkpoint["config"]["MODEL"]["TYPE"] == "inline_swin"
    assert set(extract_state_dict(checkpoint)) == {"a.weight", "a.bias"}


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unknown_globals_are_refused_with_the_file_name(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": _weights(), "payload": _Evil()}, path)
    with pytest.raises(CheckpointLoadError, match="evil.pth.*print.* is not in"):
        load_checkpoint_file(path)


def test_extract_state_dict_variants(tmp_path):
    weights = _weights()
    assert set(extract_state_dict(weights)) == set(weights)
    assert set(extract_state_dict({"state_dict": {f"module.{k}": v for k, v in weights.items()}})) == set(weights)
    ema = extract_state_dict({"model": weights, "model_ema": {"b": torch.ones(1)}}, "model_ema")
    assert set(ema) == {"b"}
    with pytest.raises(CheckpointLoadError, match="no entry 'nope'"):
        extract_state_dict({"model": weights}, "nope")
    with pytest.raises(CheckpointLoadError, match="not found"):
        load_checkpoint_file("/nonexistent/file.pth")
    with pytest.raises(CheckpointLoadError, match="linzoo_not_a_ckpt"):
        with open(tmp_path / "linzoo_not_a_ckpt.pth", "wb") as f:
            pickle.dump({"x": 1}, f)
        load_checkpoint_file(tmp_path / "linzoo_not_a_ckpt.pth")


def test_check_state_dict_lists_every_kind_of_mismatch():
    ref = {"a": (2, 2), "b": (3,), "c": (1,)}
    state = {"a": torch.zeros(2, 3), "b": torch.zeros(3), "d": torch.zeros(1)}
    with pytest.raises(StateDictMismatchError) as err:
        check_state_dict(state, ref)
    text = str(err.value)
    assert "missing (1): c" in text and "unexpected (1): d" in text and "a: (2, 3) != (2, 2)" in text


def test_convert_checkpoint_writes_safetensors_and_config(tmp_path):
    model = torch.nn.Linear(2, 3)
    src = tmp_path / "official.pth"
    torch.save({"model": {"module." + k: v for k, v in model.state_dict().items()}, "args": argparse.Namespace()}, src)
    out = convert_checkpoint(torch.nn.Linear(2, 3), src, tmp_path / "out", config={"architecture": "toy"})
    from safetensors.torch import load_file

    converted = load_file(str(out))
    torch.testing.assert_close(converted["weight"], model.weight.detach())
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architecture"] == "toy"
    with pytest.raises(StateDictMismatchError, match="wrong shape"):
        convert_checkpoint(torch.nn.Linear(2, 4), src, tmp_path / "bad")


def test_registry_entries():
    names = [c.model for c in list_checkpoints()]
    assert {"ravlt_t", "ravlt_s", "ravlt_b", "ravlt_l"} <= set(names)
    ckpt = get_checkpoint("ravlt_s")
    assert ckpt.hf_hub_id == "aldjalkdf/RAVLT" and ckpt.state_dict_key == "model" and ckpt.top1 == 84.4
    src = pretrained_source("ravlt_s")
    assert src["hf_hub_filename"] == "RAVLT_S.pth" and src["custom_load"] == "hf"
    assert pretrained_source("no_such_model") == {}


def test_share_link_without_a_file_name_downloads_under_the_registry_name(tmp_path, monkeypatch):
    """InLine's Tsinghua Cloud links (".../f/<id>/?dl=1") carry no file name: timm gets ``(url, filename)``,
    caches the download as ``<model>.pth`` and ``pretrained=True`` loads the official training checkpoint from
    it (the download itself is faked: no network here)."""
    import timm
    import timm.models._hub as hub

    import linzoo.vision  # noqa: F401  (registers the models)

    name = "inline_deit_t"
    ckpt = get_checkpoint(name)
    assert ckpt.url.endswith("/?dl=1")
    assert pretrained_source(name)["url"] == (ckpt.url, f"{name}.pth")
    assert isinstance(pretrained_source("l2vit_t")["url"], str)  # URLs that name their file stay plain strings
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    downloads = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        downloads.append((url, dst))
        torch.save({"model": model.state_dict(), "epoch": 300, "max_accuracy": 74.5}, dst)

    monkeypatch.setattr(hub, "download_url_to_file", fake_download)
    monkeypatch.setattr(hub, "get_cache_dir", lambda child_dir="": str(tmp_path))
    loaded = timm.create_model(name, pretrained=True).eval()
    assert downloads == [(ckpt.url, str(tmp_path / f"{name}.pth"))]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    timm.create_model(name, pretrained=True)  # cached: no second download
    assert len(downloads) == 1


def test_an_html_page_saved_as_a_checkpoint_is_named_as_such(tmp_path):
    """A share-page link (Google Drive's .../view) downloads HTML: say so instead of an unpickling error."""
    path = tmp_path / "SOFT_Tiny"
    path.write_text("\n  <!DOCTYPE html><html><head><title>Google Drive</title></head></html>")
    with pytest.raises(CheckpointLoadError, match="HTML page, not a checkpoint"):
        load_state_dict_file(path)
