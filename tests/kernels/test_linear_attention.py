"""Linear attention: reference vs a naive N×N formula, input checks, Triton (interpreter / GPU) vs reference.

Triton decides at import time whether its kernels are compiled or interpreted. Without CUDA this module
sets ``TRITON_INTERPRET=1`` before anything imports Triton; if Triton was already imported in compiled
mode (another module got there first), the interpreter tests are skipped here and re-run by
``test_interpreter_suite_in_subprocess`` in a fresh interpreter with the variable set.
"""

from __future__ import annotations

import importlib
import itertools
import os
import subprocess
import sys

import torch

if not torch.cuda.is_available() and "triton" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

from linzoo.kernels import linear_attention, linear_attention_reference, rope_2d
from linzoo.kernels.linear_attention import FEATURE_MAPS, NORMALIZERS
from linzoo.kernels.linear_attention import _triton_fused as TRITON_FUSED
from linzoo.kernels.linear_attention.reference import apply_feature_map, default_scale
from linzoo.kernels.rope import rope_2d_frequencies


def _interpreter_on() -> bool:
    try:
        from triton import knobs
    except ImportError:
        return False
    return bool(knobs.runtime.interpret)


CUDA = torch.cuda.is_available()
INTERPRET = TRITON_FUSED is not None and _interpreter_on()
DEVICE = "cuda" if CUDA else "cpu"
needs_kernels = pytest.mark.skipif(
    TRITON_FUSED is None or not (CUDA or INTERPRET),
    reason="needs CUDA, or TRITON_INTERPRET=1 set before Triton is imported (see the subprocess test)",
)
ROPE_NORMS = ("standard", "none", "clamp", "rala")
TEMP_NORMS = ("standard", "none", "clamp")


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _rope_tables(n: int, dk: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    angles = torch.rand(n, dk // 2, generator=torch.Generator().manual_seed(n + dk)) * 6.0
    return angles.cos().to(device), angles.sin().to(device)


def _inputs(b, h, n, dk, dv, feature_map, dtype=torch.float32, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    if feature_map == "identity":  # positive features keep φq·Σφk away from 0 (well-conditioned division)
        q, k = (torch.rand(b, h, n, dk, generator=g) + 0.05 for _ in range(2))
    else:
        q, k = (torch.randn(b, h, n, dk, generator=g) for _ in range(2))
    v = torch.randn(b, h, n, dv, generator=g)
    return tuple(t.to(device=device, dtype=dtype) for t in (q, k, v))


def _clamp_min(q, k, feature_map) -> float:
    """Half the median denominator, so the clamp is active on some rows and not on others."""
    fq, fk = apply_feature_map(q.float(), feature_map), apply_feature_map(k.float(), feature_map)
    return 0.5 * float((fq * fk.sum(-2, keepdim=True)).sum(-1).median())


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max|a − b| / max|b|, with max|b| floored at 1e-2 (inputs are O(1); some gradients vanish, e.g. N = 1)."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-2))


def _rotate_complex(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE as complex multiplication of channel pairs (independent of ``apply_rope``)."""
    xc = torch.view_as_complex(x.reshape(*x.shape[:-1], -1, 2).contiguous())
    return torch.view_as_real(xc * torch.complex(cos, sin)).flatten(-2)


def _naive(q, k, v, feature_map, normalizer, eps, scale, clamp_min, cos, sin, temperature) -> torch.Tensor:
    """Linear attention written as an explicit N×N weight matrix, in float64."""
    q, k, v = q.double(), k.double(), v.double()
    n, dk = q.shape[-2], q.shape[-1]
    s = default_scale(normalizer, dk, scale)
    fq, fk = apply_feature_map(q, feature_map), apply_feature_map(k, feature_map)
    rot = (lambda x: _rotate_complex(x, cos.double(), sin.double())) if cos is not None else (lambda x: x)
    tau = temperature.double().view(1, -1, 1, 1) if temperature is not None else 1.0
    if normalizer == "injective":
        kbar = fk.mean(-2, keepdim=True)
        w = (s / n) * fq @ fk.transpose(-1, -2) + (1 - s * (fq * kbar).sum(-1, keepdim=True)) / n
        return w @ v
    if normalizer == "rala":
        qbar = fq.mean(-2, keepdim=True)
        alpha = torch.softmax(s * (qbar @ fk.transpose(-1, -2)), dim=-1).transpose(-1, -2)  # (B, H, N, 1)
        kre = n * alpha * fk
        w = rot(fq) @ rot(kre).transpose(-1, -2) / n
        den = fq @ kre.transpose(-1, -2) / n
        return (w @ v) / (den.sum(-1, keepdim=True) + eps)
    w = s * tau * rot(fq) @ rot(fk).transpose(-1, -2)
    den = (s * fq @ fk.transpose(-1, -2)).sum(-1, keepdim=True)
    if normalizer == "none":
        return w @ v
    if normalizer == "standard":
        return (w @ v) / (den + eps)
    return (w @ v) / den.clamp_min(clamp_min)


# --------------------------------------------------------------------------------------------------
# the reference against the naive formula
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("feature_map,normalizer", list(itertools.product(FEATURE_MAPS, NORMALIZERS)))
@pytest.mark.parametrize("extras", ["plain", "rope", "temperature"])
def test_reference_matches_naive(feature_map, normalizer, extras):
    if extras == "rope" and normalizer not in ROPE_NORMS:
        pytest.skip("rope is defined for standard/none/clamp/rala")
    if extras == "temperature" and normalizer not in TEMP_NORMS:
        pytest.skip("temperature is defined for standard/none/clamp")
    q, k, v = _inputs(2, 3, 7, 8, 6, feature_map)
    cos, sin = _rope_tables(7, 8) if extras == "rope" else (None, None)
    temp = torch.rand(3) + 0.5 if extras == "temperature" else None
    cmin = _clamp_min(q, k, feature_map)
    args = (q, k, v, feature_map, normalizer, 1e-6, None, cmin, cos, sin, temp)
    torch.testing.assert_close(linear_attention_reference(*args).double(), _naive(*args), atol=1e-5, rtol=1e-4)


def test_reference_scale_and_rope_2d():
    """scale=1/N turns sums into means; rope_2d tables plug into the rope argument."""
    q, k, v = _inputs(1, 2, 12, 8, 8, "elu+1")
    a = linear_attention_reference(q, k, v, "elu+1", "standard", 0.0, 1.0 / 12)
    b = linear_attention_reference(q, k, v, "elu+1", "standard", 0.0, 1.0)
    torch.testing.assert_close(a, b)  # the scale cancels in the standard normaliser when eps = 0
    cos, sin = rope_2d(3, 4, rope_2d_frequencies(8))
    out = linear_attention(q, k, v, feature_map="elu+1", normalizer="rala", rope=(cos, sin), backend="torch")
    naive = _naive(q, k, v, "elu+1", "rala", 1e-6, None, 0.0, cos, sin, None)
    torch.testing.assert_close(out.double(), naive, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------------
def _bad_calls():
    q, k, v = _inputs(1, 2, 5, 4, 6, "relu")
    cos, sin = _rope_tables(5, 4)
    return [
        ((q[0], k, v), {}, "q must have shape"),
        ((q, k[..., :2], v), {}, "q and k must have the same shape"),
        ((q, k, v[:, :, :3]), {}, "v must match q"),
        ((q, k, v.double()), {}, "must share a dtype"),
        ((q.long(), k.long(), v.long()), {}, "floating-point"),
        ((q, k, v), {"feature_map": "softmax"}, "feature_map must be one of"),
        ((q, k, v), {"normalizer": "l2"}, "normalizer must be one of"),
        ((q, k, v), {"rope": (cos[:4], sin[:4])}, "rope cos must have shape"),
        ((q, k, v), {"rope": (cos,)}, "rope must be a"),
        ((q, k, v), {"normalizer": "injective", "rope": (cos, sin)}, "rope is not supported"),
        ((q, k, v), {"temperature": torch.ones(3)}, "one value per head"),
        ((q, k, v), {"normalizer": "rala", "temperature": torch.ones(2)}, "temperature is not supported"),
        ((q, k, v), {"backend": "cuda"}, "backend must be one of"),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_input_errors(case):
    args, kwargs, message = _bad_calls()[case]
    with pytest.raises(ValueError, match=message):
        linear_attention(*args, **kwargs)


def test_explicit_triton_on_cpu_without_interpreter_raises(monkeypatch):
    if INTERPRET:
        pytest.skip("the interpreter runs Triton on the CPU")
    q, k, v = _inputs(1, 1, 4, 4, 4, "relu")
    with pytest.raises(RuntimeError, match="triton"):
        linear_attention(q, k, v, backend="triton")


# --------------------------------------------------------------------------------------------------
# Triton kernels vs the reference (interpreter on the CPU, compiled on CUDA)
# --------------------------------------------------------------------------------------------------
TOL = {torch.float32: 2e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def _check_against_reference(
    b, h, n, dk, dv, feature_map, normalizer, *, rope=False, temp=False, dtype=torch.float32,
    strided=False, grads=True, seed=0, device=DEVICE, tol=None,
):  # fmt: skip
    q, k, v = _inputs(b, h, n, dk, dv, feature_map, dtype, device, seed)
    if strided:  # (B, N, H, D) memory viewed as (B, H, N, D), and a non-unit channel stride for v
        q = q.transpose(1, 2).contiguous().transpose(1, 2)
        k = k.permute(0, 1, 3, 2).contiguous().transpose(-1, -2)
        v = torch.cat([v, v], dim=-1)[..., ::2]
        assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    cos_sin = _rope_tables(n, dk, device) if rope else None
    temperature = (torch.rand(h) + 0.5).to(device) if temp else None
    kwargs = dict(feature_map=feature_map, normalizer=normalizer, rope=cos_sin, temperature=temperature)
    if normalizer == "clamp":
        kwargs["clamp_min"] = _clamp_min(q, k, feature_map)
    leaves = [q, k, v] + ([temperature] if temp else [])
    res = {}
    for backend in ("triton", "torch"):
        ins = [t.detach().clone().requires_grad_(grads) for t in leaves]
        kw = dict(kwargs, temperature=ins[3] if temp else None)
        out = linear_attention(*ins[:3], backend=backend, **kw)
        assert out.dtype == v.dtype and out.shape == (b, h, n, dv)
        res[backend] = [out]
        if grads:
            grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
            res[backend] += list(torch.autograd.grad(out, ins, grad.transpose(-1, -2).contiguous().transpose(-1, -2)))
    tol = tol or TOL[dtype]
    names = ["out", "dq", "dk", "dv", "dtemperature"]
    errors = {}
    for name, a, r in zip(names, res["triton"], res["torch"]):
        assert torch.isfinite(a).all(), name
        assert a.dtype == r.dtype and a.shape == r.shape, name
        errors[name] = _rel_err(a, r)
    bad = {name: err for name, err in errors.items() if not err < tol}
    assert not bad, f"relative max error >= {tol:.0e}: {bad} (all: {errors})"


@needs_kernels
@pytest.mark.parametrize("feature_map,normalizer", list(itertools.product(FEATURE_MAPS, NORMALIZERS)))
def test_triton_every_mode(feature_map, normalizer):
    """Every feature map × normaliser, dk ≠ dv, non-power-of-two dims, N spanning several chunks."""
    _check_against_reference(1, 2, 33, 24, 40, feature_map, normalizer)


@needs_kernels
@pytest.mark.parametrize(
    "feature_map,normalizer,rope,temp",
    [
        ("elu+1", "rala", True, False),  # RAVLT
        ("relu", "clamp", True, True),  # L²ViT-style with a learnable temperature
        ("identity", "standard", True, True),
        ("elu+1", "none", True, True),
        ("relu", "standard", False, True),
    ],
)
def test_triton_rope_temperature(feature_map, normalizer, rope, temp):
    _check_against_reference(2, 2, 21, 16, 24, feature_map, normalizer, rope=rope, temp=temp)


@needs_kernels
@pytest.mark.parametrize("n", [1, 7, 100])
@pytest.mark.parametrize("normalizer", ["rala", "injective"])
def test_triton_odd_lengths(n, normalizer):
    _check_against_reference(2, 1, n, 16, 16, "elu+1", normalizer, rope=normalizer == "rala")


@needs_kernels
@pytest.mark.parametrize("dk,dv,normalizer", [(40, 40, "standard"), (16, 160, "rala"), (24, 136, "injective")])
def test_triton_head_dims(dk, dv, normalizer):
    """40 pads to 64; dv > 128 takes the tiled-dv path (state tiles looped, dS in a second launch)."""
    _check_against_reference(1, 1, 19, dk, dv, "elu+1", normalizer, rope=normalizer == "rala")


@needs_kernels
@pytest.mark.parametrize("normalizer", ["clamp", "rala"])
def test_triton_fp32_dk128_splits_dv(normalizer):
    """fp32 inputs with dk = 128 take 64-wide dv tiles (a 128x128 fp32 state and its gradient spill registers):
    two dv tiles, dS in a second launch with its own config."""
    from linzoo.kernels.linear_attention import triton_fused

    plan = triton_fused._make_plan(torch.empty(1, 1, 19, 128), torch.empty(1, 1, 19, 128), interpret=True)
    assert (plan["BDV"], plan["NUM_DVT"]) == (64, 2)
    bf16 = triton_fused._make_plan(torch.empty(1, 1, 19, 128).bfloat16(), torch.empty(1, 1, 19, 128), True)
    assert (bf16["BDV"], bf16["NUM_DVT"]) == (128, 1)
    _check_against_reference(
        1, 1, 19, 128, 128, "elu+1", normalizer, rope=normalizer == "rala", temp=normalizer == "clamp"
    )


@needs_kernels
@pytest.mark.parametrize("normalizer", ["standard", "clamp", "rala", "injective"])
def test_triton_reduce_blocks(monkeypatch, normalizer):
    """The reduce kernels split the state's rows over programs and read the chunk partials a few chunks per
    load: small blocks force 4 row blocks (forward; backward for standard/clamp), 2 chunks per load and a
    masked last load (N = 150 -> 5 chunks under the interpreter)."""
    from linzoo.kernels.linear_attention import triton_fused, triton_kernels

    monkeypatch.setattr(triton_kernels, "REDUCE_ROWS", 8)
    monkeypatch.setattr(triton_kernels, "REDUCE_TILE", 8 * 32 * 2)
    assert triton_fused._make_plan(torch.empty(1, 2, 150, 24), torch.empty(1, 2, 150, 24), True)["C"] == 5
    assert triton_kernels.reduce_blocks(32, 32, 5) == {"RB": 8, "CB": 2, "num_warps": 4}
    _check_against_reference(
        1, 2, 150, 24, 24, "elu+1", normalizer, rope=normalizer == "rala", temp=normalizer == "clamp"
    )


def test_wave_chunks():
    """One wave of resident programs: chunks per head = capacity // programs per chunk, rows a multiple of align."""
    from linzoo.kernels.linear_attention.triton_fused import wave_chunks

    assert wave_chunks(16384, 64, 6 * 132, 32) == (12, 1376)  # DiT @2048 state pass: 768 of 792 slots
    # B·H = 64, N = 3136 (RAVLT s1 @224) at 6 blocks per SM: 11 chunks of 288 rows, 704 programs in one wave
    # (the default split: 13 chunks, 832 programs, 1.05 waves)
    assert wave_chunks(3136, 64, 6 * 132, 32) == (11, 288)
    assert wave_chunks(3136, 64, 6 * 132, 128) == (9, 384)  # coarser rows, fewer chunks
    assert wave_chunks(100, 1000, 64, 128) == (1, 128)  # the heads alone fill the GPU
    assert wave_chunks(1, 1, 1000, 16) == (1, 16)
    for n, heads, capacity in [(16384, 64, 792), (3136, 64, 528), (5000, 3, 264), (130, 2, 1000)]:
        c, chunk = wave_chunks(n, heads, capacity, 64)
        assert chunk % 64 == 0 and (c - 1) * chunk < n <= c * chunk and (c == 1 or heads * c <= capacity)


@needs_kernels
@pytest.mark.parametrize("normalizer", ["standard", "rala", "injective"])
def test_triton_wave_chunking_per_pass(monkeypatch, normalizer):
    """LINZOO_LA_WAVES: each pass takes its own split of N (different C for the state, out, (q, dO) and (k, v)
    passes here); the partial buffers and the reduce / dq-fix launches must follow their producer's split."""
    from linzoo.kernels.linear_attention import triton_fused, triton_kernels

    resident = {
        triton_kernels._state_kernel: 1,
        triton_kernels._out_kernel: 2,
        triton_kernels._bwd_q_kernel: 3,
        triton_kernels._bwd_kv_kernel: 1,
    }
    seen = []

    def fake_resident(fn, **meta):
        seen.append(fn)
        return resident[fn]

    monkeypatch.setattr(triton_fused, "WAVES", True)
    monkeypatch.setattr(triton_fused, "resident_per_sm", fake_resident)
    plan = triton_fused._make_plan(torch.empty(1, 2, 150, 24), torch.empty(1, 2, 150, 24), True)
    splits = [triton_fused.wave_chunks(150, 2, r * plan["SMS"], 16)[0] for r in (1, 2, 3, 1)]
    assert splits == [2, 4, 5, 2] and plan["C"] == 5
    _check_against_reference(
        1, 2, 150, 24, 24, "elu+1", normalizer, rope=normalizer == "rala", temp=normalizer == "standard"
    )
    assert set(seen) == set(resident)


@needs_kernels
@pytest.mark.parametrize("normalizer", ["standard", "rala", "injective"])
def test_triton_strided_inputs(normalizer):
    _check_against_reference(2, 2, 23, 16, 32, "elu+1", normalizer, strided=True, rope=normalizer == "rala")


@needs_kernels
@pytest.mark.parametrize(
    "feature_map,normalizer,rope,temp",
    [("elu+1", "rala", True, False), ("relu", "standard", True, True), ("elu+1", "injective", False, False)],
)
def test_triton_bf16(feature_map, normalizer, rope, temp):
    _check_against_reference(1, 2, 40, 32, 32, feature_map, normalizer, rope=rope, temp=temp, dtype=torch.bfloat16)


@needs_kernels
def test_triton_fp16_normaliser_does_not_overflow():
    """Σφk over N exceeds the fp16 range here; the kernel keeps the normaliser in fp32."""
    q, k, v = _inputs(1, 1, 100, 16, 16, "relu", torch.float16, DEVICE)
    k = (k.float().abs() * 500 + 500).half()
    assert float(k.float().relu().sum(-2).max()) > torch.finfo(torch.float16).max
    out = linear_attention(q, k, v, feature_map="relu", backend="triton")
    ref = linear_attention(q, k, v, feature_map="relu", backend="torch")
    assert torch.isfinite(out).all()
    assert _rel_err(out, ref) < 5e-3


@pytest.mark.slow
@needs_kernels
def test_triton_no_grad_and_custom_op_contract():
    """Inference without autograd, and torch.library.opcheck of the op's schema/fake/autograd registration."""
    q, k, v = _inputs(1, 2, 9, 16, 16, "elu+1", device=DEVICE)
    with torch.no_grad():
        out = linear_attention(q, k, v, feature_map="elu+1", normalizer="rala", backend="triton")
    assert not out.requires_grad
    cos, sin = _rope_tables(9, 16, DEVICE)
    args = (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), "elu+1", "rala", 1e-6, 0.25, 0.0, cos, sin)
    torch.library.opcheck(torch.ops.linzoo.linear_attention.default, (*args, None))


@pytest.mark.slow
@pytest.mark.skipif(
    INTERPRET or CUDA or TRITON_FUSED is None or os.environ.get("LINZOO_LA_SUBPROCESS") == "1",
    reason="the interpreter tests already ran in this process (or cannot run at all)",
)
def test_interpreter_suite_in_subprocess():
    """Triton was imported in compiled mode before this module: run the kernel tests with the interpreter."""
    env = dict(os.environ, TRITON_INTERPRET="1", LINZOO_LA_SUBPROCESS="1", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", __file__, "-q", "-x", "-k", "triton", "-p", "no:cacheprovider"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


# --------------------------------------------------------------------------------------------------
# GPU: large N, torch.compile, RAVLT end to end
# --------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize(
    "feature_map,normalizer",
    [("identity", "standard"), ("elu+1", "none"), ("relu", "clamp"), ("relu", "injective"), ("elu+1", "rala")],
)
def test_gpu_large_n_every_normalizer(feature_map, normalizer):
    rope = normalizer in ROPE_NORMS
    temp = normalizer in TEMP_NORMS
    _check_against_reference(1, 2, 16384, 64, 64, feature_map, normalizer, rope=rope, temp=temp, dtype=torch.bfloat16)


@pytest.mark.gpu
@pytest.mark.parametrize("normalizer", ["standard", "rala", "injective"])
def test_gpu_wave_chunking(monkeypatch, normalizer):
    """LINZOO_LA_WAVES on a GPU: the first call records each kernel's residency, the second splits every pass
    into one wave of it; both match the reference."""
    from linzoo.kernels._launch import _RESIDENT
    from linzoo.kernels.linear_attention import triton_fused, triton_kernels

    monkeypatch.setattr(triton_fused, "WAVES", True)
    args = (64, 1, 3136, 64, 64, "elu+1", normalizer)
    for _ in range(2):
        _check_against_reference(*args, rope=normalizer == "rala", dtype=torch.bfloat16)
    assert {key[0] for key in _RESIDENT} >= {id(triton_kernels._state_kernel), id(triton_kernels._out_kernel)}


@pytest.mark.gpu
@pytest.mark.parametrize(
    "dtype,dk,dv,feature_map,normalizer,rope",
    [
        (torch.float32, 64, 64, "elu+1", "rala", True),
        (torch.float16, 40, 40, "relu", "standard", False),
        (torch.bfloat16, 80, 80, "elu+1", "injective", False),
        (torch.bfloat16, 160, 160, "elu+1", "rala", True),
        (torch.float32, 160, 160, "elu+1", "rala", True),
        (torch.bfloat16, 160, 160, "elu+1", "rala", False),
        (torch.bfloat16, 160, 160, "elu+1", "standard", False),
        (torch.bfloat16, 256, 96, "relu", "standard", True),
        (torch.bfloat16, 32, 64, "elu+1", "standard", True),
        (torch.bfloat16, 128, 128, "relu", "clamp", False),
    ],
)
def test_gpu_dims_dtypes(dtype, dk, dv, feature_map, normalizer, rope):
    temp = normalizer in TEMP_NORMS
    _check_against_reference(
        2, 3, 4099, dk, dv, feature_map, normalizer, rope=rope, temp=temp, dtype=dtype, strided=True
    )


@pytest.mark.gpu
def test_gpu_torch_compile_fullgraph():
    q, k, v = (t.requires_grad_() for t in _inputs(2, 2, 1000, 64, 64, "elu+1", torch.bfloat16, "cuda"))
    cos, sin = _rope_tables(1000, 64, "cuda")

    def f(q, k, v):
        out = linear_attention(q, k, v, feature_map="elu+1", normalizer="rala", rope=(cos, sin), backend="triton")
        return (out.float() * 2).sum()

    compiled = torch.compile(f, fullgraph=True)
    loss_c = compiled(q, k, v)
    grads_c = torch.autograd.grad(loss_c, (q, k, v))
    loss_e = f(q, k, v)
    grads_e = torch.autograd.grad(loss_e, (q, k, v))
    torch.testing.assert_close(loss_c, loss_e)
    for a, b in zip(grads_c, grads_e):
        torch.testing.assert_close(a, b)


@pytest.mark.gpu
def test_gpu_ravlt_torch_vs_triton(monkeypatch):
    timm = pytest.importorskip("timm")
    pytest.importorskip("linzoo.vision")
    torch.manual_seed(0)
    model = timm.create_model("ravlt_t", num_classes=10).cuda().eval()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    outs = {}
    for backend in ("torch", "triton"):
        monkeypatch.setenv("LINZOO_KERNEL_BACKEND", backend)
        with torch.no_grad():
            outs[backend] = model(x)
    torch.testing.assert_close(outs["triton"], outs["torch"], atol=2e-3, rtol=2e-3)


def test_more_than_65535_batch_heads_fall_back_to_the_reference(monkeypatch):
    """The fused kernels put B·heads on CUDA grid axis 1 (at most 65535): beyond it ``auto`` takes the reference
    and an explicit ``triton`` raises instead of failing to launch."""
    la = importlib.import_module("linzoo.kernels.linear_attention")  # the package (its function shadows it)

    q, k, v = _inputs(65536, 1, 3, 4, 4, "relu")
    calls = []
    monkeypatch.setattr(la, "resolve_backend", lambda b, d, triton_supported: calls.append(triton_supported) or "torch")
    linear_attention(q, k, v, feature_map="relu")
    q, k, v = _inputs(65535, 1, 3, 4, 4, "relu")
    linear_attention(q, k, v, feature_map="relu")
    assert calls == [False, la._triton_fused is not None]
