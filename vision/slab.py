"""SLAB: simplified linear attention (SLA) and progressive re-parameterised BatchNorm (PRepBN).

Paper: "SLAB: Efficient Transformers with Simplified Linear Attention and Progressive Re-parameterized Batch
Normalization" (ICML 2024), https://arxiv.org/abs/2405.11582. Official code: https://github.com/xinghaochen/SLAB
(``classification/models`` @ f58db00b); re-implemented here, not copied. The official repository has no LICENSE
file, so the licence of the released weights is unknown.

Four families, each exactly as the official code builds it (the state dicts equal the official ones key for key,
buffers and unused tensors included, so the released checkpoints load unchanged):

- ``slab_deit_t/s`` (SLA, no class token: the unused ``cls_token`` is kept, average pooling) and the softmax
  baselines ``deit_t_prepbn`` (plain RepBN) / ``deit_s_prepbn`` (LinearNorm), class-token pooling;
- ``slab_pvt_t/s/m`` (SLA in every stage, no spatial reduction) and ``pvt_t/s/m_prepbn`` (softmax with spatial
  reduction); PVTv1 has no final norm;
- ``slab_swin_t/s/b`` (stages 1–2 SLA over the whole map, stages 3–4 shifted-window softmax) and ``swin_t_prepbn``
  (Swin-T, softmax everywhere, plain RepBN);
- ``slab_cswin_t/s`` (stages 1–2 SLA over the whole map, stage 3 cross-shaped LePE stripes, stage 4 global LePE).

SLA (paper Eq. 6): ``O = φ(Q)(φ(K)ᵀV) / (φ(Q)·Σφ(K) + 1e-6) + DWC(V)``, φ = ReLU, ``K`` gets a learned positional
encoding before φ, ``DWC`` is one 5×5 depthwise conv over the channels of a head, shared by all heads. It runs
through :func:`linzoo.kernels.linear_attention` (the official picks the QKᵀ-first order for small N: the same
function); DeiT and Swin compute it in float32 with autocast off, as the official code does.

PRepBN (paper Eq. 4): see :mod:`linzoo.vision.layers.prepbn`. For training, call ``model.set_prepbn_step(step)``
with the trainer's global step before each optimisation step (e.g. in ``on_train_batch_start`` with
``trainer.global_step``); without it the norms count their own training forwards like the official code.
For deployment, ``model.reparameterize()`` (or ``timm.utils.reparameterize_model(model)``) folds every RepBN
into the neighbouring linear / conv layer.

Any input size works (the official models assert 224): positional encodings are resized to the actual grid
(bicubic like the official checkpoint loader; PVT's ``pos_embed`` bilinear like its forward), the SLA stages of
Swin/CSWin attend over the whole map at every size (at 224 the official "window 56" is exactly that; an official
model *built* for a larger input would instead cut stage 1 into 56×56 windows), windows and stripes are padded
with masked keys, and every hierarchical variant provides ``features_only``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.utils.model import reparameterize_model
from torch import nn
from torch.utils.checkpoint import checkpoint

from linzoo.kernels import linear_attention, window_attention_2d

from ._builder import base_cfg, build_linzoo_model, check_image_input, load_pretrained_file, unwrap_checkpoint
from .layers.prepbn import (
    ChannelAffine,
    LinearNorm,
    RepBN,
    fold_affine_after_conv,
    fold_affine_before_conv,
    fold_affine_before_linear,
    norm_affine,
    set_prepbn_step,
)

__all__ = ["SlabCSWin", "SlabDeiT", "SlabPVT", "SlabSwin"]

_NORM_KINDS = ("linear", "repbn")
_FOLDABLE = (RepBN, LinearNorm, ChannelAffine)


# ---------------------------------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------------------------------
def _make_norm(kind: str, dim: int, step: int, ln_eps: float) -> nn.Module:
    """``"linear"``: LinearNorm (LN → RepBN over ``step`` iterations); ``"repbn"``: plain RepBN."""
    if kind == "linear":
        return LinearNorm(dim, step=step, ln_eps=ln_eps)
    if kind == "repbn":
        return RepBN(dim)
    raise ValueError(f"norm must be one of {_NORM_KINDS}, got {kind!r}")


def _dpr(rate: float, n: int) -> list[float]:
    """Stochastic-depth rates rising linearly from 0 to ``rate`` over ``n`` blocks (plain floats: meta-safe)."""
    return [rate * i / (n - 1) if n > 1 else 0.0 for i in range(n)]


def _resize_tokens(t: torch.Tensor, src: tuple[int, int], dst: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize a ``(1, Hs·Ws, C)`` grid of embeddings to ``(1, Hd·Wd, C)`` (``align_corners=False``)."""
    if tuple(src) == tuple(dst):
        return t
    c = t.shape[-1]
    grid = t.reshape(1, src[0], src[1], c).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(dst), mode=mode, align_corners=False).to(t.dtype)
    return grid.permute(0, 2, 3, 1).reshape(1, dst[0] * dst[1], c)


def _autocast_off(device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast disabled on ``device`` (the official DeiT/Swin SLA runs in float32 under AMP)."""
    if device.type in ("cuda", "cpu", "xpu", "mps"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def simplified_linear_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    hw: tuple[int, int],
    positional_encoding: torch.Tensor,
    dwc: nn.Conv2d,
    fp32: bool,
) -> torch.Tensor:
    """SLA (paper Eq. 6) on ``(B, N, C)`` q, k, v of an ``H×W`` grid; returns ``(B, heads, N, C/heads)``.

    ``positional_encoding`` ``(1, N, C)`` is added to k; φ = ReLU on q and k, the standard normaliser with
    eps 1e-6, plus the depthwise conv ``dwc`` (shared across heads) of v on the grid.
    """
    b, n, c = q.shape
    d = c // num_heads
    k = k + positional_encoding
    q, k, v = (t.reshape(b, n, num_heads, d).transpose(1, 2) for t in (q, k, v))
    if fp32:
        q, k, v = q.float(), k.float(), v.float()
        with _autocast_off(q.device):
            out = linear_attention(q, k, v, feature_map="relu", normalizer="standard", eps=1e-6)
    else:
        out = linear_attention(q, k, v, feature_map="relu", normalizer="standard", eps=1e-6)
    h, w = hw
    local = dwc(v.reshape(b * num_heads, h, w, d).permute(0, 3, 1, 2))
    return out + local.permute(0, 2, 3, 1).reshape(b, num_heads, n, d)


class PatchEmbed(nn.Module):
    """Non-overlapping conv patch embedding (``proj``) with an optional token norm (``norm``).

    Our own (not timm's ``PatchEmbed``) because every family needs the token grid ``(H, W)`` back, and the
    official key of the norm is ``patch_embed.norm`` only where the official model has one.
    """

    def __init__(self, in_chans: int, dim: int, patch_size: int, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, patch_size, patch_size)
        if norm is not None:
            self.norm = norm

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)
        if hasattr(self, "norm"):
            x = self.norm(x)
        return x, hw

    def reparameterize(self) -> None:
        """Fold the norm into ``proj`` (bias ``a·b_conv + b``: the official ``merge_bn`` drops ``α·b_conv``)."""
        norm = getattr(self, "norm", None)
        if isinstance(norm, _FOLDABLE):
            fold_affine_after_conv(self.proj, *norm_affine(norm))
            self.norm = nn.Identity()


def _fold_norm_into(block: nn.Module, norm_name: str, linear_names: Sequence[str]) -> None:
    """Replace ``block.<norm_name>`` by Identity after folding it into each ``block.<linear_name>`` (dotted)."""
    norm = getattr(block, norm_name)
    if not isinstance(norm, _FOLDABLE):
        return
    a, b = norm_affine(norm)
    for name in linear_names:
        parent_name, _, attr = name.rpartition(".")
        parent = block.get_submodule(parent_name) if parent_name else block
        layer = getattr(parent, attr)
        if isinstance(layer, nn.Linear):
            setattr(parent, attr, fold_affine_before_linear(a, b, layer))
        else:
            fold_affine_before_conv(a, b, layer)
    setattr(block, norm_name, nn.Identity())


class _SlabBase(nn.Module):
    """timm API shared by the four families (pooling head, checkpointing, PRepBN hooks)."""

    num_classes: int
    global_pool: str
    head_drop: float
    in_chans: int

    def _init_weights(self, m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _check_pool(self, global_pool: str) -> None:
        if global_pool not in self._pools:
            raise ValueError(f"global_pool must be one of {self._pools}, got {global_pool!r}")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute blocks in backward; drive PRepBN with :meth:`set_prepbn_step` so recomputation sees the same λ."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self._check_pool(global_pool)
            self.global_pool = global_pool
        self.num_classes = num_classes
        ref = next(self.parameters())
        self.head = (
            nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        if num_classes > 0:
            self._init_weights(self.head)

    def load_pretrained(self, checkpoint_path: str) -> None:
        """Load an official SLAB checkpoint (or a linzoo safetensors file) into this model."""
        load_pretrained_file(self, checkpoint_path, checkpoint_filter_fn)

    def set_prepbn_step(self, step: int) -> int:
        """Set every LinearNorm's LN→RepBN schedule to global step ``step``; returns the number of norms set.

        Call with ``trainer.global_step`` before each training step (Lightning: ``on_train_batch_start``). The
        counters are persistent buffers (official layout), so a resumed run is right even before the first call.
        """
        return set_prepbn_step(self, step)

    def reparameterize(self) -> None:
        """Fold every RepBN into the adjacent linear/conv layer for deployment (eval outputs unchanged)."""
        reparameterize_model(self, inplace=True)

    def _run(self, block: nn.Module, x: torch.Tensor, *args: Any) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting() and torch.is_grad_enabled():
            return checkpoint(block, x, *args, use_reentrant=False)
        return block(x, *args)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the ``(B, N, C)`` tokens of :meth:`forward_features` (``avg``, ``token`` or none) and classify."""
        if self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens :].mean(dim=1)
        elif self.global_pool == "token":
            x = x[:, 0]
        if self.head_drop > 0.0:
            x = F.dropout(x, self.head_drop, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    num_prefix_tokens = 0
    _pools: tuple[str, ...] = ("avg", "")


def _to_nchw(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], hw[0], hw[1])


# ---------------------------------------------------------------------------------------------------------------
# DeiT: slab_deit_t/s, deit_t/s_prepbn
# ---------------------------------------------------------------------------------------------------------------
class SimplifiedLinearAttention(nn.Module):
    """SLA with a fused ``qkv`` projection (DeiT, Swin): keys ``qkv``, ``proj``, ``dwc``, ``positional_encoding``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: tuple[int, int],
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        kernel_size: int = 5,
        fp32: bool = True,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.grid = tuple(grid)
        self.fp32 = fp32
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.positional_encoding = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, c).unbind(2)
        pos = _resize_tokens(self.positional_encoding, self.grid, hw, "bicubic")
        out = simplified_linear_attention(q, k, v, self.num_heads, hw, pos, self.dwc, self.fp32)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class Attention(nn.Module):
    """Multi-head softmax self-attention (``qkv``, ``proj``) through ``F.scaled_dot_product_attention``."""

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class DeiTBlock(nn.Module):
    """Pre-norm block: ``x += Attn(norm1(x)); x += MLP(norm2(x))`` (keys ``norm1 attn norm2 mlp``)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        attn: str,
        grid: tuple[int, int],
        norm: str,
        prepbn_step: int,
        ln_eps: float,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        self.norm1 = _make_norm(norm, dim, prepbn_step, ln_eps)
        if attn == "linear":
            self.attn = SimplifiedLinearAttention(dim, num_heads, grid, qkv_bias, drop, kernel_size, fp32=True)
        else:
            self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = _make_norm(norm, dim, prepbn_step, ln_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def reparameterize(self) -> None:
        _fold_norm_into(self, "norm1", ("attn.qkv",))
        _fold_norm_into(self, "norm2", ("mlp.fc1",))


class SlabDeiT(_SlabBase):
    """DeiT with PRepBN norms; ``attn="linear"`` is SLAB-DeiT (no class token in use, average pooling),
    ``attn="softmax"`` the DeiT-PRepBN baseline (class token, ``token`` pooling).

    ``forward_features`` returns the normalised tokens ``(B, N, C)`` (class token first for ``softmax``).
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str | None = None,
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        attn: str = "linear",
        norm: str = "linear",
        prepbn_step: int = 60000,
        ln_eps: float = 1e-6,
        kernel_size: int = 5,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        head_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if attn not in ("linear", "softmax"):
            raise ValueError(f"attn must be 'linear' or 'softmax', got {attn!r}")
        self.class_token = attn == "softmax"
        self.num_prefix_tokens = 1 if self.class_token else 0
        self._pools = ("token", "avg", "") if self.class_token else ("avg", "")
        global_pool = global_pool if global_pool is not None else ("token" if self.class_token else "avg")
        self._check_pool(global_pool)
        img = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.grid = (img[0] // patch_size, img[1] // patch_size)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.head_drop = head_drop_rate
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        # The official SLAB-DeiT keeps (but never uses) the class token; DeiT-PRepBN prepends it.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        num_pos = self.grid[0] * self.grid[1] + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = _dpr(drop_path_rate, depth)
        self.blocks = nn.ModuleList(
            DeiTBlock(
                embed_dim,
                num_heads,
                mlp_ratio,
                attn,
                self.grid,
                norm,
                prepbn_step,
                ln_eps,
                qkv_bias,
                drop_rate,
                attn_drop_rate,
                dpr[i],
                kernel_size,
            )
            for i in range(depth)
        )
        self.norm = _make_norm(norm, embed_dim, prepbn_step, ln_eps)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.feature_info = [
            {"num_chs": embed_dim, "reduction": patch_size, "module": f"blocks.{i}"} for i in range(depth)
        ]
        # The unused class token of SLAB-DeiT gets no gradient.
        self.params_without_grad = () if self.class_token else ("cls_token",)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed", "cls_token"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {
            "stem": r"^cls_token|^pos_embed|^patch_embed",
            "blocks": [(r"^blocks\.(\d+)", None), (r"^norm", (99999,))],
        }

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        check_image_input(x, self.in_chans)
        x, hw = self.patch_embed(x)
        p = self.num_prefix_tokens
        pos = _resize_tokens(self.pos_embed[:, p:], self.grid, hw, "bicubic")
        if self.class_token:
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            pos = torch.cat((self.pos_embed[:, :p], pos), dim=1)
        return self.pos_drop(x + pos), hw

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, hw = self._embed(x)
        for block in self.blocks:
            x = self._run(block, x, hw)
        return self.norm(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Block outputs as ``(B, C, H/16, W/16)`` maps (prefix token dropped); ``norm`` applies the final norm."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, hw = self._embed(x)
        blocks = self.blocks[: max_index + 1] if (stop_early or intermediates_only) else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            x = self._run(block, x, hw)
            if i in take_indices:
                y = self.norm(x) if norm else x
                y = y[:, self.num_prefix_tokens :]
                intermediates.append(_to_nchw(y, hw) if output_fmt == "NCHW" else y)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


# ---------------------------------------------------------------------------------------------------------------
# PVT: slab_pvt_t/s/m, pvt_t/s/m_prepbn
# ---------------------------------------------------------------------------------------------------------------
class PVTSimplifiedLinearAttention(nn.Module):
    """PVT's SLA (keys ``q kv proj dwc positional_encoding``), no spatial reduction, no fp32 cast."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        grid: tuple[int, int],
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.grid = tuple(grid)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.positional_encoding = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x)
        k, v = self.kv(x).reshape(b, n, 2, c).unbind(2)
        pos = _resize_tokens(self.positional_encoding, self.grid, hw, "bicubic")
        out = simplified_linear_attention(q, k, v, self.num_heads, hw, pos, self.dwc, fp32=False)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))

    def fold_input_norm(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.q = fold_affine_before_linear(a, b, self.q)
        self.kv = fold_affine_before_linear(a, b, self.kv)


class PVTAttention(nn.Module):
    """PVTv1 softmax attention with spatial reduction (``sr`` conv + ``norm`` on keys/values when ``sr_ratio > 1``)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        sr_ratio: int,
        norm: str,
        prepbn_step: int,
        ln_eps: float,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = _make_norm(norm, dim, prepbn_step, ln_eps)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        q = self.q(x).reshape(b, n, heads, d).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.sr(_to_nchw(x, hw)).flatten(2).transpose(1, 2)
            x = self.norm(x)
        k, v = self.kv(x).reshape(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))

    def fold_input_norm(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.q = fold_affine_before_linear(a, b, self.q)
        if self.sr_ratio > 1:
            fold_affine_before_conv(a, b, self.sr)
            _fold_norm_into(self, "norm", ("kv",))
        else:
            self.kv = fold_affine_before_linear(a, b, self.kv)


class PVTBlock(nn.Module):
    """PVT block (keys ``norm1 attn norm2 mlp``); ``attn`` is ``"L"`` (SLA) or ``"S"`` (softmax + SR)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        attn: str,
        grid: tuple[int, int],
        sr_ratio: int,
        prepbn_step: int,
        ln_eps: float,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        self.norm1 = _make_norm("linear", dim, prepbn_step, ln_eps)
        if attn == "L":
            self.attn = PVTSimplifiedLinearAttention(dim, num_heads, grid, qkv_bias, drop, kernel_size)
        else:
            self.attn = PVTAttention(dim, num_heads, sr_ratio, "linear", prepbn_step, ln_eps, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = _make_norm("linear", dim, prepbn_step, ln_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def reparameterize(self) -> None:
        if isinstance(self.norm1, _FOLDABLE):
            self.attn.fold_input_norm(*norm_affine(self.norm1))
            self.norm1 = nn.Identity()
        _fold_norm_into(self, "norm2", ("mlp.fc1",))


def _parse_kinds(kinds: str | Sequence[str], num_stages: int) -> tuple[str, ...]:
    kinds = tuple(kinds)
    if len(kinds) != num_stages or any(k not in ("L", "S") for k in kinds):
        raise ValueError(f"attn_kinds must give 'L' (SLA) or 'S' (softmax) per stage ({num_stages}), got {kinds!r}")
    return kinds


class SlabPVT(_SlabBase):
    """PVTv1 with PRepBN (LinearNorm everywhere, no final norm); ``attn_kinds`` ``"LLLL"`` = SLAB-PVT,
    ``"SSSS"`` = PVT-PRepBN. ``forward_features`` returns the stage-4 tokens ``(B, N, C)``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        depths: Sequence[int] = (2, 2, 2, 2),
        sr_ratios: Sequence[int] = (8, 4, 2, 1),
        attn_kinds: str | Sequence[str] = "LLLL",
        qkv_bias: bool = True,
        prepbn_step: int = 300000,
        ln_eps: float = 1e-6,
        kernel_size: int = 5,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        head_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self._check_pool(global_pool)
        num_stages = len(depths)
        kinds = _parse_kinds(attn_kinds, num_stages)
        for name, value in (("embed_dims", embed_dims), ("num_heads", num_heads), ("mlp_ratios", mlp_ratios)):
            if len(value) != num_stages:
                raise ValueError(f"{name} must have one entry per stage ({num_stages}), got {list(value)}")
        img = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.num_stages = num_stages
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.head_drop = head_drop_rate
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.grad_checkpointing = False
        self.grids = []
        dpr = _dpr(drop_path_rate, sum(depths))
        self.feature_info = []
        cur = 0
        for i in range(num_stages):
            stride = patch_size * 2**i
            grid = (img[0] // stride, img[1] // stride)
            self.grids.append(grid)
            norm = _make_norm("linear", embed_dims[i], prepbn_step, ln_eps)
            in_dim = in_chans if i == 0 else embed_dims[i - 1]
            setattr(self, f"patch_embed{i + 1}", PatchEmbed(in_dim, embed_dims[i], patch_size if i == 0 else 2, norm))
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, grid[0] * grid[1], embed_dims[i])))
            setattr(self, f"pos_drop{i + 1}", nn.Dropout(drop_rate))
            blocks = nn.ModuleList(
                PVTBlock(
                    embed_dims[i],
                    num_heads[i],
                    mlp_ratios[i],
                    kinds[i],
                    grid,
                    sr_ratios[i],
                    prepbn_step,
                    ln_eps,
                    qkv_bias,
                    drop_rate,
                    attn_drop_rate,
                    dpr[cur + j],
                    kernel_size,
                )
                for j in range(depths[i])
            )
            setattr(self, f"block{i + 1}", blocks)
            cur += depths[i]
            self.feature_info.append({"num_chs": embed_dims[i], "reduction": stride, "module": f"block{i + 1}"})
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        for i in range(num_stages):
            trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)
        self.apply(self._init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()  # the official list names only a ``cls_token`` that PVT-SLAB does not have

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {
            "stem": r"^patch_embed1|^pos_embed1",
            "blocks": r"^(?:block|patch_embed|pos_embed)(\d+)"
            if coarse
            else [(r"^block(\d+)\.(\d+)", None), (r"^(?:patch_embed|pos_embed)(\d+)", (0,))],
        }

    def _stage(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x, hw = getattr(self, f"patch_embed{i + 1}")(x)
        pos = _resize_tokens(getattr(self, f"pos_embed{i + 1}"), self.grids[i], hw, "bilinear")
        x = getattr(self, f"pos_drop{i + 1}")(x + pos)
        for block in getattr(self, f"block{i + 1}"):
            x = self._run(block, x, hw)
        return x, hw

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans)
        x, hw = self._stage(0, x)
        for i in range(1, self.num_stages):
            x, hw = self._stage(i, _to_nchw(x, hw))
        return x

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs as ``(B, C_i, H/4·2^-i, W/4·2^-i)`` maps (PVTv1 has no final norm: ``norm`` is a no-op)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        check_image_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last = max_index if (stop_early or intermediates_only) else self.num_stages - 1
        intermediates = []
        hw = (x.shape[2], x.shape[3])  # only read for stages > 0, after the first stage has set it
        for i in range(last + 1):
            x, hw = self._stage(i, _to_nchw(x, hw) if i else x)
            if i in take_indices:
                intermediates.append(_to_nchw(x, hw))
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        for i in range(max_index + 1, self.num_stages):
            for prefix in ("patch_embed", "pos_embed", "pos_drop", "block"):
                delattr(self, f"{prefix}{i + 1}")
        self.num_stages = max_index + 1
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


# ---------------------------------------------------------------------------------------------------------------
# Swin: slab_swin_t/s/b, swin_t_prepbn
# ---------------------------------------------------------------------------------------------------------------
def _swin_shift_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """The official Swin SW-MSA mask ``(nW, w², w²)``: 0 within a region, −100 across regions."""
    img = torch.zeros(1, h, w, 1)
    cnt = 0
    slices = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for hs in slices:
        for ws in slices:
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = img.view(1, h // window, window, w // window, window, 1).permute(0, 1, 3, 2, 4, 5).reshape(-1, window**2)
    mask = win.unsqueeze(1) - win.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _swin_relative_index(window: int) -> torch.Tensor:
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    return (rel[..., 0] + window - 1) * (2 * window - 1) + rel[..., 1] + window - 1


class WindowAttention(nn.Module):
    """Swin (shifted-)window softmax attention through :func:`linzoo.kernels.window_attention_2d`.

    Keys ``relative_position_bias_table``, ``relative_position_index`` (the official buffer, kept for the layout;
    the kernel gathers the bias itself), ``qkv``, ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, window: int, qkv_bias: bool = True, proj_drop: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.window = window
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", _swin_relative_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def _table(self, window: int) -> torch.Tensor:
        """The bias table of a ``window`` ≤ the built window (centre crop of the offset grid)."""
        if window == self.window:
            return self.relative_position_bias_table
        full = self.relative_position_bias_table.view(2 * self.window - 1, 2 * self.window - 1, -1)
        lo = self.window - window
        return full[lo : lo + 2 * window - 1, lo : lo + 2 * window - 1].reshape((2 * window - 1) ** 2, -1)

    def forward(self, x: torch.Tensor, window: int, shift: int) -> torch.Tensor:
        """``x``: ``(B, H, W, C)`` normalised map; returns ``(B, H, W, C)``."""
        b, h, w, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        q, k, v = self.qkv(x).reshape(b, h, w, 3, heads, d).permute(3, 0, 4, 1, 2, 5)
        out = window_attention_2d(q, k, v, window, shift=shift, rpb=self._table(window), pad_mode="mask")
        return self.proj_drop(self.proj(out.permute(0, 2, 3, 1, 4).reshape(b, h, w, c)))


class SwinBlock(nn.Module):
    """Swin block; ``attn`` ``"L"``: SLA over the whole map, ``"S"``: (shifted) window softmax attention.

    Window rule as the official code, applied to the actual map: a window not smaller than the map becomes the
    map (no shift). ``attn_mask`` is the official buffer for the map size the model was built for (layout only).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        resolution: tuple[int, int],
        attn: str,
        window: int,
        shift: bool,
        mlp_ratio: float,
        norm: str,
        prepbn_step: int,
        ln_eps: float,
        qkv_bias: bool = True,
        drop: float = 0.0,
        drop_path: float = 0.0,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        self.kind = attn
        self.norm1 = _make_norm(norm, dim, prepbn_step, ln_eps)
        build_window, build_shift = window, window // 2 if shift else 0
        if min(resolution) <= window:
            build_window, build_shift = min(resolution), 0
        self.window = build_window
        self.shifted = shift
        if attn == "L":
            self.attn = SimplifiedLinearAttention(dim, num_heads, resolution, qkv_bias, drop, kernel_size, fp32=True)
        else:
            self.attn = WindowAttention(dim, num_heads, build_window, qkv_bias, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = _make_norm(norm, dim, prepbn_step, ln_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        mask = None
        if attn == "S" and build_shift > 0:
            mask = _swin_shift_mask(resolution[0], resolution[1], build_window, build_shift)
        self.register_buffer("attn_mask", mask)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        y = self.norm1(x)
        if self.kind == "L":
            y = self.attn(y, hw)
        else:
            window, shift = self.window, self.window // 2 if self.shifted else 0
            if min(hw) <= window:
                window, shift = min(hw), 0
            y = self.attn(y.reshape(x.shape[0], hw[0], hw[1], -1), window, shift).reshape(x.shape)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def reparameterize(self) -> None:
        _fold_norm_into(self, "norm1", ("attn.qkv",))
        _fold_norm_into(self, "norm2", ("mlp.fc1",))


class PatchMerging(nn.Module):
    """2×2 neighbourhood concat (odd sizes zero-padded) → ``norm`` (4C) → ``reduction`` (4C → 2C, no bias)."""

    def __init__(self, dim: int, norm: str, prepbn_step: int, ln_eps: float) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = _make_norm(norm, 4 * dim, prepbn_step, ln_eps)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        b, _, c = x.shape
        h, w = hw
        x = x.reshape(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        hw = (x.shape[1], x.shape[2])
        return self.reduction(self.norm(x.reshape(b, -1, 4 * c))), hw

    def reparameterize(self) -> None:
        _fold_norm_into(self, "norm", ("reduction",))


class SwinStage(nn.Module):
    """``blocks`` then the optional ``downsample`` (PatchMerging)."""

    def __init__(self, blocks: list[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        if downsample is not None:
            self.downsample = downsample


class SlabSwin(_SlabBase):
    """Swin Transformer with PRepBN; ``attn_kinds`` per stage (``"LLSS"`` SLAB-Swin, ``"SSSS"`` Swin-PRepBN).

    ``forward_features`` returns the normalised stage-4 tokens ``(B, N, C)``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        attn_kinds: str | Sequence[str] = "LLSS",
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        norm: str = "linear",
        prepbn_step: int = 60000,
        ln_eps: float = 1e-5,
        kernel_size: int = 5,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        head_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self._check_pool(global_pool)
        num_stages = len(depths)
        kinds = _parse_kinds(attn_kinds, num_stages)
        if len(num_heads) != num_stages:
            raise ValueError(f"num_heads must have one entry per stage ({num_stages}), got {list(num_heads)}")
        img = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.head_drop = head_drop_rate
        self.num_features = self.head_hidden_size = int(embed_dim * 2 ** (num_stages - 1))
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size, _make_norm(norm, embed_dim, prepbn_step, ln_eps))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = _dpr(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        self.feature_info = []
        for i in range(num_stages):
            dim = embed_dim * 2**i
            res = (img[0] // patch_size // 2**i, img[1] // patch_size // 2**i)
            start = sum(depths[:i])
            blocks = [
                SwinBlock(
                    dim,
                    num_heads[i],
                    res,
                    kinds[i],
                    window_size,
                    j % 2 == 1,
                    mlp_ratio,
                    norm,
                    prepbn_step,
                    ln_eps,
                    qkv_bias,
                    drop_rate,
                    dpr[start + j],
                    kernel_size,
                )
                for j in range(depths[i])
            ]
            down = PatchMerging(dim, norm, prepbn_step, ln_eps) if i < num_stages - 1 else None
            self.layers.append(SwinStage(blocks, down))
            self.feature_info.append({"num_chs": dim, "reduction": patch_size * 2**i, "module": f"layers.{i}"})
        self.norm = _make_norm(norm, self.num_features, prepbn_step, ln_eps)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # Official: ``no_weight_decay_keywords`` = relative_position_bias_table.
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {
            "stem": r"^patch_embed",
            "blocks": r"^layers\.(\d+)"
            if coarse
            else [
                (r"^layers\.(\d+)\.downsample", (0,)),
                (r"^layers\.(\d+)\.blocks\.(\d+)", None),
                (r"^norm", (99999,)),
            ],
        }

    def _run_stage(self, stage: SwinStage, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        for block in stage.blocks:
            x = self._run(block, x, hw)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans)
        x, hw = self.patch_embed(x)
        x = self.pos_drop(x)
        for stage in self.layers:
            x = self._run_stage(stage, x, hw)
            if hasattr(stage, "downsample"):
                x, hw = stage.downsample(x, hw)
        return self.norm(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs before each PatchMerging as NCHW maps (``norm`` normalises the last one)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        check_image_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        x, hw = self.patch_embed(x)
        x = self.pos_drop(x)
        stages = self.layers[: max_index + 1] if (stop_early or intermediates_only) else self.layers
        last = len(self.layers) - 1
        intermediates = []
        for i, stage in enumerate(stages):
            x = self._run_stage(stage, x, hw)
            if i in take_indices:
                y = self.norm(x) if (norm and i == last) else x
                intermediates.append(_to_nchw(y, hw))
            if hasattr(stage, "downsample"):
                x, hw = stage.downsample(x, hw)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        if hasattr(self.layers[-1], "downsample"):
            del self.layers[-1].downsample
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


# ---------------------------------------------------------------------------------------------------------------
# CSWin: slab_cswin_t/s
# ---------------------------------------------------------------------------------------------------------------
class CSWinSimplifiedLinearAttention(nn.Module):
    """CSWin's SLA over the whole map plus LePE (keys ``scale`` (unused), ``positional_encoding get_v dwc``)."""

    def __init__(self, dim: int, num_heads: int, grid: tuple[int, int], kernel_size: int = 5) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.grid = tuple(grid)
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.dwc = nn.Conv2d(head_dim, head_dim, kernel_size, padding=kernel_size // 2, groups=head_dim)
        self.scale = nn.Parameter(torch.zeros(1, 1, dim))  # in the official layout, never used
        self.positional_encoding = nn.Parameter(torch.zeros(1, grid[0] * grid[1], dim))

    def forward(self, qkv: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """``qkv``: ``(B, N, 3, C)``; returns ``(B, N, C)``."""
        b, n, _, c = qkv.shape
        q, k, v = qkv.unbind(2)
        lepe = self.get_v(_to_nchw(v, hw)).reshape(b, self.num_heads, c // self.num_heads, n).transpose(-1, -2)
        pos = _resize_tokens(self.positional_encoding, self.grid, hw, "bicubic")
        out = simplified_linear_attention(q, k, v, self.num_heads, hw, pos, self.dwc, fp32=False) + lepe
        return out.transpose(1, 2).reshape(b, n, c)


class LePEAttention(nn.Module):
    """CSWin softmax attention in stripes (``idx`` 0: full-height columns of width ``split``; 1: full-width rows;
    −1: the whole map) plus LePE ``get_v`` (3×3 depthwise on v inside each stripe). Stripes that overhang the map
    are zero-padded after the projection and the padded keys masked.
    """

    def __init__(self, dim: int, num_heads: int, idx: int, split: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.idx = idx
        self.split = split
        self.attn_drop = attn_drop
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, qkv: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, _, c = qkv.shape
        h, w = hw
        hs, ws = {-1: (h, w), 0: (h, self.split), 1: (self.split, w)}[self.idx]
        ph, pw = -h % hs, -w % ws
        grid = qkv.reshape(b, h, w, 3 * c)
        if ph or pw:
            grid = F.pad(grid, (0, 0, 0, pw, 0, ph))
        hp, wp = h + ph, w + pw
        nh, nw = hp // hs, wp // ws
        # (B, nh, hs, nw, ws, 3, heads, d) -> (3, B·nW, heads, hs·ws, d)
        heads, d = self.num_heads, c // self.num_heads
        win = grid.reshape(b, nh, hs, nw, ws, 3, heads, d).permute(5, 0, 1, 3, 6, 2, 4, 7)
        win = win.reshape(3, b * nh * nw, heads, hs, ws, d)
        q, k, v = (t.flatten(2, 3) for t in win.unbind(0))
        lepe = self.get_v(v.transpose(-1, -2).reshape(-1, c, hs, ws))
        lepe = lepe.reshape(-1, heads, d, hs * ws).transpose(-1, -2)
        mask = None
        if ph or pw:
            valid = torch.zeros(hp, wp, dtype=torch.bool, device=qkv.device)
            valid[:h, :w] = True
            valid = valid.reshape(nh, hs, nw, ws).permute(0, 2, 1, 3).reshape(nh * nw, 1, 1, hs * ws)
            mask = valid.repeat(b, 1, 1, 1)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0)
        x = x + lepe  # (B·nW, heads, hs·ws, d)
        x = x.reshape(b, nh, nw, heads, hs, ws, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hp, wp, c)
        return x[:, :h, :w].reshape(b, n, c)


class CSWinBlock(nn.Module):
    """CSWin block (keys ``qkv norm1 proj attns mlp norm2``): one branch over the map, or two stripe branches."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        resolution: tuple[int, int],
        attn: str,
        split: int,
        last_stage: bool,
        mlp_ratio: float,
        prepbn_step: int,
        ln_eps: float,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm1 = _make_norm("linear", dim, prepbn_step, ln_eps)
        one_branch = last_stage or min(resolution) == split
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(drop)
        if attn == "L":
            if not one_branch:
                raise ValueError(
                    f"SLA stripes are not supported: an 'L' stage needs split == map size, got split {split} "
                    f"for a {resolution} map (the released configs use 56-28 at 224)"
                )
            self.attns = nn.ModuleList([CSWinSimplifiedLinearAttention(dim, num_heads, resolution, kernel_size)])
        elif one_branch:
            self.attns = nn.ModuleList([LePEAttention(dim, num_heads, -1, split, attn_drop)])
        else:
            self.attns = nn.ModuleList(LePEAttention(dim // 2, num_heads // 2, i, split, attn_drop) for i in range(2))
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.norm2 = _make_norm("linear", dim, prepbn_step, ln_eps)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, c)
        if len(self.attns) == 2:
            y = torch.cat([self.attns[0](qkv[..., : c // 2], hw), self.attns[1](qkv[..., c // 2 :], hw)], dim=2)
        else:
            y = self.attns[0](qkv, hw)
        x = x + self.drop_path(self.proj_drop(self.proj(y)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def reparameterize(self) -> None:
        _fold_norm_into(self, "norm1", ("qkv",))
        _fold_norm_into(self, "norm2", ("mlp.fc1",))


class MergeBlock(nn.Module):
    """3×3 stride-2 conv (``conv``) between stages, then the token ``norm``."""

    def __init__(self, dim: int, out_dim: int, prepbn_step: int, ln_eps: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, 2, 1)
        self.norm = _make_norm("linear", out_dim, prepbn_step, ln_eps)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.conv(_to_nchw(x, hw))
        hw = (x.shape[2], x.shape[3])
        return self.norm(x.flatten(2).transpose(1, 2)), hw

    def reparameterize(self) -> None:
        if isinstance(self.norm, _FOLDABLE):
            fold_affine_after_conv(self.conv, *norm_affine(self.norm))
            self.norm = nn.Identity()


class _Tokens(nn.Module):
    """``(B, C, H, W) -> (B, H·W, C)`` (the official stem's parameter-free ``Rearrange``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


class ConvEmbed(nn.Sequential):
    """CSWin stem ``stage1_conv_embed``: 7×7 stride-4 conv, flatten, token norm (indices 0, 1, 2)."""

    def reparameterize(self) -> None:
        if isinstance(self[2], _FOLDABLE):
            fold_affine_after_conv(self[0], *norm_affine(self[2]))
            self[2] = nn.Identity()


class SlabCSWin(_SlabBase):
    """CSWin Transformer with PRepBN and SLA stages (``attn_kinds`` ``"LLSS"``).

    ``forward_features`` returns the normalised stage-4 tokens ``(B, N, C)``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 64,
        depths: Sequence[int] = (2, 4, 18, 1),
        num_heads: Sequence[int] = (2, 4, 8, 16),
        split_sizes: Sequence[int] = (1, 2, 7, 7),
        la_split_sizes: Sequence[int] = (56, 28, 14, 7),
        attn_kinds: str | Sequence[str] = "LLSS",
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        prepbn_step: int = 120000,
        ln_eps: float = 1e-5,
        kernel_size: int = 5,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        head_drop_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self._check_pool(global_pool)
        num_stages = len(depths)
        if num_stages != 4:
            raise ValueError(f"depths must have 4 entries (CSWin stages), got {list(depths)}")
        kinds = _parse_kinds(attn_kinds, num_stages)
        img = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.in_chans = in_chans
        self.head_drop = head_drop_rate
        self.num_features = self.head_hidden_size = embed_dim * 2 ** (num_stages - 1)
        self.grad_checkpointing = False
        self.stage1_conv_embed = ConvEmbed(
            nn.Conv2d(in_chans, embed_dim, 7, 4, 2), _Tokens(), _make_norm("linear", embed_dim, prepbn_step, ln_eps)
        )
        dpr = _dpr(drop_path_rate, sum(depths))
        self.feature_info = []
        self.params_without_grad = []
        dim = embed_dim
        for i in range(num_stages):
            if i:
                setattr(self, f"merge{i}", MergeBlock(dim, dim * 2, prepbn_step, ln_eps))
                dim *= 2
            res = (img[0] // 4 // 2**i, img[1] // 4 // 2**i)
            split = la_split_sizes[i] if kinds[i] == "L" else split_sizes[i]
            start = sum(depths[:i])
            blocks = nn.ModuleList(
                CSWinBlock(
                    dim,
                    num_heads[i],
                    res,
                    kinds[i],
                    split,
                    i == num_stages - 1,
                    mlp_ratio,
                    prepbn_step,
                    ln_eps,
                    qkv_bias,
                    drop_rate,
                    attn_drop_rate,
                    dpr[start + j],
                    kernel_size,
                )
                for j in range(depths[i])
            )
            setattr(self, f"stage{i + 1}", blocks)
            if kinds[i] == "L":
                self.params_without_grad += [f"stage{i + 1}.{j}.attns.0.scale" for j in range(depths[i])]
            self.feature_info.append({"num_chs": dim, "reduction": 4 * 2**i, "module": f"stage{i + 1}"})
        self.norm = _make_norm("linear", dim, prepbn_step, ln_eps)
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        self.num_stages = num_stages
        self.apply(self._init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()  # the official list names ``pos_embed``/``cls_token``, which CSWin does not have

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {
            "stem": r"^stage1_conv_embed",
            "blocks": r"^(?:stage|merge)(\d+)"
            if coarse
            else [(r"^stage(\d+)\.(\d+)", None), (r"^merge(\d+)", (0,)), (r"^norm", (99999,))],
        }

    def _stage(self, i: int, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        if i:
            x, hw = getattr(self, f"merge{i}")(x, hw)
        for block in getattr(self, f"stage{i + 1}"):
            x = self._run(block, x, hw)
        return x, hw

    def _stem(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        check_image_input(x, self.in_chans)
        y = self.stage1_conv_embed[0](x)
        hw = (y.shape[2], y.shape[3])
        return self.stage1_conv_embed[2](self.stage1_conv_embed[1](y)), hw

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, hw = self._stem(x)
        for i in range(self.num_stages):
            x, hw = self._stage(i, x, hw)
        return self.norm(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (before the next merge) as NCHW maps at strides 4–32 (``norm``: final norm on stage 4)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        x, hw = self._stem(x)
        last = max_index if (stop_early or intermediates_only) else self.num_stages - 1
        intermediates = []
        for i in range(last + 1):
            x, hw = self._stage(i, x, hw)
            if i in take_indices:
                y = self.norm(x) if (norm and i == self.num_stages - 1) else x
                intermediates.append(_to_nchw(y, hw))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        for i in range(max_index + 1, self.num_stages):
            delattr(self, f"stage{i + 1}")
            delattr(self, f"merge{i}")
        self.num_stages = max_index + 1
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


# ---------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------
_RECOMPUTED = ("attn_mask", "relative_position_index")
_OWN_IF_MISSING = (".warm", ".iter", ".total_step", "num_batches_tracked", *_RECOMPUTED)


def _square(n: int) -> tuple[int, int]:
    s = math.isqrt(n)
    if s * s != n:
        raise ValueError(f"cannot resize a positional encoding of {n} tokens: not a square grid")
    return s, s


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official SLAB checkpoint → this model (the keys are the same).

    Unwraps a training dict (``model`` entry, a pickled yacs config beside it) and a ``module.`` prefix; takes
    ``attn_mask``/``relative_position_index`` from the model (the official loader re-creates them too) and the
    model's own LinearNorm counters / BN ``num_batches_tracked`` where a file dropped them; resizes
    ``positional_encoding`` and ``pos_embed`` to a model built for another ``img_size`` (bicubic, as the official
    loader; PVT's ``pos_embed`` bilinear as its forward).
    """
    state_dict = unwrap_checkpoint(state_dict)
    own = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key in own and key.endswith(_RECOMPUTED):
            value = own[key]
        elif key in own and value.shape != own[key].shape and value.dim() == 3:
            leaf = key.rsplit(".", 1)[-1]
            prefix = getattr(model, "num_prefix_tokens", 0) if leaf == "pos_embed" else 0
            if leaf == "positional_encoding" or leaf.startswith("pos_embed"):
                mode = "bilinear" if isinstance(model, SlabPVT) else "bicubic"
                src = _square(value.shape[1] - prefix)
                dst = _square(own[key].shape[1] - prefix)
                body = _resize_tokens(value[:, prefix:], src, dst, mode)
                value = torch.cat((value[:, :prefix], body), dim=1)
        out[key] = value
    for key, value in own.items():
        if key not in out and key.endswith(_OWN_IF_MISSING):
            out[key] = value
    return out


def _create(cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    # every stage (hierarchical) or every block (DeiT), as feature_info lists them
    default_out = tuple(range(kwargs.get("depth", 12))) if cls is SlabDeiT else (0, 1, 2, 3)
    out_indices = kwargs.pop("out_indices", default_out)
    return build_linzoo_model(
        cls,
        variant,
        pretrained,
        filter_fn=checkpoint_filter_fn,
        feature_cfg={"out_indices": out_indices, "feature_cls": "getter"},
        **kwargs,
    )


_LICENSE = "unknown (the official SLAB repository has no LICENSE file)"


def _cfg(name: str, **kwargs: Any) -> dict[str, Any]:
    cfg = base_cfg(
        name,
        crop_pct=0.875,
        paper_name="SLAB: Efficient Transformers with Simplified Linear Attention and Progressive "
        "Re-parameterized Batch Normalization",
        paper_ids="arXiv:2405.11582",
        origin_url="https://github.com/xinghaochen/SLAB",
        license=_LICENSE,
        custom_load=True,
        **kwargs,
    )
    cfg["license"] = _LICENSE
    return cfg


_DEIT = {"first_conv": "patch_embed.proj", "pool_size": (14, 14)}
_PVT = {"first_conv": "patch_embed1.proj"}
_SWIN = {"first_conv": "patch_embed.proj"}
_CSWIN = {"first_conv": "stage1_conv_embed.0"}

default_cfgs = generate_default_cfgs(
    {
        "slab_deit_t.in1k": _cfg("slab_deit_t", **_DEIT),
        "slab_deit_s.in1k": _cfg("slab_deit_s", **_DEIT),
        "deit_t_prepbn.in1k": _cfg("deit_t_prepbn", **_DEIT),
        "deit_s_prepbn.in1k": _cfg("deit_s_prepbn", **_DEIT),
        "slab_pvt_t.in1k": _cfg("slab_pvt_t", **_PVT),
        "slab_pvt_s.untrained": _cfg("slab_pvt_s", **_PVT),
        "slab_pvt_m.untrained": _cfg("slab_pvt_m", **_PVT),
        "pvt_t_prepbn.in1k": _cfg("pvt_t_prepbn", **_PVT),
        "pvt_s_prepbn.in1k": _cfg("pvt_s_prepbn", **_PVT),
        "pvt_m_prepbn.in1k": _cfg("pvt_m_prepbn", **_PVT),
        "slab_swin_t.in1k": _cfg("slab_swin_t", **_SWIN),
        "slab_swin_s.in1k": _cfg("slab_swin_s", **_SWIN),
        "slab_swin_b.untrained": _cfg("slab_swin_b", **_SWIN),
        "swin_t_prepbn.in1k": _cfg("swin_t_prepbn", **_SWIN),
        "slab_cswin_t.in1k": _cfg("slab_cswin_t", **_CSWIN),
        "slab_cswin_s.untrained": _cfg("slab_cswin_s", **_CSWIN),
    }
)


# ---------------------------------------------------------------------------------------------------------------
# entrypoints (published ImageNet-1k top-1 from the official README; "-" where none was released)
# ---------------------------------------------------------------------------------------------------------------
def _deit(variant: str, pretrained: bool, args: dict[str, Any], kwargs: dict[str, Any]) -> SlabDeiT:
    return _create(SlabDeiT, variant, pretrained, **dict(args, **kwargs))


@register_model
def slab_deit_t(pretrained: bool = False, **kwargs: Any) -> SlabDeiT:
    """SLAB-DeiT-T: SLA + LinearNorm (60k steps), 6.2 M params, 74.3 % top-1."""
    args = dict(embed_dim=192, num_heads=3, attn="linear", norm="linear", prepbn_step=60000)
    return _deit("slab_deit_t", pretrained, args, kwargs)


@register_model
def slab_deit_s(pretrained: bool = False, **kwargs: Any) -> SlabDeiT:
    """SLAB-DeiT-S: SLA + LinearNorm (60k steps), 23.0 M params, 80.0 % top-1."""
    args = dict(embed_dim=384, num_heads=6, attn="linear", norm="linear", prepbn_step=60000)
    return _deit("slab_deit_s", pretrained, args, kwargs)


@register_model
def deit_t_prepbn(pretrained: bool = False, **kwargs: Any) -> SlabDeiT:
    """DeiT-T with plain RepBN (no LN phase, as released), softmax attention, 5.7 M params, 73.6 % top-1."""
    args = dict(embed_dim=192, num_heads=3, attn="softmax", norm="repbn")
    return _deit("deit_t_prepbn", pretrained, args, kwargs)


@register_model
def deit_s_prepbn(pretrained: bool = False, **kwargs: Any) -> SlabDeiT:
    """DeiT-S with LinearNorm (300k steps), softmax attention, 22.1 M params, 80.2 % top-1."""
    args = dict(embed_dim=384, num_heads=6, attn="softmax", norm="linear", prepbn_step=300000)
    return _deit("deit_s_prepbn", pretrained, args, kwargs)


def _pvt(variant: str, pretrained: bool, depths: tuple[int, ...], kinds: str, kwargs: dict[str, Any]) -> SlabPVT:
    args = dict(depths=depths, attn_kinds=kinds, prepbn_step=300000)
    return _create(SlabPVT, variant, pretrained, **dict(args, **kwargs))


@register_model
def slab_pvt_t(pretrained: bool = False, **kwargs: Any) -> SlabPVT:
    """SLAB-PVT-T: SLA in every stage, 12.2 M params, 76.5 % top-1."""
    return _pvt("slab_pvt_t", pretrained, (2, 2, 2, 2), "LLLL", kwargs)


@register_model
def slab_pvt_s(pretrained: bool = False, **kwargs: Any) -> SlabPVT:
    """SLAB-PVT-S: 21.7 M params (config released, no checkpoint)."""
    return _pvt("slab_pvt_s", pretrained, (3, 4, 6, 3), "LLLL", dict({"drop_path_rate": 0.1}, **kwargs))


@register_model
def slab_pvt_m(pretrained: bool = False, **kwargs: Any) -> SlabPVT:
    """SLAB-PVT-M: 37.3 M params (config released, no checkpoint)."""
    return _pvt("slab_pvt_m", pretrained, (3, 4, 18, 3), "LLLL", dict({"drop_path_rate": 0.3}, **kwargs))


@register_model
def pvt_t_prepbn(pretrained: bool = False, **kwargs: Any) -> SlabPVT:
    """PVT-T with PRepBN, softmax + spatial reduction, 13.2 M params, 76.0 % top-1."""
    return _pvt("pvt_t_prepbn", pretrained, (2, 2, 2, 2), "SSSS", kwargs)


@register_model
def pvt_s_prepbn(pretrained: bool = False, **kwargs: Any) -> SlabPVT:
    """PVT-S with PRepBN, 24.5 M params, 80.1 % top-1."""
    return _pvt("pvt_s_prepbn", pretrained, (3, 4, 6, 3), "SSSS", dict({"drop_path_rate": 0.1}, **kwargs))


@register_model
def pvt_m_prepbn(pretrained: bool = False, **kwargs: Any) -> SlabPVT:
    """PVT-M with PRepBN, 44.3 M params, 81.7 % top-1."""
    return _pvt("pvt_m_prepbn", pretrained, (3, 4, 18, 3), "SSSS", dict({"drop_path_rate": 0.3}, **kwargs))


def _swin(variant: str, pretrained: bool, args: dict[str, Any], kwargs: dict[str, Any]) -> SlabSwin:
    return _create(SlabSwin, variant, pretrained, **dict(args, **kwargs))


@register_model
def slab_swin_t(pretrained: bool = False, **kwargs: Any) -> SlabSwin:
    """SLAB-Swin-T: SLA (stages 1–2) + window softmax, LinearNorm (60k steps), 29.2 M params, 81.8 % top-1."""
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2)
    return _swin("slab_swin_t", pretrained, args, kwargs)


@register_model
def slab_swin_s(pretrained: bool = False, **kwargs: Any) -> SlabSwin:
    """SLAB-Swin-S: 50.6 M params, 83.6 % top-1."""
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3)
    return _swin("slab_swin_s", pretrained, args, kwargs)


@register_model
def slab_swin_b(pretrained: bool = False, **kwargs: Any) -> SlabSwin:
    """SLAB-Swin-B: 89.0 M params (config released, no checkpoint)."""
    args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5)
    return _swin("slab_swin_b", pretrained, args, kwargs)


@register_model
def swin_t_prepbn(pretrained: bool = False, **kwargs: Any) -> SlabSwin:
    """Swin-T with plain RepBN (as released), window softmax everywhere, 28.3 M params, 81.4 % top-1."""
    args = dict(
        embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), attn_kinds="SSSS", norm="repbn", drop_path_rate=0.1
    )
    return _swin("swin_t_prepbn", pretrained, args, kwargs)


@register_model
def slab_cswin_t(pretrained: bool = False, **kwargs: Any) -> SlabCSWin:
    """SLAB-CSWin-T: SLA (stages 1–2) + LePE stripes, LinearNorm (120k steps), 21.2 M params, 82.8 % top-1."""
    args = dict(depths=(2, 4, 18, 1), drop_path_rate=0.1)
    return _create(SlabCSWin, "slab_cswin_t", pretrained, **dict(args, **kwargs))


@register_model
def slab_cswin_s(pretrained: bool = False, **kwargs: Any) -> SlabCSWin:
    """SLAB-CSWin-S: 35.5 M params (config released, no checkpoint)."""
    args = dict(depths=(2, 4, 32, 2), drop_path_rate=0.3)
    return _create(SlabCSWin, "slab_cswin_s", pretrained, **dict(args, **kwargs))
