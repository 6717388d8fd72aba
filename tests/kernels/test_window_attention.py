"""Window attention: reference vs a brute-force loop and vs timm's Swin path; Triton vs reference."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from linzoo.kernels import rpb_to_swin_table, swin_table_to_rpb, window_attention_2d, window_attention_2d_reference
from linzoo.kernels.window_attention import _triton_window

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
needs_interpreter = pytest.mark.skipif(
    _triton_window is None or not INTERPRET, reason="Triton kernels on the CPU need TRITON_INTERPRET=1"
)


def _bruteforce(q, k, v, window, shift, rpb, scale, pad_mode):
    """Per-query loop: find the query's window in the padded, rolled map and attend to its admissible keys."""
    (wh, ww), (sh, sw) = window, shift
    bsz, heads, height, width, dim = q.shape
    hp, wp = -(-height // wh) * wh, -(-width // ww) * ww

    def region(c, padded, w, s):
        return 0 if s == 0 else int(c >= padded - w) + int(c >= padded - s)

    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float64)
    for y in range(height):
        for x in range(width):
            ys, xs = (y - sh) % hp, (x - sw) % wp  # position in the rolled map
            keys = []
            for ly in range(wh):
                for lx in range(ww):
                    kys, kxs = ys // wh * wh + ly, xs // ww * ww + lx
                    if region(kys, hp, wh, sh) != region(ys, hp, wh, sh) or region(kxs, wp, ww, sw) != region(
                        xs, wp, ww, sw
                    ):
                        continue
                    ky, kx = (kys + sh) % hp, (kxs + sw) % wp
                    real = ky < height and kx < width
                    if not real and pad_mode == "mask":
                        continue
                    keys.append((ky, kx, real, kys - ys + wh - 1, kxs - xs + ww - 1))
            zero_k = torch.zeros(bsz, heads, dim, dtype=torch.float64)
            zero_v = torch.zeros(bsz, heads, v.shape[-1], dtype=torch.float64)
            kk = torch.stack([k[:, :, a, b].double() if r else zero_k for a, b, r, _, _ in keys], 2)
            vv = torch.stack([v[:, :, a, b].double() if r else zero_v for a, b, r, _, _ in keys], 2)
            s = torch.einsum("bnd,bnkd->bnk", q[:, :, y, x].double(), kk) * scale
            if rpb is not None:
                s = s + torch.stack([rpb.double()[:, i, j] for _, _, _, i, j in keys], -1)[None]
            out[:, :, y, x] = torch.einsum("bnk,bnkd->bnd", s.softmax(-1), vv)
    return out


@pytest.mark.parametrize(
    "size,window,shift,pad_mode",
    [
        ((6, 6), (3, 3), (1, 1), "mask"),
        ((7, 5), (3, 3), (1, 2), "mask"),
        ((7, 5), (3, 3), (1, 2), "zeros"),
        ((5, 9), (4, 3), (0, 1), "mask"),
        ((4, 4), (5, 5), (2, 2), "mask"),
    ],
)
def test_reference_matches_bruteforce(size, window, shift, pad_mode):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, *size, 4) for _ in range(3))
    rpb = torch.randn(2, 2 * window[0] - 1, 2 * window[1] - 1)
    ref = window_attention_2d_reference(q, k, v, window, shift, rpb, 0.5, pad_mode)
    brute = _bruteforce(q, k, v, window, shift, rpb, 0.5, pad_mode)
    torch.testing.assert_close(ref.double(), brute, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shift", [0, 2])
def test_matches_timm_swin_window_attention(shift):
    """timm's WindowAttention + SW-MSA mask with the same relative_position_bias_table (Swin layout)."""
    from timm.models.swin_transformer import SwinTransformerBlock, window_partition, window_reverse

    torch.manual_seed(0)
    heads, dim, size, win = 2, 8, 8, 4
    block = SwinTransformerBlock(dim * heads, (size, size), num_heads=heads, window_size=win, shift_size=shift).eval()
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_()
    x = torch.randn(2, size, size, dim * heads)
    with torch.no_grad():
        shifted = torch.roll(x, (-shift, -shift), (1, 2))
        windows = window_partition(shifted, (win, win)).view(-1, win * win, dim * heads)
        ref = block.attn(windows, mask=block.attn_mask)
        ref = torch.roll(
            window_reverse(ref.view(-1, win, win, dim * heads), (win, win), size, size), (shift, shift), (1, 2)
        )
        qkv = F.linear(x, block.attn.qkv.weight, block.attn.qkv.bias).view(2, size, size, 3, heads, dim)
        q, k, v = qkv.permute(3, 0, 4, 1, 2, 5).unbind(0)
        table = block.attn.relative_position_bias_table
        out = window_attention_2d(q, k, v, win, shift=shift, rpb=table, backend="torch")
        out = block.attn.proj(out.permute(0, 2, 3, 1, 4).reshape(2, size, size, heads * dim))
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)


def test_table_layout_round_trip_and_grad():
    table = torch.randn(169, 3, requires_grad=True)
    rpb = swin_table_to_rpb(table, (7, 7))
    assert rpb.shape == (3, 13, 13)
    torch.testing.assert_close(rpb_to_swin_table(rpb), table)
    q, k, v = (torch.randn(1, 3, 7, 7, 8) for _ in range(3))
    window_attention_2d(q, k, v, 7, rpb=table, backend="torch").sum().backward()
    assert table.grad is not None and table.grad.abs().sum() > 0


def test_validation_errors():
    q = torch.randn(1, 2, 8, 8, 4)
    with pytest.raises(ValueError, match="shift"):
        window_attention_2d(q, q, q, 4, shift=4)
    with pytest.raises(ValueError, match="window_size"):
        window_attention_2d(q, q, q, 0)
    with pytest.raises(ValueError, match="rpb"):
        window_attention_2d(q, q, q, 4, rpb=torch.zeros(2, 5, 5))
    with pytest.raises(ValueError, match="pad_mode"):
        window_attention_2d(q, q, q, 4, pad_mode="reflect")
    with pytest.raises(ValueError, match="q and k"):
        window_attention_2d(q, q[..., :2, :], q, 4)
    with pytest.raises(ValueError, match="dtype"):
        window_attention_2d(q, q.double(), q, 4)
    with pytest.raises(ValueError, match=r"\(B, heads, H, W, D\)"):
        window_attention_2d(q[0], q[0], q[0], 4)


TRITON_CASES = [
    # size, window, shift, rpb layout, pad_mode, dim
    ((7, 7), (7, 7), (0, 0), None, "mask", 32),
    ((9, 10), (4, 4), (2, 1), "swin", "mask", 16),
    ((9, 10), (4, 4), (2, 1), "3d", "zeros", 24),
    ((6, 11), (3, 5), (1, 2), "3d", "mask", 8),
]


@needs_interpreter
@pytest.mark.parametrize("size,window,shift,rpb_kind,pad_mode,dim", TRITON_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_matches_reference(size, window, shift, rpb_kind, pad_mode, dim, dtype):
    torch.manual_seed(0)
    heads = 2
    q, k, v = (torch.randn(2, heads, *size, dim).to(dtype).requires_grad_() for _ in range(3))
    rpb = None
    if rpb_kind == "swin":
        rpb = torch.randn((2 * window[0] - 1) * (2 * window[1] - 1), heads, requires_grad=True)
    elif rpb_kind == "3d":
        rpb = torch.randn(heads, 2 * window[0] - 1, 2 * window[1] - 1, requires_grad=True)
    grad = torch.randn(2, heads, *size, dim).to(dtype)
    results = []
    for backend in ("triton", "torch"):
        inputs = [q, k, v] + ([rpb] if rpb is not None else [])
        out = window_attention_2d(q, k, v, window, shift=shift, rpb=rpb, pad_mode=pad_mode, backend=backend)
        grads = torch.autograd.grad(out, inputs, grad)
        results.append((out, *grads))
    tol = dict(atol=2e-4, rtol=2e-4) if dtype == torch.float32 else dict(atol=3e-2, rtol=3e-2)
    for name, a, b in zip(("out", "dq", "dk", "dv", "drpb"), *results):
        torch.testing.assert_close(a.float(), b.float(), **tol, msg=lambda m, n=name: f"{n}: {m}")


@needs_interpreter
def test_custom_op_opcheck():
    """Schema, fake (meta) implementation, autograd registration and AOT dispatch of the fused op."""
    from linzoo.kernels.window_attention import _window_op

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 7, 16, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 7, requires_grad=True)
    torch.library.opcheck(_window_op, (q, k, v, 3, 4, 1, 2, 0.25, False, rpb))


@needs_interpreter
def test_eager_path_skips_the_custom_op_and_matches_it(monkeypatch):
    """Eager calls run the kernels through an autograd.Function (no dispatcher); same values and gradients as
    the custom op that torch.compile uses."""
    import linzoo.kernels.window_attention as wa

    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 6, 7, 16, requires_grad=True) for _ in range(3))
    rpb = torch.randn(2, 5, 7, requires_grad=True)
    grad = torch.randn(1, 2, 6, 7, 16)
    via_op = wa._window_op(q, k, v, 3, 4, 1, 2, 0.25, False, rpb)
    want = (via_op, *torch.autograd.grad(via_op, (q, k, v, rpb), grad))

    def no_custom_op(*args):
        raise AssertionError("eager call went through the custom op")

    monkeypatch.setattr(wa, "_window_op", no_custom_op)
    out = window_attention_2d(q, k, v, (3, 4), shift=(1, 2), rpb=rpb, scale=0.25, backend="triton")
    got = (out, *torch.autograd.grad(out, (q, k, v, rpb), grad))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    with torch.no_grad():
        out = window_attention_2d(q, k, v, (3, 4), shift=(1, 2), rpb=rpb, scale=0.25, backend="triton")
    torch.testing.assert_close(out, want[0], atol=0, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(
    "dtype,size,shift,dim",
    [
        (dt, *c)
        for dt in (torch.bfloat16, torch.float32)
        for c in (((56, 56), 3, 32), ((30, 45), 3, 64), ((14, 14), 0, 128))
    ]
    + [(torch.float16, (56, 56), 3, 32)],
)
def test_gpu_real_sizes(dtype, size, shift, dim):
    torch.manual_seed(0)
    heads, dev = 3, "cuda"
    q, k, v = (torch.randn(8, heads, *size, dim, device=dev, dtype=dtype, requires_grad=True) for _ in range(3))
    table = torch.randn(169, heads, device=dev, requires_grad=True)
    grad = torch.randn_like(q)
    res = []
    for backend in ("triton", "torch"):
        out = window_attention_2d(q, k, v, 7, shift=shift, rpb=table, backend=backend)
        res.append((out, *torch.autograd.grad(out, (q, k, v, table), grad)))
    tol = dict(atol=2e-3, rtol=2e-3) if dtype == torch.float32 else dict(atol=4e-2, rtol=4e-2)
    for name, a, b in zip(("out", "dq", "dk", "dv", "drpb"), *res):
        scale = b.float().abs().max().clamp(min=1.0) if name == "drpb" else 1.0
        torch.testing.assert_close(a.float() / scale, b.float() / scale, **tol, msg=lambda m, n=name: f"{n}: {m}")
