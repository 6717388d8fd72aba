"""Plain-PyTorch definition of non-causal linear attention (the readable reference).

Every fused kernel in this folder is tested against :func:`linear_attention_reference`.
Shapes: ``q, k`` are ``(B, heads, N, dk)``, ``v`` is ``(B, heads, N, dv)``, the output is
``(B, heads, N, dv)``. All arithmetic runs in float32 and the result is cast to ``v.dtype``.

With φ the feature map and R the optional rotary embedding (numerator only), the normalisers are

- ``"standard"``:  o_i = R(φq_i)ᵀ (s Σ_j R(φk_j) v_jᵀ) · τ_h / (φq_i · (s Σ_j φk_j) + eps)
- ``"none"``:      o_i = R(φq_i)ᵀ (s Σ_j R(φk_j) v_jᵀ) · τ_h
- ``"clamp"``:     o_i = R(φq_i)ᵀ (s Σ_j R(φk_j) v_jᵀ) · τ_h / max(φq_i · (s Σ_j φk_j), clamp_min)   (L²ViT)
- ``"injective"``: o_i = (s/N) φq_iᵀ (Σ_j φk_j v_jᵀ) + (1 − s φq_i · k̄) v̄,  s defaults to dk^-½   (InLine)
- ``"rala"``:      α = softmax_j(s · mean_i(φq_i) · φk_j),  k'_j = N α_j φk_j,
                   o_i = R(φq_i)ᵀ ((1/N) Σ_j R(k'_j) v_jᵀ) / (φq_i · mean_j k'_j + eps),  s defaults to dk^-½   (RAVLT)

``s`` is ``scale`` (default 1 except where stated), τ_h the optional per-head ``temperature``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "FEATURE_MAPS",
    "NORMALIZERS",
    "apply_feature_map",
    "apply_rope",
    "default_scale",
    "linear_attention_reference",
]

FEATURE_MAPS = ("identity", "relu", "elu+1")
NORMALIZERS = ("standard", "none", "clamp", "injective", "rala")


def apply_feature_map(x: torch.Tensor, feature_map: str) -> torch.Tensor:
    """φ(x) for the named feature map."""
    if feature_map == "identity":
        return x
    if feature_map == "relu":
        return F.relu(x)
    if feature_map == "elu+1":
        return F.elu(x) + 1.0
    raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs (2i, 2i+1) of ``x (..., N, d)`` by angles with ``cos, sin (N, d/2)``.

    (a, b) -> (a cos θ − b sin θ, a sin θ + b cos θ).
    """
    a, b = x[..., 0::2], x[..., 1::2]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


def default_scale(normalizer: str, dk: int, scale: float | None) -> float:
    """The scale ``s`` used when the caller passes ``scale=None``."""
    if scale is not None:
        return float(scale)
    return dk**-0.5 if normalizer in ("injective", "rala") else 1.0


def linear_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    feature_map: str = "identity",
    normalizer: str = "standard",
    eps: float = 1e-6,
    scale: float | None = None,
    clamp_min: float = 0.0,
    rope_cos: torch.Tensor | None = None,
    rope_sin: torch.Tensor | None = None,
    temperature: torch.Tensor | None = None,
) -> torch.Tensor:
    """Non-causal linear attention, O(N·dk·dv) time and O(dk·dv) state per head; see the module docstring."""
    out_dtype = v.dtype
    n = q.shape[-2]
    s = default_scale(normalizer, q.shape[-1], scale)
    fq = apply_feature_map(q.float(), feature_map)
    fk = apply_feature_map(k.float(), feature_map)
    vf = v.float()
    has_rope = rope_cos is not None

    def rot(x: torch.Tensor) -> torch.Tensor:
        return apply_rope(x, rope_cos.float(), rope_sin.float()) if has_rope else x

    if normalizer == "injective":
        kv = torch.einsum("bhnk,bhnv->bhkv", fk, vf)
        k_mean = fk.mean(dim=-2, keepdim=True)  # (B, H, 1, dk)
        v_mean = vf.mean(dim=-2, keepdim=True)  # (B, H, 1, dv)
        out = (s / n) * (fq @ kv) + (1.0 - s * (fq * k_mean).sum(-1, keepdim=True)) * v_mean
        return out.to(out_dtype)

    if normalizer == "rala":
        q_mean = fq.mean(dim=-2, keepdim=True)  # (B, H, 1, dk)
        alpha = torch.softmax(s * (fk * q_mean).sum(-1), dim=-1).unsqueeze(-1)  # (B, H, N, 1)
        k_re = n * alpha * fk
        z = 1.0 / ((fq * k_re.mean(dim=-2, keepdim=True)).sum(-1, keepdim=True) + eps)
        kv = torch.einsum("bhnk,bhnv->bhkv", rot(k_re), vf) / n
        return ((rot(fq) @ kv) * z).to(out_dtype)

    kv = s * torch.einsum("bhnk,bhnv->bhkv", rot(fk), vf)
    out = rot(fq) @ kv
    if temperature is not None:
        out = out * temperature.float().view(1, -1, 1, 1)
    if normalizer == "none":
        return out.to(out_dtype)
    den = (fq * (s * fk.sum(dim=-2, keepdim=True))).sum(-1, keepdim=True)
    if normalizer == "standard":
        return (out / (den + eps)).to(out_dtype)
    if normalizer == "clamp":
        return (out / den.clamp_min(clamp_min)).to(out_dtype)
    raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
