"""The model contract: every model linzoo registers with timm passes these checks.

Cheap checks (config, official state-dict layout, feature_info) run for every name on the ``meta`` device;
forward/backward/feature checks build real weights for models up to ``REAL_PARAM_LIMIT`` parameters,
so CI on two CPU cores stays fast (the big variants share their code with the small ones).
"""

from __future__ import annotations

import argparse
import importlib

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import linzoo.vision
from linzoo.weights import check_state_dict

from ..conftest import load_manifest

MODELS = linzoo.vision.list_linzoo_models()
REAL_PARAM_LIMIT = 32e6


def _meta_model(name: str, **kwargs) -> torch.nn.Module:
    with torch.device("meta"):
        return timm.create_model(name, **kwargs)


def _num_params(name: str) -> int:
    return sum(p.numel() for p in _meta_model(name).parameters())


REAL_MODELS = [n for n in MODELS if _num_params(n) <= REAL_PARAM_LIMIT]


def _input_size(model: torch.nn.Module) -> tuple[int, int, int]:
    return tuple(model.pretrained_cfg["input_size"])


def _non_square(size: tuple[int, int, int]) -> tuple[int, int, int]:
    """A non-square size near the default one, each side a multiple of 32 (every family's largest stride)."""
    c, h, w = size
    return c, h + 32, max(32, w - 64)


def test_registry_is_not_empty():
    assert "ravlt_s" in MODELS
    assert all(not timm.models._registry._model_to_module.get(n, "").startswith("timm") for n in MODELS)


@pytest.mark.parametrize("name", MODELS)
def test_pretrained_cfg_and_api(name):
    model = _meta_model(name)
    cfg = model.pretrained_cfg
    for field in ("input_size", "mean", "std", "crop_pct", "interpolation", "num_classes", "first_conv", "classifier"):
        assert cfg.get(field) is not None, f"{name}: pretrained_cfg lacks {field}"
    assert cfg["architecture"] == name
    state = model.state_dict()
    first_convs = (cfg["first_conv"],) if isinstance(cfg["first_conv"], str) else cfg["first_conv"]
    for conv in first_convs:
        assert f"{conv}.weight" in state, f"{name}: first_conv {conv} not in the model"
    classifiers = (cfg["classifier"],) if isinstance(cfg["classifier"], str) else cfg["classifier"]
    for head in classifiers:
        assert f"{head}.weight" in state, f"{name}: classifier {head} not in the model"
    assert model.num_classes == cfg["num_classes"]
    assert isinstance(model.num_features, int) and isinstance(model.head_hidden_size, int)
    assert len(model.feature_info) >= 1
    for info in model.feature_info:
        assert {"num_chs", "reduction", "module"} <= set(info)
        model.get_submodule(info["module"])
    matcher = model.group_matcher()
    assert "stem" in matcher and "blocks" in matcher
    params = dict(model.named_parameters())
    assert set(model.no_weight_decay()) <= set(params) | {n for n, _ in model.named_buffers()}


@pytest.mark.parametrize("name", MODELS)
def test_state_dict_matches_official_layout(name):
    manifest = load_manifest(name)
    if manifest is None:
        pytest.skip(f"no official manifest for {name}")
    model = _meta_model(name)
    keys = manifest["keys"]
    if manifest.get("framework", "").startswith("tensorflow"):
        # TF variable names (MOAT): map the manifest through the family's converter (meta tensors of its shapes)
        filter_fn = importlib.import_module(type(model).__module__).checkpoint_filter_fn
        official = {k: torch.empty(v, device="meta") for k, v in keys.items()}
        keys = {k: tuple(v.shape) for k, v in filter_fn(official, model).items()}
    check_state_dict(model.state_dict(), keys, what=f"{name} state_dict vs {manifest['source']}")
    assert sum(p.numel() for p in model.parameters()) == manifest["num_params"]


@pytest.mark.parametrize("name", REAL_MODELS)
def test_forward_backward_features_and_files(name, tmp_path):
    """One model build per name (CI has two cores): forward at the default and a non-square size, then
    backward, grad checkpointing, features, classifier reset and file round trips at a small size."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    size = _input_size(model)
    small = (size[0], 64, 96)
    for shape in (size, _non_square(size)):
        x = torch.randn(1, *shape)
        with torch.no_grad():
            feats = model.forward_features(x)
            logits = model.forward_head(feats)
            pre = model.forward_head(feats, pre_logits=True)
        assert logits.shape == (1, model.num_classes), f"{name} at {shape}"
        assert pre.shape == (1, model.head_hidden_size)
        assert torch.isfinite(logits).all()
        if shape == size and feats.dim() == 4 and model.pretrained_cfg.get("pool_size"):
            pool = tuple(model.pretrained_cfg["pool_size"])
            assert pool in (tuple(feats.shape[-2:]), tuple(feats.shape[1:3])), f"{name}: {feats.shape} vs {pool}"

    # bad input
    c, h, w = size
    with pytest.raises(ValueError, match="x"):
        model(torch.randn(c, h, w))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, c + 1, 64, 64))

    # intermediates and timm's feature wrapper
    x = torch.randn(1, *small)
    infos = model.feature_info
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x), rtol=1e-5, atol=1e-5)
    assert len(inter) == len(infos)
    torch.manual_seed(0)
    feat_model = timm.create_model(name, features_only=True).eval()
    with torch.no_grad():
        feats = feat_model(x)
    assert len(feats) == len(infos)
    for f, info, i in zip(feats, infos, inter):
        assert f.shape[1] == info["num_chs"], f"{name}: channels {f.shape} vs {info}"
        assert abs(f.shape[-1] - x.shape[-1] / info["reduction"]) < 1, f"{name}: stride of {f.shape} vs {info}"
        assert abs(f.shape[-2] - x.shape[-2] / info["reduction"]) < 1
        assert f.shape == i.shape
    del feat_model

    # safetensors round trip, then an official-style training checkpoint through timm's pretrained path
    with torch.no_grad():
        ref = model(x)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    fresh = timm.create_model(name).eval()
    fresh.load_state_dict(load_file(str(path)))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ref)
    del fresh
    official = tmp_path / "official.pth"
    key = getattr(linzoo.weights.get_checkpoint(name), "state_dict_key", None) or "model"
    torch.save({key: model.state_dict(), "args": argparse.Namespace(lr=1e-3), "epoch": 3}, official)
    loaded = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(official)}).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref)
    del loaded

    # grad checkpointing leaves the output unchanged; classifier reset
    with torch.no_grad():
        model.set_grad_checkpointing(True)
        torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-5)
        model.set_grad_checkpointing(False)
        model.reset_classifier(0)
        assert model(x).shape == (1, model.head_hidden_size)

    # training: a new head through pretrained loading with another num_classes, every parameter gets a gradient
    model = timm.create_model(name, pretrained=True, num_classes=7, pretrained_cfg_overlay={"file": str(official)})
    model.train()
    out = model(torch.randn(2, *small))
    assert out.shape == (2, 7)
    out.square().mean().backward()
    allowed = getattr(model, "params_without_grad", ())
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None and n not in allowed]
    assert not missing, f"{name}: parameters without gradient: {missing[:8]}"
