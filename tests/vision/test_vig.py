"""ViG / ViG-H checks: numerics against the official code (hustvl/ViG@dfb9d321), sizes, official files.

The official models need three GPU-only ops (fla's Triton ``RMSNorm``, the jiterator ``swiglu_linear`` / ``swiglu``
and the Triton ``bid_fused_recurrent_gla``). ``_official_module`` imports them from an extracted copy
(``$VIG_OFFICIAL`` or /tmp/vig_official, never inside the repository:
``git -C <mirror> archive HEAD | tar -x -C /tmp/vig_official``) with stub modules for its unused imports
(``causal_conv1d``, ``opt_einsum``, ``fvcore``), and the tests swap those three ops, in memory only, for the
plain-PyTorch stand-ins below (written from the maths, not from linzoo). Where the copy is missing, the golden logits
in tests/fixtures/golden/vig_official.pt (written by ``python -m tests.vision.test_vig``)
stand in. The weights are a seeded function of the official key manifest, so the golden file holds only logits.
(ViG-H with these weights has an fp32 noise floor of ~8e-6 on the logits: the official code and ours are equally far
from an fp64 run, hence the 1e-4 tolerance.)

(The generic timm contract — forward/backward, features_only, grad checkpointing, official key layout — is in
test_contract.py.)
"""

from __future__ import annotations

import json
import os
import sys
import types
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import linzoo.vision  # noqa: F401
from linzoo.vision.vig import ViG, checkpoint_filter_fn
from linzoo.weights import get_checkpoint

from ..conftest import GOLDEN, REFERENCE_KEYS

OFFICIAL_DIR = Path(os.environ.get("VIG_OFFICIAL", "/tmp/vig_official"))
SOURCE = "github.com/hustvl/ViG@dfb9d3212cac06b18cd4bf2a0eed56e107c4fb2a (classification/models/vig.py, vig_h.py)"
GOLDEN_FILE = GOLDEN / "vig_official.pt"
# (variant, official class, its kwargs beyond the shared ones, input sizes)
CASES = {
    "vig_t": (
        "ViG",
        dict(embed_dim=192, num_heads=3, use_out_act=True, use_act_in_conv=True),
        ((224, 224), (160, 224)),
    ),
    "vig_s": ("ViG", dict(embed_dim=384, num_heads=6, use_out_act=False, use_act_in_conv=False), ((96, 128),)),
    "vig_h_t": ("HierViG", dict(dims=96, depths=[2, 2, 5, 2], num_heads=[3, 6, 12, 24]), ((64, 96), (50, 70))),
}
_SHARED = {
    "ViG": dict(
        img_size=224, patch_size=16, stride=16, depth=12, num_classes=1000, if_cls_token=False,
        classification_mode="avgpool", if_abs_pos_embed=True, attn_model="fused_chunk", hidden_act="swish",
        use_out_gate=False, use_swiglu=True, rope_mode="none", expand_k=0.5, expand_v=1.0, patch_embed_version="v2",
        drop_path_rate=0.0,
    ),
    "HierViG": dict(
        patch_size=4, in_chans=3, num_classes=1000, attn_models=["fused_chunk"] * 2 + ["fused_recurrent"] * 2,
        expand_k=0.5, expand_v=1.0, hidden_act="swish", use_out_act=False, use_act_in_conv=False, rope_mode="none",
        mlp_ratio=4.0, mlp_act_layer="gelu", mlp_drop_rate=0.0, drop_path_rate=0.0, patch_norm=True,
        norm_layer="ln2d", downsample_version="v3", patchembed_version="v2", gmlp=True,
    ),
}  # fmt: skip


# --- deterministic weights and inputs --------------------------------------------------------------------------
def _seeded_state_dict(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for every key of the official manifest, a function of the sorted keys and the seed only."""
    keys = json.loads((REFERENCE_KEYS / f"{name}.json").read_text())["keys"]
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(keys):
        shape = tuple(keys[key])
        noise = torch.randn(shape, generator=gen)
        if key == "pos_embed":
            out[key] = 0.5 * noise
        elif key.endswith("gk_proj.1.bias"):
            out[key] = 3.0 * noise  # gate logits over about +-6: decays from ~0.69 to ~1 per token
        elif len(shape) == 1:  # the only 1-D weights are norm scales: around 1; biases around 0
            out[key] = (1.0 + 0.2 * noise) if key.endswith("weight") else 0.2 * noise
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            out[key] = noise / fan_in**0.5
    return out


def _inputs(size: tuple[int, int], batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(sum(size)))


def _ours(name: str) -> ViG:
    model = timm.create_model(name).eval()
    model.load_state_dict(_seeded_state_dict(name))
    return model


# --- the official model with CPU stand-ins ---------------------------------------------------------------------
def _rms_norm_standin(self, x, residual=None, prenorm=False, residual_in_fp32=False):
    """fla ``RMSNorm.forward``: ``RMSNorm(x + residual)``, also returning ``x + residual`` when ``prenorm``."""
    if residual is not None:
        x = x + residual
    y = (x.float() * torch.rsqrt(x.float().square().mean(-1, keepdim=True) + self.eps) * self.weight).to(x.dtype)
    return (y, x) if prenorm else y


def _swiglu_linear_standin(gate, y, weight, bias):
    return F.linear(F.silu(gate) * y, weight, bias)


def _bid_gla_standin(q, k, v, gk=None, gv=None, scale=-1, initial_state=None, output_final_state=False, causal=True):
    """ViG's ``bid_fused_recurrent_gla``: gates ``[2B, H, L, dk]`` (forward rows, then backward rows, both in token
    order), a forward and a backward scan with shared q, k, v, output the mean of the two (fp32 state)."""
    b = q.shape[0]
    scale = q.shape[-1] ** -0.5 if scale == -1 else scale
    qf, kf, vf, decay = q.float(), k.float(), v.float(), gk.float().exp()
    outs = []
    for direction, steps in ((0, range(q.shape[2])), (1, range(q.shape[2] - 1, -1, -1))):
        a = decay[direction * b : (direction + 1) * b]
        state = qf.new_zeros(*q.shape[:2], q.shape[-1], v.shape[-1])
        out = torch.empty_like(vf)
        for t in steps:
            state = a[:, :, t, :, None] * state + kf[:, :, t, :, None] * vf[:, :, t, None, :]
            out[:, :, t] = (qf[:, :, t, :, None] * scale * state).sum(-2)
        outs.append(out)
    return ((outs[0] + outs[1]) / 2).to(q.dtype), None


def _official_module():
    if not (OFFICIAL_DIR / "classification" / "models" / "vig.py").is_file():
        pytest.skip(f"official ViG code not extracted to {OFFICIAL_DIR}")
    pytest.importorskip("einops")
    pytest.importorskip("transformers")
    pytest.importorskip("triton")
    for path in (OFFICIAL_DIR / "flash-linear-attention", OFFICIAL_DIR / "classification"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    for name in ("causal_conv1d", "causal_conv1d.causal_conv1d_interface", "opt_einsum", "fvcore", "fvcore.nn"):
        if name not in sys.modules:  # imported by the official files, never used by the eval forward
            stub = types.ModuleType(name)
            for attr in ("CausalConv1dFn", "contract", "FlopCountAnalysis", "flop_count_str", "flop_count"):
                setattr(stub, attr, None)
            stub.parameter_count = None
            sys.modules[name] = stub
    try:
        import fla.modules.rmsnorm as fla_rmsnorm
        import models.vig as official
    except ImportError as err:
        pytest.skip(f"official ViG code not importable: {err}")
    return official, fla_rmsnorm


def _official_logits(name: str, sizes) -> list[torch.Tensor]:
    """Logits of the official model (built as its yaml config) with the seeded weights, for each input size."""
    official, fla_rmsnorm = _official_module()
    import models.vig_h as official_h

    saved = (
        fla_rmsnorm.RMSNorm.forward,
        official.swiglu_linear,
        official.bid_fused_recurrent_gla,
        official_h.swiglu,
        official_h.bid_fused_recurrent_gla,
    )
    fla_rmsnorm.RMSNorm.forward = _rms_norm_standin
    official.swiglu_linear = _swiglu_linear_standin
    official.bid_fused_recurrent_gla = official_h.bid_fused_recurrent_gla = _bid_gla_standin
    official_h.swiglu = lambda gate, y: F.silu(gate) * y
    try:
        cls, kwargs, _ = CASES[name]
        model = getattr(official_h if cls == "HierViG" else official, cls)(**_SHARED[cls], **kwargs).eval()
        state = _seeded_state_dict(name)
        assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in state.values())
        model.load_state_dict(state, strict=True)
        with torch.no_grad():
            return [model(_inputs(size)) for size in sizes]
    finally:
        (
            fla_rmsnorm.RMSNorm.forward,
            official.swiglu_linear,
            official.bid_fused_recurrent_gla,
            official_h.swiglu,
            official_h.bid_fused_recurrent_gla,
        ) = saved


# --- numerics ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_matches_official_implementation(name):
    """Same seeded weights and inputs through the official ViG (CPU stand-ins) and ours: fp32 logits within 1e-4."""
    sizes = CASES[name][2]
    expected = _official_logits(name, sizes)
    model = _ours(name)
    for size, ref in zip(sizes, expected):
        with torch.no_grad():
            out = model(_inputs(size))
        assert ref.abs().max() > 0.1, "degenerate reference logits"
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-4, msg=f"{name} at {size}")


def test_matches_official_golden():
    """The official logits saved with the repository (for machines without the official code)."""
    golden = torch.load(GOLDEN_FILE, weights_only=True)
    assert golden["source"] == SOURCE
    for name, (_, _, sizes) in CASES.items():
        model = _ours(name)
        for size in sizes:
            ref = golden[f"{name}@{size[0]}x{size[1]}"]
            with torch.no_grad():
                out = model(_inputs(size))
            torch.testing.assert_close(out, ref, rtol=0, atol=1e-4, msg=f"{name} at {size}")


def test_chunk_size_does_not_change_the_model():
    model = _ours("vig_t")
    x = _inputs((96, 128))
    with torch.no_grad():
        ref = model(x)
        for blk in model.blocks:
            blk.attn.chunk_size = 16
        torch.testing.assert_close(model(x), ref, rtol=0, atol=1e-5)


# --- sizes, features, files -------------------------------------------------------------------------------------
def test_any_input_size_and_position_table_resize():
    torch.manual_seed(0)
    model = ViG(embed_dim=32, depth=2, num_heads=2, num_classes=5).eval()
    for size, grid in (((224, 224), (14, 14)), ((64, 96), (4, 6)), ((50, 33), (3, 2))):
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            feats = model.forward_features(x)
            _, inter = model.forward_intermediates(x, indices=[0])
        assert feats.shape == (1, grid[0] * grid[1], 32)
        assert inter[0].shape == (1, 32, *grid)
    # the table added for a 4x6 grid is the official bicubic (align_corners False, no antialias) resize
    table = model.pos_embed.reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    want = F.interpolate(table, size=(4, 6), mode="bicubic", align_corners=False).flatten(2).transpose(1, 2)
    x = torch.randn(1, 3, 64, 96)
    tokens, hw = model._embed(x)
    torch.testing.assert_close(tokens - model.patch_embed(x).flatten(2).transpose(1, 2), want)
    assert hw == (4, 6)


def test_features_only_and_intermediates():
    torch.manual_seed(0)
    model = timm.create_model("vig_t", features_only=True, out_indices=(3, 7, 11)).eval()
    assert model.feature_info.reduction() == [16, 16, 16]
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 96, 128))
    assert [tuple(f.shape) for f in feats] == [(1, 192, 6, 8)] * 3
    full = _ours("vig_t")
    x = _inputs((64, 64))
    with torch.no_grad():
        final, inter = full.forward_intermediates(x, indices=2, norm=True, output_fmt="NLC")
        torch.testing.assert_close(final, full.forward_features(x))
        torch.testing.assert_close(inter[-1], final)
    assert len(inter) == 2
    with pytest.raises(ValueError, match="output_fmt"):
        full.forward_intermediates(x, output_fmt="NHWC")


def test_official_checkpoint_files_load(tmp_path):
    """Bare state dicts, ``{'model': ...}`` wrappers and DDP prefixes load; ``pos_embed`` follows ``img_size``."""
    state = _seeded_state_dict("vig_t")
    ref_model = _ours("vig_t")
    x = _inputs((64, 64))
    with torch.no_grad():
        ref = ref_model(x)
    for i, payload in enumerate((state, {"model": state}, {"model": {f"module.{k}": v for k, v in state.items()}})):
        path = tmp_path / f"ckpt{i}.pth"
        torch.save(payload, path)
        model = timm.create_model("vig_t", pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x), ref, rtol=0, atol=0)
    big = ViG(img_size=256, embed_dim=192, num_heads=3, act_in_conv=True, out_act=True)
    assert big.pos_embed.shape == (1, 256, 192)
    filtered = checkpoint_filter_fn({"model": state}, big)
    assert filtered["pos_embed"].shape == (1, 256, 192)
    big.load_state_dict(filtered)
    big.eval()
    # at 224 px the 16x16 table is resized back to 14x14: close to (not equal to) the original table
    with torch.no_grad():
        assert (big(x) - ref).abs().max() < 0.5 * ref.abs().max()


def test_hierarchical_legacy_checkpoint_names(tmp_path):
    """ViG-H files with the legacy names the official ``_load_from_state_dict`` renames, and 1x1-conv shaped
    weights for its 1x1 linear layers, load to the same model."""
    state = _seeded_state_dict("vig_h_t")
    legacy = {}
    for k, v in state.items():
        for new, old in (
            ("patch_embed.0.", "patch_embed.proj."),
            ("patch_embed.2.", "patch_embed.norm."),
            ("classifier.norm.", "norm."),
            ("classifier.head.", "head."),
            (".norm.", ".ln_1."),
            (".op.", ".self_attention."),
        ):
            if new in k and (not new.startswith(".") or ".blocks." in k):
                k = k.replace(new, old)
        legacy[k] = v[:, :, None, None] if k.endswith(("qkv_proj.weight", "mlp.fc1.weight")) else v
    assert "layers.0.blocks.0.ln_1.weight" in legacy and "norm.weight" in legacy and "head.bias" in legacy
    path = tmp_path / "vig_h_t_legacy.pth"
    torch.save({"model": legacy}, path)
    x = _inputs((64, 64))
    model = timm.create_model("vig_h_t", pretrained=True, pretrained_cfg_overlay={"file": str(path)}).eval()
    ref = _ours("vig_h_t")
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=0, atol=0)
        final, inter = ref.forward_intermediates(x, norm=True)
    assert [tuple(t.shape[1:]) for t in inter] == [(96, 16, 16), (192, 8, 8), (384, 4, 4), (768, 2, 2)]
    torch.testing.assert_close(inter[-1], ref.classifier.norm(final))


def test_registry_and_pretrained_cfg():
    for name, filename, top1 in (
        ("vig_t", "vig_t_77p2acc.pth", 77.2),
        ("vig_s", "vig_s_81p7acc.pth", 81.7),
        ("vig_b", "vig_b_82p6acc.pth", 82.6),
        ("vig_h_t", "vig_h_t_82p8acc.pth", 82.8),
        ("vig_h_s", "vig_h_s_83p8acc.pth", 83.8),
        ("vig_h_b", "vig_h_b_84p2acc.pth", 84.2),
    ):
        ckpt = get_checkpoint(name)
        assert ckpt.hf_hub_id == "hustvl/ViG" and ckpt.hf_hub_filename == filename and ckpt.top1 == top1
        with torch.device("meta"):
            cfg = timm.create_model(name).pretrained_cfg
        assert cfg["url"] == f"https://huggingface.co/hustvl/ViG/resolve/main/{filename}"
        assert cfg["hf_hub_id"] == "hustvl/ViG" and cfg["crop_pct"] == 0.875


def test_bad_arguments():
    with pytest.raises(ValueError, match="expand_v"):
        ViG(embed_dim=32, depth=1, num_heads=2, expand_v=2.0)
    with pytest.raises(ValueError, match="num_heads"):
        ViG(embed_dim=32, depth=1, num_heads=3)
    with pytest.raises(ValueError, match="global_pool"):
        ViG(embed_dim=32, depth=1, num_heads=2, global_pool="token")
    with pytest.raises(ValueError, match="patch_size"):
        ViG(embed_dim=32, depth=1, num_heads=2, patch_size=6)


def _write_golden() -> None:
    out = {"source": SOURCE}
    for name, (_, _, sizes) in CASES.items():
        for size, logits in zip(sizes, _official_logits(name, sizes)):
            out[f"{name}@{size[0]}x{size[1]}"] = logits.clone()
    torch.save(out, GOLDEN_FILE)
    print(f"wrote {GOLDEN_FILE} ({GOLDEN_FILE.stat().st_size} bytes)")


if __name__ == "__main__":
    _write_golden()
