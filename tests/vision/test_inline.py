"""InLine-specific checks: numerics against the official code, the attention formula, sizes, checkpoint handling.

Golden files (tests/fixtures/golden/inline_{deit,pvt,swin,cswin}_official.pt) hold reduced models built and run
by the official code (LeapLabTHU/InLine@e463a6f4, random init + perturbation): their state dict (without the
Swin buffers, which ``checkpoint_filter_fn`` must supply), inputs and logits.
"""

from __future__ import annotations

import pickle
import sys
import types

import pytest
import timm
import torch
import torch.nn.functional as F

import linzoo.vision.inline  # noqa: F401  (registers the models)
from linzoo.kernels import linear_attention
from linzoo.vision.inline import (
    CSwinBlock,
    InLineAttention,
    InLineCSwin,
    InLineDeiT,
    InLinePVT,
    InLineSwin,
    LePEAttention,
    SwinBlock,
    checkpoint_filter_fn,
    parse_swin_attn_type,
)

from ..conftest import GOLDEN


def _from_golden(family: str, golden: dict) -> torch.nn.Module:
    cfg = golden["config"]
    if family == "deit":
        return InLineDeiT(
            img_size=cfg["img_size"], patch_size=cfg["patch_size"], embed_dim=cfg["embed_dim"], depth=cfg["depth"],
            num_heads=cfg["num_heads"], num_classes=cfg["num_classes"],
        )  # fmt: skip
    if family == "pvt":
        return InLinePVT(
            img_size=cfg["img_size"], embed_dims=cfg["embed_dims"], num_heads=cfg["num_heads"],
            mlp_ratios=cfg["mlp_ratios"], depths=cfg["depths"], num_classes=cfg["num_classes"],
        )  # fmt: skip
    if family == "swin":
        # the official InLine window (WINDOW_SIZE) covers the whole stage; softmax blocks use max(7, WINDOW_SIZE // 8)
        return InLineSwin(
            img_size=cfg["img_size"], embed_dim=cfg["embed_dim"], depths=cfg["depths"], num_heads=cfg["num_heads"],
            attn_type=cfg["attn_type"], window_size=max(7, cfg["window_size"] // 8), num_classes=cfg["num_classes"],
        )  # fmt: skip
    return InLineCSwin(
        img_size=cfg["img_size"], embed_dim=cfg["embed_dim"], depths=cfg["depth"], num_heads=cfg["num_heads"],
        split_size=cfg["split_size"], attn_types=cfg["attn_type"], num_classes=cfg["num_classes"],
    )  # fmt: skip


@pytest.mark.parametrize("family", ["deit", "pvt", "swin", "cswin"])
def test_matches_official_implementation_golden(family):
    """Same weights and input as the official model -> same logits (PVT also at a non-square 32×64 input)."""
    golden = torch.load(GOLDEN / f"inline_{family}_official.pt", weights_only=True)
    assert golden["source"].startswith("LeapLabTHU/InLine@e463a6f4")
    model = _from_golden(family, golden).eval()
    model.load_state_dict(checkpoint_filter_fn(golden["state_dict"], model), strict=True)
    with torch.no_grad():
        for x, expected in zip(golden["inputs"], golden["outputs"]):
            torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def _direct_inline(q, k, v):
    """Quadratic form of InLine: A_ij = s q_i·k_j / n − mean_j'(s q_i·k_j') / n + 1/n (rows sum to one)."""
    n, d = q.shape[-2], q.shape[-1]
    s = (q @ k.transpose(-1, -2)) * d**-0.5
    attn = (s - s.mean(-1, keepdim=True)) / n + 1.0 / n
    return attn @ v


@pytest.mark.parametrize("prefix", [0, 1])
def test_attention_matches_direct_formula(prefix):
    """InLine + dynamic 3×3 local term against a transcription of the paper (with a cls token or without)."""
    torch.manual_seed(0)
    dim, heads, h, w = 16, 2, 3, 5
    attn = InLineAttention(dim, heads, split_qkv=False, num_prefix_tokens=prefix).eval()
    x = torch.randn(2, prefix + h * w, dim)
    with torch.no_grad():
        out = attn(x, (h, w))
        q, k, v = (t.reshape(2, -1, heads, dim // heads).transpose(1, 2) for t in attn.qkv(x).chunk(3, -1))
        glob = _direct_inline(q, k, v).transpose(1, 2).reshape(2, -1, dim)
        kernels = attn.residual(x.mean(1)[..., None]).reshape(2, dim, 3, 3)
        vimg = v[:, :, prefix:].transpose(1, 2).reshape(2, h, w, dim).permute(0, 3, 1, 2)
        local = torch.stack([F.conv2d(vimg[b : b + 1], kernels[b][:, None], padding=1, groups=dim) for b in range(2)])
        local = local.reshape(2, dim, h * w).transpose(1, 2)
        ref = glob.clone()
        ref[:, prefix:] += local
        ref = attn.proj(ref)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_attention_weights_are_injective_and_normalised():
    """With v = I the output rows are the attention weights: they sum to one, and queries q and 2q (which
    plain normalised linear attention maps to the same weights) get different InLine weights."""
    torch.manual_seed(0)
    k, v = torch.randn(1, 1, 6, 4).abs(), torch.eye(6)[None, None]
    q = torch.randn(1, 1, 6, 4).abs()
    q[:, :, 1] = 2 * q[:, :, 0]
    inline = linear_attention(q, k, v, normalizer="injective")
    plain = linear_attention(q, k, v, normalizer="standard", eps=0.0)
    torch.testing.assert_close(inline.sum(-1), torch.ones(1, 1, 6))
    torch.testing.assert_close(plain[:, :, 0], plain[:, :, 1])
    assert not torch.allclose(inline[:, :, 0], inline[:, :, 1], atol=1e-4)


def _official_swin_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """Swin's construction (img_mask regions by slices), transcribed for the check."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = img.view(1, h // window, window, w // window, window, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, window**2)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def test_swin_buffers_equal_official_construction():
    block = SwinBlock(32, 2, "S", 7, True, (14, 14))
    torch.testing.assert_close(block.attn_mask, _official_swin_mask(14, 14, 7, 3))
    assert block.attn.relative_position_index.shape == (49, 49)
    assert block.attn.relative_position_index.max() == 168
    # no shift when the map fits one window (Swin's rule): no buffer, like the official stage-4 blocks
    assert SwinBlock(32, 2, "S", 7, True, (7, 7)).attn_mask is None
    with torch.device("meta"):
        names = dict(timm.create_model("inline_swin_s").named_buffers())  # IISS: stage 3 is windowed
    assert names["layers.2.blocks.1.attn_mask"].shape == (4, 49, 49) and "layers.2.blocks.0.attn_mask" not in names


def test_lepe_stripes_pad_and_mask():
    """Stripes that do not divide the map: each stripe equals attention over that stripe alone."""
    torch.manual_seed(0)
    c, heads, h, w = 8, 2, 4, 5
    striped = LePEAttention(c, heads, axis=0, stripe=2).eval()
    whole = LePEAttention(c, heads, stripe=None).eval()
    whole.load_state_dict(striped.state_dict())
    q, k, v = (torch.randn(1, h * w, c) for _ in range(3))
    with torch.no_grad():
        out = striped(q, k, v, (h, w)).reshape(1, h, w, c)
        for cols in (slice(0, 2), slice(2, 4), slice(4, 5)):
            sub = [t.reshape(1, h, w, c)[:, :, cols].reshape(1, -1, c) for t in (q, k, v)]
            width = len(range(w)[cols])
            ref = whole(*sub, (h, width)).reshape(1, h, width, c)
            torch.testing.assert_close(out[:, :, cols], ref, rtol=1e-5, atol=1e-6)


def _tiny(family: str, **kwargs) -> torch.nn.Module:
    if family == "deit":
        args = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, num_classes=5)
        return InLineDeiT(**dict(args, **kwargs))
    if family == "pvt":
        args = dict(img_size=32, embed_dims=(8, 8, 16, 16), depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 2), num_classes=5)
        return InLinePVT(**dict(args, **kwargs))
    if family == "swin":
        args = dict(img_size=64, embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 2), attn_type="IIMS1")
        return InLineSwin(**dict(args, num_classes=5, **kwargs))
    args = dict(img_size=64, embed_dim=8, depths=(1, 1, 2, 1), num_heads=(2, 2, 2, 2), split_size=(1, 2, 7, 7))
    return InLineCSwin(**dict(args, num_classes=5, **kwargs))


@pytest.mark.parametrize("family", ["deit", "pvt", "swin", "cswin"])
@pytest.mark.parametrize("size", [(61, 97), (128, 40)])
def test_any_input_size(family, size):
    """Odd and non-square sizes run (padding, position-embedding resampling, per-size masks) and backprop."""
    torch.manual_seed(0)
    model = _tiny(family)
    x = torch.randn(2, 3, *size)
    out = model(x)
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    out.sum().backward()
    if family != "deit":
        feats = model.forward_intermediates(x, intermediates_only=True)
        assert [f.shape[1] for f in feats] == [i["num_chs"] for i in model.feature_info]
        # pad to the stride (PVT, Swin) or CSwin's 7×7/4 stem (pad 2, floors); then stride-2 steps round up
        width = (size[1] - 3) // 4 + 1 if family == "cswin" else -(-size[1] // 4)
        expected = [width, -(-width // 2), -(-width // 4), -(-width // 8)]
        assert [f.shape[-1] for f in feats] == expected


def test_padding_does_not_leak_into_swin_windows():
    """10×10 map, window 7: the bottom-left window holds 3×7 real tokens; padded keys must not count."""
    torch.manual_seed(0)
    attn = SwinBlock(16, 2, "S", 7, False, (14, 14)).attn.eval()
    with torch.no_grad():
        attn.relative_position_bias_table.normal_()
        x = torch.randn(1, 10, 10, 16)
        out = attn(x, 0)[0, 7:10, 0:7].reshape(21, 16)
        sub = x[0, 7:10, 0:7].reshape(21, 16)
        q, k, v = (t.reshape(21, 2, 8).transpose(0, 1) for t in attn.qkv(sub).chunk(3, -1))
        bias = attn.relative_position_bias_table[attn.relative_position_index[:21, :21]].permute(2, 0, 1)
        ref = torch.softmax(q @ k.transpose(-1, -2) * 8**-0.5 + bias, -1) @ v
        ref = attn.proj(ref.transpose(0, 1).reshape(21, 16))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_deit_intermediates_and_pos_embed_resampling():
    model = timm.create_model("inline_deit_t").eval()
    x = torch.randn(1, 3, 160, 224)
    final, inter = model.forward_intermediates(x, indices=2)
    assert final.shape == (1, 1 + 10 * 14, 192)
    assert [t.shape for t in inter] == [torch.Size([1, 192, 10, 14])] * 2
    feat = timm.create_model("inline_deit_t", features_only=True, out_indices=(11,))
    assert feat(x)[0].shape == (1, 192, 10, 14)


def _save_official(path, state_dict):
    """An official-style training checkpoint with a pickled yacs CfgNode beside the weights."""
    yacs = types.ModuleType("yacs")
    config = types.ModuleType("yacs.config")

    class CfgNode(dict):
        """Stand-in for yacs' CfgNode (a dict subclass) so the checkpoint pickles under its real name."""

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config.CfgNode = CfgNode
    yacs.config = config
    sys.modules["yacs"], sys.modules["yacs.config"] = yacs, config
    try:
        cfg = CfgNode(MODEL=CfgNode(TYPE="inline_swin"))
        torch.save({"model": state_dict, "config": cfg, "epoch": 299, "max_accuracy": 82.4}, path)
    finally:
        del sys.modules["yacs"], sys.modules["yacs.config"]
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)


def test_official_checkpoint_with_yacs_config_loads(tmp_path):
    torch.manual_seed(0)
    src = _tiny("swin").eval()
    path = tmp_path / "official.pth"
    _save_official(path, src.state_dict())
    dst = _tiny("swin").eval()
    dst.load_pretrained(str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_filter_resamples_pos_embed_and_rel_pos_tables():
    torch.manual_seed(0)
    deit = _tiny("deit")
    bigger = _tiny("deit", img_size=48)
    sd = checkpoint_filter_fn({"model": deit.state_dict()}, bigger)
    assert sd["pos_embed"].shape == (1, 1 + 36, 16)
    bigger.load_state_dict(sd)

    pvt, pvt_big = _tiny("pvt"), _tiny("pvt", img_size=64)
    pvt_big.load_state_dict(checkpoint_filter_fn(pvt.state_dict(), pvt_big))

    swin = _tiny("swin")
    swin5 = InLineSwin(img_size=80, embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 2), attn_type="IIMS1",
                       window_size=5, num_classes=5)  # fmt: skip
    sd = checkpoint_filter_fn({f"module.{k}": v for k, v in swin.state_dict().items()}, swin5)
    swin5.load_state_dict(sd)  # tables resized 13² -> 9², index / mask buffers from the model
    assert sd["layers.2.blocks.1.attn.relative_position_bias_table"].shape == (81, 2)


def test_swin_attn_type_parsing_and_errors():
    assert parse_swin_attn_type("IIMS2", (2, 2, 4, 2))[2] == ["I", "I", "S", "S"]
    assert parse_swin_attn_type("IIIS", (2, 2, 6, 2))[3] == ["S", "S"]
    with pytest.raises(ValueError, match="attn_type"):
        parse_swin_attn_type("IIM", (2, 2, 2))
    with pytest.raises(ValueError, match="attn_type"):
        InLineSwin(attn_type="IIXS")
    with pytest.raises(ValueError, match="global_pool"):
        InLinePVT(global_pool="max")
    with pytest.raises(ValueError, match="num_heads"):
        InLineAttention(30, 4)
    with pytest.raises(ValueError, match="attn_types"):
        InLineCSwin(attn_types="IIXS")
    with pytest.raises(ValueError, match="kind"):
        CSwinBlock(16, 2, "X", 7, False)
    with pytest.raises(TypeError):
        timm.create_model("inline_pvt_t", unknown_option=1)


def test_pretrained_cfg_eval_preprocessing():
    """Official eval: squash-resize both sides to S/0.875, bicubic, center crop S; DeiT-S at 288, DeiT-B at 448."""
    for name, size in (("inline_deit_t", 224), ("inline_deit_s", 288), ("inline_deit_b", 448), ("inline_cswin_t", 224)):
        with torch.device("meta"):
            cfg = timm.create_model(name).pretrained_cfg
        assert cfg["input_size"] == (3, size, size) and cfg["crop_mode"] == "squash" and cfg["crop_pct"] == 0.875
        data = timm.data.resolve_data_config({}, pretrained_cfg=cfg)
        transform = timm.data.create_transform(**data)
        resize = transform.transforms[0]
        assert tuple(resize.size) == (int(256 / 224 * size),) * 2
    assert "84.1" in timm.models.get_pretrained_cfg("inline_swin_b").notes[0]


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["inline_deit_t", "inline_swin_t", "inline_cswin_t"])
def test_triton_kernels_match_reference_on_gpu(name, monkeypatch):
    torch.manual_seed(0)
    model = timm.create_model(name).cuda().eval()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    with torch.no_grad():
        fused = model(x)
        monkeypatch.setenv("LINZOO_KERNEL_BACKEND", "torch")
        ref = model(x)
    torch.testing.assert_close(fused, ref, rtol=1e-3, atol=1e-3)
