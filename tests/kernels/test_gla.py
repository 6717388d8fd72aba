"""Bidirectional gated linear attention: the chunked form and the fused Triton kernels (interpreter on the CPU)
against the token-by-token recurrence; optional parity with the official ViG kernels (``LINZOO_GLA_OFFICIAL``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import linzoo.kernels
from linzoo.kernels import gla as gla_module
from linzoo.kernels.gla import bidirectional_gla, bidirectional_gla_reference, gla_chunked, gla_recurrent_reference

from ..conftest import load_benchmark

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
CUDA = torch.cuda.is_available()
needs_kernels = pytest.mark.skipif(
    gla_module._triton_gla is None or not (CUDA or INTERPRET),
    reason="Triton kernels on the CPU need TRITON_INTERPRET=1",
)
DEVICE = "cuda" if CUDA else "cpu"
NAMES = ("o", "dq", "dk", "dv", "dgk_fwd", "dgk_bwd")


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


# --------------------------------------------------------------------------------------------------
# the fused Triton kernels (interpreter on the CPU): forward and the five gradients against the recurrence
# --------------------------------------------------------------------------------------------------
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))


def _outputs_and_grads(fn, tensors, seed=7):
    """The output and the gradients of ``<o, w>`` (w a fixed random tensor) w.r.t. q, k, v, gk_fwd, gk_bwd."""
    leaves = [t.detach().clone().requires_grad_(True) for t in tensors]
    out = fn(*leaves)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.device)
    return (out, *torch.autograd.grad((out.float() * w).sum(), leaves))


def _reference(*tensors, scale=None):
    """The recurrence in fp32 on the (possibly rounded) inputs, cast like the op."""
    return bidirectional_gla_reference(*(t.float() for t in tensors), scale=scale).to(tensors[2].dtype)


@needs_kernels
@pytest.mark.parametrize(
    "shape, dtype, gate_div",
    [
        ((2, 2, 37, 16, 32), torch.float32, 4),  # odd L, strong-ish decays
        ((1, 3, 50, 24, 48), torch.float32, 16),  # non-power-of-two dims (padded + masked), ViG's weak decays
        ((2, 1, 9, 4, 80), torch.float32, 1),  # dv 80: several dv tiles (forward 32, backward 64 columns)
        ((1, 1, 1, 8, 8), torch.float32, 4),  # one token: the middle of an odd L only
        ((1, 2, 2, 8, 8), torch.float32, 4),
        ((1, 2, 37, 16, 32), torch.bfloat16, 16),
        ((1, 1, 24, 16, 24), torch.float16, 4),
    ],
)
def test_triton_matches_recurrence(shape, dtype, gate_div):
    b, h, length, dk, dv = shape
    gen = torch.Generator().manual_seed(sum(shape))
    q, k = torch.randn(2, b, h, length, dk, generator=gen).unbind(0)
    v = torch.randn(b, h, length, dv, generator=gen)
    g_fwd, g_bwd = (F.logsigmoid(3 * torch.randn(b, h, length, dk, generator=gen)) / gate_div for _ in range(2))
    tensors = [t.to(DEVICE, dtype) for t in (q, k, v, g_fwd, g_bwd)]
    got = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="triton"), tensors)
    want = _outputs_and_grads(_reference, tensors)
    # 16-bit outputs: ~1 ulp (the interpreter truncates fp32 -> bf16; compiled kernels round to nearest even)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    for name, a, w in zip(NAMES, got, want):
        assert a.dtype == w.dtype == dtype and a.shape == w.shape, name
        if name.startswith("dgk") and length == 1:  # a single token: no decay is ever applied
            assert not a.any(), name
            continue
        assert _rel(a, w) < tol, (name, _rel(a, w))


@needs_kernels
@pytest.mark.parametrize("fwd_tile, bwd_tile", [(16, 16), (64, 8)])
def test_triton_other_tiles(fwd_tile, bwd_tile, monkeypatch):
    """The dv tiles a tuning table may choose (several tiles per head, a backward tile of one lane group)."""
    tg = gla_module._triton_gla
    monkeypatch.setattr(tg, "TUNING", {("fwd", 16, 32): (fwd_tile, 1), ("bwd", 16, 32): (bwd_tile, 1)})
    assert tg.launch_config(16, 32)["BV"] == fwd_tile
    assert tg.launch_config(16, 32, backward=True) == {
        "DKP": 16,
        "BVH": max(1, bwd_tile // 8),
        "BVL": 8,
        "num_warps": 1,
    }
    tensors = [t.to(DEVICE) for t in _inputs(1, 2, 19, 12, 32, seed=15)]
    got = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="triton"), tensors)
    want = _outputs_and_grads(_reference, tensors)
    for name, a, w in zip(NAMES, got, want):
        assert _rel(a, w) < 1e-5, (name, _rel(a, w))


@needs_kernels
@pytest.mark.parametrize("segment", [1, 5, 16])
def test_triton_in_segments(segment, monkeypatch):
    """A sequence split into segments (scanned from zero, chained, then rescanned from the chained states and, in
    the backward, the chained adjoint carries; the gate gradients' sums continued over later segments) gives the
    same output and gradients: ragged last segment, one-token segments, several dv tiles, strong decays."""
    tg = gla_module._triton_gla
    monkeypatch.setattr(tg, "FORCE_SEGMENT", segment)
    q, k, v, g_fwd, g_bwd = (t.to(DEVICE) for t in _inputs(1, 1, 29, 12, 80, seed=16))
    tensors = (q, k, v, g_fwd * 10, g_bwd)
    got = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="triton"), tensors)
    want = _outputs_and_grads(_reference, tensors)
    for name, a, w in zip(NAMES, got, want):
        assert _rel(a, w) < 1e-5, (name, _rel(a, w))
    assert not got[4][:, :, 0].any()  # dgk_fwd at the first token: exactly 0


def test_segment_rule(monkeypatch):
    """Segments only where B·H·(dv tiles) programs leave SMs idle, never shorter than MIN_SEGMENT tokens."""
    tg = gla_module._triton_gla
    if tg is None:
        pytest.skip("needs Triton")
    monkeypatch.setitem(tg._SM_COUNT, 0, 132)
    gpu = torch.device("cuda", 0)
    assert tg.segment_length(48, 4096, gpu) == 373  # ViG-T @1024, batch 8: 11 segments
    assert tg.segment_length(768, 196, gpu) == 196  # ViG-S @224: enough programs
    assert tg.segment_length(192, 3136, gpu) == 1046  # ViG-H-T stage 1 @224, batch 64: 3 segments
    assert tg.segment_length(3, 200, gpu) == 200  # too short to split
    assert tg.segment_length(3, 200, torch.device("cpu")) == 200
    monkeypatch.setattr(tg, "FORCE_SEGMENT", 7)
    assert tg.segment_length(3000, 200, gpu) == 7


@needs_kernels
def test_triton_strong_decays_and_scale():
    """Log-decays down to -60 per token and a custom scale: the recurrence never exponentiates a difference of
    cumulative sums, so the kernel matches the reference as closely as for weak decays."""
    q, k, v, g_fwd, g_bwd = (t.to(DEVICE) for t in _inputs(1, 2, 40, 8, 16, seed=9))
    g_fwd = g_fwd * 200
    g_bwd = torch.where(torch.rand(g_bwd.shape, generator=torch.Generator().manual_seed(3)).to(DEVICE) < 0.5,
                        g_bwd * 200, g_bwd)  # fmt: skip
    tensors = (q, k, v, g_fwd, g_bwd)
    got = _outputs_and_grads(lambda *a: bidirectional_gla(*a, scale=0.7, backend="triton"), tensors)
    want = _outputs_and_grads(lambda *a: _reference(*a, scale=0.7), tensors)
    for name, a, w in zip(NAMES, got, want):
        assert torch.isfinite(a).all(), name
        assert _rel(a, w) < 1e-5, (name, _rel(a, w))


@needs_kernels
def test_triton_strided_inputs_and_chunked_form_agree():
    """ViG's layout (heads split off a (B, L, C) projection: (B, H, L, D) views with a unit last stride, read in
    place) and a non-unit last stride (copied); the Triton and chunked backends agree, gradients included."""
    b, h, length, dk, dv = 2, 2, 29, 8, 16
    gen = torch.Generator().manual_seed(11)
    proj = torch.randn(b, length, h * (4 * dk + dv), generator=gen).to(DEVICE)
    q, k, g_fwd, g_bwd, v = proj.split([h * dk] * 4 + [h * dv], dim=-1)
    heads = lambda t: t.reshape(b, length, h, -1).transpose(1, 2)
    g_fwd, g_bwd = F.logsigmoid(g_fwd) / 4, F.logsigmoid(g_bwd) / 4
    tensors = [heads(t) for t in (q, k, v, g_fwd, g_bwd)]
    tensors[1] = tensors[1].transpose(-1, -2).contiguous().transpose(-1, -2)  # k: last stride L
    assert tensors[0].stride(-1) == 1 and not tensors[0].is_contiguous() and tensors[1].stride(-1) != 1
    got = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="triton"), tensors)
    chunked = _outputs_and_grads(lambda *a: bidirectional_gla(*a, chunk_size=16, backend="torch"), tensors)
    want = _outputs_and_grads(_reference, tensors)
    for name, a, c, w in zip(NAMES, got, chunked, want):
        assert _rel(a, w) < 1e-5 and _rel(c, w) < 1e-4 and _rel(a, c) < 1e-4, name
    assert got[0].is_contiguous()


@needs_kernels
@pytest.mark.parametrize("shape", [(1, 2, 0, 4, 8), (0, 2, 5, 4, 8), (1, 1, 5, 4, 0)])
def test_triton_empty_inputs(shape):
    """Empty sequences, batches or values launch nothing (a launch would read row L - 1 = -1) and match the
    chunked form: empty or zero outputs and gradients."""
    b, h, length, dk, dv = shape
    tensors = [torch.randn(b, h, length, d).to(DEVICE) for d in (dk, dk, dv, dk, dk)]
    got = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="triton"), tensors)
    want = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="torch"), tensors)
    for name, a, w in zip(NAMES, got, want):
        assert a.shape == w.shape and torch.equal(a, w), name


@needs_kernels
def test_backend_dispatch(monkeypatch):
    """``auto`` is the chunked form on the CPU and honours ``LINZOO_KERNEL_BACKEND``; the Triton path runs the
    kernel (not the chunked form) and builds no autograd node for inference."""
    tensors = _inputs(1, 1, 6, 4, 4, seed=12)
    calls = []
    forward = gla_module._triton_gla.forward
    monkeypatch.setattr(gla_module._triton_gla, "forward", lambda *a: calls.append(1) or forward(*a))
    bidirectional_gla(*tensors)
    assert calls == [] or CUDA
    monkeypatch.setenv("LINZOO_KERNEL_BACKEND", "triton")
    out = bidirectional_gla(*tensors)
    assert calls and out.grad_fn is None
    torch.testing.assert_close(out, bidirectional_gla_reference(*tensors), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="backend"):
        bidirectional_gla(*tensors, backend="cuda")


@needs_kernels
def test_custom_op_registration():
    """The custom op passes torch.library's checks (schema, fake tensor, autograd registration)."""
    tensors = [t.to(DEVICE).requires_grad_() for t in _inputs(1, 2, 5, 4, 8, seed=13)]
    torch.library.opcheck(
        gla_module._gla_op, (*tensors, 0.5), test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
    )
    with torch._subclasses.FakeTensorMode():
        fake = [torch.empty(t.shape, dtype=torch.bfloat16, device=DEVICE) for t in tensors]
        out = bidirectional_gla(*fake, backend="triton")
        assert out.shape == (1, 2, 5, 8) and out.dtype == torch.bfloat16


@needs_kernels
def test_traced_as_one_op_without_graph_breaks():
    """torch.compile (``aot_eager``: Dynamo + AOTAutograd on fake tensors, no codegen) traces the custom op and its
    backward in one graph; the results equal the eager kernel's."""
    tensors = _inputs(1, 2, 11, 8, 16, seed=14)
    fn = torch.compile(lambda *a: bidirectional_gla(*a, backend="triton"), backend="aot_eager", fullgraph=True)
    got = _outputs_and_grads(fn, [t.to(DEVICE) for t in tensors])
    want = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="triton"), [t.to(DEVICE) for t in tensors])
    for name, a, w in zip(NAMES, got, want):
        torch.testing.assert_close(a, w, rtol=0, atol=0, msg=name)


# --------------------------------------------------------------------------------------------------
# parity with the official kernel (only where its source is given: LINZOO_GLA_OFFICIAL=<dir holding the `fla`
# package of hustvl/ViG's vendored flash-linear-attention, at least fla/ops/utils.py and
# fla/ops/gla/recurrent_fuse.py>; runs under the interpreter like the rest)
# --------------------------------------------------------------------------------------------------
OFFICIAL = os.environ.get("LINZOO_GLA_OFFICIAL", "")


def _official_module():
    """The official ``recurrent_fuse`` module, loaded as the benchmark loads it (without the rest of fla)."""
    return load_benchmark("gla.py").load_official(Path(OFFICIAL))


@needs_kernels
@pytest.mark.skipif(not OFFICIAL, reason="set LINZOO_GLA_OFFICIAL to a copy of hustvl/ViG's vendored fla")
@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_official_kernels(dtype):
    """The forward against ``bid_fused_recurrent_gla`` (what ViG runs in eval: it returns ``(o^f + o^b) / 2`` and
    has no working backward), the gradients against two calls of the official ``fused_recurrent_gla`` autograd
    function, forward and ``reverse=True`` (its backward kernel and its dgk cumsum)."""
    official = _official_module()
    b, h, length, dk, dv = 2, 2, 37, 16, 32  # the official kernels need power-of-two head dims
    gen = torch.Generator().manual_seed(21)
    q, k = torch.randn(2, b, h, length, dk, generator=gen).unbind(0)
    v = torch.randn(b, h, length, dv, generator=gen)
    g_fwd, g_bwd = (F.logsigmoid(3 * torch.randn(b, h, length, dk, generator=gen)) / 4 for _ in range(2))
    tensors = [t.to(DEVICE, dtype) for t in (q, k, v, g_fwd, g_bwd)]
    ours = bidirectional_gla(*tensors, backend="triton")
    with torch.no_grad():
        theirs = 2 * official.bid_fused_recurrent_gla(*tensors[:3], torch.cat(tensors[3:]), None)[0].float()
    tol = 1e-5 if dtype == torch.float32 else 1.6e-2
    assert _rel(ours, theirs) < tol

    def official_pair(q, k, v, g_fwd, g_bwd):
        fwd = official.FusedRecurrentGLAFunction.apply(q, k, v, g_fwd, None, dk**-0.5, None, False, False)[0]
        bwd = official.FusedRecurrentGLAFunction.apply(q, k, v, g_bwd, None, dk**-0.5, None, False, True)[0]
        return fwd.float() + bwd.float()

    tensors32 = [t.float() for t in tensors]  # the official backward returns fp32 gate gradients
    got = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="triton"), tensors32)
    want = _outputs_and_grads(official_pair, tensors32)
    for name, a, w in zip(NAMES, got, want):
        assert _rel(a, w) < 1e-5, (name, _rel(a, w))


# --------------------------------------------------------------------------------------------------
# model level: ViG-T with the kernel vs the chunked form (interpreter, a tiny input)
# --------------------------------------------------------------------------------------------------
@needs_kernels
def test_vig_t_same_output_with_either_backend(monkeypatch):
    from linzoo.vision.vig import vig_t

    model = vig_t(pretrained=False).eval().to(DEVICE)
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(5)).to(DEVICE)  # a 3 x 3 token grid
    outputs = {}
    start = time.perf_counter()
    for backend in ("torch", "triton"):
        monkeypatch.setenv("LINZOO_KERNEL_BACKEND", backend)
        with torch.no_grad():
            outputs[backend] = model(x)
    assert time.perf_counter() - start < 60
    torch.testing.assert_close(outputs["triton"], outputs["torch"], rtol=1e-4, atol=1e-4)


# --------------------------------------------------------------------------------------------------
# GPU: ViG's shapes (224 px stages, 1024 px), torch.compile
# --------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((64, 6, 196, 32, 64), torch.bfloat16),  # ViG-S @224
        ((32, 3, 196, 32, 64), torch.float32),  # ViG-T @224
        ((16, 3, 3136, 16, 32), torch.bfloat16),  # ViG-H-T stage 1 @224
        ((64, 24, 49, 16, 32), torch.bfloat16),  # ViG-H-T stage 4 @224
        ((2, 3, 4096, 32, 64), torch.bfloat16),  # ViG-T @1024
    ],
)
def test_gpu_vig_shapes(shape, dtype):
    b, h, length, dk, dv = shape
    gen = torch.Generator(device="cuda").manual_seed(0)
    q, k = (torch.randn(b, h, length, dk, device="cuda", generator=gen) for _ in range(2))
    v = torch.randn(b, h, length, dv, device="cuda", generator=gen)
    gates = [F.logsigmoid(torch.randn(b, h, length, dk, device="cuda", generator=gen) * 3) / 16 for _ in range(2)]
    tensors = [t.to(dtype) for t in (q, k, v, *gates)]
    got = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="triton"), tensors)
    want = _outputs_and_grads(lambda *a: bidirectional_gla(*(t.float() for t in a), backend="torch").to(dtype), tensors)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for name, a, w in zip(NAMES, got, want):
        assert torch.isfinite(a).all(), name
        assert _rel(a, w) < tol, (name, _rel(a, w))


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["vig_t", "vig_h_t"])
def test_gpu_models_same_logits_and_grads_with_either_backend(name, monkeypatch):
    """ViG-T and ViG-H-T at 224 px (fp32, TF32 off): logits and parameter gradients with the kernels vs the chunked
    form."""
    from linzoo.vision import vig

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = getattr(vig, name)(pretrained=False).cuda().train()
    x = torch.randn(4, 3, 224, 224, device="cuda")
    results = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("LINZOO_KERNEL_BACKEND", backend)
        model.zero_grad()
        logits = model(x)
        logits.square().mean().backward()
        grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
        results[backend] = (logits.detach(), grads)
    assert _rel(results["triton"][0], results["torch"][0]) < 1e-4
    worst = max(_rel(a, b) for a, b in zip(results["triton"][1], results["torch"][1]))
    assert worst < 1e-3, worst


@pytest.mark.gpu
def test_gpu_compiled_without_graph_breaks():
    tensors = [t.cuda().requires_grad_() for t in _inputs(4, 3, 196, 32, 64, seed=1)]
    fn = torch.compile(lambda *a: bidirectional_gla(*a, backend="triton") * 2, fullgraph=True)
    got = _outputs_and_grads(fn, tensors)
    want = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="triton") * 2, tensors)
    for name, a, w in zip(NAMES, got, want):
        assert _rel(a, w) < 1e-6, name


@pytest.mark.gpu
@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((1, 2, 2000, 32, 80), torch.float32),  # segments + several dv tiles, fp32 output as its own scratch
        ((1, 1, 700, 256, 64), torch.bfloat16),  # dk 256 (MAX_HEAD_DIM_K), segmented backward (spills 448 B)
        ((2, 2, 300, 128, 256), torch.float16),  # dv 256: 8 forward / 4 backward tiles, no segments
    ],
)
def test_gpu_segments_tiles_and_wide_heads(shape, dtype):
    """Compiled kernels where the ViG shapes do not reach: fp32 with segments and dv tiles, dk 256, dv 256."""
    b, h, length, dk, dv = shape
    tensors = [t.cuda().to(dtype) for t in _inputs(b, h, length, dk, dv, gate_scale=3.0, seed=5)]
    got = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="triton"), tensors)
    want = _outputs_and_grads(lambda *a: bidirectional_gla(*(t.float() for t in a), backend="torch").to(dtype), tensors)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for name, a, w in zip(NAMES, got, want):
        assert torch.isfinite(a).all(), name
        assert _rel(a, w) < tol, (name, _rel(a, w))


@pytest.mark.gpu
def test_gpu_cuda_graph_capture():
    """Forward and backward with the sequence split into segments (5 + 3 launches, host-side sums) capture into a
    CUDA graph (no host sync) and replay to the eager result."""
    leaves = [t.cuda().requires_grad_() for t in _inputs(1, 2, 1500, 32, 64, seed=6)]
    grad = torch.randn(1, 2, 1500, 64, device="cuda")

    def step():
        for t in leaves:
            t.grad = None
        out = bidirectional_gla(*leaves, backend="triton")
        (out * grad).sum().backward()
        return (out, *(t.grad for t in leaves))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up (compiles the kernels) outside the capture
        want = [t.clone() for t in step()]
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        got = step()
    graph.replay()
    torch.cuda.synchronize()
    for name, a, w in zip(NAMES, got, want):
        assert _rel(a, w) < 1e-6, name


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_gpu_inputs_on_a_device_other_than_the_current_one():
    """Tensors on cuda:1 while cuda:0 is current: the kernels must run on the tensors' device (launch() takes the
    current device and its stream)."""
    tensors = [t.to("cuda:1") for t in _inputs(2, 3, 500, 32, 64, seed=8)]
    with torch.cuda.device(0):
        got = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="triton"), tensors)
    want = _outputs_and_grads(lambda *a: bidirectional_gla(*a, backend="torch"), tensors)
    for name, a, w in zip(NAMES, got, want):
        assert a.device == w.device and _rel(a, w) < 1e-4, name
