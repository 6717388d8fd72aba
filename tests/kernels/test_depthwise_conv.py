"""Fused depthwise convolution: Triton (interpreter on the CPU, CUDA with -m gpu) vs the PyTorch reference."""

from __future__ import annotations

import os

import pytest
import torch

from linzoo.kernels import depthwise_conv2d
from linzoo.kernels.depthwise_conv import _dw_op, _triton_dwconv, depthwise_conv2d_reference

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
needs_interpreter = pytest.mark.skipif(
    _triton_dwconv is None or not INTERPRET, reason="Triton kernels on the CPU need TRITON_INTERPRET=1"
)
TOL = {
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.bfloat16: dict(atol=3e-2, rtol=3e-2),
    torch.float16: dict(atol=4e-3, rtol=4e-3),
}


def _inputs(bsz, channels, size, kernel, dtype, device="cpu", channels_last=True, bias=True, residual=False):
    gen = torch.Generator().manual_seed(channels * 131 + kernel)
    x = torch.randn(bsz, channels, *size, generator=gen)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    w = torch.randn(channels, 1, kernel, kernel, generator=gen) / kernel
    b = torch.randn(channels, generator=gen) if bias else None
    r = torch.randn(bsz, channels, *size, generator=gen) if residual else None
    return [t.to(device=device, dtype=dtype) if t is not None else None for t in (x, w, b, r)]


def _compare(tensors, dilation, activation, padding, backend_dtype):
    """Output and gradients of the Triton path in ``backend_dtype`` against the float64 reference (cuDNN's fp32
    weight gradient may use TF32)."""
    ours = [t.clone().requires_grad_(True) if t is not None else None for t in tensors]
    ref = [t.detach().double().clone().requires_grad_(True) if t is not None else None for t in tensors]
    x, w, b, r = ours
    out = depthwise_conv2d(
        x, w, b, padding=padding, dilation=dilation, activation=activation, residual=r, backend="triton"
    )
    kh = w.shape[2]
    pad = padding if padding is not None else dilation * (kh - 1) // 2
    pad = (pad, pad) if isinstance(pad, int) else pad
    want = depthwise_conv2d_reference(ref[0], ref[1], ref[2], pad, dilation, activation, ref[3])
    grad = torch.randn(want.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64).to(want.device)
    out.backward(grad.to(out.dtype))
    want.backward(grad)
    tol = TOL[backend_dtype]
    torch.testing.assert_close(out.double(), want, **tol, msg=lambda m: f"out: {m}")
    for name, a, e in zip(("dx", "dw", "dbias", "dresidual"), ours, ref):
        if a is None:
            continue
        scale = e.grad.abs().max().clamp(min=1.0)  # dw / dbias sum over every pixel: compare relative to the max
        torch.testing.assert_close(a.grad.double() / scale, e.grad / scale, **tol, msg=lambda m, n=name: f"{n}: {m}")
    return out


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "bsz,channels,size,kernel,dilation,activation,residual,channels_last",
    [
        (2, 5, (9, 11), 3, 1, None, False, True),  # channels below the block, map not a multiple of the tile
        (1, 20, (13, 7), 5, 1, "gelu", True, True),  # VAN conv0-like, narrow map (8-wide tiles)
        (2, 17, (10, 19), 7, 3, None, False, False),  # VAN conv_spatial (dilated), NCHW input
        (1, 70, (6, 17), 3, 1, "gelu", True, True),  # VAN/RAVLT MLP: two channel blocks, bias + GELU + shortcut
    ],
)
def test_triton_matches_reference(bsz, channels, size, kernel, dilation, activation, residual, channels_last, dtype):
    tensors = _inputs(bsz, channels, size, kernel, dtype, channels_last=channels_last, residual=residual)
    out = _compare(tensors, dilation, activation, None, dtype)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last  # the input's layout is kept


@needs_interpreter
def test_float16():
    tensors = _inputs(2, 24, (7, 18), 5, torch.float16, residual=True)
    _compare(tensors, 1, "gelu", None, torch.float16)


@needs_interpreter
def test_explicit_padding_changes_the_output_size_and_no_bias():
    tensors = _inputs(1, 6, (8, 9), 3, torch.float32, bias=False)
    out = _compare(tensors, 2, None, (1, 3), torch.float32)
    assert out.shape == (1, 6, 6, 11)


@needs_interpreter
def test_string_paddings():
    x, w, b, _ = _inputs(1, 6, (8, 9), 3, torch.float32)
    same = depthwise_conv2d(x, w, b, padding="same", backend="triton")
    torch.testing.assert_close(same, depthwise_conv2d_reference(x, w, b, (1, 1)), **TOL[torch.float32])
    valid = depthwise_conv2d(x, w, b, padding="valid", backend="triton")
    assert valid.shape == (1, 6, 6, 7)
    torch.testing.assert_close(valid, depthwise_conv2d_reference(x, w, b, (0, 0)), **TOL[torch.float32])


@needs_interpreter
def test_no_grad_and_partial_grads():
    x, w, b, _ = _inputs(2, 9, (7, 7), 3, torch.float32)
    with torch.no_grad():
        out = depthwise_conv2d(x, w, b, activation="gelu", backend="triton")
    torch.testing.assert_close(out, depthwise_conv2d_reference(x, w, b, (1, 1), 1, "gelu"), **TOL[torch.float32])
    w.requires_grad_(True)  # only the weight: the input gradient is not computed
    depthwise_conv2d(x, w, b, activation="gelu", backend="triton").sum().backward()
    w_ref = w.detach().clone().requires_grad_(True)
    depthwise_conv2d_reference(x, w_ref, b, (1, 1), 1, "gelu").sum().backward()
    torch.testing.assert_close(w.grad, w_ref.grad, **TOL[torch.float32])


@needs_interpreter
def test_fp32_residual_promotes_the_output():
    x, w, b, r = _inputs(1, 8, (5, 6), 3, torch.bfloat16, residual=True)
    r = r.float()
    out = depthwise_conv2d(x, w, b, residual=r, backend="triton")
    assert out.dtype == torch.float32
    want = depthwise_conv2d_reference(x, w, b, (1, 1), 1, None, r)
    torch.testing.assert_close(out, want, **TOL[torch.bfloat16])


@needs_interpreter
def test_custom_op_opcheck():
    x, w, b, r = _inputs(1, 6, (5, 7), 3, torch.float32, residual=True)
    torch.library.opcheck(_dw_op, (x, w, b, r, 1, 1, 1, True))


@needs_interpreter
def test_auto_backend_uses_the_kernel_where_it_measured_faster(monkeypatch):
    """auto: the kernel for dilated filters and GELU-fused inference on channels-last maps, F.conv2d elsewhere."""
    from linzoo.kernels import depthwise_conv as dw

    calls = []
    monkeypatch.setattr(dw, "depthwise_conv2d_reference", lambda *a: calls.append("cudnn") or a[0])
    monkeypatch.setattr(dw._triton_dwconv, "forward", lambda *a: calls.append("kernel") or a[0])
    monkeypatch.setattr(dw, "resolve_backend", lambda *a, **k: "triton")  # as auto resolves on CUDA
    x, w, b, _ = _inputs(1, 8, (6, 6), 3, torch.float32)
    w7 = torch.randn(8, 1, 7, 7)
    with torch.no_grad():
        depthwise_conv2d(x, w7, b, dilation=3)  # dilated: kernel
        depthwise_conv2d(x, w, b, activation="gelu")  # GELU-fused inference: kernel
        depthwise_conv2d(x, w, b)  # plain 3x3: cuDNN
        depthwise_conv2d(x.contiguous(), w7, b, dilation=3)  # NCHW: cuDNN
    depthwise_conv2d(x, w.requires_grad_(True), b, activation="gelu")  # GELU-fused training: cuDNN
    assert calls == ["kernel", "kernel", "cudnn", "cudnn", "cudnn"]


@needs_interpreter
def test_taps_major_weights_are_cached_per_tensor_and_version():
    td = _triton_dwconv
    w = torch.randn(6, 1, 3, 3)
    first = td.taps_major(w)
    assert td.taps_major(w) is first  # same tensor, same version: no new copy
    torch.testing.assert_close(first, w.reshape(6, 9).t())
    with torch.no_grad():
        w.mul_(2)  # an in-place update (an optimizer step) bumps the version
    torch.testing.assert_close(td.taps_major(w), w.reshape(6, 9).t())
    key = id(w)
    del w
    assert key not in td._TAPS_CACHE  # freed with the weight


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(weight=torch.randn(4, 1, 3, 3)), "weight must have shape"),
        (dict(bias=torch.randn(5)), "bias must have shape"),
        (dict(dilation=0), "dilation must be a positive int"),
        (dict(activation="relu"), "activation must be one of"),
        (dict(padding=-1), "padding must be a non-negative int"),
        (dict(residual=torch.randn(1, 6, 4, 4)), "residual must have the output's shape"),
        (dict(weight=torch.randn(6, 1, 2, 2)), "needs an odd kernel"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    args = dict(x=torch.randn(1, 6, 5, 5), weight=torch.randn(6, 1, 3, 3), bias=None)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        depthwise_conv2d(args.pop("x"), args.pop("weight"), args.pop("bias"), backend="torch", **args)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(
    "channels,size,kernel,dilation,activation",
    [
        (64, (56, 56), 5, 1, None),
        (64, (56, 56), 7, 3, None),
        (512, (56, 56), 3, 1, "gelu"),
        (320, (15, 23), 3, 1, "gelu"),
    ],
)
def test_gpu_real_sizes(channels, size, kernel, dilation, activation, dtype):
    tensors = _inputs(8, channels, size, kernel, dtype, device="cuda", residual=activation is not None)
    _compare(tensors, dilation, activation, None, dtype)


@needs_interpreter
@pytest.mark.slow
def test_compiled_training_step_matches_eager():
    """Under torch.compile (inductor) the op runs as the custom op; its outputs' strides must equal the fake
    implementation's (a transposed weight gradient once failed inductor's stride assertion)."""
    x, w, b, r = _inputs(1, 16, (5, 7), 3, torch.float32, residual=True)

    def loss(x, w, b, r):
        return depthwise_conv2d(x, w, b, activation="gelu", residual=r, backend="triton").square().sum()

    leaves = [t.requires_grad_(True) for t in (x, w, b, r)]
    want = torch.autograd.grad(loss(*leaves), leaves)
    compiled = torch.compile(loss, backend="inductor", fullgraph=True)
    got = torch.autograd.grad(compiled(*leaves), leaves)  # the backward graph is compiled too (AOTAutograd)
    for name, a, e in zip(("dx", "dw", "dbias", "dresidual"), got, want):
        torch.testing.assert_close(a, e, **TOL[torch.float32], msg=lambda m, n=name: f"{n}: {m}")
