"""The fused helpers of linzoo.vision.layers.fused equal the separate ops they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from linzoo.kernels import apply_rope, rope_2d, rope_2d_frequencies
from linzoo.vision.layers.fused import conv1x1_nhwc, dwconv, layer_scale_add, rope_full_tables, rotate_pairs


def test_conv1x1_nhwc_equals_conv_on_permuted_map():
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 20, 1)
    x = torch.randn(2, 5, 7, 12)
    ref = conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(conv1x1_nhwc(x, conv), ref, rtol=1e-5, atol=1e-6)
    x.requires_grad_()
    conv1x1_nhwc(x, conv).sum().backward()
    assert conv.weight.grad.shape == conv.weight.shape and x.grad.shape == x.shape
    with pytest.raises(ValueError, match="1x1"):
        conv1x1_nhwc(torch.randn(2, 5, 7, 12), nn.Conv2d(12, 20, 3, padding=1))
    with pytest.raises(ValueError, match="ungrouped"):
        conv1x1_nhwc(torch.randn(2, 5, 7, 12), nn.Conv2d(12, 12, 1, groups=12))


def test_layer_scale_add_without_drop_path():
    torch.manual_seed(0)
    x, b, g = torch.randn(2, 4, 3, 8), torch.randn(2, 4, 3, 8), torch.randn(8)
    torch.testing.assert_close(layer_scale_add(x, b, g), x + g * b, rtol=1e-6, atol=1e-6)
    assert torch.equal(layer_scale_add(x, b), x + b)
    # eval mode ignores drop_prob; a bf16 stream with an fp32 gamma promotes to fp32 as ``x + gamma * b`` does
    out = layer_scale_add(x.bfloat16(), b.bfloat16(), g, drop_prob=0.5, training=False)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, x.bfloat16() + g * b.bfloat16(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="drop_prob"):
        layer_scale_add(x, b, g, drop_prob=1.0, training=True)


@pytest.mark.parametrize("with_gamma", [True, False])
@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_layer_scale_add_matches_timm_drop_path(with_gamma, scale_by_keep):
    """Same Bernoulli draws as timm's DropPath (same RNG use), same values up to float rounding, same gradients."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, 4, 8, requires_grad=True)
    b = torch.randn(16, 3, 4, 8, requires_grad=True)
    g = torch.randn(8, requires_grad=True) if with_gamma else None
    drop = DropPath(0.4, scale_by_keep=scale_by_keep).train()
    torch.manual_seed(1)
    ours = layer_scale_add(x, b, g, 0.4, training=True, scale_by_keep=scale_by_keep)
    torch.manual_seed(1)
    ref = x + drop(g * b if with_gamma else b)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    dropped = (ours - x).flatten(1).abs().amax(1) == 0
    assert 0 < int(dropped.sum()) < 16  # some samples dropped, some kept: the test exercises both
    grads = torch.autograd.grad(ours.square().sum(), [t for t in (x, b, g) if t is not None])
    refs = torch.autograd.grad(ref.square().sum(), [t for t in (x, b, g) if t is not None])
    for a, r in zip(grads, refs):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_rotate_pairs_equals_apply_rope_for_stacked_tensors():
    """``x·cos + swap(x)·sin±`` on q and k stacked in one tensor equals the per-tensor slice/stack RoPE."""
    torch.manual_seed(0)
    h, w, heads, d = 3, 5, 2, 16
    cos, sin = rope_2d(h, w, rope_2d_frequencies(d))
    cos_full, sin_signed = rope_full_tables(cos, sin)
    assert cos_full.shape == sin_signed.shape == (h * w, d)
    qk = torch.randn(2, h * w, 2, heads, d)  # (B, N, {q, k}, heads, d)
    out = rotate_pairs(qk, cos_full[:, None, None], sin_signed[:, None, None])
    for i in range(2):
        ref = apply_rope(qk[:, :, i].transpose(1, 2), cos, sin)  # (B, heads, N, d)
        torch.testing.assert_close(out[:, :, i].transpose(1, 2), ref, rtol=1e-6, atol=1e-6)
    # bf16 input with fp32 tables computes in fp32 (the official theta_shift with fp32 sin/cos buffers)
    assert rotate_pairs(qk.bfloat16(), cos_full[:, None, None], sin_signed[:, None, None]).dtype == torch.float32


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_dwconv_equals_the_module_with_gelu_and_shortcut(backend, monkeypatch):
    """``dwconv(x, conv, activation, residual)`` = ``act(conv(x)) + residual`` with the module's geometry and weights
    (the Triton kernel runs in the interpreter on the CPU)."""
    monkeypatch.setenv("LINZOO_KERNEL_BACKEND", backend)
    torch.manual_seed(0)
    conv = nn.Conv2d(10, 10, 7, padding=9, dilation=3, groups=10)
    x = torch.randn(2, 10, 11, 13).to(memory_format=torch.channels_last)
    r = torch.randn(2, 10, 11, 13)
    torch.testing.assert_close(
        dwconv(x, conv, activation="gelu", residual=r), F.gelu(conv(x)) + r, rtol=1e-5, atol=1e-5
    )
    same = nn.Conv2d(10, 10, 5, padding="same", groups=10)  # string paddings pass through as F.conv2d takes them
    torch.testing.assert_close(dwconv(x, same), same(x), rtol=1e-5, atol=1e-5)
    w, b = torch.randn_like(conv.weight), None  # replacement (folded) weights, no bias
    want = F.conv2d(x, w, None, 1, 9, 3, 10)
    torch.testing.assert_close(dwconv(x, conv, w, b), want, rtol=1e-5, atol=1e-5)


def test_dwconv_rejects_other_convolutions():
    with pytest.raises(ValueError, match="depthwise"):
        dwconv(torch.randn(1, 4, 5, 5), nn.Conv2d(4, 8, 3, padding=1, groups=4))
    with pytest.raises(ValueError, match="depthwise"):
        dwconv(torch.randn(1, 4, 5, 5), nn.Conv2d(4, 4, 3, stride=2, groups=4))
    with pytest.raises(ValueError, match="zero padding"):
        dwconv(torch.randn(1, 4, 5, 5), nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect"))
