"""VAN-specific checks: numerics against the official code, LKA, sizes, memory formats, official-file handling.

(The generic timm contract — forward/backward, features_only, grad checkpointing, official key layout — is
in test_contract.py.)
"""

from __future__ import annotations

import argparse
import copy
import json
import os

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import linzoo.vision.van
from linzoo.vision.van import LKA, VAN, SpatialAttention, StageNorm, checkpoint_filter_fn
from linzoo.weights import get_checkpoint

from ..conftest import GOLDEN


def _tiny(**kwargs) -> VAN:
    return VAN(embed_dims=(8, 16, 16, 24), depths=(1, 1, 2, 1), mlp_ratios=(2, 2, 2, 2), num_classes=10, **kwargs)


def test_matches_official_implementation_golden():
    """A reduced VAN built, randomised and run by the official code (VAN-Classification@e19779b5)."""
    meta = json.loads((GOLDEN / "van_reduced.json").read_text())
    assert meta["source"].startswith("Visual-Attention-Network/VAN-Classification@e19779b5")
    golden = load_file(str(GOLDEN / "van_reduced.safetensors"))
    state = {k[len("state_dict.") :]: v for k, v in golden.items() if k.startswith("state_dict.")}
    cfg = meta["config"]
    model = VAN(
        embed_dims=cfg["embed_dims"], depths=cfg["depths"], mlp_ratios=cfg["mlp_ratios"], num_classes=cfg["num_classes"]
    ).eval()
    # the official files wrap the weights in a timm training checkpoint
    ckpt = {"state_dict": state, "epoch": 3, "args": argparse.Namespace(lr=1e-3)}
    model.load_state_dict(checkpoint_filter_fn(ckpt, model), strict=True)
    with torch.no_grad():
        feats = model.forward_features(golden["input"])
        pooled = model.forward_head(feats, pre_logits=True)
        logits = model.forward_head(feats)
    assert feats.shape[-2:] == (2, 2)  # 40x58 input: ceil at every stride-2 step
    torch.testing.assert_close(pooled, golden["pooled"], rtol=0, atol=1e-5)
    torch.testing.assert_close(logits, golden["logits"], rtol=0, atol=1e-5)


def test_lka_and_attention_follow_the_paper():
    """LKA(u) = u * Conv1x1(DWConv7x7_d3(DWConv5x5(u))); Attention(x) = proj_2(LKA(GELU(proj_1 x))) + x."""
    torch.manual_seed(0)
    dim = 6
    attn = SpatialAttention(dim).eval()
    lka = attn.spatial_gating_unit
    assert isinstance(lka, LKA)
    x = torch.randn(2, dim, 11, 9)
    with torch.no_grad():
        u = F.gelu(attn.proj_1(x))
        a = F.conv2d(u, lka.conv0.weight, lka.conv0.bias, padding=2, groups=dim)
        a = F.conv2d(a, lka.conv_spatial.weight, lka.conv_spatial.bias, padding=9, dilation=3, groups=dim)
        a = F.conv2d(a, lka.conv1.weight, lka.conv1.bias)
        expected = attn.proj_2(u * a) + x
        torch.testing.assert_close(attn(x), expected)
    assert lka.conv0.weight.shape == (dim, 1, 5, 5)
    assert lka.conv_spatial.weight.shape == (dim, 1, 7, 7) and lka.conv_spatial.dilation == (3, 3)


@pytest.mark.parametrize("size", [(32, 32), (45, 61), (17, 100)])
def test_any_input_size(size):
    """Every stride rounds up: stage i has ceil(H / 2^(i+2)) rows; no multiple-of-32 requirement."""
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


def test_channels_last_by_default_and_same_result_as_nchw():
    """Default: channels-last weights, so an NCHW input runs channels-last end to end; ``channels_last=False``
    keeps NCHW; one state dict, one result."""
    torch.manual_seed(0)
    model = _tiny().eval()
    nchw = _tiny(channels_last=False).eval()
    nchw.load_state_dict(model.state_dict())
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    x = torch.randn(2, 3, 50, 70)
    with torch.no_grad():
        ref, ref_inter = nchw.forward_intermediates(x)
        out, inter = model.forward_intermediates(x)
    assert all(f.is_contiguous() for f in ref_inter)
    assert all(f.is_contiguous(memory_format=torch.channels_last) and not f.is_contiguous() for f in inter)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(inter, ref_inter):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_stage_norm_is_layernorm_over_channels():
    torch.manual_seed(0)
    norm = StageNorm(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 5, 4)
    expected = F.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, 1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), expected)


def test_drop_path_and_layer_scale_paths_agree_in_eval():
    """The fused eval path (addcmul) and the DropPath path compute the same block output."""
    torch.manual_seed(0)
    a = _tiny().eval()
    b = _tiny(drop_path_rate=0.3).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


@pytest.mark.slow
def test_configs_match_official_variants():
    expected = {
        "van_b0": ((32, 64, 160, 256), (3, 3, 5, 2)),
        "van_b1": ((64, 128, 320, 512), (2, 2, 4, 2)),
        "van_b2": ((64, 128, 320, 512), (3, 3, 12, 3)),
        "van_b3": ((64, 128, 320, 512), (3, 5, 27, 3)),
        "van_b4": ((64, 128, 320, 512), (3, 6, 40, 3)),
        "van_b5": ((96, 192, 480, 768), (3, 3, 24, 3)),
        "van_b6": ((96, 192, 384, 768), (6, 6, 90, 6)),
    }
    for name, (dims, depths) in expected.items():
        with torch.device("meta"):
            model = timm.create_model(name)
        assert model.depths == depths
        assert [i["num_chs"] for i in model.feature_info] == list(dims)
        assert model.block1[0].mlp.fc1.out_channels == 8 * dims[0]  # mlp ratios 8, 8, 4, 4
        assert model.block4[0].mlp.fc1.out_channels == 4 * dims[3]
        assert model.norm1.eps == 1e-6 and model.block1[0].norm1.eps == 1e-5


def test_pretrained_cfgs_and_registry():
    top1 = {"van_b0": 75.4, "van_b1": 81.1, "van_b2": 82.8, "van_b3": 83.9}
    assert sorted(timm.list_pretrained("van_*")) == sorted(f"{n}.in1k" for n in top1)
    for name, acc in top1.items():
        ckpt = get_checkpoint(name)
        assert ckpt.top1 == acc and ckpt.state_dict_key == "state_dict"
        assert ckpt.url.startswith("https://huggingface.co/Visual-Attention-Network/VAN-")
        with torch.device("meta"):
            cfg = timm.create_model(name).pretrained_cfg
        assert cfg["url"] == ckpt.url and str(acc) in cfg["notes"][0]
        assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic"
    for name in ("van_b4", "van_b5", "van_b6"):
        assert get_checkpoint(name) is None


def test_official_checkpoint_file_loads(tmp_path):
    """A timm train.py checkpoint (state_dict + optimizer + argparse.Namespace) loads through the safe loader."""
    torch.manual_seed(0)
    src = _tiny().eval()
    path = tmp_path / "van_tiny_754.pth.tar"
    torch.save(
        {
            "epoch": 299,
            "arch": "van_b0",
            "state_dict": src.state_dict(),
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3}]},
            "args": argparse.Namespace(model="van_b0", lr=1e-3),
        },
        path,
    )
    dst = _tiny().eval()
    dst.load_pretrained(str(path))
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x))


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="embed_dims"):
        VAN(embed_dims=(8, 16), depths=(1, 1, 1, 1))
    with pytest.raises(ValueError, match="global_pool"):
        VAN(embed_dims=(8, 8, 8, 8), depths=(1, 1, 1, 1), global_pool="mean")
    with pytest.raises(ValueError, match="output_fmt"):
        _tiny().forward_intermediates(torch.randn(1, 3, 32, 32), output_fmt="NHWC")
    with pytest.raises(TypeError):
        timm.create_model("van_b0", not_an_argument=1)


def _randomised(model: VAN) -> VAN:
    """Non-trivial BatchNorm statistics and affine terms, biases and layer scales (init leaves them trivial)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)
            elif name.endswith("norm1.weight") or name.endswith("norm2.weight") or "layer_scale" in name:
                t.copy_(torch.rand(t.shape, generator=gen) * 0.5 + 0.5)
    return model


def _unfused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every block and patch embedding as the plain module composition (BatchNorm kernels, no folding)."""
    monkeypatch.setattr(linzoo.vision.van, "bn_uses_running_stats", lambda bn: False)


@pytest.mark.parametrize("channels_last", [False, True])
def test_eval_folding_is_exact(monkeypatch, channels_last):
    """Eval mode folds BN into the 1x1 convs, conv_spatial's bias into conv1, and the inner shortcut and γ1 into
    one addcmul; in float64 the folded model equals the module composition to rounding, outputs and gradients."""
    torch.manual_seed(0)
    model = _randomised(_tiny().double()).eval()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.randn(2, 3, 45, 61, dtype=torch.float64).contiguous(memory_format=memory_format)

    def run() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        xg = x.clone().requires_grad_()
        out = model(xg)
        out.square().sum().backward()
        return out.detach(), xg.grad, {n: p.grad.clone() for n, p in model.named_parameters()}

    with torch.no_grad():
        folded_nograd = model(x)
    folded, folded_gx, folded_gp = run()
    with monkeypatch.context() as m:
        _unfused(m)
        with torch.no_grad():
            ref = model(x)
        _, ref_gx, ref_gp = run()
    torch.testing.assert_close(folded_nograd, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(folded, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(folded_gx, ref_gx, rtol=1e-9, atol=1e-10)
    for name, grad in ref_gp.items():
        torch.testing.assert_close(folded_gp[name], grad, rtol=1e-9, atol=1e-10, msg=name)
    if channels_last:
        assert model.forward_features(x).is_contiguous(memory_format=torch.channels_last)


def test_frozen_batchnorm_training_uses_the_fold_with_gradients(monkeypatch):
    """model.train() with frozen (eval) BatchNorms: the folded block computes the same output and gradients."""
    torch.manual_seed(0)
    model = _randomised(_tiny().double()).train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    x = torch.randn(1, 3, 40, 40, dtype=torch.float64)
    out = model(x)
    out.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with monkeypatch.context() as m:
        _unfused(m)
        ref = model(x)
        ref.sum().backward()
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for n, p in model.named_parameters():
        torch.testing.assert_close(grads[n], p.grad, rtol=1e-9, atol=1e-10, msg=n)


def test_fold_cache_follows_parameter_and_statistics_updates(monkeypatch):
    """The grad-free cache is refreshed after in-place edits, load_state_dict, BN statistic updates and an
    autocast switch, and it never reaches the state dict or a deep copy."""
    torch.manual_seed(0)
    model = _randomised(_tiny()).eval()
    x = torch.randn(1, 3, 40, 40)

    def check() -> None:
        with torch.no_grad():
            out = model(x)
        with monkeypatch.context() as m:
            _unfused(m)
            with torch.no_grad():
                ref = model(x)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

    check()
    with torch.no_grad():
        model.block1[0].attn.proj_1.weight.mul_(-2.0)  # in place: the version counter moves
        model.block2[0].norm2.running_var.mul_(3.0)
    check()
    model.load_state_dict(_randomised(_tiny()).state_dict())
    check()
    model.train()
    model(torch.randn(2, 3, 40, 40))  # BN statistics move in training mode
    model.eval()
    check()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x)
        cached = model.block1[0]._fold_cache._value
        assert cached["p1_w"].dtype == torch.bfloat16 and cached["res1"].dtype == torch.float32
    check()  # leaving autocast: fp32 entries again
    with monkeypatch.context() as m:
        _unfused(m)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            low_ref = model(x)
    torch.testing.assert_close(low.float(), low_ref.float(), rtol=0.05, atol=0.05)
    assert not any("fold" in k for k in model.state_dict())
    clone = copy.deepcopy(model)
    assert clone.block1[0]._fold_cache._value is None
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))


@pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET", "0") != "1", reason="Triton kernels on the CPU need the interpreter"
)
@pytest.mark.parametrize("train", [False, True])
def test_fused_depthwise_kernels_match_the_torch_path(monkeypatch, train):
    """The LKA and MLP depthwise convolutions on the Triton kernel (interpreter) give the F.conv2d path's outputs
    and gradients, in the folded eval block and the training block."""
    torch.manual_seed(0)
    model = _randomised(_tiny()).train(train)
    x = torch.randn(2, 3, 29, 35)

    def run(backend: str):
        monkeypatch.setenv("LINZOO_KERNEL_BACKEND", backend)
        model.zero_grad()
        torch.manual_seed(1)
        out = model(x)
        out.square().sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out, grads = run("triton")
    ref, ref_grads = run("torch")
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    largest = max(grad.abs().max() for grad in ref_grads.values())
    for name, grad in ref_grads.items():  # a bias before a training BatchNorm has a zero gradient up to rounding
        scale = grad.abs().max().clamp(min=1e-3 * largest)
        torch.testing.assert_close(grads[name] / scale, grad / scale, rtol=1e-4, atol=1e-4, msg=name)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_depthwise_kernels_match_cudnn_on_gpu(monkeypatch):
    torch.manual_seed(0)
    model = timm.create_model("van_b2").cuda().eval()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        fused = model(x).float()
        monkeypatch.setenv("LINZOO_KERNEL_BACKEND", "torch")
        ref = model(x).float()
    torch.testing.assert_close(fused, ref, rtol=5e-2, atol=5e-2)
