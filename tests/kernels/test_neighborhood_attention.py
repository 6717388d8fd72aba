"""Neighborhood attention: reference vs a brute-force NATTEN loop; Triton (interpreter / GPU) vs reference."""

from __future__ import annotations

import os

import pytest
import torch

from linzoo.kernels import neighborhood_attention_2d, neighborhood_attention_2d_reference
from linzoo.kernels.neighborhood_attention import _triton_na, neighborhood_attention_2d_bruteforce

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
needs_interpreter = pytest.mark.skipif(
    _triton_na is None or not INTERPRET, reason="Triton kernels on the CPU need TRITON_INTERPRET=1"
)


@pytest.mark.parametrize(
    "size,kernel,dilation,shape",
    [
        ((7, 9), (3, 5), (1, 1), "square"),
        ((11, 10), (3, 3), (2, 3), "square"),
        ((13, 8), (5, 3), (2, 1), "square"),
        ((9, 9), (5, 5), (1, 1), "circle"),
        ((12, 11), (7, 7), (1, 2), "circle"),
    ],
)
@pytest.mark.parametrize("with_rpb,with_extra", [(False, False), (True, True)])
def test_reference_matches_bruteforce(size, kernel, dilation, shape, with_rpb, with_extra):
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, *size, 4) for _ in range(3))
    rpb = torch.randn(2, 2 * kernel[0] - 1, 2 * kernel[1] - 1) if with_rpb else None
    ke, ve = (torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)) if with_extra else (None, None)
    args = (q, k, v, kernel, dilation, rpb, ke, ve, shape, 0.7)
    torch.testing.assert_close(
        neighborhood_attention_2d_reference(*args).double(),
        neighborhood_attention_2d_bruteforce(*args),
        atol=1e-5,
        rtol=1e-5,
    )


def test_full_window_equals_dense_attention():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 7, 8) for _ in range(3))
    out = neighborhood_attention_2d(q, k, v, (5, 7), backend="torch")
    dense = torch.nn.functional.scaled_dot_product_attention(*(t.flatten(2, 3) for t in (q, k, v)))
    torch.testing.assert_close(out, dense.view_as(out), atol=1e-5, rtol=1e-5)


def test_rpb_and_extra_kv_receive_gradients():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 6, 4, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 5, requires_grad=True)
    ke, ve = (torch.randn(1, 2, 3, 4, requires_grad=True) for _ in range(2))
    neighborhood_attention_2d(q, k, v, 3, rpb=rpb, extra_kv=(ke, ve), backend="torch").square().sum().backward()
    for t in (q, k, v, rpb, ke, ve):
        assert t.grad is not None and t.grad.abs().sum() > 0


def test_validation_errors():
    q = torch.randn(1, 2, 8, 8, 4)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        neighborhood_attention_2d(q, q, q, 4)
    with pytest.raises(ValueError, match="kernel_size \\* dilation"):
        neighborhood_attention_2d(q, q, q, 9)
    with pytest.raises(ValueError, match="kernel_size \\* dilation"):
        neighborhood_attention_2d(q, q, q, 3, dilation=3)
    with pytest.raises(ValueError, match="dilation"):
        neighborhood_attention_2d(q, q, q, 3, dilation=0)
    with pytest.raises(ValueError, match="rpb"):
        neighborhood_attention_2d(q, q, q, 3, rpb=torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="extra_kv"):
        neighborhood_attention_2d(q, q, q, 3, extra_kv=(torch.zeros(1, 2, 5, 3), torch.zeros(1, 2, 5, 4)))
    with pytest.raises(ValueError, match="window_shape"):
        neighborhood_attention_2d(q, q, q, 3, window_shape="diamond")
    with pytest.raises(ValueError, match="circle"):
        neighborhood_attention_2d(q, q, q, (3, 5), window_shape="circle")
    with pytest.raises(ValueError, match="dtype"):
        neighborhood_attention_2d(q, q.half(), q, 3)
    with pytest.raises(ValueError, match="v must match"):
        neighborhood_attention_2d(q, q, q[:, :, :4], 3)
    with pytest.raises(ValueError, match="backend"):
        neighborhood_attention_2d(q, q, q, 3, backend="cuda")


TRITON_CASES = [
    # size, kernel, dilation, shape, rpb, extra M, dim
    ((9, 11), (3, 3), (1, 1), "square", False, 0, 16),
    ((10, 13), (5, 3), (2, 3), "square", True, 0, 32),
    ((13, 14), (13, 7), (1, 2), "square", True, 5, 24),
    ((11, 9), (7, 7), (1, 1), "circle", True, 3, 16),
    ((12, 12), (9, 9), (1, 1), "circle", False, 0, 8),
    ((10, 9), (5, 5), (1, 1), "circle", False, 64, 16),  # extra keys a multiple of the block: unmasked loop
    ((9, 10), (5, 5), (1, 1), "circle", False, 70, 128),  # d = 128: 4x16 tiles, 64-key extra blocks, a partial one
]


@needs_interpreter
@pytest.mark.parametrize("size,kernel,dilation,shape,with_rpb,extra,dim", TRITON_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_reference(size, kernel, dilation, shape, with_rpb, extra, dim, dtype):
    torch.manual_seed(0)
    heads = 2
    q, k, v = (torch.randn(1, heads, *size, dim).to(dtype).requires_grad_() for _ in range(3))
    inputs = [q, k, v]
    rpb = extra_kv = None
    if with_rpb:
        rpb = torch.randn(heads, 2 * kernel[0] - 1, 2 * kernel[1] - 1, requires_grad=True)
        inputs.append(rpb)
    if extra:
        extra_kv = tuple(torch.randn(1, heads, extra, dim).to(dtype).requires_grad_() for _ in range(2))
        inputs += list(extra_kv)
    grad = torch.randn(1, heads, *size, dim).to(dtype)
    res = []
    for backend in ("triton", "torch"):
        out = neighborhood_attention_2d(
            q, k, v, kernel, dilation=dilation, rpb=rpb, extra_kv=extra_kv, window_shape=shape, backend=backend
        )
        res.append((out, *torch.autograd.grad(out, inputs, grad)))
    names = ["out", "dq", "dk", "dv"] + (["drpb"] if with_rpb else []) + (["dk_extra", "dv_extra"] if extra else [])
    tol = dict(atol=3e-4, rtol=3e-4) if dtype == torch.float32 else dict(atol=4e-2, rtol=4e-2)
    for name, a, b in zip(names, *res):
        torch.testing.assert_close(a.float(), b.float(), **tol, msg=lambda m, n=name: f"{n}: {m}")


@needs_interpreter
def test_eager_path_skips_the_custom_op_and_matches_it(monkeypatch):
    """Eager calls run the kernels through an autograd.Function (no dispatcher); same values and gradients as
    the custom op that torch.compile uses."""
    import linzoo.kernels.neighborhood_attention as na

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 7, 16, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 5, requires_grad=True)
    ke, ve = (torch.randn(1, 2, 3, 16, requires_grad=True) for _ in range(2))
    leaves = (q, k, v, rpb, ke, ve)
    grad = torch.randn(1, 2, 6, 7, 16)
    via_op = na._na_op(q, k, v, 3, 3, 1, 2, False, 0.25, rpb, ke, ve)[0]
    want = (via_op, *torch.autograd.grad(via_op, leaves, grad))

    def no_custom_op(*args):
        raise AssertionError("eager call went through the custom op")

    monkeypatch.setattr(na, "_na_op", no_custom_op)
    out = neighborhood_attention_2d(
        q, k, v, 3, dilation=(1, 2), rpb=rpb, extra_kv=(ke, ve), scale=0.25, backend="triton"
    )
    got = (out, *torch.autograd.grad(out, leaves, grad))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    with torch.no_grad():  # inference: the forward kernel alone
        torch.testing.assert_close(
            neighborhood_attention_2d(
                q, k, v, 3, dilation=(1, 2), rpb=rpb, extra_kv=(ke, ve), scale=0.25, backend="triton"
            ),
            want[0],
            atol=0,
            rtol=0,
        )


@pytest.mark.slow
@needs_interpreter
def test_custom_op_opcheck():
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch of the fused op."""
    from linzoo.kernels.neighborhood_attention import _na_op

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 7, 16, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 5, requires_grad=True)
    ke, ve = (torch.randn(1, 2, 3, 16, requires_grad=True) for _ in range(2))
    torch.library.opcheck(_na_op, (q, k, v, 3, 3, 1, 2, False, 0.25, rpb, ke, ve))


@pytest.mark.slow
@needs_interpreter
def test_triton_small_tiles_interior(monkeypatch):
    """4x4 query/key tiles on a 13x11 map: interior tiles, halos clamped on every side, dilation groups,
    and the query-split backward of the extra keys."""
    small = dict(TH=4, TW=4, BLOCK_N=16, num_warps=4, num_stages=1)
    monkeypatch.setattr(_triton_na, "CONFIG_OVERRIDE", {"fwd": small, "bwd": small})
    monkeypatch.setattr(_triton_na, "EXTRA_MIN_BLOCKS", 1)  # split the extra-key backward over 9 programs
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 13, 11, 16, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 9, 5, requires_grad=True)
    extra_kv = tuple(torch.randn(1, 2, 3, 16, requires_grad=True) for _ in range(2))
    grad = torch.randn(1, 2, 13, 11, 16)
    res = []
    for backend in ("triton", "torch"):
        out = neighborhood_attention_2d(q, k, v, (5, 3), dilation=(2, 1), rpb=rpb, extra_kv=extra_kv, backend=backend)
        res.append((out, *torch.autograd.grad(out, (q, k, v, rpb, *extra_kv), grad)))
    for name, a, b in zip(("out", "dq", "dk", "dv", "drpb", "dke", "dve"), *res):
        torch.testing.assert_close(a, b, atol=3e-4, rtol=3e-4, msg=lambda m, n=name: f"{n}: {m}")


GPU_CASES = [
    # size, kernel, dilation, shape, dim, extra
    ((56, 56), 7, 1, "square", 32, 0),
    ((28, 28), 7, 2, "square", 64, 0),
    ((45, 37), 13, 1, "square", 128, 0),
    ((32, 32), 15, 1, "circle", 128, 64),
    ((20, 24), 5, 3, "square", 40, 16),
]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "dtype,size,kernel,dilation,shape,dim,extra",
    [(dt, *case) for dt in (torch.bfloat16, torch.float32) for case in GPU_CASES]
    + [(torch.float16, *GPU_CASES[0]), (torch.float16, *GPU_CASES[3])],
)
def test_gpu_real_sizes(dtype, size, kernel, dilation, shape, dim, extra):
    torch.manual_seed(0)
    heads, dev = 2, "cuda"
    q, k, v = (torch.randn(4, heads, *size, dim, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
    rpb = torch.randn(heads, 2 * kernel - 1, 2 * kernel - 1, device=dev, requires_grad=True)
    inputs = [q, k, v, rpb]
    extra_kv = None
    if extra:
        extra_kv = tuple(
            torch.randn(4, heads, extra, dim, device=dev, dtype=dtype, requires_grad=True) for _ in range(2)
        )
        inputs += list(extra_kv)
    grad = torch.randn_like(q)
    res = []
    for backend in ("triton", "torch"):
        out = neighborhood_attention_2d(
            q, k, v, kernel, dilation=dilation, rpb=rpb, extra_kv=extra_kv, window_shape=shape, backend=backend
        )
        res.append((out, *torch.autograd.grad(out, inputs, grad)))
    tol = dict(atol=2e-3, rtol=2e-3) if dtype == torch.float32 else dict(atol=4e-2, rtol=4e-2)
    for name, a, b in zip(("out", "dq", "dk", "dv", "drpb", "dke", "dve"), *res):
        scale = b.float().abs().max().clamp(min=1.0) if name == "drpb" else 1.0
        torch.testing.assert_close(a.float() / scale, b.float() / scale, **tol, msg=lambda m, n=name: f"{n}: {m}")
