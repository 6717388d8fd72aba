"""RAVLT-specific checks: numerics against the official code, RoPE, sizes, official-file handling."""

from __future__ import annotations

import argparse

import pytest
import timm
import torch

import linzoo.vision  # noqa: F401
from linzoo.vision.layers.fused import rotate_pairs
from linzoo.vision.ravlt import RAVLT, RALAttention, RAVLTBlock, RoPEAngles, checkpoint_filter_fn

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
    ropes = RoPEAngles(dim // heads)
    x = torch.randn(2, dim, h, w)
    with torch.no_grad():
        out = attn(x.permute(0, 2, 3, 1), ropes.tables(h, w, kind)).permute(0, 3, 1, 2)
        q, k, v, o = attn.qkvo(x).chunk(4, dim=1)
        lepe = attn.lepe(v)
        n, d = h * w, dim // heads
        q, k, v = (t.reshape(2, heads, d, n).transpose(-1, -2) for t in (q, k, v))
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


def test_rope_tables_match_official_and_are_cached():
    ropes = RoPEAngles(16)
    x = torch.randn(1, 1, 6 * 5, 16)
    cos, sin = ropes.tables(6, 5, "softmax")
    torch.testing.assert_close(rotate_pairs(x, cos, sin), _official_rope(x, 6, 5, ropes.angle), rtol=0, atol=1e-6)
    assert ropes.tables(6, 5, "softmax")[0] is cos  # cached
    assert ropes.tables(6, 5, "linear")[0].shape == (30, 8)
    ropes.load_state_dict(ropes.state_dict())
    assert ropes.tables(6, 5, "softmax")[0] is not cos  # emptied by load_state_dict
    cos = ropes.tables(6, 5, "softmax")[0]
    ropes.to(torch.float64).float()
    assert ropes.tables(6, 5, "softmax")[0] is not cos  # emptied by .to()
    for size in range(2, 2 + 2 * RoPEAngles._CACHE_SIZE):
        ropes.tables(size, size, "linear")
    assert len(ropes._cache) == RoPEAngles._CACHE_SIZE
    assert "_cache" not in str(ropes.state_dict().keys())
    with pytest.raises(ValueError, match="kind"):
        ropes.tables(6, 5, "window")


def test_tables_cached_in_inference_mode_serve_training():
    """A cache filled under inference_mode must not hand inference tensors to autograd afterwards."""
    torch.manual_seed(0)
    model = RAVLT(embed_dims=(16, 32), depths=(1, 1), num_heads=(1, 2), attn_kinds=("linear", "softmax"))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        model.eval()(x)
    model.train()(x).sum().backward()
    assert model.layers[0].blocks[0].attn.qkvo.weight.grad is not None


@pytest.mark.parametrize("kind", ["linear", "softmax"])
def test_block_matches_official_form_in_any_layout_with_drop_path(kind):
    """The fused block equals the official formula (permute-LayerNorm, conv 1x1, x + DropPath(γ·f)) in train mode
    with stochastic depth (same RNG draws), for contiguous and channels_last inputs, values and gradients."""
    from timm.layers import DropPath

    torch.manual_seed(0)
    dim, heads, h, w = 16, 2, 6, 5
    block = RAVLTBlock(dim, heads, 40, kind, drop_path=0.5, layer_scale_init=0.5).train()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(0.1 * torch.randn_like(p))
    rope = RoPEAngles(dim // heads)

    def ln(norm, t):
        return norm.norm(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def official(x):
        drop = DropPath(0.5)
        x = x + block.pos(x)
        a = block.attn(ln(block.norm1, x).permute(0, 2, 3, 1), rope.tables(h, w, kind)).permute(0, 3, 1, 2)
        x = x + drop(block.gamma_1 * a)
        f = block.ffn.fc1(ln(block.norm2, x))
        f = torch.nn.functional.gelu(f)
        f = block.ffn.fc2(block.ffn.dwconv(f) + f)
        return x + drop(block.gamma_2 * f)

    x0 = torch.randn(8, dim, h, w)
    for fmt in (torch.contiguous_format, torch.channels_last):
        x = x0.clone().contiguous(memory_format=fmt).requires_grad_()
        xr = x0.clone().requires_grad_()
        torch.manual_seed(1)
        out = block(x, rope.tables(h, w, kind))
        torch.manual_seed(1)
        ref = official(xr)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        assert out.shape == ref.shape
        (out * ref.detach()).sum().backward()
        (ref * ref.detach()).sum().backward()
        torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-5)


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
    attn, ropes = RALAttention(32, 2, kind).eval(), RoPEAngles(16)
    x = torch.randn(1, 6, 5, 32)
    compiled = torch.compile(lambda t: attn(t, ropes.tables(6, 5, kind)), fullgraph=True)
    with torch.no_grad():
        got = compiled(x)
        assert not ropes._cache  # traced code computes the tables inline, it does not fill the eager cache
        torch.testing.assert_close(got, attn(x, ropes.tables(6, 5, kind)), rtol=1e-4, atol=1e-4)


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
