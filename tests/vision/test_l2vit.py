"""L²ViT-specific checks: numerics against the official code, the two attentions, padding, sizes, weights.

(The generic timm contract — forward/backward, features_only, grad checkpointing, official key layout — is
in test_contract.py.)
"""

from __future__ import annotations

import argparse
import json

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import linzoo.vision.l2vit  # noqa: F401  (registers the models even before vision/__init__ imports the module)
from linzoo.vision.l2vit import L2ViT, LinearAttention, WindowAttention, checkpoint_filter_fn
from linzoo.weights import check_state_dict, get_checkpoint

from ..conftest import GOLDEN, load_manifest


def _tiny(**kwargs) -> L2ViT:
    args = dict(dims=(8, 16, 16, 24), depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 3), mlp_ratio=2.0, window_size=3)
    return L2ViT(num_classes=10, **dict(args, **kwargs))


def test_matches_official_implementation_golden():
    """A reduced L²ViT built, randomised and run by the official code (L2ViT@fad0341c); window 3 on a 40x58
    input, so every stage pads (image to 4, maps to even, windows), and the linear-attention denominators fall
    on both sides of the clamp at 100."""
    meta = json.loads((GOLDEN / "l2vit_reduced.json").read_text())
    assert meta["source"].startswith("ChuanyangZheng/L2ViT@fad0341c")
    clamped = meta["clamped_denominator_fraction_per_lga_block"]
    assert any(0.0 < f < 1.0 for f in clamped)
    golden = load_file(str(GOLDEN / "l2vit_reduced.safetensors"))
    state = {k[len("state_dict.") :]: v for k, v in golden.items() if k.startswith("state_dict.")}
    cfg = meta["config"]
    model = L2ViT(**cfg).eval()
    ckpt = {"model": state, "epoch": "best-ema", "args": argparse.Namespace(lr=4e-3)}
    model.load_state_dict(checkpoint_filter_fn(ckpt, model), strict=True)
    with torch.no_grad():
        feats = model.forward_features(golden["input"])
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
    assert feats.shape[-2:] == (2, 2)
    torch.testing.assert_close(pooled, golden["pooled"], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, golden["logits"], rtol=0, atol=1e-5)


def test_linear_attention_formula_both_clamp_branches():
    """out_i = τ_h φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / max(φ(q_i)·Σ_j φ(k_j), 100), φ = ReLU, τ on the numerator only."""
    torch.manual_seed(0)
    dim, heads, h, w = 12, 3, 6, 7
    attn = LinearAttention(dim, heads).eval()
    with torch.no_grad():
        attn.temperature.copy_(torch.tensor([0.3, -1.2, 2.0]).view(heads, 1, 1))
    x = torch.randn(2, h, w, dim) * torch.linspace(0.5, 6.0, h * w).view(1, h, w, 1)  # small and large tokens
    with torch.no_grad():
        out = attn(x)
        q, k, v = attn.qkv(x).view(2, h * w, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        q, k = F.relu(q), F.relu(k)
        den = q @ k.sum(dim=2, keepdim=True).transpose(-1, -2)  # (B, heads, N, 1)
        num = q @ (k.transpose(-1, -2) @ v) * attn.temperature
        expected = attn.proj((num / den.clamp_min(100.0)).transpose(1, 2).reshape(2, h, w, dim))
    below = (den < 100).float().mean().item()
    assert 0.0 < below < 1.0, f"test input must exercise both branches, got fraction {below}"
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(7, 14), (9, 11)])
def test_window_attention_pads_before_the_projection(size):
    """Zero padding goes in before qkv, so padded positions are bias-only keys/values inside the softmax."""
    torch.manual_seed(0)
    dim, heads, ws = 8, 2, 7
    attn = WindowAttention(dim, heads, ws).eval()
    with torch.no_grad():
        attn.qkv.bias.normal_()
    x = torch.randn(1, *size, dim)
    with torch.no_grad():
        out = attn(x)
        hp, wp = -(-size[0] // ws) * ws, -(-size[1] // ws) * ws
        xp = F.pad(x, (0, 0, 0, wp - size[1], 0, hp - size[0]))
        expected = torch.empty(1, hp, wp, dim)
        for r in range(0, hp, ws):
            for c in range(0, wp, ws):
                win = xp[:, r : r + ws, c : c + ws].reshape(1, ws * ws, dim)
                q, k, v = attn.qkv(win).view(1, ws * ws, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
                p = torch.softmax((q * (dim // heads) ** -0.5) @ k.transpose(-1, -2), dim=-1)
                expected[:, r : r + ws, c : c + ws] = (p @ v).transpose(1, 2).reshape(1, ws, ws, dim)
        expected = attn.proj(expected[:, : size[0], : size[1]])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("size", [(32, 32), (45, 61), (17, 100)])
def test_any_input_size(size):
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        feats = model.forward_intermediates(x, intermediates_only=True)
        logits = model(x)
    for i, f in enumerate(feats):
        stride = 4 * 2**i
        assert f.shape[-2:] == (-(-size[0] // stride), -(-size[1] // stride))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


def test_intermediates_nhwc_and_final_norm():
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        final, nchw = model.forward_intermediates(x, norm=True)
        nhwc = model.forward_intermediates(x, norm=True, output_fmt="NHWC", intermediates_only=True)
    for a, b in zip(nchw, nhwc):
        torch.testing.assert_close(a, b.permute(0, 3, 1, 2))
    torch.testing.assert_close(nchw[-1], final)  # norm=True applies the final LayerNorm to the last stage


def test_channels_last_input_matches():
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(2, 3, 50, 70)
    with torch.no_grad():
        ref = model(x)
        out = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_blocks_alternate_local_then_global():
    from linzoo.vision.l2vit import LGABlock, LWABlock

    model = _tiny(depths=(2, 2, 4, 2))
    kinds = [type(b) for b in model.stages[2]]
    assert kinds == [LWABlock, LGABlock, LWABlock, LGABlock]


@pytest.mark.slow
def test_configs_and_pretrained_cfgs():
    expected = {
        "l2vit_t": ((96, 192, 384, 768), (2, 2, 6, 2), (3, 6, 12, 24), 7),
        "l2vit_s": ((96, 192, 384, 768), (2, 2, 18, 2), (3, 6, 12, 24), 7),
        "l2vit_b": ((128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32), 7),
        "l2vit_b_384": ((128, 256, 512, 1024), (2, 2, 18, 2), (4, 8, 16, 32), 12),
    }
    for name, (dims, depths, heads, window) in expected.items():
        with torch.device("meta"):
            model = timm.create_model(name)
        assert [len(s) for s in model.stages] == list(depths)
        assert [i["num_chs"] for i in model.feature_info] == list(dims)
        assert [s[1].attn.num_heads for s in model.stages] == list(heads)
        assert all(s[0].attn.window_size == window for s in model.stages)
    cfg = timm.create_model("l2vit_b_384", pretrained=False).pretrained_cfg
    assert cfg["input_size"] == (3, 384, 384) and cfg["crop_pct"] == 1.0 and cfg["crop_mode"] == "squash"
    assert cfg["tag"] == "in22k_ft_in1k" and "87.0" in cfg["notes"][0]


def test_registry_and_tags():
    top1 = {
        "l2vit_t": 83.1,
        "l2vit_s": 84.1,
        "l2vit_b": 84.4,
        "l2vit_b.in22k_ft_in1k": 86.0,
        "l2vit_b_384.in22k_ft_in1k": 87.0,
        "l2vit_b.in22k": None,
    }
    for name, acc in top1.items():
        ckpt = get_checkpoint(name)
        assert ckpt.top1 == acc and ckpt.state_dict_key == "model"
        assert ckpt.url.startswith("https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/L2ViT-")
    assert set(timm.list_pretrained("l2vit*")) == {
        "l2vit_t.in1k",
        "l2vit_s.in1k",
        "l2vit_b.in1k",
        "l2vit_b.in22k_ft_in1k",
        "l2vit_b.in22k",
        "l2vit_b_384.in22k_ft_in1k",
    }
    with torch.device("meta"):
        model = timm.create_model("l2vit_b.in22k")
    assert model.num_classes == 21841
    manifest = load_manifest("l2vit_b_in22k")
    check_state_dict(model.state_dict(), manifest["keys"], what="l2vit_b.in22k vs the official 22k layout")
    with torch.device("meta"):
        cfg = timm.create_model("l2vit_b.in22k_ft_in1k").pretrained_cfg
    assert cfg["url"].endswith("finetune-224-checkpoint-best.pth") and "86.0" in cfg["notes"][0]


def test_official_checkpoint_file_loads(tmp_path):
    """A ConvNeXt-style training checkpoint ({model, model_ema, optimizer, args...}) loads its raw ``model``."""
    torch.manual_seed(0)
    src, ema = _tiny().eval(), _tiny().eval()
    path = tmp_path / "L2ViT-Tiny-checkpoint-best-ema.pth"
    torch.save(
        {
            "model": src.state_dict(),
            "model_ema": ema.state_dict(),
            "optimizer": {"state": {}, "param_groups": []},
            "epoch": "best-ema",
            "scaler": {},
            "args": argparse.Namespace(model="L2ViT_Tiny"),
        },
        path,
    )
    dst = _tiny().eval()
    dst.load_pretrained(str(path))
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="num_heads"):
        L2ViT(dims=(8, 16, 16, 24), depths=(2, 2, 2, 2), num_heads=(1, 2))
    with pytest.raises(ValueError, match="divisible"):
        L2ViT(dims=(8, 16, 16, 24), depths=(2, 2, 2, 2), num_heads=(3, 2, 2, 3))
    with pytest.raises(ValueError, match="window_size"):
        _tiny(window_size=0)
    with pytest.raises(ValueError, match="global_pool"):
        _tiny(global_pool="max")
    with pytest.raises(TypeError):
        timm.create_model("l2vit_t", layer_scale_init_value=1e-6)
