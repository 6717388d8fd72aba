"""Bidirectional gated linear attention: the chunked form against the token-by-token recurrence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import linzoo.kernels
from linzoo.kernels.gla import bidirectional_gla, bidirectional_gla_reference, gla_chunked, gla_recurrent_reference


def _inputs(b, h, length, dk, dv, gate_scale=3.0, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, b, h, length, dk, generator=gen).unbind(0)
    v = torch.randn(b, h, length, dv, generator=gen)
    # ViG's log-decays: logsigmoid(z) / 16, here with z spread widely and a smaller normaliser for strong decays
    g_fwd, g_bwd = (F.logsigmoid(gate_scale * torch.randn(b, h, length, dk, generator=gen)) / 4 for _ in range(2))
    return tuple(t.to(dtype) for t in (q, k, v, g_fwd, g_bwd))


@pytest.mark.parametrize(
    "shape, chunk_size",
    [
        ((2, 3, 196, 32, 64), 64),  # ViG-T at 224: L not a multiple of the chunk
        ((1, 2, 37, 8, 16), 16),
        ((1, 1, 5, 4, 4), 64),  # shorter than one chunk
        ((2, 2, 130, 16, 8), 32),
        ((1, 1, 64, 8, 8), 64),  # exactly one chunk
        ((1, 2, 50, 8, 8), 1),  # one token per chunk
        ((1, 1, 1, 4, 4), 64),
    ],
)
def test_chunked_matches_recurrence(shape, chunk_size):
    q, k, v, g_fwd, g_bwd = _inputs(*shape)
    ref = bidirectional_gla_reference(q, k, v, g_fwd, g_bwd)
    out = bidirectional_gla(q, k, v, g_fwd, g_bwd, chunk_size=chunk_size)
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("reverse", [False, True])
def test_each_direction(reverse):
    """Either scan alone (the other direction's keys zeroed out of the sum by subtracting its reference)."""
    q, k, v, g_fwd, g_bwd = _inputs(1, 2, 90, 8, 8, seed=1)
    scale = 0.3
    both = bidirectional_gla(q, k, v, g_fwd, g_bwd, scale=scale, chunk_size=32)
    fwd = gla_recurrent_reference(q, k, v, g_fwd, scale)
    bwd = gla_recurrent_reference(q, k, v, g_bwd, scale, reverse=True)
    torch.testing.assert_close(both - (fwd if reverse else bwd), bwd if reverse else fwd, rtol=1e-5, atol=2e-5)
    # the forward scan in chunks, on its own
    torch.testing.assert_close(gla_chunked(q, k, v, g_fwd, scale, 32), fwd, rtol=1e-5, atol=2e-5)


def test_hand_computed_three_tokens():
    """dk = dv = 1, q = k = v = 1, scale 1: o_t = (1 + a^f_t (1 + ...)) + (1 + a^b_t (1 + ...))."""
    ones = torch.ones(1, 1, 3, 1)
    af, ab = torch.tensor([0.9, 0.5, 0.25]), torch.tensor([0.8, 0.4, 0.1])
    g_fwd, g_bwd = af.log().reshape(1, 1, 3, 1), ab.log().reshape(1, 1, 3, 1)
    fwd = [1.0, 1 + af[1] * 1, 1 + af[2] * (1 + af[1])]
    bwd = [1 + ab[0] * (1 + ab[1]), 1 + ab[1] * 1, 1.0]  # the backward gate at t is the decay of token t
    want = torch.tensor([f + b for f, b in zip(fwd, bwd)]).reshape(1, 1, 3, 1)
    for fn in (bidirectional_gla_reference, bidirectional_gla):
        torch.testing.assert_close(fn(ones, ones, ones, g_fwd, g_bwd, 1.0), want)


def test_strong_decays_stay_finite():
    """Log-decays down to -60 per token (e^-3840 over a chunk): no overflow in the chunked form. The intra-chunk
    decays are differences of fp32 cumulative sums (relative error ~ |G| 2^-24, G up to ~4000 here), hence the
    looser tolerance; ViG's own gates (logsigmoid / 16) stay within the 1e-5 tests above."""
    q, k, v, g_fwd, g_bwd = _inputs(1, 2, 150, 8, 8, seed=2)
    g_fwd = g_fwd * 200
    g_bwd = torch.where(torch.rand(g_bwd.shape, generator=torch.Generator().manual_seed(3)) < 0.5, g_bwd * 200, g_bwd)
    out = bidirectional_gla(q, k, v, g_fwd, g_bwd)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, bidirectional_gla_reference(q, k, v, g_fwd, g_bwd), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_inputs_accumulate_in_fp32(dtype):
    q, k, v, g_fwd, g_bwd = _inputs(2, 2, 100, 16, 16, seed=4, dtype=dtype)
    out = bidirectional_gla(q, k, v, g_fwd, g_bwd, chunk_size=32)
    assert out.dtype == dtype
    ref = bidirectional_gla_reference(*(t.float() for t in (q, k, v, g_fwd, g_bwd)))
    torch.testing.assert_close(out.float(), ref, rtol=1e-2, atol=1e-2 * ref.abs().max().item())


def test_gradients_match_the_recurrence():
    tensors = [t.requires_grad_() for t in _inputs(1, 2, 70, 8, 4, seed=5)]
    grad = torch.randn(1, 2, 70, 4, generator=torch.Generator().manual_seed(6))
    grads = []
    for fn in (bidirectional_gla_reference, lambda *a: bidirectional_gla(*a, chunk_size=16)):
        (fn(*tensors) * grad).sum().backward()
        grads.append([t.grad.clone() for t in tensors])
        for t in tensors:
            t.grad = None
    for name, a, b in zip(("q", "k", "v", "gk_fwd", "gk_bwd"), *grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4, msg=lambda m, n=name: f"d{n}: {m}")


def test_exported_from_kernels():
    assert linzoo.kernels.bidirectional_gla is bidirectional_gla


def test_bad_inputs_raise_clear_errors():
    q, k, v, g_fwd, g_bwd = _inputs(1, 1, 8, 4, 4)
    with pytest.raises(ValueError, match="q must have shape"):
        bidirectional_gla(q[0], k, v, g_fwd, g_bwd)
    with pytest.raises(ValueError, match="q and k"):
        bidirectional_gla(q, k[..., :2], v, g_fwd, g_bwd)
    with pytest.raises(ValueError, match="v must match"):
        bidirectional_gla(q, k, v[:, :, :3], g_fwd, g_bwd)
    with pytest.raises(ValueError, match="gk_bwd"):
        bidirectional_gla(q, k, v, g_fwd, g_bwd[..., :2])
    with pytest.raises(ValueError, match="floating-point"):
        bidirectional_gla(q, k, v.long(), g_fwd, g_bwd)
    with pytest.raises(ValueError, match="chunk_size"):
        bidirectional_gla(q, k, v, g_fwd, g_bwd, chunk_size=40)
    with pytest.raises(ValueError, match="chunk_size"):
        bidirectional_gla(q, k, v, g_fwd, g_bwd, chunk_size=0)
