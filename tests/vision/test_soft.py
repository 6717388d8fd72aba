"""SOFT / SOFT-Norm checks: numerics against the official code (fudan-zvg/SOFT@d3febc33), the Gaussian kernel, the
Newton inverses, sizes and official-file handling.

The official code needs a compiled CUDA extension and cannot build ``soft_norm_*`` as published (see
``linzoo.vision.soft``). ``_official_module`` imports it from an extracted copy (``$SOFT_OFFICIAL`` or
/tmp/soft_official, never inside the repository) with run-time stand-ins only: a stub ``SOFT._C``, the exact
``||q - k||^2`` subtraction as a torch function in place of the CUDA op, the repository's own pure-torch ``newton_inv``
with its analytic backward in place of the CUDA-only wrapper, and an alias for the undefined class name. Without the
copy, the golden logits in tests/fixtures/golden/soft_official.pt (written by running this module as a script) stand
in for it.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import types
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import linzoo.vision  # noqa: F401
from linzoo.vision.soft import SOFT, checkpoint_filter_fn, gaussian_kernel, newton_inverse, newton_inverse_norm

from ..conftest import GOLDEN

OFFICIAL_DIR = Path(os.environ.get("SOFT_OFFICIAL", "/tmp/soft_official"))
OFFICIAL_COMMIT = "fudan-zvg/SOFT@d3febc335775c696b5cc4cefe3158dcb9bcf5fc2"
GOLDEN_FILE = GOLDEN / "soft_official.pt"
PARITY_MODELS = ("soft_tiny", "soft_norm_tiny")


# --- deterministic weights and inputs (the golden file stores neither: 13 M parameters would not fit) -------------
def deterministic_state(
    state: dict[str, torch.Tensor], seed: int, landmark_scale: float = 1.0
) -> dict[str, torch.Tensor]:
    """Weights drawn from a seeded CPU generator in sorted-key order: unit-gain linears and convolutions, norms
    near identity, BatchNorm statistics away from (0, 1), so every path of the network contributes.

    ``landmark_scale`` scales the landmark LayerNorm weights: below 1 the landmarks crowd together, ``K2`` becomes
    ill-conditioned and 20 Newton steps no longer converge, so the logits depend on every detail of the iteration
    (one step less moves them by ~0.7 at 0.3). fp32 rounding is then amplified too (the official code's own
    "torch" and "cuda" Gaussian kernels differ by ~1e-4 there), so that regime is compared in fp64."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key in sorted(state):
        shape = state[key].shape
        if key.endswith("num_batches_tracked"):
            out[key] = torch.zeros(shape, dtype=torch.long)
            continue
        r = torch.randn(shape, generator=g)
        if key.endswith("running_var"):
            out[key] = 1 + 0.2 * r.abs()
        elif key.endswith("running_mean") or key.endswith("bias") or "pos_embed" in key or key == "cls_token":
            out[key] = 0.05 * r
        elif len(shape) == 1:  # LayerNorm / BatchNorm weights
            out[key] = (1 + 0.1 * r) * (landmark_scale if "Qnorm_act" in key else 1.0)
        else:
            out[key] = r / shape[1:].numel() ** 0.5
    return out


def golden_input(small: torch.Tensor) -> torch.Tensor:
    """The stored (B, 3, 56, 56) tensor, nearest-upsampled x4 to 224 (exact, so the file stays small)."""
    return F.interpolate(small, scale_factor=4, mode="nearest")


def _ours(name: str, landmark_scale: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    model = timm.create_model(name).eval()
    model.load_state_dict(deterministic_state(model.state_dict(), 0, landmark_scale))
    return model.to(dtype)


# --- the official code, imported with CPU stand-ins ---------------------------------------------------------------
def _exact_subtraction_gaussian(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """What the official CUDA op computes: ``sum_c (q[..., i, c] - k[..., c, j])^2`` for q (B,h,N,d), k (B,h,d,M)."""
    return (q.unsqueeze(-1) - k.unsqueeze(-3)).square().sum(-2)


def _official_module():
    """The official ``models.softmax_free_vision_transformer`` module, or skip when no extracted copy exists."""
    if not (OFFICIAL_DIR / "models" / "softmax_free_vision_transformer.py").is_file():
        pytest.skip(f"official SOFT code not extracted to {OFFICIAL_DIR}")
    pytest.importorskip("einops", reason="the official SOFT code imports einops (not a linzoo dependency)")
    name = "_soft_official_models"
    if name in sys.modules:
        return sys.modules[f"{name}.softmax_free_vision_transformer"]
    saved = {k: sys.modules.get(k) for k in ("SOFT", "SOFT._C", "cv2", "timm.models.registry")}
    registry = types.ModuleType("timm.models.registry")
    registry.register_model = lambda fn: fn  # keep linzoo's soft_* entries in timm's registry
    sys.modules.update({"SOFT._C": types.ModuleType("SOFT._C"), "cv2": types.ModuleType("cv2")})
    sys.modules["timm.models.registry"] = registry
    sys.path.insert(0, str(OFFICIAL_DIR))
    try:
        from SOFT.kernel import inverse

        spec = importlib.util.spec_from_file_location(
            name, OFFICIAL_DIR / "models" / "__init__.py", submodule_search_locations=[str(OFFICIAL_DIR / "models")]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules[name] = package
        spec.loader.exec_module(package)
    finally:
        sys.path.remove(str(OFFICIAL_DIR))
        for key, module in saved.items():
            if module is not None:
                sys.modules[key] = module
            elif key.startswith("timm"):
                sys.modules.pop(key, None)
    sft = sys.modules[f"{name}.softmax_free_transformer"]

    class NewtonInverseCPU(torch.autograd.Function):
        """The official ``_NewtonInverseKernel`` without its CUDA assertions: ``newton_inv`` under no_grad,
        gradient ``-inv^T g inv^T``."""

        @staticmethod
        def forward(ctx, mat, iters=20):
            with torch.no_grad():
                out = inverse.newton_inv(mat.contiguous(), iters)
            ctx.save_for_backward(out)
            return out

        @staticmethod
        def backward(ctx, grad):
            (inv,) = ctx.saved_tensors
            return -(inv.transpose(-1, -2) @ grad @ inv.transpose(-1, -2)), None

    sft.subtraction_gaussian_kernel = _exact_subtraction_gaussian
    sft.newton_inverse_kernel = NewtonInverseCPU.apply
    sft.SoftmaxFreeSymNormAttentionKernel = sft.SoftmaxFreeNormAttentionKernel  # the official NameError
    return sys.modules[f"{name}.softmax_free_vision_transformer"]


def _official(name: str, landmark_scale: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    module = _official_module()
    model = getattr(module, name)(kernel_method="cuda").eval()  # "cuda" = the exact subtraction form, patched above
    model.load_state_dict(deterministic_state(model.state_dict(), 0, landmark_scale))
    return model.to(dtype)


# --- numerics -------------------------------------------------------------------------------------------------------
# (regime, landmark LayerNorm scale, dtype, tolerance): converged Newton in fp32 (the brief's 1e-4), and the
# unconverged regime, where the logits hinge on every detail of the iteration, in fp64.
REGIMES = {"fp32": (1.0, torch.float32, 1e-4), "fp64_unconverged": (0.3, torch.float64, 1e-6)}


@pytest.mark.parametrize("regime", sorted(REGIMES))
@pytest.mark.parametrize("name", PARITY_MODELS)
def test_matches_official_golden(name, regime):
    """Logits of the official model (same deterministic weights, CPU) stored in the golden file."""
    golden = torch.load(GOLDEN_FILE, weights_only=True)
    assert golden["source"].startswith(OFFICIAL_COMMIT)
    landmark_scale, dtype, atol = REGIMES[regime]
    model = _ours(name, landmark_scale, dtype)
    with torch.no_grad():
        out = model(golden_input(golden["small_input"]).to(dtype))
    ref = golden[f"{name}/{regime}"]
    assert ref.dtype == dtype and ref.abs().max() > 1  # the weights make a non-trivial function
    torch.testing.assert_close(out, ref, rtol=0, atol=atol)


@pytest.mark.parametrize("name", PARITY_MODELS)
def test_matches_official_code(name):
    """Against the official code itself (skipped without an extracted copy): logits in both regimes, at 224 and at
    a non-square size, then input and parameter gradients (SOFT's analytic pinv backward, SOFT-Norm's autograd)."""
    for landmark_scale, dtype, atol in REGIMES.values():
        official, ours = _official(name, landmark_scale, dtype), _ours(name, landmark_scale, dtype)
        torch.manual_seed(1)
        for shape in ((2, 3, 224, 224), (1, 3, 200, 136)):
            x = torch.randn(shape, dtype=dtype)
            with torch.no_grad():
                torch.testing.assert_close(ours(x), official(x), rtol=0, atol=atol)
    official, ours = _official(name), _ours(name)
    x = torch.randn(2, 3, 96, 128)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours(xa).square().mean().backward()
    official(xb).square().mean().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-3, atol=1e-6)
    for (ka, pa), (kb, pb) in zip(sorted(ours.named_parameters()), sorted(official.named_parameters())):
        assert ka == kb
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-3, atol=1e-6, msg=ka)


def test_gaussian_kernel_equals_exact_subtraction():
    """The GEMM form equals the official CUDA op's entry-wise ``||q - k||^2`` (then exp(-d/2))."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 40, 32, generator=g) / 2, torch.randn(2, 3, 7, 32, generator=g) / 2
    ref = torch.exp(-_exact_subtraction_gaussian(q, k.transpose(-1, -2)) / 2)
    torch.testing.assert_close(gaussian_kernel(q, k), ref, rtol=1e-5, atol=1e-6)


def _gram(b: int, h: int, m: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    lm = torch.randn(b, h, m, 32, generator=g) * 0.3
    return gaussian_kernel(lm, lm).double()


def test_newton_inverse_official_form_and_gradient():
    """SOFT's iteration (+0.01 I, alpha = 0.9·2/max_row_sum^2 per head, 20 steps) and its analytic backward."""
    k2 = _gram(2, 3, 12)
    eye = torch.eye(12, dtype=k2.dtype)
    p = k2 + 0.01 * eye
    v = (0.9 * 2 / k2.sum(-1).amax(-1) ** 2)[..., None, None] * p
    for _ in range(20):
        v = 2 * v - v @ p @ v
    inv = newton_inverse(k2, 20)
    torch.testing.assert_close(inv, v, rtol=1e-10, atol=1e-12)
    # converged: it is the inverse of K2 + 0.01 I
    torch.testing.assert_close(inv @ p, eye.expand_as(p), rtol=0, atol=1e-6)
    mat = k2.clone().requires_grad_()
    g = torch.randn(inv.shape, dtype=k2.dtype, generator=torch.Generator().manual_seed(1))
    (newton_inverse(mat, 20) * g).sum().backward()
    torch.testing.assert_close(mat.grad, -(inv.mT @ g @ inv.mT))


def _official_norm_inverse(mat: torch.Tensor, iters: int) -> tuple[torch.Tensor, int]:
    """The official SoftmaxFreeNormAttentionKernel.newton_inv, formula by formula (data-dependent Python loop)."""
    eye = torch.eye(mat.size(-1), dtype=mat.dtype)
    alpha = 2 / (torch.max(torch.sum(mat, dim=-1)) ** 2)
    v = alpha * mat
    pnorm = torch.max(torch.sum(torch.abs(eye - torch.matmul(mat, v)), dim=-2))
    err = 0
    while pnorm > 1.01 and err < 10:
        alpha = alpha * 0.5
        v = alpha * mat
        pnorm = torch.max(torch.sum(torch.abs(eye - torch.matmul(mat, v)), dim=-2))
        err += 1
    for _ in range(iters):
        v = 2 * v - v @ mat @ v
    return v, err


HALVINGS = {"gauss_0.3": 7, "gauss_0.05": 8, "ones": 8, "randn": 10}


@pytest.mark.parametrize("case", sorted(HALVINGS))
def test_newton_inverse_norm_matches_official_loop(case):
    """Same halving search (7, 8, 8 and 10 = the cap halvings here) and iterations as the official loop, and the
    same gradient, through alpha too (not for the random non-PSD matrix, on which Newton diverges)."""
    g = torch.Generator().manual_seed(2)
    if case == "randn":
        k2 = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(7)).double()
    else:
        scale = 0.0 if case == "ones" else float(case.split("_")[1])
        lm = (torch.randn(2, 3, 16, 32, generator=g) * scale).double()
        k2 = gaussian_kernel(lm, lm)
    a, b = k2.clone().requires_grad_(), k2.clone().requires_grad_()
    ours, (ref, halvings) = newton_inverse_norm(a, 20), _official_norm_inverse(b, 20)
    assert halvings == HALVINGS[case]
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    if case == "randn":
        return
    w = torch.randn(ours.shape, dtype=ours.dtype, generator=g)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-9)


# --- sizes, dtypes, files -------------------------------------------------------------------------------------------
def test_input_size_limits_and_odd_sizes():
    torch.manual_seed(0)
    model = SOFT(embed_dims=(32, 64, 64, 64), num_heads=(1, 2, 2, 2), depths=(1, 1, 1, 1), num_classes=5).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 29, 45)).shape == (1, 5)  # the smallest side that gives every stage a landmark
        feats = model.forward_intermediates(torch.randn(1, 3, 61, 97), intermediates_only=True)
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 25), (8, 13), (4, 7), (2, 4)]
    with pytest.raises(ValueError, match="too small"):
        model(torch.randn(1, 3, 28, 64))


def test_bfloat16_autocast_keeps_kernel_in_fp32():
    torch.manual_seed(0)
    model = SOFT(embed_dims=(32, 64, 64, 64), num_heads=(1, 2, 2, 2), depths=(1, 1, 1, 1), num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.1, atol=0.1)


def test_official_checkpoint_prefers_ema(tmp_path):
    """The official --eval loads 'state_dict_ema' from the timm CheckpointSaver file; so does linzoo."""
    torch.manual_seed(0)
    model = timm.create_model("soft_tiny")
    ema = deterministic_state(model.state_dict(), seed=3)
    raw = {f"module.{k}": torch.zeros_like(v) for k, v in ema.items()}
    path = tmp_path / "SOFT_Tiny.pth.tar"
    ckpt = {"epoch": 299, "arch": "soft_tiny", "state_dict": raw, "state_dict_ema": ema}
    torch.save({**ckpt, "args": argparse.Namespace(model="soft_tiny"), "metric": 79.3}, path)
    loaded = timm.create_model("soft_tiny", pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, ema[k], msg=k)
    assert set(checkpoint_filter_fn({"state_dict": raw}, model)) == set(ema)


def _write_golden() -> None:
    """Run the official models on the golden input and store their logits (``python -m tests.vision.test_soft``)."""
    small = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    x = golden_input(small)
    golden = {
        "source": f"{OFFICIAL_COMMIT} models/softmax_free_vision_transformer.py, fp32 CPU, torch {torch.__version__}; "
        "exact subtraction Gaussian kernel and the repository's newton_inv (CPU stand-ins for its CUDA ops); "
        "weights = tests/vision/test_soft.py:deterministic_state(seed 0, landmark_scale per REGIMES); "
        "input = small_input nearest-upsampled x4",
        "small_input": small,
    }
    with torch.no_grad():
        for name in PARITY_MODELS:
            for regime, (landmark_scale, dtype, _) in REGIMES.items():
                golden[f"{name}/{regime}"] = _official(name, landmark_scale, dtype)(x.to(dtype))
    torch.save(golden, GOLDEN_FILE)
    print(f"wrote {GOLDEN_FILE} ({GOLDEN_FILE.stat().st_size} bytes)")


if __name__ == "__main__":
    _write_golden()


def test_features_only_pruned_and_checkpointed_training():
    """timm's feature wrapper with a subset of stages (stage 4, the cls token and the norm pruned away), and
    gradients under grad checkpointing equal to the plain ones (SOFT's custom pinv backward included)."""
    kwargs = dict(embed_dims=(32, 64, 64, 64), num_heads=(1, 2, 2, 2), depths=(1, 1, 2, 1))
    torch.manual_seed(0)
    feat = timm.create_model("soft_tiny", features_only=True, out_indices=(0, 2), **kwargs).eval()
    assert not any(k.startswith(("block4", "cls_token", "head", "norm.")) for k in feat.state_dict())
    with torch.no_grad():
        f0, f2 = feat(torch.randn(1, 3, 64, 96))
    assert f0.shape == (1, 32, 16, 24) and f2.shape == (1, 64, 4, 6)
    assert feat.feature_info.channels() == [32, 64] and feat.feature_info.reduction() == [4, 16]

    torch.manual_seed(0)
    model = timm.create_model("soft_tiny", num_classes=3, drop_path_rate=0.0, **kwargs).train()
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for ckpt in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(ckpt)
        model(x).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-6, msg=n)


def test_pretrained_without_file_explains_where_to_get_it(monkeypatch):
    """The Google-Drive URL cannot be fetched by timm: the error names the file and the overlay to use."""
    import timm.models._builder as builder

    def no_network(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(builder, "download_cached_file", no_network)
    with pytest.raises(RuntimeError, match="drive.google.com.*pretrained_cfg_overlay"):
        timm.create_model("soft_norm_tiny", pretrained=True)
