"""InLine: injective linear attention with local modeling, on DeiT, PVT, Swin and CSwin backbones.

Paper: "Bridging the Divide: Reconsidering Softmax and Linear Attention" (NeurIPS 2024), Han et al.,
https://arxiv.org/abs/2412.06590. Official code: https://github.com/LeapLabTHU/InLine
(models/inline_{deit,pvt,swin,cswin}.py @ e463a6f4); re-implemented here, not copied.

InLine attention (per head, head dim d, s = d^-½, n tokens; paper Eq. 5 with the s/n factor made explicit):

    out_i = (s/n) q_iᵀ Σ_j k_j v_jᵀ + (1 − s q_i·k̄) v̄   (k̄, v̄: token means)

i.e. the attention weights ``s q_i·k_j/n − mean_j'(s q_i·k_j')/n + 1/n`` sum to one without a division,
which makes the map injective. It runs through ``linzoo.kernels.linear_attention(normalizer="injective")``
(the fused Triton kernel on GPU). A local term is added: each channel of v, laid out on the 2-D grid, is
convolved with its own 3×3 kernel predicted from the token mean of the attention input by
``residual = Conv1d(C→C, groups=heads) → GELU → Conv1d(C→9C, groups=heads)`` (paper Sec. 5.2).

The four families keep the official parameter names, so ``state_dict()`` equals the official checkpoints
key for key (the Swin ``relative_position_index`` / ``attn_mask`` buffers included, at the default
resolution). Differences from the official code, all invisible at the published resolution:

- any input size: DeiT and PVT resample their absolute position embeddings (timm's
  ``resample_abs_pos_embed``; PVT bilinear without antialias, as its official forward does), patch
  embeddings pad to a multiple of the patch size, InLine blocks are always global over the stage map
  (the official Swin/CSwin configs set the InLine window to the stage resolution for exactly this), Swin
  softmax windows and CSwin stripes pad the map and mask the padded keys, and shift masks are built for the
  actual size;
- features: ``forward_intermediates`` / ``features_only`` (strides 4, 8, 16, 32; DeiT: every block, 16).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, PatchEmbed, resample_abs_pos_embed, resize_rel_pos_bias_table, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models.swin_transformer import PatchMerging
from torch import nn
from torch.utils.checkpoint import checkpoint

from linzoo.kernels import linear_attention, window_attention_2d

from ._builder import base_cfg, build_linzoo_model, check_image_input, load_pretrained_file, unwrap_checkpoint

__all__ = ["InLineCSwin", "InLineDeiT", "InLinePVT", "InLineSwin", "checkpoint_filter_fn"]

_MASK_VALUE = -100.0  # Swin's additive mask value (exp(-100) vanishes in float32 like -inf)


# --------------------------------------------------------------------------------------------------
# InLine attention
# --------------------------------------------------------------------------------------------------
def _local_residual(groups: int, dim: int, **dd: Any) -> nn.Sequential:
    """Kernel predictor of the local term: mean token ``(B, C, 1)`` -> ``(B, 9C, 1)`` (keys ``residual.0/2``)."""
    return nn.Sequential(
        nn.Conv1d(dim, dim, 1, groups=groups, **dd),
        nn.GELU(),
        nn.Conv1d(dim, dim * 9, 1, groups=groups, **dd),
    )


def dynamic_local_conv(v: torch.Tensor, grid: tuple[int, int], kernels: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel 3×3 convolution of v on its grid (zero padding, no bias).

    Args:
        v: ``(B, heads, H·W, d)`` values; channel ``c = head·d + i``.
        grid: ``(H, W)``.
        kernels: ``(B, 9C, 1)`` or ``(B, 9C)``; channel c uses ``kernels[:, 9c:9c+9]`` as a row-major 3×3.

    Returns:
        ``(B, H·W, C)``.
    """
    b, heads, n, d = v.shape
    c = heads * d
    h, w = grid
    img = v.transpose(-1, -2).reshape(1, b * c, h, w)
    out = F.conv2d(img, kernels.reshape(b * c, 1, 3, 3).to(v.dtype), None, padding=1, groups=b * c)
    return out.reshape(b, c, n).transpose(1, 2)


def _heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(B, N, C)`` -> ``(B, heads, N, C / heads)``."""
    b, n, c = t.shape
    return t.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


class InLineAttention(nn.Module):
    """InLine attention over all tokens of a ``(B, P + H·W, C)`` sequence (P prefix tokens, e.g. DeiT's cls).

    ``qkv`` is one Linear (DeiT, Swin) or ``q`` + ``kv`` (PVT, ``split_qkv=True``). The injective linear
    attention spans all P + H·W tokens; the dynamic 3×3 local term (kernels from the mean of the input tokens,
    prefix included) is added to the H·W grid tokens only. Then ``proj``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        split_qkv: bool = False,
        num_prefix_tokens: int = 0,
        proj_drop: float = 0.0,
        **dd: Any,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.num_prefix_tokens = num_prefix_tokens
        self.split_qkv = split_qkv
        if split_qkv:
            self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias, **dd)
        else:
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.residual = _local_residual(num_heads, dim, **dd)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``x (B, P + H·W, C)``, ``grid = (H, W)`` -> ``(B, P + H·W, C)``."""
        if self.split_qkv:
            q = self.q(x)
            k, v = self.kv(x).chunk(2, dim=-1)
        else:
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (_heads(t, self.num_heads) for t in (q, k, v))
        out = linear_attention(q, k, v, feature_map="identity", normalizer="injective")
        out = out.transpose(1, 2).flatten(2)
        p = self.num_prefix_tokens
        local = dynamic_local_conv(v[:, :, p:], grid, self.residual(x.mean(dim=1).unsqueeze(-1)))
        out = torch.cat((out[:, :p], out[:, p:] + local), dim=1) if p else out + local
        return self.proj_drop(self.proj(out))


class TokenBlock(nn.Module):
    """Pre-norm transformer block on tokens: ``x += Attn(LN(x)); x += MLP(LN(x))`` (DeiT and PVT)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        norm_layer: Callable[..., nn.Module],
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
        split_qkv: bool = False,
        num_prefix_tokens: int = 0,
        **dd: Any,
    ) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim, **dd)
        self.attn = InLineAttention(
            dim, num_heads, split_qkv=split_qkv, num_prefix_tokens=num_prefix_tokens, proj_drop=proj_drop, **dd
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, **dd)

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), grid))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _run_blocks(blocks: Sequence[nn.Module], x: torch.Tensor, grad_ckpt: bool, *args: Any) -> torch.Tensor:
    for block in blocks:
        if grad_ckpt and not torch.jit.is_scripting():
            x = checkpoint(block, x, *args, use_reentrant=False)
        else:
            x = block(x, *args)
    return x


def _check_pool(global_pool: str, allowed: tuple[str, ...]) -> str:
    if global_pool not in allowed:
        raise ValueError(f"global_pool must be one of {allowed}, got {global_pool!r}")
    return global_pool


# --------------------------------------------------------------------------------------------------
# Shared timm-API mixin of the four backbones
# --------------------------------------------------------------------------------------------------
class _InLineBase(nn.Module):
    num_classes: int
    num_features: int
    in_chans: int
    global_pool: str
    drop_rate: float
    head: nn.Module
    _pools: tuple[str, ...] = ("avg", "")

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            self.global_pool = _check_pool(global_pool, self._pools)
        self.num_classes = num_classes
        ref = next(self.parameters())
        if num_classes > 0:
            self.head = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            self._init_weights(self.head)
        else:
            self.head = nn.Identity()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def load_pretrained(self, checkpoint_path: str) -> None:
        """Load an official InLine checkpoint (or a linzoo safetensors file) into this model."""
        load_pretrained_file(self, checkpoint_path, checkpoint_filter_fn)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``x``: ``(B, H, W, C)`` from ``forward_features``; avg pool -> dropout -> ``head``."""
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))
        x = F.dropout(x, self.drop_rate, self.training) if self.drop_rate > 0.0 else x
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2).contiguous()


def _check_fmt(output_fmt: str) -> None:
    if output_fmt not in ("NCHW", "NHWC"):
        raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")


# --------------------------------------------------------------------------------------------------
# InLine-DeiT
# --------------------------------------------------------------------------------------------------
class InLineDeiT(_InLineBase):
    """InLine-DeiT: a DeiT (cls token + absolute position embedding) with InLine attention in every block.

    The cls token takes part in the linear attention; the local 3×3 term acts on the patch grid only.
    ``forward_features`` returns the normalised tokens ``(B, 1 + H·W, C)``.
    """

    _pools = ("token", "avg", "")

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = _check_pool(global_pool, self._pools)
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1
        self.grad_checkpointing = False
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        # dynamic_img_pad: any input size (padded to a multiple of the patch size)
        self.patch_embed = PatchEmbed(
            img_size, patch_size, in_chans, embed_dim, output_fmt="NHWC", strict_img_size=False,
            dynamic_img_pad=True, **dd,
        )  # fmt: skip
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim, **dd))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim, **dd))
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.Sequential(
            *[
                TokenBlock(
                    embed_dim, num_heads, mlp_ratio, norm_layer, dpr[i], proj_drop_rate, num_prefix_tokens=1, **dd
                )
                for i in range(depth)
            ]
        )
        self.norm = norm_layer(embed_dim, **dd)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        reduction = self.patch_embed.patch_size[0]
        self.feature_info = [
            {"module": f"blocks.{i}", "num_chs": embed_dim, "reduction": reduction} for i in range(depth)
        ]
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
        x = self.patch_embed(x)  # (B, H, W, C)
        b, h, w, c = x.shape
        pos = resample_abs_pos_embed(self.pos_embed, (h, w), self.patch_embed.grid_size, num_prefix_tokens=1)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x.reshape(b, h * w, c)), dim=1)
        return self.pos_drop(x + pos), (h, w)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, grid = self._embed(x)
        return self.norm(_run_blocks(self.blocks, x, self.grad_checkpointing, grid))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``x (B, 1 + N, C)``: cls token (``token``), patch-token mean (``avg``) or all tokens (``''``)."""
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, 1:].mean(dim=1)
        x = F.dropout(x, self.drop_rate, self.training) if self.drop_rate > 0.0 else x
        return x if pre_logits else self.head(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Patch tokens after the selected blocks as ``(B, C, H/16, W/16)`` maps (``norm``: final LN applied)."""
        _check_fmt(output_fmt)
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, (h, w) = self._embed(x)
        blocks = self.blocks[: max_index + 1] if (stop_early or intermediates_only) else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            x = _run_blocks([block], x, self.grad_checkpointing, (h, w))
            if i in take_indices:
                y = (self.norm(x) if norm else x)[:, 1:].reshape(x.shape[0], h, w, -1)
                intermediates.append(_nchw(y) if output_fmt == "NCHW" else y)
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


# --------------------------------------------------------------------------------------------------
# InLine-PVT
# --------------------------------------------------------------------------------------------------
class InLinePVT(_InLineBase):
    """InLine-PVT: PVT-v1 pyramid (no spatial reduction: every stage attends globally with InLine).

    Stage i: ``patch_embed{i}`` (conv 4×4 s4, then 2×2 s2; each + LayerNorm) -> ``+ pos_embed{i}`` -> blocks.
    No cls token and no final norm; ``forward_features`` returns the stage-4 map ``(B, H/32, W/32, C)``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (2, 4, 10, 16),
        mlp_ratios: Sequence[float] = (8, 8, 4, 4),
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        for name, value in (("embed_dims", embed_dims), ("num_heads", num_heads), ("mlp_ratios", mlp_ratios)):
            if len(value) != num_stages:
                raise ValueError(f"{name} must have one entry per stage ({num_stages}), got {list(value)}")
        dd = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = _check_pool(global_pool, self._pools)
        self.drop_rate = drop_rate
        self.num_stages = num_stages
        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.grad_checkpointing = False
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.feature_info = []
        grid = img_size
        for i in range(num_stages):
            patch = 4 if i == 0 else 2
            embed = PatchEmbed(
                grid, patch, in_chans if i == 0 else embed_dims[i - 1], embed_dims[i], norm_layer=nn.LayerNorm,
                output_fmt="NHWC", strict_img_size=False, dynamic_img_pad=True, **dd,
            )  # fmt: skip
            grid = embed.grid_size
            start = sum(depths[:i])
            blocks = nn.ModuleList(
                TokenBlock(
                    embed_dims[i],
                    num_heads[i],
                    mlp_ratios[i],
                    norm_layer,
                    dpr[start + j],
                    proj_drop_rate,
                    split_qkv=True,
                    **dd,
                )  # fmt: skip
                for j in range(depths[i])
            )
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, grid[0] * grid[1], embed_dims[i], **dd)))
            setattr(self, f"block{i + 1}", blocks)
            self.feature_info.append({"num_chs": embed_dims[i], "reduction": 4 * 2**i, "module": f"block{i + 1}"})
        self.pos_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[-1], num_classes, **dd) if num_classes > 0 else nn.Identity()
        for i in range(num_stages):
            trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)
        self.apply(self._init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # the official recipe decays the position embeddings (its no_weight_decay names only 'cls_token')
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {
            "stem": r"^patch_embed1|^pos_embed1",
            "blocks": r"^(?:block|patch_embed|pos_embed)(\d+)"
            if coarse
            else [(r"^block(\d+)\.(\d+)", None), (r"^(?:patch_embed|pos_embed)(\d+)", (0,))],
        }

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Stage ``i`` (0-based) on an NCHW map (image or previous stage) -> ``(B, H, W, C)``."""
        x = getattr(self, f"patch_embed{i + 1}")(x)
        b, h, w, c = x.shape
        embed = getattr(self, f"patch_embed{i + 1}")
        # official: F.interpolate(bilinear, align_corners=False, no antialias) whenever the size differs
        pos = resample_abs_pos_embed(
            getattr(self, f"pos_embed{i + 1}"), (h, w), embed.grid_size, num_prefix_tokens=0,
            interpolation="bilinear", antialias=False,
        )  # fmt: skip
        x = self.pos_drop(x.reshape(b, h * w, c) + pos)
        x = _run_blocks(getattr(self, f"block{i + 1}"), x, self.grad_checkpointing, (h, w))
        return x.reshape(b, h, w, c)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans)
        for i in range(self.num_stages):
            x = self._stage(i, x if i == 0 else _nchw(x))
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
        """Stage outputs at strides 4, 8, 16, 32 (PVT has no final norm, so ``norm`` changes nothing)."""
        _check_fmt(output_fmt)
        check_image_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last = max_index if (stop_early or intermediates_only) else self.num_stages - 1
        intermediates = []
        for i in range(last + 1):
            x = self._stage(i, x if i == 0 else _nchw(x))
            if i in take_indices:
                intermediates.append(_nchw(x) if output_fmt == "NCHW" else x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        for i in range(max_index + 1, self.num_stages):
            for name in ("patch_embed", "pos_embed", "block"):
                delattr(self, f"{name}{i + 1}")
        self.num_stages = max_index + 1
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


# --------------------------------------------------------------------------------------------------
# InLine-Swin
# --------------------------------------------------------------------------------------------------
def _relative_position_index(window: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Swin's ``(w², w²)`` index into the ``((2w−1)², heads)`` bias table (row = Δy·(2w−1) + Δx, Δ = i − j)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return (rel[..., 0] * (2 * window - 1) + rel[..., 1]).to(device)


def swin_attn_mask(size: tuple[int, int], window: int, shift: int, device: Any = None) -> torch.Tensor:
    """Swin's additive shift mask ``(nW, w², w²)`` (0 / −100) for a ``size`` map (multiples of the window).

    Per axis the rolled map has three regions, [0, L−w), [L−w, L−s), [L−s, L); tokens of different regions
    in one window must not attend to each other. Only used for the persistent ``attn_mask`` buffer that the
    official checkpoints carry; the computation itself masks inside :func:`linzoo.kernels.window_attention_2d`.
    """
    hp, wp = size

    def region(length: int) -> torch.Tensor:
        pos = torch.arange(length, device=device)
        return (pos >= length - window).long() + (pos >= length - shift).long()

    ids = region(hp)[:, None] * 3 + region(wp)[None, :]
    ids = ids.reshape(hp // window, window, wp // window, window).transpose(1, 2).reshape(-1, window * window)
    same = ids[:, :, None] == ids[:, None, :]
    return torch.zeros(same.shape, device=device).masked_fill(~same, _MASK_VALUE)


class WindowAttention(nn.Module):
    """Swin (shifted) window softmax attention with relative position bias, on ``(B, H, W, C)`` maps.

    Keys as in Swin: ``qkv``, ``proj``, ``relative_position_bias_table`` ``((2w−1)², heads)`` and the
    persistent ``relative_position_index`` buffer (kept so the state dict equals the official one; the
    kernel gathers the table with the same index). Runs through :func:`linzoo.kernels.window_attention_2d`
    (pad to the window, roll, mask, Triton on GPU); padded positions are never keys.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, proj_drop: float = 0.0, **dd: Any) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(dim, dim * 3, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads, **dd))
        self.register_buffer("relative_position_index", _relative_position_index(window_size, dd.get("device")))
        trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, shift: int) -> torch.Tensor:
        """``x (B, H, W, C)`` -> ``(B, H, W, C)``; windows of ``window_size``, cyclic ``shift``."""
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).reshape(b, h, w, 3, self.num_heads, c // self.num_heads).permute(3, 0, 4, 1, 2, 5)
        out = window_attention_2d(
            q, k, v, self.window_size, shift=shift, rpb=self.relative_position_bias_table, pad_mode="mask"
        )
        return self.proj_drop(self.proj(out.permute(0, 2, 3, 1, 4).reshape(b, h, w, c)))


class SwinBlock(nn.Module):
    """Swin block on ``(B, H, W, C)`` with either global InLine attention (``I``) or shifted windows (``S``).

    S blocks shift by half a window on odd block indices, but not when the map fits in one window (Swin's
    rule). ``attn_mask`` (persistent, only on shifted blocks) is the official buffer of the default
    resolution, kept for state-dict compatibility; the kernel builds the mask for the actual size.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kind: str,
        window_size: int,
        shift: bool,
        resolution: tuple[int, int],
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
        **dd: Any,
    ) -> None:
        super().__init__()
        if kind not in ("I", "S"):
            raise ValueError(f"kind must be 'I' (InLine) or 'S' (Swin window attention), got {kind!r}")
        self.kind = kind
        self.window_size = window_size
        self.shift = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(dim, **dd)
        if kind == "I":
            self.attn = InLineAttention(dim, num_heads, proj_drop=proj_drop, **dd)
        else:
            self.attn = WindowAttention(dim, num_heads, window_size, proj_drop=proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, **dd)
        mask = None
        if kind == "S" and self._shift_for(*resolution):
            padded = tuple(-(-r // window_size) * window_size for r in resolution)
            mask = swin_attn_mask(padded, window_size, self.shift, device=dd.get("device"))
        self.register_buffer("attn_mask", mask)

    def _shift_for(self, h: int, w: int) -> int:
        return self.shift if min(h, w) > self.window_size else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        y = self.norm1(x)
        if self.kind == "I":
            y = self.attn(y.reshape(b, h * w, c), (h, w)).reshape(b, h, w, c)
        else:
            y = self.attn(y, self._shift_for(h, w))
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def parse_swin_attn_type(attn_type: str, depths: Sequence[int]) -> list[list[str]]:
    """Official ``ATTN_TYPE`` strings -> per-block kinds: one letter per stage (I / S), ``M`` = mixed, and
    the trailing number after the stage letters = how many leading blocks of an ``M`` stage are InLine.

    >>> parse_swin_attn_type("IIMS2", (2, 2, 4, 2))
    [['I', 'I'], ['I', 'I'], ['I', 'I', 'S', 'S'], ['S', 'S']]
    """
    n = len(depths)
    letters, tail = attn_type[:n], attn_type[n:]
    if len(letters) != n or any(ch not in "ISM" for ch in letters) or ("M" in letters and not tail.isdigit()):
        raise ValueError(f"attn_type must be {n} letters from I/S/M (+ the InLine count for M), got {attn_type!r}")
    out = []
    for ch, depth in zip(letters, depths):
        if ch == "M":
            out.append(["I" if j < int(tail) else "S" for j in range(depth)])
        else:
            out.append([ch] * depth)
    return out


class SwinStage(nn.Module):
    """Blocks of one resolution, then (except the last stage) ``downsample`` = Swin patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        kinds: Sequence[str],
        window_size: int,
        resolution: tuple[int, int],
        downsample: bool,
        mlp_ratio: float,
        drop_path: Sequence[float],
        proj_drop: float,
        **dd: Any,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(
                dim, num_heads, kinds[j], window_size, j % 2 == 1, resolution, mlp_ratio, drop_path[j], proj_drop, **dd
            )
            for j in range(depth)
        )
        self.downsample = PatchMerging(dim, 2 * dim, **dd) if downsample else nn.Identity()
        self.grad_checkpointing = False

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        return _run_blocks(self.blocks, x, self.grad_checkpointing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.forward_blocks(x))


class _StagedBase(_InLineBase):
    """forward_intermediates / prune for models with ``layers`` of ``forward_blocks`` + ``downsample``."""

    layers: nn.ModuleList
    norm: nn.Module

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding (+ position embedding) before the first stage: defined by each staged InLine model."""
        raise NotImplementedError(f"{type(self).__name__} must define _stem()")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans)
        x = self._stem(x)
        for stage in self.layers:
            x = stage(x)
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
        """Stage outputs (before each downsample) at strides 4, 8, 16, 32; ``norm``: final LN on the last stage."""
        _check_fmt(output_fmt)
        check_image_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        stages = self.layers[: max_index + 1] if (stop_early or intermediates_only) else self.layers
        x = self._stem(x)
        intermediates = []
        last = len(self.layers) - 1
        for i, stage in enumerate(stages):
            x = stage.forward_blocks(x)
            if i in take_indices:
                y = self.norm(x) if (norm and i == last) else x
                intermediates.append(_nchw(y) if output_fmt == "NCHW" else y)
            x = stage.downsample(x)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        self.layers[-1].downsample = nn.Identity()
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.layers:
            stage.grad_checkpointing = enable


class InLineSwin(_StagedBase):
    """InLine-Swin: Swin-T/S/B layout; per-block InLine (global) or shifted-window softmax attention.

    ``attn_type`` uses the official notation (``IIIS``, ``IISS``, ``IIMS2``). ``window_size`` is the softmax
    window (the official InLine ``WINDOW_SIZE`` of img/4 makes InLine global; ours always is).
    ``forward_features`` returns the final-normed stage-4 map ``(B, H/32, W/32, C)``.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        attn_type: str = "IIIS",
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        if len(num_heads) != num_stages:
            raise ValueError(f"num_heads must have one entry per stage ({num_stages}), got {list(num_heads)}")
        kinds = parse_swin_attn_type(attn_type, depths)
        dd = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = _check_pool(global_pool, self._pools)
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = embed_dim * 2 ** (num_stages - 1)
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed(
            img_size, 4, in_chans, embed_dim, norm_layer=nn.LayerNorm, output_fmt="NHWC", strict_img_size=False,
            dynamic_img_pad=True, **dd,
        )  # fmt: skip
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        res = self.patch_embed.grid_size
        self.layers = nn.ModuleList()
        self.feature_info = []
        for i in range(num_stages):
            start = sum(depths[:i])
            dim = embed_dim * 2**i
            self.layers.append(
                SwinStage(
                    dim,
                    depths[i],
                    num_heads[i],
                    kinds[i],
                    window_size,
                    res,
                    i < num_stages - 1,
                    mlp_ratio,
                    dpr[start : start + depths[i]],
                    proj_drop_rate,
                    **dd,
                )  # fmt: skip
            )
            self.feature_info.append({"num_chs": dim, "reduction": 4 * 2**i, "module": f"layers.{i}"})
            res = ((res[0] + 1) // 2, (res[1] + 1) // 2)
        self.norm = nn.LayerNorm(self.num_features, **dd)
        self.head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        return {"relative_position_bias_table"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {
            "stem": r"^patch_embed",
            "blocks": r"^layers\.(\d+)"
            if coarse
            else [
                (r"^layers\.(\d+)\.blocks\.(\d+)", None),
                (r"^layers\.(\d+)\.downsample", (0,)),
                (r"^norm", (99999,)),
            ],
        }

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos_drop(self.patch_embed(x))


# --------------------------------------------------------------------------------------------------
# InLine-CSwin
# --------------------------------------------------------------------------------------------------
class CSwinInLineAttention(nn.Module):
    """InLine branch of a CSwin block (global over the map): InLine(q, k, v) + dyn3×3(v) + LePE(v).

    ``get_v`` is CSwin's depthwise 3×3 LePE conv; the dynamic kernels come from ``x_mean``, the token mean of
    the block input *before* ``norm1`` (official CSwin variant).
    """

    def __init__(self, dim: int, num_heads: int, **dd: Any) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.get_v = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, **dd)
        self.residual = _local_residual(num_heads, dim, **dd)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int], x_mean: torch.Tensor
    ) -> torch.Tensor:
        """``q, k, v (B, H·W, C)``, ``x_mean (B, C)`` -> ``(B, H·W, C)``."""
        b, n, c = v.shape
        h, w = grid
        lepe = self.get_v(v.transpose(1, 2).reshape(b, c, h, w)).reshape(b, c, n).transpose(1, 2)
        q, k, v = (_heads(t, self.num_heads) for t in (q, k, v))
        out = linear_attention(q, k, v, feature_map="identity", normalizer="injective").transpose(1, 2).flatten(2)
        return out + dynamic_local_conv(v, grid, self.residual(x_mean.unsqueeze(-1))) + lepe


class LePEAttention(nn.Module):
    """CSwin's softmax attention in stripes (or globally) with the LePE depthwise 3×3 conv on v (``get_v``).

    ``stripe=None``: one window = the whole map. Otherwise ``axis=0`` splits the width into stripes of
    ``stripe`` columns (full height), ``axis=1`` the height into rows. The LePE conv runs inside each stripe
    (zero padding at stripe borders), as in CSwin. Maps that are not a multiple of the stripe are padded and
    the padded keys masked.
    """

    def __init__(self, dim: int, num_heads: int, axis: int = 0, stripe: int | None = None, **dd: Any) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.axis = axis
        self.stripe = stripe
        self.get_v = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, **dd)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``q, k, v (B, H·W, C)`` -> ``(B, H·W, C)``."""
        b, n, c = q.shape
        h, w = grid
        if self.stripe is None:
            ws_h, ws_w = h, w
        elif self.axis == 0:
            ws_h, ws_w = h, min(self.stripe, w)
        else:
            ws_h, ws_w = min(self.stripe, h), w
        hp, wp = -(-h // ws_h) * ws_h, -(-w // ws_w) * ws_w
        nh, nw = hp // ws_h, wp // ws_w

        def windows(t: torch.Tensor) -> torch.Tensor:  # (B, N, C) -> (B·nW, C, ws_h, ws_w)
            t = F.pad(t.reshape(b, h, w, c), (0, 0, 0, wp - w, 0, hp - h))
            t = t.reshape(b, nh, ws_h, nw, ws_w, c).permute(0, 1, 3, 5, 2, 4)
            return t.reshape(b * nh * nw, c, ws_h, ws_w)

        qw, kw, vw = windows(q), windows(k), windows(v)
        lepe = self.get_v(vw)

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B', C, ws_h, ws_w) -> (B', heads, T, d)
            return t.reshape(t.shape[0], self.num_heads, c // self.num_heads, -1).transpose(-1, -2)

        mask = None
        if (hp, wp) != (h, w):
            real = F.pad(torch.ones(h, w, dtype=torch.bool, device=q.device), (0, wp - w, 0, hp - h))
            real = real.reshape(nh, ws_h, nw, ws_w).permute(0, 2, 1, 3).reshape(nh * nw, 1, 1, ws_h * ws_w)
            mask = real.repeat(b, 1, 1, 1)
        out = F.scaled_dot_product_attention(heads(qw), heads(kw), heads(vw), attn_mask=mask) + heads(lepe)
        out = out.transpose(-1, -2).reshape(b, nh, nw, c, ws_h, ws_w).permute(0, 1, 4, 2, 5, 3)
        return out.reshape(b, hp, wp, c)[:, :h, :w].reshape(b, n, c)


class CSwinBlock(nn.Module):
    """CSwin block on ``(B, H, W, C)``: block-level ``qkv`` / ``proj``, attention branches in ``attns``.

    ``I``: one global InLine branch. ``S``: two LePE stripe branches over the channel halves (width stripes,
    then height stripes), or one global branch in the last stage (``last_stage``), as in CSwin.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kind: str,
        split_size: int,
        last_stage: bool,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        proj_drop: float = 0.0,
        **dd: Any,
    ) -> None:
        super().__init__()
        if kind not in ("I", "S"):
            raise ValueError(f"kind must be 'I' (InLine) or 'S' (CSwin LePE attention), got {kind!r}")
        self.kind = kind
        self.qkv = nn.Linear(dim, dim * 3, **dd)
        self.norm1 = nn.LayerNorm(dim, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)
        if kind == "I":
            self.attns = nn.ModuleList([CSwinInLineAttention(dim, num_heads, **dd)])
        elif last_stage:
            self.attns = nn.ModuleList([LePEAttention(dim, num_heads, stripe=None, **dd)])
        else:
            self.attns = nn.ModuleList(
                LePEAttention(dim // 2, num_heads // 2, axis=i, stripe=split_size, **dd) for i in range(2)
            )
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop, **dd)
        self.norm2 = nn.LayerNorm(dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        if self.kind == "I":
            y = self.attns[0](q, k, v, (h, w), x.mean(dim=1))
        elif len(self.attns) == 1:
            y = self.attns[0](q, k, v, (h, w))
        else:
            half = c // 2
            y = torch.cat(
                [
                    attn(q[..., sl], k[..., sl], v[..., sl], (h, w))
                    for attn, sl in zip(self.attns, (slice(0, half), slice(half, c)))
                ],
                dim=-1,
            )
        x = x + self.drop_path(self.proj_drop(self.proj(y)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.reshape(b, h, w, c)


class ConvMerge(nn.Module):
    """CSwin's ``Merge_Block``: conv 3×3 stride 2 (``conv``) + LayerNorm (``norm``), ``(B, H, W, C)`` in and out."""

    def __init__(self, dim: int, out_dim: int, **dd: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out_dim, 3, 2, 1, **dd)
        self.norm = nn.LayerNorm(out_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(_nchw(x)).permute(0, 2, 3, 1))


class _CSwinStem(nn.Module):
    """``stage1_conv_embed``: conv 7×7 stride 4 pad 2 (``.0``), tokens, LayerNorm (``.2``); keys as official."""

    def __init__(self, in_chans: int, dim: int, **dd: Any) -> None:
        super().__init__()
        self.add_module("0", nn.Conv2d(in_chans, dim, 7, 4, 2, **dd))
        self.add_module("1", nn.Identity())  # the official einops Rearrange (no parameters)
        self.add_module("2", nn.LayerNorm(dim, **dd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, "2")(getattr(self, "0")(x).permute(0, 2, 3, 1))


class _CSwinStage(nn.Module):
    """View of CSwin's flat ``stage{i}`` / ``merge{i}`` modules as one stage (no parameters of its own)."""

    def __init__(self, blocks: nn.ModuleList, downsample: nn.Module | None) -> None:
        super().__init__()
        self._parts = (blocks, downsample)  # a tuple: not registered, so the keys stay stage{i} / merge{i}
        self.grad_checkpointing = False

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        return _run_blocks(self._parts[0], x, self.grad_checkpointing)

    def downsample(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._parts[1] is None else self._parts[1](x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.forward_blocks(x))


class InLineCSwin(_StagedBase):
    """InLine-CSwin: CSwin layout; ``attn_types`` per stage (``I`` global InLine, ``S`` CSwin LePE stripes).

    Keys as official: ``stage1_conv_embed``, ``stage{1..4}``, ``merge{1..3}``, ``norm``, ``head``.
    ``forward_features`` returns the final-normed stage-4 map ``(B, H/32, W/32, C)``.
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
        split_size: Sequence[int] = (1, 2, 7, 7),
        attn_types: str | Sequence[str] = "IISS",
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        for name, value in (("num_heads", num_heads), ("split_size", split_size), ("attn_types", attn_types)):
            if len(value) != num_stages:
                raise ValueError(f"{name} must have one entry per stage ({num_stages}), got {list(value)}")
        if any(kind not in ("I", "S") for kind in attn_types):
            raise ValueError(f"attn_types must be letters I (InLine) / S (LePE), got {attn_types!r}")
        dd = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = _check_pool(global_pool, self._pools)
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = embed_dim * 2 ** (num_stages - 1)
        self.grad_checkpointing = False
        self.img_size = img_size  # kept for reference; every input size works
        self.stage1_conv_embed = _CSwinStem(in_chans, embed_dim, **dd)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.feature_info = []
        stages = []
        for i in range(num_stages):
            dim = embed_dim * 2**i
            start = sum(depths[:i])
            blocks = nn.ModuleList(
                CSwinBlock(
                    dim,
                    num_heads[i],
                    attn_types[i],
                    split_size[i],
                    i == num_stages - 1,
                    mlp_ratio,
                    dpr[start + j],
                    proj_drop_rate,
                    **dd,
                )  # fmt: skip
                for j in range(depths[i])
            )
            setattr(self, f"stage{i + 1}", blocks)
            merge = None
            if i < num_stages - 1:
                merge = ConvMerge(dim, 2 * dim, **dd)
                setattr(self, f"merge{i + 1}", merge)
            stages.append(_CSwinStage(blocks, merge))
            self.feature_info.append({"num_chs": dim, "reduction": 4 * 2**i, "module": f"stage{i + 1}"})
        self._stages = tuple(stages)
        self.norm = nn.LayerNorm(self.num_features, **dd)
        self.head = nn.Linear(self.num_features, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @property
    def layers(self) -> list[_CSwinStage]:  # type: ignore[override]
        return list(self._stages)

    @layers.setter
    def layers(self, stages: list[_CSwinStage]) -> None:
        for i in range(len(stages), len(self._stages)):
            delattr(self, f"stage{i + 1}")
            if hasattr(self, f"merge{i}"):
                delattr(self, f"merge{i}")
        self._stages = tuple(stages)

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take_indices, max_index = feature_take_indices(len(self._stages), indices)
        last = self._stages[max_index]
        self.layers = list(self._stages[: max_index + 1])
        self._stages = (*self._stages[:-1], _CSwinStage(last._parts[0], None))
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {
            "stem": r"^stage1_conv_embed",
            "blocks": r"^(?:stage|merge)(\d+)"
            if coarse
            else [(r"^stage(\d+)\.(\d+)", None), (r"^merge(\d+)", (0,)), (r"^norm", (99999,))],
        }

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage1_conv_embed(x)


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------
def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map an official InLine checkpoint onto ``model``.

    Unwraps training dicts (``model``; the pickled yacs ``config`` beside it is ignored), strips ``module.``,
    resamples position embeddings to the model's grid (DeiT bicubic, PVT bilinear as their official forwards),
    resizes Swin relative-position tables to another window, and takes the Swin ``relative_position_index``
    / ``attn_mask`` buffers from the model (they depend only on its window and default resolution).
    """
    state_dict = unwrap_checkpoint(state_dict, tensors_only=False)
    own = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if key.endswith(("relative_position_index", "attn_mask")):
            if key in own:
                out[key] = own[key]
            continue
        if key in own and value.shape != own[key].shape:
            if isinstance(model, InLineDeiT) and key == "pos_embed":
                value = resample_abs_pos_embed(value, model.patch_embed.grid_size, num_prefix_tokens=1)
            elif isinstance(model, InLinePVT) and key.startswith("pos_embed"):
                embed = getattr(model, "patch_embed" + key[len("pos_embed") :])
                value = resample_abs_pos_embed(
                    value, embed.grid_size, num_prefix_tokens=0, interpolation="bilinear", antialias=False
                )
            elif key.endswith("relative_position_bias_table"):
                win = int(math.isqrt(own[key].shape[0]) + 1) // 2
                value = resize_rel_pos_bias_table(value, new_window_size=(win, win), new_bias_shape=own[key].shape)
        out[key] = value
    for key in own:  # buffers absent from the file (e.g. a model with a shifted block where the file had none)
        if key.endswith(("relative_position_index", "attn_mask")) and key not in out:
            out[key] = own[key]
    return out


def _create(cls: type[nn.Module], variant: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    # default features: every block of DeiT (stride 16), the four stages (strides 4-32) of the others
    num_features = kwargs.get("depth", 12) if cls is InLineDeiT else len(kwargs.get("depths", (0,) * 4))
    out_indices = kwargs.pop("out_indices", tuple(range(num_features)))
    feature_cfg = {"feature_cls": "getter", "out_indices": out_indices}
    return build_linzoo_model(
        cls, variant, pretrained, filter_fn=checkpoint_filter_fn, feature_cfg=feature_cfg, **kwargs
    )


def _cfg(name: str, **kwargs: Any) -> dict[str, Any]:
    # Official eval (data/build.py): resize both sides to int(256/224·S) (aspect not kept), bicubic, center crop S.
    cfg = base_cfg(
        name,
        crop_mode="squash",
        paper_name="Bridging the Divide: Reconsidering Softmax and Linear Attention",
        paper_ids="arXiv:2412.06590",
        origin_url="https://github.com/LeapLabTHU/InLine",
        **kwargs,
    )
    return cfg


# published ImageNet-1k results (README; params from the code where the README differs, see the registry)
_DEIT = {"first_conv": "patch_embed.proj", "pool_size": None}
_PVT = {"first_conv": "patch_embed1.proj"}
_SWIN = {"first_conv": "patch_embed.proj"}
_CSWIN = {"first_conv": "stage1_conv_embed.0"}

default_cfgs = generate_default_cfgs(
    {
        "inline_deit_t.in1k": _cfg("inline_deit_t", **_DEIT),
        "inline_deit_s.in1k": _cfg("inline_deit_s", input_size=(3, 288, 288), **_DEIT),
        "inline_deit_b.in1k": _cfg("inline_deit_b", input_size=(3, 448, 448), **_DEIT),
        "inline_pvt_t.in1k": _cfg("inline_pvt_t", **_PVT),
        "inline_pvt_s.in1k": _cfg("inline_pvt_s", **_PVT),
        "inline_pvt_m.in1k": _cfg("inline_pvt_m", **_PVT),
        "inline_pvt_l.in1k": _cfg("inline_pvt_l", **_PVT),
        "inline_swin_t.in1k": _cfg("inline_swin_t", **_SWIN),
        "inline_swin_s.in1k": _cfg("inline_swin_s", **_SWIN),
        "inline_swin_b.in1k": _cfg("inline_swin_b", **_SWIN),
        # official 384 recipe: TEST.CROP False -> plain 384×384 resize (no weights published)
        "inline_swin_b_384": _cfg(
            "inline_swin_b_384", input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0, **_SWIN
        ),
        "inline_cswin_t.in1k": _cfg("inline_cswin_t", **_CSWIN),
        "inline_cswin_s.in1k": _cfg("inline_cswin_s", **_CSWIN),
        "inline_cswin_b.in1k": _cfg("inline_cswin_b", **_CSWIN),
        # no weights published; the repo's figure reports 85.7 top-1 at 384 (TEST.CROP True: 438 -> 384)
        "inline_cswin_b_384": _cfg("inline_cswin_b_384", input_size=(3, 384, 384), pool_size=(12, 12), **_CSWIN),
    }
)


def _deit(variant: str, pretrained: bool, img_size: int, **kwargs: Any) -> InLineDeiT:
    args = dict(img_size=img_size, patch_size=16, depth=12, mlp_ratio=4.0, drop_path_rate=0.1)
    return _create(InLineDeiT, variant, pretrained, **dict(args, **kwargs))


@register_model
def inline_deit_t(pretrained: bool = False, **kwargs: Any) -> InLineDeiT:
    """InLine-DeiT-T: 6.5 M params, 1.1 GFLOPs at 224, 74.5 % top-1."""
    return _deit("inline_deit_t", pretrained, 224, **dict(dict(embed_dim=192, num_heads=6), **kwargs))


@register_model
def inline_deit_s(pretrained: bool = False, **kwargs: Any) -> InLineDeiT:
    """InLine-DeiT-S (width 320, not DeiT-S's 384): 16.7 M params, 5.0 GFLOPs at 288, 80.2 % top-1."""
    return _deit("inline_deit_s", pretrained, 288, **dict(dict(embed_dim=320, num_heads=10), **kwargs))


@register_model
def inline_deit_b(pretrained: bool = False, **kwargs: Any) -> InLineDeiT:
    """InLine-DeiT-B (width 384): 23.8 M params, 17.2 GFLOPs at 448, 82.3 % top-1."""
    return _deit("inline_deit_b", pretrained, 448, **dict(dict(embed_dim=384, num_heads=12), **kwargs))


def _pvt(variant: str, pretrained: bool, depths: tuple[int, ...], drop_path_rate: float, **kwargs: Any) -> InLinePVT:
    args = dict(
        embed_dims=(64, 128, 320, 512), num_heads=(2, 4, 10, 16), mlp_ratios=(8, 8, 4, 4), depths=depths,
        drop_path_rate=drop_path_rate,
    )  # fmt: skip
    return _create(InLinePVT, variant, pretrained, **dict(args, **kwargs))


@register_model
def inline_pvt_t(pretrained: bool = False, **kwargs: Any) -> InLinePVT:
    """InLine-PVT-T: 12.0 M params, 2.0 GFLOPs, 78.2 % top-1."""
    return _pvt("inline_pvt_t", pretrained, (2, 2, 2, 2), 0.1, **kwargs)


@register_model
def inline_pvt_s(pretrained: bool = False, **kwargs: Any) -> InLinePVT:
    """InLine-PVT-S: 21.6 M params, 3.9 GFLOPs, 82.0 % top-1."""
    return _pvt("inline_pvt_s", pretrained, (3, 4, 6, 3), 0.1, **kwargs)


@register_model
def inline_pvt_m(pretrained: bool = False, **kwargs: Any) -> InLinePVT:
    """InLine-PVT-M: 37.6 M params, 6.9 GFLOPs, 83.2 % top-1."""
    return _pvt("inline_pvt_m", pretrained, (3, 4, 18, 3), 0.3, **kwargs)


@register_model
def inline_pvt_l(pretrained: bool = False, **kwargs: Any) -> InLinePVT:
    """InLine-PVT-L (official cfg ``inline_pvt_b.yaml``): 51.2 M params (README: 50.2 M), 10.2 GFLOPs, 83.6 %."""
    return _pvt("inline_pvt_l", pretrained, (3, 8, 27, 3), 0.3, **kwargs)


def _swin(variant: str, pretrained: bool, **kwargs: Any) -> InLineSwin:
    return _create(InLineSwin, variant, pretrained, **kwargs)


@register_model
def inline_swin_t(pretrained: bool = False, **kwargs: Any) -> InLineSwin:
    """InLine-Swin-T (``IIIS``): 29.2 M params (README: 30 M), 4.5 GFLOPs, 82.4 % top-1."""
    args = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), attn_type="IIIS", drop_path_rate=0.2)
    return _swin("inline_swin_t", pretrained, **dict(args, **kwargs))


@register_model
def inline_swin_s(pretrained: bool = False, **kwargs: Any) -> InLineSwin:
    """InLine-Swin-S (``IISS``): 49.8 M params (README: 50 M), 8.7 GFLOPs, 83.6 % top-1."""
    args = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), attn_type="IISS", drop_path_rate=0.3)
    return _swin("inline_swin_s", pretrained, **dict(args, **kwargs))


@register_model
def inline_swin_b(pretrained: bool = False, **kwargs: Any) -> InLineSwin:
    """InLine-Swin-B (``IIMS2``: stage 3 = 2 InLine + 16 window blocks): 88.4 M params, 15.4 GFLOPs, 84.1 %."""
    args = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), attn_type="IIMS2", drop_path_rate=0.5)
    return _swin("inline_swin_b", pretrained, **dict(args, **kwargs))


@register_model
def inline_swin_b_384(pretrained: bool = False, **kwargs: Any) -> InLineSwin:
    """InLine-Swin-B at 384 (official cfg only, window 12; no published weights): 88.5 M params."""
    args = dict(
        img_size=384, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), attn_type="IIMS2",
        window_size=12, drop_path_rate=0.5,
    )  # fmt: skip
    return _swin("inline_swin_b_384", pretrained, **dict(args, **kwargs))


def _cswin(variant: str, pretrained: bool, **kwargs: Any) -> InLineCSwin:
    return _create(InLineCSwin, variant, pretrained, **dict(dict(attn_types="IISS"), **kwargs))


@register_model
def inline_cswin_t(pretrained: bool = False, **kwargs: Any) -> InLineCSwin:
    """InLine-CSwin-T: 20.6 M params (README: 25 M), 4.3 GFLOPs, 83.2 % top-1."""
    args = dict(embed_dim=64, depths=(2, 4, 18, 1), num_heads=(2, 4, 8, 16), drop_path_rate=0.2)
    return _cswin("inline_cswin_t", pretrained, **dict(args, **kwargs))


@register_model
def inline_cswin_s(pretrained: bool = False, **kwargs: Any) -> InLineCSwin:
    """InLine-CSwin-S: 33.0 M params (README: 43 M), 6.8 GFLOPs, 83.8 % top-1."""
    args = dict(embed_dim=64, depths=(3, 6, 29, 2), num_heads=(2, 4, 8, 16), drop_path_rate=0.4)
    return _cswin("inline_cswin_s", pretrained, **dict(args, **kwargs))


@register_model
def inline_cswin_b(pretrained: bool = False, **kwargs: Any) -> InLineCSwin:
    """InLine-CSwin-B: 73.4 M params (README: 96 M), 14.9 GFLOPs, 84.5 % top-1."""
    args = dict(embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5)
    return _cswin("inline_cswin_b", pretrained, **dict(args, **kwargs))


@register_model
def inline_cswin_b_384(pretrained: bool = False, **kwargs: Any) -> InLineCSwin:
    """InLine-CSwin-B at 384 (official cfg only, stripes 12; no published weights): 73.4 M params."""
    args = dict(
        img_size=384, embed_dim=96, depths=(3, 6, 29, 2), num_heads=(4, 8, 16, 32), split_size=(1, 2, 12, 12),
        drop_path_rate=0.7,
    )  # fmt: skip
    return _cswin("inline_cswin_b_384", pretrained, **dict(args, **kwargs))
