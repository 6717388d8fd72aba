"""RAVLT-specific checks: numerics against the official code, RoPE, sizes, official-file handling."""

from __future__ import annotations

import argparse

import pytest
import timm
import torch

import linzoo.vision  # noqa: F401
from linzoo.vision.ravlt import RAVLT, RALAttention, checkpoint_filter_fn

from ..conftest import GOLDEN


def test_matches_official_implementation_golden():
    """Logits of a reduced RAVLT built and run by the official code (qhfan/RALA@a86314f6), same weights."""
    golden = torch.load(GOLDEN / "ravlt_tiny_official.pt", weights_only=True)
    cfg = golden["config"]
    model = RAVLT(
        num_classes=cfg["num_classes"],
        embed_dims=cfg["embed_dims"],
        depths=cfg["depths"],
        num_heads=cfg["num_heads"],
        mlp_ratio=cfg["mlp_ratios"][0],
        layer_scale_init=cfg["layer_init_values"],
        projection=cfg["projection"],
    ).eval()
    model.load_state_dict(checkpoint_filter_fn(golden["state_dict"], model), strict=True)
    with torch.no_grad():
        out = model(golden["input"])
    torch.testing.assert_close(out, golden["output"], rtol=1e-5, atol=1e-5)


def _official_rope(x, h, w, angle):
    """The official theta_shift: per-channel cos/sin, rows on the first half of channels, columns on the second."""
    ih, iw = torch.arange(h).float(), torch.arange(w).float()
    sin = torch.cat(
        [
            torch.sin(ih[:, None] * angle).unsqueeze(1).repeat(1, w, 1),
            torch.sin(iw[:, None] * angle).unsqueeze(0).repeat(h, 1, 1),
        ],
        -1,
    ).flatten(0, 1)
    cos = torch.cat(
        [
            torch.cos(ih[:, None] * angle).unsqueeze(1).repeat(1, w, 1),
            torch.cos(iw[:, None] * angle).unsqueeze(0).repeat(h, 1, 1),
        ],
        -1,
    ).flatten(0, 1)
    rot = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).flatten(-2)
    return x * cos + rot * sin


@pytest.mark.parametrize("kind", ["linear", "softmax"])
def test_attention_matches_direct_formula(kind):
    """RALA and softmax attention against a direct, quadratic transcription of the paper's equations."""
    torch.manual_seed(0)
    dim, heads, h, w = 32, 2, 5, 7
    attn = RALAttention(dim, heads, kind).eval()
    from linzoo.vision.ravlt import RoPEAngles

    ropes = RoPEAngles(dim // heads)
    x = torch.randn(2, dim, h, w)
    with torch.no_grad():
        out = attn(x, ropes(h, w))
        q, k, v, o = attn.qkvo(x).chunk(4, dim=1)
        lepe = attn.lepe(v)
        q, k, v = (attn._heads(t) for t in (q, k, v))
        n, d = h * w, dim // heads
        if kind == "linear":
            fq, fk = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
            alpha = torch.softmax(d**-0.5 * (fq.mean(2, keepdim=True) @ fk.transpose(-1, -2)), -1).transpose(-1, -2)
            kr = fk * alpha * n
            z = 1 / (fq @ kr.mean(2, keepdim=True).transpose(-1, -2) + 1e-6)
            qr, krr = _official_rope(fq, h, w, ropes.angle), _official_rope(kr, h, w, ropes.angle)
            ref = (qr @ krr.transpose(-1, -2)) / n @ v * z  # quadratic form of the same product
        else:
            qr, kr = _official_rope(q, h, w, ropes.angle), _official_rope(k, h, w, ropes.angle)
            ref = torch.softmax(d**-0.5 * qr @ kr.transpose(-1, -2), -1) @ v
        ref = ref.transpose(-1, -2).reshape(2, dim, h, w)
        ref = attn.proj((ref + lepe) * o)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_features_only_at_224_and_640x480():
    model = timm.create_model("ravlt_s", features_only=True).eval()
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    for h, w in ((224, 224), (480, 640)):
        with torch.no_grad():
            feats = model(torch.randn(1, 3, h, w))
        assert [tuple(f.shape[1:]) for f in feats] == [
            (c, h // r, w // r) for c, r in zip((64, 128, 320, 512), (4, 8, 16, 32))
        ]


def test_any_input_size_rounds_up():
    model = timm.create_model("ravlt_t", num_classes=0).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 97, 131)).shape == (1, 1024)
        assert model.forward_features(torch.randn(1, 3, 97, 131)).shape == (1, 512, 4, 5)


def test_official_checkpoint_file_and_prefixes(tmp_path):
    torch.manual_seed(0)
    src = timm.create_model("ravlt_t").eval()
    ddp = {f"module.{k}": v for k, v in src.state_dict().items()}
    path = tmp_path / "RAVLT_T.pth"
    torch.save({"model": ddp, "model_ema": src.state_dict(), "args": argparse.Namespace(epochs=300)}, path)
    model = timm.create_model("ravlt_t", pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    for k, v in src.state_dict().items():
        torch.testing.assert_close(model.state_dict()[k], v)


def test_wrong_checkpoint_lists_mismatches(tmp_path):
    small = timm.create_model("ravlt_t")
    path = tmp_path / "wrong.pth"
    torch.save({"model": small.state_dict()}, path)
    with pytest.raises(ValueError, match="wrong shape"):
        timm.create_model("ravlt_s", pretrained=True, pretrained_cfg_overlay={"file": str(path)})


def test_pretrained_without_network_says_how_to_pass_a_file(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="pretrained_cfg_overlay=dict\\(file="):
        timm.create_model("ravlt_t", pretrained=True)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["linear", "softmax"])
def test_attention_compiles_without_graph_breaks(kind):
    """fullgraph=True fails on any graph break; the whole model is compiled in the GPU tests."""
    torch.manual_seed(0)
    from linzoo.vision.ravlt import RoPEAngles

    attn, ropes = RALAttention(32, 2, kind).eval(), RoPEAngles(16)
    x = torch.randn(1, 32, 6, 5)
    compiled = torch.compile(lambda t: attn(t, ropes(6, 5)), fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), attn(x, ropes(6, 5)), rtol=1e-4, atol=1e-4)


def test_meta_device_and_export():
    with torch.device("meta"):
        model = timm.create_model("ravlt_t")
    out = model(torch.randn(2, 3, 224, 224, device="meta"))
    assert out.shape == (2, 1000) and out.device.type == "meta"
    model = timm.create_model("ravlt_t").eval()
    exported = torch.export.export(model, (torch.randn(1, 3, 64, 64),))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("feature_cls", ["hook", "fx"])
def test_hook_and_fx_features_match_getter(feature_cls):
    """timm's three feature wrappers give the same maps (same seed -> same random weights)."""
    torch.manual_seed(0)
    ref = timm.create_model("ravlt_t", features_only=True).eval()
    torch.manual_seed(0)
    other = timm.create_model("ravlt_t", features_only=True, feature_cls=feature_cls).eval()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        ours, theirs = ref(x), other(x)
        theirs = list(theirs.values()) if isinstance(theirs, dict) else theirs
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b)
