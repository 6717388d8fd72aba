"""Sparse-linear attention (SLA): block map vs brute force, block-wise vs dense reference, Triton (interpreter /
GPU) vs reference, the module, input checks; optional parity with the official thu-ml/SLA kernels."""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.nn.functional as F

from linzoo.kernels import (
    SparseLinearAttention,
    linear_attention_reference,
    sla_block_map,
    sparse_linear_attention,
    sparse_linear_attention_reference,
)
from linzoo.kernels.sparse_linear_attention import (
    _triton_sla,
    num_selected_blocks,
    sparse_linear_attention_dense_reference,
)
from linzoo.kernels.sparse_linear_attention.reference import apply_feature_map, block_mask_from_lut

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
CUDA = torch.cuda.is_available()
needs_kernels = pytest.mark.skipif(
    _triton_sla is None or not (CUDA or INTERPRET), reason="Triton kernels on the CPU need TRITON_INTERPRET=1"
)
DEVICE = "cuda" if CUDA else "cpu"
TOL = {torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 3e-2}  # relative to max |reference|


def _inputs(b, h, lq, lk, d, dv, dtype=torch.float32, device=DEVICE, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(b, h, lq, d, generator=g),
        torch.randn(b, h, lk, d, generator=g),
        torch.randn(b, h, lk, dv, generator=g),
    )
    return tuple(t.to(device=device, dtype=dtype).requires_grad_(grad) for t in (q, k, v))  # fmt: skip


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-2))


def _outputs_and_grads(fn, q, k, v, seed=1):
    """Both branches and the gradients of a fixed random projection of them w.r.t. q, k, v."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    o_s, o_l = fn(*leaves)
    g = torch.Generator().manual_seed(seed)
    w_s, w_l = (torch.randn(o_s.shape, generator=g).to(o_s.device) for _ in range(2))
    loss = (o_s.float() * w_s).sum() + (o_l.float() * w_l).sum()
    return (o_s, o_l, *torch.autograd.grad(loss, leaves))


# --------------------------------------------------------------------------------------------------
# block map
# --------------------------------------------------------------------------------------------------
def test_selected_block_count_follows_the_official_truncation():
    assert num_selected_blocks(0.5, 10) == 5
    assert num_selected_blocks(0.29, 100) == 28  # int(28.999…): truncation, as the official int(topk * K)
    assert num_selected_blocks(0.05, 10) == 1  # official: 0 blocks; here at least one
    assert num_selected_blocks(1.0, 7) == 7


@pytest.mark.parametrize("lq,lk,bq,bk,topk", [(100, 130, 16, 32, 0.5), (37, 200, 32, 16, 0.3)])
def test_block_map_matches_bruteforce(lq, lk, bq, bk, topk):
    q, k, _ = _inputs(2, 2, lq, lk, 8, 8, device="cpu", dtype=torch.float64)
    lut, mask = sla_block_map(q, k, topk=topk, block_q=bq, block_k=bk)
    n_qb, n_kb = -(-lq // bq), -(-lk // bk)
    n_sel = max(1, int(topk * n_kb))
    assert lut.shape == (2, 2, n_qb, n_sel) and lut.dtype == torch.int32
    assert mask.shape == (2, 2, n_qb, n_kb) and mask.dtype == torch.bool
    k_smooth = k - k.mean(2, keepdim=True)
    for b in range(2):
        for h in range(2):
            pooled_q = torch.stack([q[b, h, i * bq : (i + 1) * bq].mean(0) for i in range(n_qb)])
            pooled_k = torch.stack([k_smooth[b, h, j * bk : (j + 1) * bk].mean(0) for j in range(n_kb)])
            scores = pooled_q @ pooled_k.T
            for i in range(n_qb):
                want = set(scores[i].argsort(descending=True)[:n_sel].tolist())
                assert set(lut[b, h, i].tolist()) == want
                assert set(mask[b, h, i].nonzero().flatten().tolist()) == want
    assert torch.equal(block_mask_from_lut(lut, n_kb), mask)
    assert bool((lut[..., 1:] > lut[..., :-1]).all())  # ascending


# --------------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("linear_keys", ["all", "complement"])
@pytest.mark.parametrize("feature_map", ["softmax", "elu+1", "relu"])
def test_blockwise_reference_matches_dense(feature_map, linear_keys):
    q, k, v = _inputs(1, 2, 50, 70, 12, 20, device="cpu")
    lut, _ = sla_block_map(q, k, topk=0.4, block_q=16, block_k=16)
    kw = dict(block_q=16, block_k=16, feature_map=feature_map, linear_keys=linear_keys)
    got = _outputs_and_grads(lambda *a: sparse_linear_attention_reference(*a, lut=lut, **kw), q, k, v)
    want = _outputs_and_grads(lambda *a: sparse_linear_attention_dense_reference(*a, lut, **kw), q, k, v)
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-5


def test_reference_branches_against_independent_formulas():
    """Sparse branch with every block = SDPA; "all" linear branch = linear attention on φ(q), φ(k)."""
    q, k, v = _inputs(2, 3, 45, 45, 16, 16, device="cpu")
    o_s, o_l = sparse_linear_attention_reference(q, k, v, topk=1.0, block_q=16, block_k=16)
    assert _rel(o_s, F.scaled_dot_product_attention(q, k, v)) < 1e-5
    fq, fk = apply_feature_map(q, "softmax"), apply_feature_map(k, "softmax")
    assert _rel(o_l, linear_attention_reference(fq, fk, v, "identity", "standard", 1e-5, 1.0)) < 1e-5


# --------------------------------------------------------------------------------------------------
# Triton vs reference
# --------------------------------------------------------------------------------------------------
CASES = [
    # lq, lk, d, dv, bq, bk, topk, linear_keys, feature_map, dtype
    (100, 130, 24, 40, 16, 32, 0.5, "all", "softmax", torch.float32),
    (100, 100, 40, 40, 32, 16, 0.3, "complement", "elu+1", torch.float32),
    (130, 100, 24, 24, 16, 16, 0.2, "all", "relu", torch.bfloat16),  # one key block per query block
    (70, 70, 16, 16, 32, 16, 1.0, "complement", "softmax", torch.bfloat16),
    (96, 96, 24, 24, 32, 32, 0.5, "all", "softmax", torch.bfloat16),  # Lq == Lk: fused linear-attention op
    (300, 300, 64, 64, 128, 64, 0.4, "complement", "relu", torch.float16),  # the official block shape
    (64, 64, 24, 24, 16, 32, 0.5, "all", "elu+1", torch.float32),  # φ inside the fused linear-attention op
    (48, 48, 16, 40, 16, 16, 0.4, "all", "relu", torch.float32),
]


@needs_kernels
@pytest.mark.parametrize("lq,lk,d,dv,bq,bk,topk,linear_keys,feature_map,dtype", CASES)
def test_triton_matches_reference(lq, lk, d, dv, bq, bk, topk, linear_keys, feature_map, dtype):
    q, k, v = _inputs(1, 2, lq, lk, d, dv, dtype=dtype)
    lut, _ = sla_block_map(q, k, topk=topk, block_q=bq, block_k=bk)
    if topk == 0.2:
        assert lut.shape[-1] == 1
    kw = dict(topk=topk, block_q=bq, block_k=bk, feature_map=feature_map, linear_keys=linear_keys)
    got = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="triton", **kw), q, k, v)
    ref_kw = {key: val for key, val in kw.items() if key != "topk"}
    want = _outputs_and_grads(
        lambda *a: sparse_linear_attention_dense_reference(*(t.float() for t in a), lut, **ref_kw), q, k, v
    )
    names = ("o_s", "o_l", "dq", "dk", "dv")
    for name, a, b in zip(names, got, want):
        assert a.dtype == dtype and a.shape == b.shape, name
        assert _rel(a, b) < TOL[dtype], (name, _rel(a, b))


@needs_kernels
@pytest.mark.parametrize("lq,lk", [(100, 75), (1, 1)])
def test_triton_tiles_smaller_than_blocks(monkeypatch, lq, lk):
    """Blocks of 64 queries / 32 keys streamed in 16-row tiles: sub-tiles past Lq / Lk are skipped or masked."""
    small = {"TM": 16, "TN": 16}
    monkeypatch.setattr(_triton_sla, "CONFIG_OVERRIDE", {"fwd": small, "dq": small, "dkdv": small})
    q, k, v = _inputs(1, 2, lq, lk, 24, 8)
    kw = dict(topk=0.5, block_q=64, block_k=32)
    got = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="triton", **kw), q, k, v)
    want = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="torch", **kw), q, k, v)
    for a, b in zip(got, want):
        a, b = a.detach(), b.detach()
        assert (a - b).abs().max() < 1e-5 * max(1.0, float(b.abs().max()))  # L = 1: dq is exactly 0


@needs_kernels
def test_triton_fp32_heads_over_128():
    """fp32 with D, Dv in (128, 256] (padded to 256) takes smaller tiles (forward 32 x 16, dQ 32 x 32: the IEEE dot
    products of 64-row tiles spilled on sm_90), here inside 64 / 32 blocks with ragged ends."""
    cfg = _triton_sla.launch_config
    assert (cfg("fwd", 64, 32, 256, 256, True)["TM"], cfg("fwd", 64, 32, 256, 256, True)["TN"]) == (32, 16)
    assert (cfg("dq", 64, 32, 256, 256, True)["TM"], cfg("dq", 64, 32, 256, 256, True)["TN"]) == (32, 32)
    q, k, v = _inputs(1, 1, 70, 45, 136, 130)
    kw = dict(topk=0.5, block_q=64, block_k=32, lut=sla_block_map(q, k, topk=0.5, block_q=64, block_k=32)[0])
    got = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="triton", **kw), q, k, v)
    want = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="torch", **kw), q, k, v)
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-5


@needs_kernels
@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_all_blocks_is_full_attention_and_empty_complement(backend):
    q, k, v = _inputs(1, 2, 40, 70, 16, 24)
    o_s, o_l = sparse_linear_attention(q, k, v, topk=1.0, block_q=16, block_k=32, linear_keys="complement",
                                       backend=backend)  # fmt: skip
    assert _rel(o_s, F.scaled_dot_product_attention(q, k, v)) < 1e-5
    assert torch.count_nonzero(o_l) == 0


@needs_kernels
def test_triton_strided_inputs_and_given_lut():
    """(B, L, H, D) tensors viewed as (B, H, L, D) (as a diffusers processor passes them) and a reversed LUT."""
    g = torch.Generator().manual_seed(3)
    qkv = torch.randn(1, 80, 3, 2, 24, generator=g).to(DEVICE)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    assert not q.is_contiguous()
    lut, _ = sla_block_map(q, k, topk=0.5, block_q=16, block_k=16)
    lut = lut.flip(-1).contiguous()
    kw = dict(topk=0.5, block_q=16, block_k=16, lut=lut)
    got = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="triton", **kw), q, k, v)
    want = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="torch", **kw), q, k, v)
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-5


@pytest.mark.skipif(_triton_sla is None, reason="needs Triton")
def test_launch_grids_fit_cuda_limits(monkeypatch):
    """Every launch keeps grid axes 1 and 2 within CUDA's 65535 (axis 0: 2^31 - 1), also for B·H > 65535 heads
    (e.g. many windows or a large batch at a few heads): the kernels are not run, only their grids recorded."""
    grids = []
    monkeypatch.setattr(_triton_sla, "launch", lambda kernel, grid, *args, **meta: grids.append(tuple(grid)))
    heads = 65536 + 8  # B·H above the 65535 that grid axes 1 and 2 allow
    q = torch.zeros(1, 1, 1, 16).expand(1, heads, 1, 16)  # strides (.., 0, 16, 1): no memory per head
    lut = torch.zeros(1, heads, 1, 1, dtype=torch.int32)
    out, lse = _triton_sla.forward(q, q, q, lut, 16, 16, 0.25)
    _triton_sla.backward(out, q, q, q, out, lse, lut, 16, 16, 0.25)
    assert len(grids) == 3
    for grid in grids:
        assert grid[0] < 2**31 and all(n <= 65535 for n in grid[1:]), grids


@needs_kernels
def test_custom_op_registration():
    """Schema, fake implementation and autograd registration of the sparse-branch op (torch.compile's view)."""
    from linzoo.kernels.sparse_linear_attention import _sparse_op

    q, k, v = _inputs(1, 1, 40, 40, 16, 16, grad=True)
    lut, _ = sla_block_map(q, k, topk=0.5, block_q=16, block_k=16)
    torch.library.opcheck(_sparse_op, (q, k, v, lut, 16, 16, 0.25), test_utils=("test_schema", "test_faketensor"))
    out, lse = _sparse_op(q, k, v, lut, 16, 16, 0.25)
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:-1]
    dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v))
    want = torch.autograd.grad(sparse_linear_attention_reference(q, k, v, lut=lut, block_q=16, block_k=16,
                                                                 scale=0.25)[0].sum(), (q, k, v))  # fmt: skip
    for a, b in zip((dq, dk, dv), want):
        assert _rel(a, b) < 1e-5


@needs_kernels
@pytest.mark.parametrize("linear_keys", ["all", "complement"])
def test_compiles_without_graph_breaks(linear_keys):
    """torch.compile(fullgraph=True) sees the custom ops (fake implementations) and matches eager, with gradients."""
    q, k, v = _inputs(1, 2, 80, 80, 16, 16)

    def fn(q, k, v):
        return sparse_linear_attention(q, k, v, topk=0.5, block_q=16, block_k=16, linear_keys=linear_keys,
                                       backend="triton")  # fmt: skip

    got = _outputs_and_grads(torch.compile(fn, fullgraph=True, backend="aot_eager"), q, k, v)
    want = _outputs_and_grads(fn, q, k, v)
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-6


# --------------------------------------------------------------------------------------------------
# module, checks
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=needs_kernels)])
def test_module(backend):
    q, k, v = _inputs(1, 2, 48, 48, 16, 16)
    mod = SparseLinearAttention(16, topk=0.5, block_q=16, block_k=16, backend=backend).to(q.device)
    assert set(mod.state_dict()) == {"proj_l.weight", "proj_l.bias"}
    assert mod.proj_l.weight.dtype == torch.float32 and not mod.proj_l.weight.any()
    o_s, o_l = sparse_linear_attention(q, k, v, topk=0.5, block_q=16, block_k=16, backend=backend)
    assert _rel(mod(q, k, v), o_s) < 1e-6  # zero-initialised proj_l: pure sparse attention
    with torch.no_grad():
        mod.proj_l.weight.normal_(generator=torch.Generator().manual_seed(0))
        mod.proj_l.bias.fill_(0.1)
    qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
    out = mod(qg, kg, vg)
    assert _rel(out, o_s + F.linear(o_l, mod.proj_l.weight, mod.proj_l.bias)) < 1e-5
    out.square().sum().backward()
    assert mod.proj_l.weight.grad.abs().sum() > 0 and mod.proj_l.bias.grad.abs().sum() > 0
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (qg, kg, vg))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(topk=0.0), "topk"),
        (dict(topk=1.5), "topk"),
        (dict(topk=0.5, block_q=48), "block_q"),
        (dict(topk=0.5, block_k=8), "block_k"),
        (dict(topk=0.5, feature_map="hedgehog"), "feature_map"),
        (dict(topk=0.5, linear_keys="none"), "linear_keys"),
        (dict(topk=0.5, eps=-1.0), "eps"),
        (dict(topk=0.5, lut=torch.zeros(1, 2, 3, 1, dtype=torch.int32)), "lut"),
        (dict(topk=0.5, lut=torch.full((1, 2, 2, 1), 5, dtype=torch.int32)), "lut"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    q, k, v = _inputs(1, 2, 20, 20, 8, 8, device="cpu")
    with pytest.raises(ValueError, match=match):
        sparse_linear_attention(q, k, v, backend="torch", **{"block_q": 16, "block_k": 16, **kwargs})


def test_lut_value_check_skipped_during_cuda_graph_capture(monkeypatch):
    """The eager check of a given LUT's values reads them on the host: under CUDA-graph capture that copy is an
    error, so the check is skipped there (as under torch.compile); outside capture a bad LUT still raises."""
    q, k, v = _inputs(1, 2, 20, 20, 8, 8, device="cpu")
    lut = torch.zeros(1, 2, 2, 2, dtype=torch.int32)  # repeated key block: rejected by the eager check
    kw = dict(topk=0.5, block_q=16, block_k=16, lut=lut, backend="torch")
    with pytest.raises(ValueError, match="distinct"):
        sparse_linear_attention(q, k, v, **kw)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda t: pytest.fail("host read of a tensor during capture"))
    sparse_linear_attention(q, k, v, **kw)


def test_bad_shapes_raise():
    q, k, v = _inputs(1, 2, 20, 30, 8, 8, device="cpu")
    with pytest.raises(ValueError, match="same length"):
        sparse_linear_attention(q, k, v[:, :, :10], topk=0.5, backend="torch")
    with pytest.raises(ValueError, match="head dim"):
        sparse_linear_attention(q, k[..., :4], v, topk=0.5, backend="torch")
    with pytest.raises(ValueError, match=r"\(B, H\)"):
        sparse_linear_attention(q, k[:, :1], v[:, :1], topk=0.5, backend="torch")
    with pytest.raises(ValueError, match="dtype"):
        sparse_linear_attention(q, k.double(), v, topk=0.5, backend="torch")
    with pytest.raises(ValueError, match="feature_map"):
        SparseLinearAttention(8, topk=0.5, feature_map="hedgehog")


# --------------------------------------------------------------------------------------------------
# parity with the official kernels (only where a checkout is given: LINZOO_SLA_OFFICIAL=<dir holding the
# sparse_linear_attention package of thu-ml/SLA main>, e.g. .peers/sla/main from scripts/fetch_sla_peer.sh; runs
# under the interpreter like the rest). Last run against main d973e55 (and SLA-1 325cc75 through
# tests/kernels/test_sla_benchmark.py with LINZOO_SLA_PEER_DIR): fp32 o_s, o_l, dq, dk, dv within 6e-7.
# --------------------------------------------------------------------------------------------------
OFFICIAL = os.environ.get("LINZOO_SLA_OFFICIAL", "")


@needs_kernels
@pytest.mark.skipif(not OFFICIAL, reason="set LINZOO_SLA_OFFICIAL to a thu-ml/SLA (main) checkout")
def test_matches_official_main_branch():
    sys.path.insert(0, OFFICIAL)
    try:
        from sparse_linear_attention.kernel import _attention
        from sparse_linear_attention.utils import get_block_map
    finally:
        sys.path.remove(OFFICIAL)
    q, k, v = _inputs(1, 2, 200, 200, 32, 32)
    smap, lut, n_sel = get_block_map(q, k, topk_ratio=0.5, BLKQ=64, BLKK=64)
    assert torch.equal(smap.bool(), sla_block_map(q, k, topk=0.5, block_q=64, block_k=64)[1])

    def official(q, k, v):
        o_s = _attention.apply(q, k, v, smap.contiguous(), lut.contiguous(), n_sel, 64, 64)
        fq, fk = q.softmax(-1), k.softmax(-1)
        return o_s, (fq @ (fk.transpose(-1, -2) @ v)) / (1e-5 + (fq * fk.sum(-2, keepdim=True)).sum(-1, keepdim=True))

    want = _outputs_and_grads(official, q, k, v)
    got = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, topk=0.5, lut=lut, backend="triton"), q, k, v)
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-5


# --------------------------------------------------------------------------------------------------
# GPU: large L
# --------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize(
    "lq,lk,d,bq,bk,topk,linear_keys,dtype",
    [
        (4100, 4100, 128, 128, 64, 0.1, "all", torch.bfloat16),
        (4100, 3000, 64, 64, 64, 0.2, "complement", torch.bfloat16),
        (2050, 2050, 80, 64, 64, 0.15, "all", torch.float16),
        (1500, 1500, 64, 64, 128, 0.3, "complement", torch.float32),
        (32760, 32760, 128, 128, 64, 0.05, "all", torch.bfloat16),
    ],
)
def test_gpu_large(lq, lk, d, bq, bk, topk, linear_keys, dtype):
    heads = 2
    q, k, v = _inputs(1, heads, lq, lk, d, d, dtype=dtype, device="cuda")
    lut, _ = sla_block_map(q, k, topk=topk, block_q=bq, block_k=bk)
    kw = dict(topk=topk, block_q=bq, block_k=bk, linear_keys=linear_keys, lut=lut)
    got = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="triton", **kw), q, k, v)
    want = _outputs_and_grads(
        lambda *a: sparse_linear_attention(*(t.float() for t in a), backend="torch", **kw), q, k, v
    )
    tol = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}[dtype]
    for name, a, b in zip(("o_s", "o_l", "dq", "dk", "dv"), got, want):
        assert torch.isfinite(a).all(), name
        assert _rel(a, b) < tol, (name, _rel(a, b))


@pytest.mark.gpu
def test_gpu_inductor_compile_and_auto_backend():
    """On CUDA, backend="auto" is the Triton op, and Inductor compiles it (fullgraph) to the same result."""
    q, k, v = _inputs(2, 4, 1000, 1000, 64, 64, dtype=torch.bfloat16, device="cuda")
    kw = dict(topk=0.25, block_q=128, block_k=64)
    auto = sparse_linear_attention(q, k, v, **kw)
    triton_out = sparse_linear_attention(q, k, v, backend="triton", **kw)
    assert all(torch.equal(a, b) for a, b in zip(auto, triton_out))
    compiled = torch.compile(lambda *a: sparse_linear_attention(*a, **kw), fullgraph=True)
    got = _outputs_and_grads(compiled, q, k, v)
    want = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, **kw), q, k, v)
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize(
    "b,h,lq,lk,d,dv,bq,bk,dtype",
    [
        (2, 3, 1000, 777, 256, 256, 64, 64, torch.bfloat16),  # batch > 1, d 256 (TM 64 / TN 32, dkdv TM 16)
        (2, 3, 1000, 777, 256, 200, 64, 64, torch.float32),  # fp32 at d 256: the IEEE dots spill (codegen)
        (2, 2, 700, 900, 96, 160, 128, 128, torch.float16),  # padded head dims, D != Dv, 128 / 128 blocks
    ],
)
def test_gpu_batched_wide_heads(b, h, lq, lk, d, dv, bq, bk, dtype):
    """Compiled kernels at B > 1 and the head dims / dtypes the other GPU tests leave out (d > 128, fp32 d 256)."""
    q, k, v = _inputs(b, h, lq, lk, d, dv, dtype=dtype, device="cuda")
    lut, _ = sla_block_map(q, k, topk=0.3, block_q=bq, block_k=bk)
    kw = dict(topk=0.3, block_q=bq, block_k=bk, lut=lut, linear_keys="complement")
    got = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="triton", **kw), q, k, v)
    want = _outputs_and_grads(
        lambda *a: sparse_linear_attention(*(t.float() for t in a), backend="torch", **kw), q, k, v
    )
    tol = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}[dtype]
    for name, a, w in zip(("o_s", "o_l", "dq", "dk", "dv"), got, want):
        assert torch.isfinite(a).all(), name
        assert _rel(a, w) < tol, (name, _rel(a, w))


@pytest.mark.gpu
def test_gpu_more_heads_than_grid_axis_1_allows():
    """B·H = 65540 (grid axis 1 allows 65535): every kernel launches on a 1-D grid and matches the reference.
    ("complement": the linear branch in torch; linear_attention's kernels put B·H on grid axis 1 too.)"""
    q, k, v = _inputs(2, 32770, 20, 20, 16, 16, device="cuda")
    kw = dict(topk=0.5, block_q=16, block_k=16, linear_keys="complement")
    got = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="triton", **kw), q, k, v)
    want = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="torch", **kw), q, k, v)
    for a, w in zip(got, want):
        assert _rel(a, w) < 1e-4


@pytest.mark.gpu
@pytest.mark.parametrize("given_lut", [False, True])
def test_gpu_cuda_graph_capture(given_lut):
    """Forward and backward (block map, transposed LUT, launch order, the three kernels) capture into a CUDA graph:
    no host sync on the path (a given LUT's eager value check is skipped while capturing); replay matches eager."""
    q, k, v = _inputs(2, 2, 500, 500, 64, 64, dtype=torch.bfloat16, device="cuda", grad=True)
    lut = sla_block_map(q, k, topk=0.3, block_q=64, block_k=64)[0] if given_lut else None
    grad = torch.randn(q.shape, device="cuda", dtype=q.dtype)

    def step():
        q.grad = k.grad = v.grad = None
        o_s, o_l = sparse_linear_attention(q, k, v, topk=0.3, lut=lut, linear_keys="complement", backend="triton")
        (o_s.float() * grad + o_l.float() * grad).sum().backward()
        return o_s, q.grad, k.grad, v.grad

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
    for a, w in zip(got, want):
        assert _rel(a, w) < 1e-3  # the same kernels (cuBLAS may pick other algorithms inside the capture)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_gpu_inputs_on_a_device_other_than_the_current_one():
    """Tensors on cuda:1 while cuda:0 is current: the kernels must run on the tensors' device (launch() takes the
    current device and its stream)."""
    q, k, v = _inputs(1, 2, 300, 300, 64, 64, device="cuda:1")
    kw = dict(topk=0.3, block_q=64, block_k=64)
    with torch.cuda.device(0):
        got = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="triton", **kw), q, k, v)
    want = _outputs_and_grads(lambda *a: sparse_linear_attention(*a, backend="torch", **kw), q, k, v)
    for a, w in zip(got, want):
        assert a.device == w.device and _rel(a, w) < 1e-4
