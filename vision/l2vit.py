"""L²ViT: linear global attention + local window attention (Zheng et al., "The Linear Attention Resurrection
in Vision Transformer", arXiv 2501.16182).

Re-implemented for timm from the paper and the facts of the official code (github.com/ChuanyangZheng/L2ViT
@ fad0341c, ``classification/models/l2vit.py``); the state-dict layout equals the official one, so the
published checkpoints load without renaming.

Every stage alternates two blocks, starting with the local one (all depths are even):

- LWA (local window attention) block::

      x = x + DWConv3x3(x)                                   # CPE
      x = x + WinAttn(LN1(x))                                # 7x7 windows (12 for B-384), no shift, no bias
      x = x + DWConv3x3(x)                                   # second CPE
      x = x + MLP(LN2(x))

- LGA (linear global attention) block, paper eq. 5-7::

      x = x + DWConv3x3(x)
      x = x + LinAttn(LN1(x)),  LinAttn_i = τ_h · φ(q_i)ᵀ Σ_j φ(k_j) v_jᵀ / max(φ(q_i) · Σ_j φ(k_j), 100),  φ = ReLU
      x = x + LCM(LN3(x)),      LCM = DWConv7x7 → GELU → BatchNorm → DWConv7x7   (local concentration module)
      x = x + MLP(LN2(x))

Activations are kept as ``(B, H, W, C)`` (channels-last) tensors: LayerNorm, the projections and the MLP act on
the last dimension directly, and the depthwise convolutions see a ``permute`` view that *is* channels-last
memory, so no layout copies happen between blocks. The linear attention runs through
:func:`linzoo.kernels.linear_attention` and the window attention through
:func:`linzoo.kernels.window_attention_2d`. Any input size works: the stem pads the image to a multiple of 4,
each downsampling pads to even, and the window blocks pad to a multiple of the window (see
:class:`WindowAttention` for why the padding goes *before* the qkv projection).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, calculate_drop_path_rates, to_ntuple, trunc_normal_
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from linzoo.kernels import linear_attention, window_attention_2d

from ._builder import base_cfg, build_linzoo_model, check_image_input, load_pretrained_file, unwrap_checkpoint

__all__ = ["L2ViT", "checkpoint_filter_fn"]


def _nchw(x: torch.Tensor) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B, C, H, W)`` view (channels-last memory; convolutions keep that layout)."""
    return x.permute(0, 3, 1, 2)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, H, W, C)`` view."""
    return x.permute(0, 2, 3, 1)


class CPE(nn.Module):
    """Conditional position encoding ``x + DWConv3x3(x)`` on ``(B, H, W, C)``."""

    def __init__(self, dim: int, kernel_size: int = 3, **dd: Any) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + _nhwc(self.proj(_nchw(x)))


class WindowAttention(nn.Module):
    """Softmax attention inside non-overlapping ``window × window`` windows (no shift, no position bias).

    Input and output ``(B, H, W, C)``. As in the official code the (normalised) map is zero-padded at the
    bottom/right to a multiple of the window *before* the qkv projection, so padded positions become
    bias-only keys and values that take part in every border window's softmax; the output is cropped back.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True, **dd: Any) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.window_size = window_size
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        ws = self.window_size
        pad_h, pad_w = -H % ws, -W % ws
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        Hp, Wp = H + pad_h, W + pad_w
        qkv = self.qkv(x).reshape(B, Hp, Wp, 3, self.num_heads, C // self.num_heads).permute(3, 0, 4, 1, 2, 5)
        out = window_attention_2d(qkv[0], qkv[1], qkv[2], ws)  # (B, heads, Hp, Wp, d), scale d^-1/2
        out = out.permute(0, 2, 3, 1, 4).reshape(B, Hp, Wp, C)
        if pad_h or pad_w:
            out = out[:, :H, :W]
        return self.proj(out)  # per token, so cropping first is exact and cheaper


class LinearAttention(nn.Module):
    """Global linear attention over all ``H·W`` tokens of ``(B, H, W, C)``.

    ``out_i = τ_h φ(q_i)ᵀ (Σ_j φ(k_j) v_jᵀ) / max(φ(q_i)·Σ_j φ(k_j), 100)`` with φ = ReLU and a learnable
    per-head temperature ``τ`` (init ``d^-1/2``) on the numerator only; O(N·d²) per head.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, clamp_min: float = 100.0, **dd: Any) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.clamp_min = clamp_min
        head_dim = dim // num_heads
        self.temperature = nn.Parameter(torch.full((num_heads, 1, 1), head_dim**-0.5, **dd))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias, **dd)
        self.proj = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        N = H * W
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        out = linear_attention(
            qkv[0],
            qkv[1],
            qkv[2],
            feature_map="relu",
            normalizer="clamp",
            clamp_min=self.clamp_min,
            temperature=self.temperature.view(-1),
        )
        return self.proj(out.transpose(1, 2).reshape(B, H, W, C))


class LCM(nn.Module):
    """Local concentration module ``DWConv7x7 → GELU → BatchNorm2d → DWConv7x7`` on ``(B, H, W, C)``."""

    def __init__(self, dim: int, kernel_size: int = 7, act_layer: type[nn.Module] = nn.GELU, **dd: Any) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim, **dd)
        self.act = act_layer()
        self.bn = nn.BatchNorm2d(dim, **dd)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _nhwc(self.conv2(self.bn(self.act(self.conv1(_nchw(x))))))


class LWABlock(nn.Module):
    """Local window attention block (see the module docstring); ``(B, H, W, C)`` in and out."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        **dd: Any,
    ) -> None:
        super().__init__()
        self.cpe = nn.ModuleList([CPE(dim, **dd), CPE(dim, **dd)])
        self.norm1 = norm_layer(dim, **dd)
        self.attn = WindowAttention(dim, num_heads, window_size, qkv_bias, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe[0](x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = self.cpe[1](x)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class LGABlock(nn.Module):
    """Linear global attention block with the local concentration module; ``(B, H, W, C)`` in and out."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        **dd: Any,
    ) -> None:
        super().__init__()
        self.cpe = nn.ModuleList([CPE(dim, **dd)])
        self.norm1 = norm_layer(dim, **dd)
        self.attn = LinearAttention(dim, num_heads, qkv_bias, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=proj_drop, **dd)
        self.norm3 = norm_layer(dim, **dd)
        self.local_mp = LCM(dim, act_layer=act_layer, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cpe[0](x)
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.local_mp(self.norm3(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvStem(nn.Module):
    """Stride-4 stem: Conv3x3 s2 → BN → ReLU → Conv3x3 s2 → BN (``proj.proj.{0,1,3,4}`` official keys)."""

    def __init__(self, in_chans: int, dim: int, **dd: Any) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1, **dd),
            nn.BatchNorm2d(dim // 2, **dd),
            nn.ReLU(),
            nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1, **dd),
            nn.BatchNorm2d(dim, **dd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Stem(nn.Module):
    """Image ``(B, C_in, H, W)`` → tokens ``(B, ceil(H/4), ceil(W/4), C)``: zero-pad to a multiple of 4, conv
    stem, LayerNorm."""

    def __init__(self, in_chans: int, dim: int, norm_layer: type[nn.Module] = nn.LayerNorm, **dd: Any) -> None:
        super().__init__()
        self.proj = ConvStem(in_chans, dim, **dd)
        self.norm = norm_layer(dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h, pad_w = -x.shape[2] % 4, -x.shape[3] % 4
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return self.norm(_nhwc(self.proj(x)))


class Downsample(nn.Module):
    """``(B, H, W, C_in)`` → ``(B, ceil(H/2), ceil(W/2), C_out)``: LayerNorm, zero-pad to even, Conv2x2 s2."""

    def __init__(self, in_dim: int, out_dim: int, norm_layer: type[nn.Module] = nn.LayerNorm, **dd: Any) -> None:
        super().__init__()
        self.norm = norm_layer(in_dim, **dd)
        self.proj = nn.Conv2d(in_dim, out_dim, 2, stride=2, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        pad_h, pad_w = x.shape[1] % 2, x.shape[2] % 2
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        return _nhwc(self.proj(_nchw(x)))


class L2ViT(nn.Module):
    """L²ViT backbone and classifier (4 stages, strides 4/8/16/32).

    ``forward_features`` returns the final-normalised stage-4 map ``(B, C_4, ceil(H/32), ceil(W/32))`` (an
    NCHW view of channels-last memory); ``forward_head`` averages it and applies ``head``.
    ``drop_rate`` is the classifier dropout (timm convention; the official code has none), ``proj_drop_rate``
    the MLP dropout; both are 0 in the published recipes.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        mlp_ratio: float | Sequence[float] = 4.0,
        window_size: int = 7,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        head_init_scale: float = 1.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        num_stages = len(depths)
        for name, value in (("dims", dims), ("num_heads", num_heads)):
            if len(value) != num_stages:
                raise ValueError(f"{name} must have one entry per stage ({num_stages}), got {tuple(value)}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        if window_size < 1:
            raise ValueError(f"window_size must be a positive int, got {window_size}")
        dd = {"device": device, "dtype": dtype}
        mlp_ratios = to_ntuple(num_stages)(mlp_ratio)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.grad_checkpointing = False

        self.downsample_layers = nn.ModuleList(
            [Stem(in_chans, dims[0], **dd)] + [Downsample(dims[i - 1], dims[i], **dd) for i in range(1, num_stages)]
        )
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))  # per block, 0 -> rate (also on meta)
        self.stages = nn.ModuleList()
        self.feature_info: list[dict[str, Any]] = []
        cur = 0
        for i in range(num_stages):
            common = dict(
                dim=dims[i],
                num_heads=num_heads[i],
                mlp_ratio=mlp_ratios[i],
                qkv_bias=qkv_bias,
                proj_drop=proj_drop_rate,
            )
            blocks = [
                LWABlock(window_size=window_size, drop_path=dpr[cur + j], **common, **dd)
                if j % 2 == 0
                else LGABlock(drop_path=dpr[cur + j], **common, **dd)
                for j in range(depths[i])
            ]
            self.stages.append(nn.Sequential(*blocks))
            cur += depths[i]
            self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2**i, module=f"stages.{i}"))

        self.num_features = self.head_hidden_size = dims[-1]
        self.norm = nn.LayerNorm(dims[-1], **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        if num_classes > 0:
            with torch.no_grad():
                self.head.weight.mul_(head_init_scale)
                self.head.bias.mul_(head_init_scale)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # --- timm API -----------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # The official recipe exempts only 1-D parameters and biases from weight decay (timm's default rule);
        # the (heads, 1, 1) temperatures are 3-D and were decayed, so nothing is added here.
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^downsample_layers\.0\.",
            blocks=r"^(?:stages|downsample_layers)\.(\d+)"
            if coarse
            else [
                (r"^downsample_layers\.(\d+)\.", (0,)),
                (r"^stages\.(\d+)\.(\d+)", None),
                (r"^norm\.", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        w = self.downsample_layers[0].proj.proj[0].weight  # the device and dtype the new classifier takes
        self.head = (
            nn.Linear(self.head_hidden_size, num_classes, device=w.device, dtype=w.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        if num_classes > 0:
            self._init_weights(self.head)

    def load_pretrained(self, path: str) -> None:
        """Load an official checkpoint (raw weights under ``model``) or a converted state dict."""
        load_pretrained_file(self, path, checkpoint_filter_fn, state_dict_key="model")

    # --- forward ------------------------------------------------------------------------------------------
    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample_layers[i](x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages[i], x)
        return self.stages[i](x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs ``(B, C_i, ceil(H / 2^(i+2)), ceil(W / 2^(i+2)))`` (``output_fmt="NHWC"``: channels last).

        Args:
            indices: take the last n stages if an int, all if None, else the listed stage indices.
            norm: apply the final LayerNorm to the last stage's intermediate (the only one it fits).
            stop_early: stop after the last requested stage.
            output_fmt: ``"NCHW"`` or ``"NHWC"``.
            intermediates_only: return only the list of intermediates.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        check_image_input(x, self.in_chans)
        num_stages = len(self.stages)
        take_indices, max_index = feature_take_indices(num_stages, indices)
        last = max_index if (stop_early or intermediates_only) else num_stages - 1
        intermediates = []
        for i in range(last + 1):
            x = self._stage(i, x)
            if i in take_indices:
                feat = self.norm(x) if norm and i == num_stages - 1 else x
                intermediates.append(_nchw(feat) if output_fmt == "NCHW" else feat)
        if intermediates_only:
            return intermediates
        return _nchw(self.norm(x)), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last requested one (and the head / final norm); returns the taken indices."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        self.downsample_layers = self.downsample_layers[: max_index + 1]
        self.feature_info = self.feature_info[: max_index + 1]
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> normalised stage-4 map ``(B, C_4, ceil(H/32), ceil(W/32))``."""
        check_image_input(x, self.in_chans)
        for i in range(len(self.stages)):
            x = self._stage(i, x)
        return _nchw(self.norm(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official L²ViT checkpoint -> this model. The layouts are equal: this unwraps a training checkpoint
    (``{"model", "model_ema", "optimizer", "args", ...}``: the raw ``model`` copy, which the README's eval
    uses; pass ``model_ema`` yourself through ``load_pretrained_file(..., state_dict_key="model_ema")`` for the
    EMA copy) and drops ``module.`` (DDP) / ``backbone.`` (detection) prefixes."""
    return unwrap_checkpoint(state_dict, prefixes=("module.", "backbone."))


def _create_l2vit(variant: str, pretrained: bool = False, **kwargs: Any) -> L2ViT:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_linzoo_model(
        L2ViT,
        variant,
        pretrained,
        filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(name: str, **kwargs: Any) -> dict[str, Any]:
    return base_cfg(
        name,
        first_conv="downsample_layers.0.proj.proj.0",
        license="mit",
        paper_name="The Linear Attention Resurrection in Vision Transformer",
        paper_ids="arXiv:2501.16182",
        origin_url="https://github.com/ChuanyangZheng/L2ViT",
        **kwargs,
    )


# Published ImageNet-1k top-1 (README): T 83.1, S 84.1, B 84.4 (224, IN-1k only); B 86.0 at 224 and 87.0 at
# 384 after ImageNet-22k pre-training. At 384 the official evaluation warps (Resize((384, 384)), no crop).
default_cfgs = generate_default_cfgs(
    {
        "l2vit_t.in1k": _cfg("l2vit_t"),
        "l2vit_s.in1k": _cfg("l2vit_s"),
        "l2vit_b.in1k": _cfg("l2vit_b"),
        "l2vit_b.in22k_ft_in1k": _cfg(
            "l2vit_b.in22k_ft_in1k",
            notes=("published ImageNet-1k top-1 86.0 (ImageNet-22k pre-training, fine-tuned at 224)",),
        ),
        "l2vit_b.in22k": _cfg(
            "l2vit_b.in22k",
            num_classes=21841,
            notes=("ImageNet-22k pre-training; 21841 classes in the repository's own order (custom_map22kto1k.txt)",),
        ),
        "l2vit_b_384.in22k_ft_in1k": _cfg(
            "l2vit_b_384.in22k_ft_in1k",
            input_size=(3, 384, 384),
            pool_size=(12, 12),
            crop_pct=1.0,
            crop_mode="squash",
            notes=("published ImageNet-1k top-1 87.0 (ImageNet-22k pre-training, fine-tuned at 384)",),
        ),
    }
)


@register_model
def l2vit_t(pretrained: bool = False, **kwargs: Any) -> L2ViT:
    """L²ViT-T: dims 96/192/384/768, depths 2/2/6/2, window 7; 28.6 M params, 4.7 GFLOPs, 83.1 % top-1."""
    args = dict(dims=(96, 192, 384, 768), depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
    return _create_l2vit("l2vit_t", pretrained, **dict(args, **kwargs))


@register_model
def l2vit_s(pretrained: bool = False, **kwargs: Any) -> L2ViT:
    """L²ViT-S: dims 96/192/384/768, depths 2/2/18/2, window 7; 50.2 M params, 9.0 GFLOPs, 84.1 % top-1."""
    args = dict(dims=(96, 192, 384, 768), depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
    return _create_l2vit("l2vit_s", pretrained, **dict(args, **kwargs))


@register_model
def l2vit_b(pretrained: bool = False, **kwargs: Any) -> L2ViT:
    """L²ViT-B: dims 128/256/512/1024, depths 2/2/18/2, window 7; 88.6 M params, 15.9 GFLOPs, 84.4 % top-1
    (86.0 % with ImageNet-22k pre-training: tag ``in22k_ft_in1k``)."""
    args = dict(dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
    return _create_l2vit("l2vit_b", pretrained, **dict(args, **kwargs))


@register_model
def l2vit_b_384(pretrained: bool = False, **kwargs: Any) -> L2ViT:
    """L²ViT-B at 384 (window 12): 88.6 M params, 47.5 GFLOPs, 87.0 % top-1 (ImageNet-22k pre-training)."""
    args = dict(dims=(128, 256, 512, 1024), depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=12)
    return _create_l2vit("l2vit_b_384", pretrained, **dict(args, **kwargs))
