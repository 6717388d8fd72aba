"""VAN: Visual Attention Network with Large Kernel Attention (Guo et al., arXiv 2202.09741).

Re-implemented for timm from the paper and the facts of the official code
(github.com/Visual-Attention-Network/VAN-Classification @ e19779b5, ``models/van.py``). The state-dict
layout equals the official one, so the published checkpoints load without renaming.

Large Kernel Attention (paper eq. 2-3) on a channels-first map ``u`` (B, C, H, W)::

    A = Conv1x1(DWConv7x7_dilation3(DWConv5x5(u)))         # a 21x21 receptive field, O(C·HW) cost
    LKA(u) = u ⊙ A

Block (all NCHW, BatchNorm block norms, per-channel layer scale γ)::

    Attention(x) = proj_2(LKA(GELU(proj_1(x)))) + x         # the attention module's own shortcut
    x = x + γ1 ⊙ Attention(BN1(x))
    x = x + γ2 ⊙ fc2(GELU(DWConv3x3(fc1(BN2(x)))))

Every stage ends with a LayerNorm over channels. No permutes or copies on the hot path (the depthwise large-kernel
convolutions); the convolution weights are channels-last by default (``channels_last=True``), so the whole network
runs channels-last whatever the input's memory format (the outputs are ordinary ``(B, C, H, W)`` tensors in
channels-last strides); the stage-end LayerNorm (:class:`StageNorm`) normalises the NHWC view, which is copy-free in
channels-last memory, and returns the memory format it was given. Any input size works: every convolution pads so
that a stage's output is ``ceil(H / stride)``.

Speed (same function, fewer kernels; the state dict is unchanged): with eval-mode BatchNorms every block folds
BN1 / BN2 into the 1x1 convolutions after them, conv_spatial's bias into conv1, and the attention's inner
shortcut and γ1 into one ``addcmul``; patch embeddings fold their BatchNorm into the strided convolution. The
folded weights are computed per call while autograd records and cached (already in the autocast dtype) for
grad-free inference. In channels-last memory the 1x1 convolutions run as ``F.linear`` GEMMs with the bias in
the epilogue (:mod:`linzoo.vision.layers.folding`, :func:`~linzoo.vision.layers.fused.conv1x1`). Training
mode runs the modules as written. The depthwise convolutions go through :func:`linzoo.kernels.depthwise_conv2d`
(``dwconv``): on CUDA its fused Triton kernel runs the dilated 7×7 (cuDNN: 1–13 % of the memory floor) and, for
inference, the MLP's 3×3 with its GELU; the other cases stay on cuDNN (docs/benchmarks/depthwise_conv.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, SelectAdaptivePool2d, calculate_drop_path_rates, to_ntuple, trunc_normal_
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from ._builder import base_cfg, build_linzoo_model, check_image_input, load_pretrained_file, unwrap_checkpoint
from .layers.folding import (
    DerivedTensorCache,
    at_least_fp32,
    bn_scale_shift,
    bn_uses_running_stats,
    fold_bn_after_conv,
    fold_bn_before_conv,
)
from .layers.fused import conv1x1, dwconv, layer_scale_add

__all__ = ["VAN", "checkpoint_filter_fn"]


class LKA(nn.Module):
    """Large Kernel Attention: ``u ⊙ Conv1x1(DWConv7x7_d3(DWConv5x5(u)))`` on ``(B, C, H, W)``."""

    def __init__(self, dim: int, **dd: Any) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, **dd)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3, **dd)
        self.conv1 = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * conv1x1(dwconv(dwconv(x, self.conv0), self.conv_spatial), self.conv1.weight, self.conv1.bias)


class SpatialAttention(nn.Module):
    """The attention branch: ``proj_2(LKA(GELU(proj_1(x)))) + x`` (the official module's inner shortcut)."""

    def __init__(self, dim: int, act_layer: type[nn.Module] = nn.GELU, **dd: Any) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1, **dd)
        self.activation = act_layer()
        self.spatial_gating_unit = LKA(dim, **dd)
        self.proj_2 = nn.Conv2d(dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.activation(conv1x1(x, self.proj_1.weight, self.proj_1.bias))
        return conv1x1(self.spatial_gating_unit(u), self.proj_2.weight, self.proj_2.bias) + x


class DWConv(nn.Module):
    """3x3 depthwise convolution (kept as its own module for the official ``mlp.dwconv.dwconv`` key)."""

    def __init__(self, dim: int, **dd: Any) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dwconv(x)


class ConvMlp(nn.Module):
    """``fc2(drop(GELU(DWConv3x3(fc1(x)))))`` with 1x1 convolutions on ``(B, C, H, W)``.

    timm's ``ConvMlp`` has no depthwise conv between the two projections, hence this small module.
    """

    def __init__(
        self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0, **dd: Any
    ) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1, **dd)
        self.dwconv = DWConv(hidden, **dd)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden, dim, 1, **dd)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = conv1x1(x, self.fc1.weight, self.fc1.bias)
        if _is_exact_gelu(self.act):  # the depthwise conv, its bias and the GELU in one pass
            x = dwconv(x, self.dwconv.dwconv, activation="gelu")
        else:
            x = self.act(self.dwconv(x))
        x = self.drop(x)
        return self.drop(conv1x1(x, self.fc2.weight, self.fc2.bias))


def _conv(x: torch.Tensor, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``conv``'s geometry (stride, padding, dilation, groups) with the given weight and bias."""
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def _is_exact_gelu(act: nn.Module) -> bool:
    """True for ``nn.GELU()`` (erf form), the activation the fused depthwise convolution computes."""
    return type(act) is nn.GELU and act.approximate == "none"


# Entries of VANBlock._fold() that feed convolutions (weight, bias): under autocast the cache stores them in the
# autocast dtype, the cast autocast would otherwise repeat on every call. The residual factors stay as they are.
_BLOCK_CAST = ("p1_w", "p1_b", "c0_w", "c0_b", "cs_w", "c1_w", "c1_b", "p2_w", "p2_b", "f1_w", "f1_b", "dw_w", "dw_b")
_BLOCK_CAST += ("f2_w", "f2_b")


class VANBlock(nn.Module):
    """``x + γ1 ⊙ Attention(BN1(x))`` then ``x + γ2 ⊙ MLP(BN2(x))``, on ``(B, C, H, W)``.

    With both BatchNorms in eval mode (running statistics) the block runs a folded form of the same function
    (:meth:`_forward_folded`); in training mode it runs the modules as written. The state dict is the same.
    """

    def __init__(
        self,
        dim: int,
        mlp_ratio: float = 4.0,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        ls_init_value: float = 1e-2,
        act_layer: type[nn.Module] = nn.GELU,
        **dd: Any,
    ) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim, **dd)
        self.attn = SpatialAttention(dim, act_layer, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.BatchNorm2d(dim, **dd)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer, proj_drop, **dd)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), float(ls_init_value), **dd))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), float(ls_init_value), **dd))
        self._fold_cache = DerivedTensorCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        drop_path_active = self.training and not isinstance(self.drop_path, nn.Identity)
        if bn_uses_running_stats(self.norm1) and bn_uses_running_stats(self.norm2) and not drop_path_active:
            return self._forward_folded(x)
        # x + DropPath(γ ⊙ y) with timm's DropPath draws (layer_scale_add picks mul + add while autograd records)
        g1, g2 = self.layer_scale_1.view(-1, 1, 1), self.layer_scale_2.view(-1, 1, 1)
        p = self.drop_path.drop_prob if isinstance(self.drop_path, DropPath) else 0.0
        keep = self.drop_path.scale_by_keep if isinstance(self.drop_path, DropPath) else True
        x = layer_scale_add(x, self.attn(self.norm1(x)), g1, p, self.training, keep)
        return layer_scale_add(x, self.mlp(self.norm2(x)), g2, p, self.training, keep)

    def _fold(self) -> dict[str, torch.Tensor]:
        """The block's weights with the eval BatchNorms, the inner shortcut and γ1 folded in (computed in fp32).

        With ``BN_i(x) = s_i ⊙ x + t_i``:

        - ``proj_1(BN1(x)) = proj_1'(x)`` and ``fc1(BN2(x)) = fc1'(x)`` (:func:`fold_bn_before_conv`);
        - ``conv1(conv_spatial(y))``: conv_spatial's bias ``c`` passes through the 1×1 ``conv1``, so conv_spatial
          runs without bias and ``conv1`` gets ``b + W c``;
        - ``x + γ1 ⊙ (proj_2(z) + BN1(x)) = (1 + γ1 s1) ⊙ x + proj_2'(z)`` with ``proj_2' = γ1 ⊙ proj_2`` and bias
          ``γ1 ⊙ (b + t1)``: the attention's inner shortcut and the layer-scale residual become one ``addcmul``.
        """
        a, lka, mlp = self.attn, self.attn.spatial_gating_unit, self.mlp
        dtype = self.layer_scale_1.dtype

        f = at_least_fp32
        s1, t1 = bn_scale_shift(self.norm1)
        s2, t2 = bn_scale_shift(self.norm2)
        g1 = f(self.layer_scale_1)
        p1_w, p1_b = fold_bn_before_conv(s1, t1, f(a.proj_1.weight), f(a.proj_1.bias))
        f1_w, f1_b = fold_bn_before_conv(s2, t2, f(mlp.fc1.weight), f(mlp.fc1.bias))
        c1_b = torch.addmv(f(lka.conv1.bias), f(lka.conv1.weight).flatten(1), f(lka.conv_spatial.bias))
        p2_w = f(a.proj_2.weight) * g1.view(-1, 1, 1, 1)
        p2_b = g1 * (f(a.proj_2.bias) + t1)
        out = dict(
            p1_w=p1_w,
            p1_b=p1_b,
            c0_w=lka.conv0.weight,
            c0_b=lka.conv0.bias,
            cs_w=lka.conv_spatial.weight,
            c1_w=lka.conv1.weight,
            c1_b=c1_b,
            p2_w=p2_w,
            p2_b=p2_b,
            res1=torch.addcmul(torch.ones_like(g1), g1, s1).view(-1, 1, 1),
            f1_w=f1_w,
            f1_b=f1_b,
            dw_w=mlp.dwconv.dwconv.weight,
            dw_b=mlp.dwconv.dwconv.bias,
            f2_w=mlp.fc2.weight,
            f2_b=mlp.fc2.bias,
            g2=self.layer_scale_2.view(-1, 1, 1),
        )
        return {k: v.to(dtype) for k, v in out.items()}

    def _forward_folded(self, x: torch.Tensor) -> torch.Tensor:
        """The block with eval BatchNorms, computed from :meth:`_fold` (cached between grad-free calls)."""
        sources = [*self.parameters(), *self.norm1.buffers(), *self.norm2.buffers()]
        p = self._fold_cache.get(sources, self._fold, _BLOCK_CAST, x.device.type)
        a, lka, mlp = self.attn, self.attn.spatial_gating_unit, self.mlp
        u = a.activation(conv1x1(x, p["p1_w"], p["p1_b"]))
        attn = dwconv(dwconv(u, lka.conv0, p["c0_w"], p["c0_b"]), lka.conv_spatial, p["cs_w"], None)
        attn = u * conv1x1(attn, p["c1_w"], p["c1_b"])
        x = torch.addcmul(conv1x1(attn, p["p2_w"], p["p2_b"]), x, p["res1"])
        h = conv1x1(x, p["f1_w"], p["f1_b"])
        if _is_exact_gelu(mlp.act):
            h = mlp.drop(dwconv(h, mlp.dwconv.dwconv, p["dw_w"], p["dw_b"], activation="gelu"))
        else:
            h = mlp.drop(mlp.act(dwconv(h, mlp.dwconv.dwconv, p["dw_w"], p["dw_b"])))
        return torch.addcmul(x, p["g2"], mlp.drop(conv1x1(h, p["f2_w"], p["f2_b"])))


class OverlapPatchEmbed(nn.Module):
    """Strided convolution (padding ``k // 2``, so the output is ``ceil(H / stride)``) + BatchNorm.

    An eval-mode BatchNorm is folded into the convolution (one kernel less, same function).
    """

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, stride: int, **dd: Any) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=stride, padding=patch_size // 2, **dd)
        self.norm = nn.BatchNorm2d(embed_dim, **dd)
        self._fold_cache = DerivedTensorCache()

    def _fold(self) -> dict[str, torch.Tensor]:
        scale, shift = bn_scale_shift(self.norm)
        w = self.proj.weight
        w_f, b_f = fold_bn_after_conv(scale, shift, at_least_fp32(w), at_least_fp32(self.proj.bias))
        return {"w": w_f.to(w.dtype), "b": b_f.to(w.dtype)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not bn_uses_running_stats(self.norm):
            return self.norm(self.proj(x))
        sources = [*self.parameters(), *self.norm.buffers()]
        p = self._fold_cache.get(sources, self._fold, ("w", "b"), x.device.type)
        return _conv(x, self.proj, p["w"], p["b"])


class StageNorm(nn.LayerNorm):
    """LayerNorm over C of a ``(B, C, H, W)`` map that keeps the input's memory format.

    The normalised axis must be innermost for ``F.layer_norm``: in channels-last memory the NHWC view already
    is, so the permutes are free. timm's ``LayerNorm2d`` computes the same but always returns channels-last
    memory, which would switch an NCHW network to channels-last convolutions from stage 2 on; here NCHW input
    gives NCHW output, so the layout the user picked holds for the whole network.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        y = y.permute(0, 3, 1, 2)
        return y.contiguous() if x.is_contiguous() else y


class VAN(nn.Module):
    """Visual Attention Network (4 stages, strides 4/8/16/32).

    Attributes ``patch_embed{i}``, ``block{i}`` and ``norm{i}`` (i = 1..4) mirror the official layout.
    ``drop_rate`` is the classifier dropout (timm convention); ``proj_drop_rate`` is the MLP dropout the
    official code calls ``drop_rate``. Both are 0 in every published recipe.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: Sequence[int] = (64, 128, 256, 512),
        depths: Sequence[int] = (3, 4, 6, 3),
        mlp_ratios: float | Sequence[float] = (8.0, 8.0, 4.0, 4.0),
        ls_init_value: float = 1e-2,
        norm_eps: float = 1e-6,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        channels_last: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        num_stages = len(depths)
        if len(embed_dims) != num_stages:
            raise ValueError(f"embed_dims must have one entry per stage ({num_stages}), got {tuple(embed_dims)}")
        if global_pool not in ("avg", "max", "avgmax", "catavgmax", ""):
            raise ValueError(f"global_pool must be 'avg', 'max', 'avgmax', 'catavgmax' or '', got {global_pool!r}")
        mlp_ratios = to_ntuple(num_stages)(mlp_ratios)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_stages = num_stages
        self.depths = tuple(depths)
        self.grad_checkpointing = False
        self.feature_info: list[dict[str, Any]] = []

        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))  # per block, 0 -> rate (also on meta)
        cur = 0
        for i in range(num_stages):
            in_dim = in_chans if i == 0 else embed_dims[i - 1]
            embed = OverlapPatchEmbed(in_dim, embed_dims[i], 7 if i == 0 else 3, 4 if i == 0 else 2, **dd)
            blocks = nn.Sequential(
                *[
                    VANBlock(embed_dims[i], mlp_ratios[i], proj_drop_rate, dpr[cur + j], ls_init_value, act_layer, **dd)
                    for j in range(depths[i])
                ]
            )
            cur += depths[i]
            setattr(self, f"patch_embed{i + 1}", embed)
            setattr(self, f"block{i + 1}", blocks)
            setattr(self, f"norm{i + 1}", StageNorm(embed_dims[i], eps=norm_eps, **dd))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=4 * 2**i, module=f"norm{i + 1}"))

        self.num_features = self.head_hidden_size = embed_dims[-1]
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head_drop = nn.Dropout(drop_rate)
        pooled = self.num_features * self.global_pool.feat_mult()
        self.head = nn.Linear(pooled, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        if channels_last:
            # Convolution weights in channels-last memory, so any input runs NHWC from the first convolution on
            # (cuDNN picks the layout from the weight too; loading a state dict copies into these strides).
            # Measured on the H100 (docs/benchmarks/models.md, VAN-B2, bf16): training 1.32x and 224-px inference
            # 1.10x the NCHW model, whose depthwise-conv backward (native NCHW kernels) dominated the step;
            # 1024-px inference within 2 %. ``channels_last=False`` keeps NCHW.
            self.to(memory_format=torch.channels_last)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The official initialisation: trunc-normal linears, fan-out normal convolutions.
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # --- timm API -----------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^patch_embed1\.",
            blocks=r"^(?:patch_embed|block|norm)(\d+)"
            if coarse
            else [
                (r"^patch_embed(\d+)\.", (0,)),
                (r"^block(\d+)\.(\d+)", None),
                (r"^norm(\d+)\.", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        pooled = self.num_features * self.global_pool.feat_mult()
        w = self.patch_embed1.proj.weight  # the device and dtype the new classifier takes
        self.head = nn.Linear(pooled, num_classes, device=w.device, dtype=w.dtype) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self._init_weights(self.head)

    def load_pretrained(self, path: str) -> None:
        """Load an official training checkpoint (weights under ``state_dict``) or a converted state dict."""
        load_pretrained_file(self, path, checkpoint_filter_fn, state_dict_key="state_dict")

    # --- forward ------------------------------------------------------------------------------------------
    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, f"patch_embed{i + 1}")(x)
        blocks = getattr(self, f"block{i + 1}")
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq(blocks, x)
        else:
            x = blocks(x)
        return getattr(self, f"norm{i + 1}")(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (after each stage's LayerNorm), ``(B, C_i, ceil(H / 2^(i+2)), ceil(W / 2^(i+2)))``.

        Args:
            indices: take the last n stages if an int, all if None, else the listed stage indices.
            norm: accepted for the timm API; every stage already ends with its own norm.
            stop_early: stop after the last requested stage.
            output_fmt: only ``"NCHW"``.
            intermediates_only: return only the list of intermediates.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        check_image_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last = max_index if (stop_early or intermediates_only) else self.num_stages - 1
        intermediates = []
        for i in range(last + 1):
            x = self._stage(i, x)
            if i in take_indices:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last requested one (and the head); returns the taken indices."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        prune_end = max_index < self.num_stages - 1
        for i in range(max_index + 1, self.num_stages):
            for name in (f"patch_embed{i + 1}", f"block{i + 1}", f"norm{i + 1}"):
                delattr(self, name)
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        self.num_stages = max_index + 1
        self.feature_info = self.feature_info[: max_index + 1]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> normalised last-stage map ``(B, C_4, ceil(H/32), ceil(W/32))``."""
        check_image_input(x, self.in_chans)
        for i in range(self.num_stages):
            x = self._stage(i, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official VAN checkpoint -> this model. The layouts are equal; this only unwraps a training checkpoint
    (``{"state_dict": ..., "optimizer": ..., "args": ...}``) and drops a DDP ``module.`` prefix."""
    return unwrap_checkpoint(state_dict, containers=("state_dict",))


def _create_van(variant: str, pretrained: bool = False, **kwargs: Any) -> VAN:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_linzoo_model(
        VAN,
        variant,
        pretrained,
        filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(name: str, **kwargs: Any) -> dict[str, Any]:
    return base_cfg(
        name,
        first_conv="patch_embed1.proj",
        license="apache-2.0",
        paper_name="Visual Attention Network",
        paper_ids="arXiv:2202.09741",
        origin_url="https://github.com/Visual-Attention-Network/VAN-Classification",
        **kwargs,
    )


# Published ImageNet-1k top-1 at 224 (README): B0 75.4, B1 81.1, B2 82.8, B3 83.9 (params 4.1/13.9/26.6/44.8 M,
# GFLOPs 0.9/2.5/5.0/9.0). B4-B6 have no released ImageNet-1k weights in the official repository.
default_cfgs = generate_default_cfgs(
    {
        "van_b0.in1k": _cfg("van_b0"),
        "van_b1.in1k": _cfg("van_b1"),
        "van_b2.in1k": _cfg("van_b2"),
        "van_b3.in1k": _cfg("van_b3"),
        "van_b4": _cfg("van_b4"),
        "van_b5": _cfg("van_b5"),
        "van_b6": _cfg("van_b6"),
    }
)


@register_model
def van_b0(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B0 (VAN-Tiny): dims 32/64/160/256, depths 3/3/5/2; 4.1 M params, 75.4 % top-1."""
    args = dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2), mlp_ratios=(8, 8, 4, 4))
    return _create_van("van_b0", pretrained, **dict(args, **kwargs))


@register_model
def van_b1(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B1 (VAN-Small): dims 64/128/320/512, depths 2/2/4/2; 13.9 M params, 81.1 % top-1."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 4, 2), mlp_ratios=(8, 8, 4, 4))
    return _create_van("van_b1", pretrained, **dict(args, **kwargs))


@register_model
def van_b2(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B2 (VAN-Base): dims 64/128/320/512, depths 3/3/12/3; 26.6 M params, 82.8 % top-1."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 3, 12, 3), mlp_ratios=(8, 8, 4, 4))
    return _create_van("van_b2", pretrained, **dict(args, **kwargs))


@register_model
def van_b3(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B3 (VAN-Large): dims 64/128/320/512, depths 3/5/27/3; 44.8 M params, 83.9 % top-1."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 27, 3), mlp_ratios=(8, 8, 4, 4))
    return _create_van("van_b3", pretrained, **dict(args, **kwargs))


@register_model
def van_b4(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B4: dims 64/128/320/512, depths 3/6/40/3; 60.3 M params (no released ImageNet-1k weights)."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3), mlp_ratios=(8, 8, 4, 4))
    return _create_van("van_b4", pretrained, **dict(args, **kwargs))


@register_model
def van_b5(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B5: dims 96/192/480/768, depths 3/3/24/3; 90.0 M params (no released ImageNet-1k weights)."""
    args = dict(embed_dims=(96, 192, 480, 768), depths=(3, 3, 24, 3), mlp_ratios=(8, 8, 4, 4))
    return _create_van("van_b5", pretrained, **dict(args, **kwargs))


@register_model
def van_b6(pretrained: bool = False, **kwargs: Any) -> VAN:
    """VAN-B6: dims 96/192/384/768, depths 6/6/90/6; 199.8 M params (no released ImageNet-1k weights)."""
    args = dict(embed_dims=(96, 192, 384, 768), depths=(6, 6, 90, 6), mlp_ratios=(8, 8, 4, 4))
    return _create_van("van_b6", pretrained, **dict(args, **kwargs))
