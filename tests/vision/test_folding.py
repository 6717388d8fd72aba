"""linzoo.vision.layers.folding (and fused.conv1x1): the folds and the 1x1 GEMM path compute what the modules do."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from linzoo.vision.layers.folding import DerivedTensorCache, bn_scale_shift, fold_bn_after_conv, fold_bn_before_conv
from linzoo.vision.layers.fused import conv1x1


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c).double()
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.normal_()
        bn.bias.normal_()
    return bn.eval()


def test_bn_folds_into_the_next_1x1_and_the_previous_conv():
    torch.manual_seed(0)
    bn = _bn(6)
    x = torch.randn(2, 6, 7, 5, dtype=torch.float64)
    s, t = bn_scale_shift(bn)
    torch.testing.assert_close(bn(x), s.view(-1, 1, 1) * x + t.view(-1, 1, 1))

    pw = nn.Conv2d(6, 4, 1).double()
    w, b = fold_bn_before_conv(s, t, pw.weight, pw.bias)
    torch.testing.assert_close(F.conv2d(x, w, b), pw(bn(x)))

    conv = nn.Conv2d(3, 6, 3, stride=2, padding=1).double()
    img = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    w, b = fold_bn_after_conv(s, t, conv.weight, conv.bias)
    torch.testing.assert_close(F.conv2d(img, w, b, stride=2, padding=1), bn(conv(img)))

    with pytest.raises(ValueError, match="1x1"):
        fold_bn_before_conv(s, t, torch.randn(4, 6, 3, 3), None)
    with pytest.raises(ValueError, match="eval mode"):
        bn_scale_shift(bn.train())


@pytest.mark.parametrize("channels_last", [False, True])
def test_conv1x1_equals_conv2d_and_keeps_the_layout(channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 5, 1).double()
    x = torch.randn(2, 8, 6, 7, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    out = conv1x1(x, conv.weight, conv.bias)
    torch.testing.assert_close(out, conv(x))
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    (g,) = torch.autograd.grad(out.sum(), x)
    (g_ref,) = torch.autograd.grad(conv(x).sum(), x)
    torch.testing.assert_close(g, g_ref)


def test_derived_tensor_cache():
    p = nn.Parameter(torch.ones(3))
    calls = []

    def compute() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"w": p * 2, "s": p + 1}

    cache = DerivedTensorCache()
    out = cache.get([p], compute)  # grad enabled: computed every call, differentiable
    out["w"].sum().backward()
    assert p.grad.tolist() == [2.0, 2.0, 2.0] and len(calls) == 1
    cache.get([p], compute)
    assert len(calls) == 2
    with torch.no_grad():
        first = cache.get([p], compute)
        assert cache.get([p], compute) is first and len(calls) == 3  # reused
        p.mul_(3)  # in-place update: recomputed
        assert cache.get([p], compute)["w"].tolist() == [6.0, 6.0, 6.0] and len(calls) == 4
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = cache.get([p], compute, cast=("w",), device_type="cpu")
        assert low["w"].dtype == torch.bfloat16 and low["s"].dtype == torch.float32 and len(calls) == 5
        assert cache.get([p], compute)["w"].dtype == torch.float32 and len(calls) == 6
    assert pickle.loads(pickle.dumps(cache))._value is None
