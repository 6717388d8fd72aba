"""MOAT: Alternating Mobile Convolution and Attention Brings Strong Vision Models (Yang et al., arXiv 2210.01820).

Re-implemented for timm from the paper and the facts of the official TensorFlow code (github.com/google-research/
deeplab2 @ 64bc1c1a, ``model/pixel_encoder/moat.py``, ``model/layers/moat_blocks.py``, ``model/layers/
moat_attention.py``). The official checkpoints are TF1 tensor bundles; :func:`checkpoint_filter_fn` maps their
variable names onto this model, and :mod:`linzoo.weights.tf_checkpoint` reads them without TensorFlow.

Network (NCHW; strides 2 / 4 / 8 / 16 / 32)::

    stem   = Conv3x3_s2(bias) -> BN -> GELU -> Conv3x3(bias)                   # no norm/act after the 2nd conv
    MBConv(x) = shortcut(x) + Conv1x1_bias(SE(GELU(BN(DWConv3x3_s(GELU(BN(Conv1x1(BN_pre(x)))))))))
    MOAT(x):   x = MBConv_without_SE(x);  x = x + O(MHSA(LN(x)))               # no MLP: the MBConv replaces it
    shortcut(x) = Conv1x1_bias(AvgPool_{pool_size, s}(x))                     # pool if s = 2, conv if C_in != C
    head   = mean_HW -> LN -> Linear

Stages are ``mbconv, mbconv, moat, moat``; every stage's first block has stride 2 (on the depthwise conv and the
shortcut pool). Expansion 4, SE ratio 0.25 of the block's *output* width (SiLU inside, sigmoid gate), 32 channels
per head. BatchNorm eps 1e-3 (Keras), LayerNorm eps 1e-5, exact (erf) GELU.

Attention: ``softmax(q kᵀ / sqrt(32) + B) v`` through ``F.scaled_dot_product_attention`` with the relative
position bias as its additive mask. ``B[n, (i, j), (x, y)] = E[n, x - i + H - 1, y - j + W - 1]`` (key minus
query, timm's ``RelPosBiasTf`` lookup), where ``E`` is the stored ``[heads, 2P - 1, 2P - 1]`` table (P = 14 at
stride 16, 7 at stride 32) resized bilinearly (half-pixel centres, no antialias: TF's ``tf.image.resize``) to
``[heads, 2H - 1, 2W - 1]``. TensorFlow does that resize once, for the input size the Keras model is built with;
here it happens for the size of each input (cached per size for grad-free calls), so any input size works and
the result equals TF's built at that size. The ``*_no_pe`` variants have no table. (deeplab2's TF2 code computes
that resized bias in ``Attention.build``, which Keras 2 runs eagerly: the bias is then a constant taken from the
table's *initial* value, so restoring a checkpoint after building, as its own loader does, leaves the random-init
bias in place. The golden data of ``tests/vision/test_moat.py`` runs the same code as a TF1 graph, where the bias
follows the restored table; this port always uses the stored table.)

Padding is TensorFlow's 'same' (stride-2 3x3 convolutions pad 0 before / 1 after on even inputs) through timm's
``create_conv2d(..., padding='same')``; the shortcut average pool excludes padded cells as TF does
(:class:`TfSameAvgPool2d`). Attention is global by default (the classification setting); ``window_size`` cuts the
map into non-overlapping windows as deeplab2's option does, for dense tasks at high resolution.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD
from timm.layers import DropPath, LayerNorm2d, NormMlpClassifierHead, SEModule, create_conv2d
from timm.layers.pos_embed_rel import reindex_2d_einsum_lookup
from timm.models import checkpoint_seq, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from ._builder import base_cfg, build_linzoo_model, check_image_input, load_pretrained_file, unwrap_checkpoint
from .layers.folding import DerivedTensorCache

__all__ = ["MOAT", "MBConvBlock", "MoatAttention", "MoatBlock", "TfSameAvgPool2d", "checkpoint_filter_fn"]

BN_EPS = 1e-3  # Keras BatchNormalization default (the official SyncBatchNormalization)
LN_EPS = 1e-5  # deeplab2's ln_epsilon
HEAD_DIM = 32
POS_EMBED_SIZE = (None, None, 14, 7)  # P per stage: tables [heads, 2P - 1, 2P - 1]
BIAS_CACHE_MAX = 1 << 24  # largest relative bias (elements) kept between grad-free calls, per block


def _tf_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) of one axis: output ``ceil(size / stride)``, extra pad after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TfSameAvgPool2d(nn.Module):
    """Average pooling with TensorFlow 'same' padding, padded cells excluded from each average (as TF does).

    timm's ``AvgPool2dSame`` pads with zeros and counts them, which differs from TF wherever a window overlaps
    the padding (odd maps with pool 2, every map with pool 3). Input ``(B, C, H, W)``, output
    ``(B, C, ceil(H / s), ceil(W / s))``.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__()
        if kernel_size < 1 or stride < 1:
            raise ValueError(f"kernel_size and stride must be >= 1, got {kernel_size}, {stride}")
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        pt, pb = _tf_same_pad(x.shape[-2], k, s)
        pl, pr = _tf_same_pad(x.shape[-1], k, s)
        if pt == pb == pl == pr == 0:
            return F.avg_pool2d(x, k, s)
        summed = F.avg_pool2d(F.pad(x, (pl, pr, pt, pb)), k, s, divisor_override=1)
        ones = torch.ones(1, 1, *x.shape[-2:], device=x.device, dtype=x.dtype)
        count = F.avg_pool2d(F.pad(ones, (pl, pr, pt, pb)), k, s, divisor_override=1)
        return summed / count

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding='same' (TF)"


class MBConvBlock(nn.Module):
    """Inverted bottleneck with pre-norm BN, strided depthwise conv and optional SE, on ``(B, C, H, W)``.

    ``shortcut(x) + DropPath(shrink(SE(GELU(BN(DW(GELU(BN(expand(BN_pre(x))))))))))``; output
    ``(B, out_chs, ceil(H / stride), ceil(W / stride))``. Attribute names follow the official variables.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        expand_ratio: int = 4,
        se_ratio: float | None = 0.25,
        pool_size: int = 2,
        drop_path: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        **dd: Any,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        mid = out_chs * expand_ratio
        self.shortcut_pool = TfSameAvgPool2d(pool_size, stride) if stride > 1 else nn.Identity()
        self.shortcut_conv = nn.Conv2d(in_chs, out_chs, 1, **dd) if in_chs != out_chs else nn.Identity()
        self.pre_norm = nn.BatchNorm2d(in_chs, eps=BN_EPS, momentum=0.01, **dd)
        self.expand_conv = nn.Conv2d(in_chs, mid, 1, bias=False, **dd)
        self.expand_norm = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01, **dd)
        self.act = act_layer()
        self.depthwise_conv = create_conv2d(
            mid, mid, 3, stride=stride, padding="same", depthwise=True, bias=False, **dd
        )
        self.depthwise_norm = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=0.01, **dd)
        if se_ratio:
            rd = max(1, int(out_chs * se_ratio))  # from the block's output width, as the official code
            self.se = SEModule(mid, rd_channels=rd, act_layer=nn.SiLU, **dd)
        else:
            self.se = nn.Identity()
        self.shrink_conv = nn.Conv2d(mid, out_chs, 1, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut_conv(self.shortcut_pool(x))
        x = self.act(self.expand_norm(self.expand_conv(self.pre_norm(x))))
        x = self.act(self.depthwise_norm(self.depthwise_conv(x)))
        x = self.shrink_conv(self.se(x))
        return shortcut + self.drop_path(x)


def _lookup(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The one-hot ``[L, L, 2L - 1]`` lookup of timm's ``generate_lookup_tensor`` (``ret[i, x, x - i + L - 1] = 1``),
    built without its Python double loop, so torch.compile traces a handful of ops instead of L² assignments."""
    pos = torch.arange(length, device=device)
    return F.one_hot(pos.view(1, -1) - pos.view(-1, 1) + length - 1, 2 * length - 1).to(dtype)


def relative_position_bias(table: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The ``[heads, H·W, H·W]`` bias of an ``H x W`` window from a ``[heads, 2P - 1, 2Q - 1]`` table.

    The table is resized to ``2H - 1 x 2W - 1`` first (bilinear, ``align_corners=False`` = TF's
    ``tf.image.resize``), then ``B[n, (i, j), (x, y)] = E[n, x - i + H - 1, y - j + W - 1]`` (key minus query).
    """
    size = (2 * height - 1, 2 * width - 1)
    if tuple(table.shape[-2:]) != size:
        table = F.interpolate(table.unsqueeze(0), size=size, mode="bilinear", align_corners=False).squeeze(0)
    lookup_h = _lookup(height, table.device, table.dtype)
    lookup_w = _lookup(width, table.device, table.dtype)
    return reindex_2d_einsum_lookup(table, height, width, lookup_h, lookup_w)


class MoatAttention(nn.Module):
    """Multi-head self-attention over ``(B, H, W, C)`` maps, global or in non-overlapping windows.

    ``qkv`` fuses the official ``q``, ``k``, ``v`` projections (``[C, heads, 32]`` each), ``proj`` is ``o``.
    ``pos_embed_size`` P gives the stored relative table ``[heads, 2P - 1, 2P - 1]`` (None: no position bias).
    ``window_size`` None attends over the whole map; ``(h, w)`` needs H, W divisible by it.
    """

    def __init__(
        self,
        dim: int,
        head_dim: int = HEAD_DIM,
        pos_embed_size: int | None = None,
        window_size: tuple[int, int] | None = None,
        attn_drop: float = 0.0,
        **dd: Any,
    ) -> None:
        super().__init__()
        if dim < head_dim:
            raise ValueError(f"dim ({dim}) must be at least head_dim ({head_dim})")
        self.num_heads = dim // head_dim
        self.head_dim = head_dim
        inner = self.num_heads * head_dim
        self.window_size = None if window_size is None else tuple(window_size)
        self.qkv = nn.Linear(dim, 3 * inner, **dd)
        self.proj = nn.Linear(inner, dim, **dd)
        self.attn_drop = attn_drop
        if pos_embed_size is not None:
            n = 2 * pos_embed_size - 1
            self.relative_position_bias_table = nn.Parameter(torch.zeros(self.num_heads, n, n, **dd))
        else:
            self.register_parameter("relative_position_bias_table", None)
        self._bias_caches: dict[tuple[int, int], DerivedTensorCache] = {}

    def _bias(self, height: int, width: int, device_type: str) -> torch.Tensor | None:
        """``[heads, N, N]`` bias of an ``height x width`` window.

        Grad-free calls keep it per window size (a few sizes), stored in the autocast dtype, unless it is large
        (more than :data:`BIAS_CACHE_MAX` elements: global attention on high-resolution maps, e.g. 12 heads x
        4096² tokens = 0.8 GB per block); such biases are rebuilt per call and freed after it.
        """
        table = self.relative_position_bias_table
        if table is None:
            return None

        def compute() -> dict[str, torch.Tensor]:
            return {"bias": relative_position_bias(table.float(), height, width)}

        if self.num_heads * (height * width) ** 2 > BIAS_CACHE_MAX:
            return compute()["bias"]
        cache = self._bias_caches.get((height, width))
        if cache is None:
            if len(self._bias_caches) >= 4:  # a handful of sizes at a time; drop the oldest
                self._bias_caches.pop(next(iter(self._bias_caches)))
            cache = self._bias_caches[(height, width)] = DerivedTensorCache()
        return cache.get([table], compute, cast=("bias",), device_type=device_type)["bias"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, H, W, C)`` -> ``(B, H, W, C)``."""
        b, h, w, c = x.shape
        wh, ww = self.window_size or (h, w)
        if h % wh or w % ww:
            raise ValueError(f"window_size {self.window_size} must divide the attention map size ({h}, {w})")
        nh, nw = h // wh, w // ww
        if nh * nw > 1:  # (B, nh, wh, nw, ww, C) -> (B·nh·nw, wh·ww, C)
            x = x.view(b, nh, wh, nw, ww, c).permute(0, 1, 3, 2, 4, 5)
        x = x.reshape(b * nh * nw, wh * ww, c)
        qkv = self.qkv(x).view(x.shape[0], wh * ww, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self._bias(wh, ww, x.device.type)
        mask = None if bias is None else bias.to(q.dtype).unsqueeze(0)
        drop = self.attn_drop if self.training else 0.0
        # softmax((q / sqrt(d)) kᵀ + B) v; SDPA picks a fused kernel where one takes an additive mask
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = self.proj(y.transpose(1, 2).reshape(x.shape[0], wh * ww, -1))
        if nh * nw > 1:
            y = y.view(b, nh, nw, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
        return y.reshape(b, h, w, c)


class MoatBlock(MBConvBlock):
    """MBConv without SE, then ``x + DropPath(O(MHSA(LN(x))))``, on ``(B, C, H, W)``.

    The attention sees the MBConv's (possibly strided) output, so its map is ``ceil(H / stride) x ceil(W / stride)``.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        expand_ratio: int = 4,
        pool_size: int = 2,
        head_dim: int = HEAD_DIM,
        pos_embed_size: int | None = None,
        window_size: tuple[int, int] | None = None,
        drop_path: float = 0.0,
        attn_drop: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        **dd: Any,
    ) -> None:
        super().__init__(in_chs, out_chs, stride, expand_ratio, None, pool_size, drop_path, act_layer, **dd)
        self.attn_norm = nn.LayerNorm(out_chs, eps=LN_EPS, **dd)
        self.attn = MoatAttention(out_chs, head_dim, pos_embed_size, window_size, attn_drop, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        y = self.attn(self.attn_norm(x.permute(0, 2, 3, 1)))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class MoatStage(nn.Module):
    """A sequence of blocks (the first one strided) with optional gradient checkpointing."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return self.blocks(x)


class Stem(nn.Module):
    """``conv1(GELU(norm0(conv0(x))))``: 3x3 stride 2 then 3x3 stride 1, both with bias, TF 'same' padding."""

    def __init__(self, in_chans: int, dims: Sequence[int], act_layer: type[nn.Module] = nn.GELU, **dd: Any) -> None:
        super().__init__()
        if len(dims) != 2:
            raise ValueError(f"stem_dims must have two entries, got {tuple(dims)}")
        self.conv0 = create_conv2d(in_chans, dims[0], 3, stride=2, padding="same", bias=True, **dd)
        self.norm0 = nn.BatchNorm2d(dims[0], eps=BN_EPS, momentum=0.01, **dd)
        self.act0 = act_layer()
        self.conv1 = create_conv2d(dims[0], dims[1], 3, stride=1, padding="same", bias=True, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.act0(self.norm0(self.conv0(x))))


def _stage_windows(
    window_size: int | Sequence[int] | Sequence[Sequence[int] | None] | None, num_stages: int
) -> list[tuple[int, int] | None]:
    """Per-stage window sizes from None, an int, an ``(h, w)`` pair (attention stages) or a per-stage list."""
    if window_size is None:
        return [None] * num_stages
    if isinstance(window_size, int):
        return [(window_size, window_size)] * num_stages
    items = list(window_size)
    if len(items) == 2 and all(isinstance(v, int) for v in items):
        return [tuple(items)] * num_stages
    if len(items) != num_stages:
        raise ValueError(f"window_size must be None, an int, (h, w) or one entry per stage, got {window_size!r}")
    out = []
    for v in items:
        if v is None:
            out.append(None)
        elif isinstance(v, int):
            out.append((v, v))
        elif len(v) == 2:
            out.append((int(v[0]), int(v[1])))
        else:
            raise ValueError(f"window_size entries must be None, an int or (h, w), got {v!r}")
    return out


class MOAT(nn.Module):
    """MOAT backbone: stem (stride 2) and four stages (strides 4/8/16/32), MBConv stages then MOAT stages.

    Args:
        stem_dims: the two stem convolutions' widths.
        dims / depths: per-stage widths and block counts.
        block_types: per stage, ``"mbconv"`` or ``"moat"``.
        pos_embed: relative position bias in the attention (False for the ``*_no_pe`` variants).
        pos_embed_sizes: per-stage P of the stored ``[heads, 2P - 1, 2P - 1]`` tables (14 / 7).
        pool_size: the shortcut average pool's kernel. 2 (default) is the classification setting: the official
            ``MOAT`` class defaults to 2 and documents 2 for classification (fewer FLOPs); deeplab2's
            ``get_model()`` defaults to 3, documented for downstream tasks (better feature alignment). The
            checkpoints do not record it (the pool has no parameters).
        window_size: None (global attention, the classification setting), an int / ``(h, w)`` for every
            attention stage, or one entry per stage (deeplab2's ``[None, None, [14, 14], [7, 7]]`` form).
        global_attn_at_stage_end: with windows, keep the last block of each MOAT stage global (deeplab2's
            ``global_attention_at_end_of_moat_stage``).
        drop_path_rate: 1 - the official ``survival_prob``; block i of N drops with ``rate · i / N`` (official rule).
        drop_rate: classifier dropout (not in the official model; timm convention).
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        stem_dims: Sequence[int] = (64, 64),
        dims: Sequence[int] = (96, 192, 384, 768),
        depths: Sequence[int] = (2, 3, 7, 2),
        block_types: Sequence[str] = ("mbconv", "mbconv", "moat", "moat"),
        expand_ratio: int = 4,
        se_ratio: float = 0.25,
        head_dim: int = HEAD_DIM,
        pos_embed: bool = True,
        pos_embed_sizes: Sequence[int | None] = POS_EMBED_SIZE,
        pool_size: int = 2,
        window_size: Any = None,
        global_attn_at_stage_end: bool = False,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        act_layer: type[nn.Module] = nn.GELU,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        num_stages = len(depths)
        for arg, value in (("dims", dims), ("block_types", block_types), ("pos_embed_sizes", pos_embed_sizes)):
            if len(value) != num_stages:
                raise ValueError(f"{arg} must have one entry per stage ({num_stages}), got {tuple(value)}")
        if any(t not in ("mbconv", "moat") for t in block_types):
            raise ValueError(f"block_types entries must be 'mbconv' or 'moat', got {tuple(block_types)}")
        if pool_size not in (2, 3):
            raise ValueError(f"pool_size must be 2 or 3, got {pool_size}")
        if global_pool not in ("avg", "max", "avgmax", ""):
            raise ValueError(f"global_pool must be 'avg', 'max', 'avgmax' or '', got {global_pool!r}")
        windows = _stage_windows(window_size, num_stages)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_stages = num_stages
        self.grad_checkpointing = False
        self.feature_info: list[dict[str, Any]] = []

        self.stem = Stem(in_chans, stem_dims, act_layer, **dd)
        total = sum(depths)
        rates = [drop_path_rate * i / total for i in range(total)]  # official: 1 - survival, linear in block id
        stages = []
        in_chs, idx = stem_dims[-1], 0
        for i in range(num_stages):
            blocks = []
            for j in range(depths[i]):
                stride = 2 if j == 0 else 1
                if block_types[i] == "mbconv":
                    blk = MBConvBlock(
                        in_chs, dims[i], stride, expand_ratio, se_ratio, pool_size, rates[idx], act_layer, **dd
                    )
                else:
                    win = windows[i]
                    if global_attn_at_stage_end and j == depths[i] - 1:
                        win = None
                    pe = pos_embed_sizes[i] if pos_embed else None
                    if pos_embed and pe is None:
                        raise ValueError(f"pos_embed_sizes[{i}] is None but stage {i} has attention")
                    blk = MoatBlock(
                        in_chs, dims[i], stride, expand_ratio, pool_size, head_dim, pe, win, rates[idx],
                        attn_drop_rate, act_layer, **dd,
                    )  # fmt: skip
                blocks.append(blk)
                in_chs, idx = dims[i], idx + 1
            stages.append(MoatStage(blocks))
            self.feature_info.append(dict(num_chs=dims[i], reduction=2 ** (i + 2), module=f"stages.{i}"))
        self.stages = nn.ModuleList(stages)

        self.num_features = self.head_hidden_size = dims[-1]
        self.head = NormMlpClassifierHead(
            self.num_features,
            num_classes,
            pool_type=global_pool,
            drop_rate=drop_rate,
            norm_layer=partial(LayerNorm2d, eps=LN_EPS),
            **dd,
        )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The official initialisers: normal(0.02) for every kernel and the relative tables, zero biases
        # (BatchNorm/LayerNorm keep ones/zeros).
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, MoatAttention) and m.relative_position_bias_table is not None:
            nn.init.normal_(m.relative_position_bias_table, std=0.02)

    # --- timm API -----------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {n for n, _ in self.named_parameters() if n.endswith("relative_position_bias_table")}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^stem\.",
            blocks=r"^stages\.(\d+)" if coarse else [(r"^stages\.(\d+)\.blocks\.(\d+)", None)],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for s in self.stages:
            s.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)
        if isinstance(self.head.fc, nn.Linear):
            self._init_weights(self.head.fc)

    def load_pretrained(self, path: str | os.PathLike) -> None:
        """Load an official checkpoint (TF1 bundle: ``.tar.gz``, ``.index`` or prefix) or a converted state dict."""
        load_pretrained_file(self, path, checkpoint_filter_fn)

    # --- forward ------------------------------------------------------------------------------------------
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (deeplab2's ``stage2..5`` endpoints), ``(B, C_i, ceil(H / 2^(i+2)), ceil(W / 2^(i+2)))``.

        Args:
            indices: take the last n stages if an int, all if None, else the listed stage indices.
            norm: accepted for the timm API; MOAT has no per-stage norm (the head's LayerNorm follows pooling).
            stop_early: stop after the last requested stage.
            output_fmt: only ``"NCHW"``.
            intermediates_only: return only the list of intermediates.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        check_image_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        last = max_index if (stop_early or intermediates_only) else self.num_stages - 1
        x = self.stem(x)
        intermediates = []
        for i in range(last + 1):
            x = self.stages[i](x)
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
        self.stages = self.stages[: max_index + 1]
        prune_end = max_index < self.num_stages - 1
        self.num_stages = max_index + 1
        self.feature_info = self.feature_info[: max_index + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[-1]["num_chs"]
        if prune_head or prune_end:
            self.head.reset(0, "", reset_other=True, in_features=self.num_features)
            self.num_classes = 0
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> last-stage map ``(B, C_4, ceil(H/32), ceil(W/32))`` (no norm: MOAT's LN
        follows the global pool, in the head)."""
        check_image_input(x, self.in_chans)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, C, h, w)`` -> logits ``(B, num_classes)`` (or the pooled, normalised ``(B, C)`` features)."""
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --- official TensorFlow checkpoints ----------------------------------------------------------------------
_EMA = "/ExponentialMovingAverage"
_BN = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
_LN = {"gamma": "weight", "beta": "bias"}
_BLOCK_CONV = {"shortcut_conv", "expand_conv", "shrink_conv", "se/reduce_conv2d", "se/expand_conv2d"}
_BLOCK_RENAME = {"se/reduce_conv2d": "se.fc1", "se/expand_conv2d": "se.fc2"}


def _tf_var_names(names: Sequence[str], prefer_ema: bool) -> dict[str, str]:
    """Model variable name -> checkpoint entry to read (its EMA copy when present and ``prefer_ema``).

    Only ``moat/...`` names count; optimizer slots and other trailing suffixes of known variables, and entries
    outside ``moat/`` (``global_step``, object graphs), are ignored.
    """
    present = set(names)
    out = {}
    for name in names:
        if not name.startswith("moat/") or name.endswith(_EMA):
            continue
        if _tf_to_ours(name) is None:
            base = name.rsplit("/", 1)[0]
            if base in present:  # an optimizer slot (".../kernel/Momentum") of a known variable
                continue
            raise ValueError(f"unknown MOAT checkpoint variable {name!r}")
        ema = name + _EMA
        out[name] = ema if prefer_ema and ema in present else name
    return out


def _tf_to_ours(name: str) -> tuple[str, str] | None:
    """``moat/...`` TF variable name -> (our key, kind) with kind in conv / dw / bn / ln / qkv / o / table / fc."""
    parts = name.split("/")
    if parts[:2] == ["moat", "stem"] and len(parts) == 4:
        layer, var = parts[2], parts[3]
        if layer in ("conv_0", "conv_1") and var in ("kernel", "bias"):
            return f"stem.conv{layer[-1]}.{'weight' if var == 'kernel' else 'bias'}", "conv"
        if layer == "norm_0" and var in _BN:
            return f"stem.norm0.{_BN[var]}", "bn"
        return None
    if parts[1:2] == ["final_layer_norm"] and len(parts) == 3 and parts[2] in _LN:
        return f"head.norm.{_LN[parts[2]]}", "ln"
    if parts[1:2] == ["logits_head"] and len(parts) == 3 and parts[2] in ("kernel", "bias"):
        return f"head.fc.{'weight' if parts[2] == 'kernel' else 'bias'}", "fc"
    if len(parts) < 4 or not parts[1].startswith("block_"):
        return None
    try:
        stage, block = (int(v) for v in parts[1][len("block_") :].split("_"))
    except ValueError:
        return None
    prefix = f"stages.{stage}.blocks.{block}."
    layer, var = "/".join(parts[2:-1]), parts[-1]
    if layer in _BLOCK_CONV and var in ("kernel", "bias"):
        return prefix + _BLOCK_RENAME.get(layer, layer) + (".weight" if var == "kernel" else ".bias"), "conv"
    if layer == "depthwise_conv" and var == "depthwise_kernel":
        return prefix + "depthwise_conv.weight", "dw"
    if layer in ("pre_norm", "expand_norm", "depthwise_norm") and var in _BN:
        return prefix + f"{layer}.{_BN[var]}", "bn"
    if layer == "attention_norm" and var in _LN:
        return prefix + f"attn_norm.{_LN[var]}", "ln"
    if layer == "attention" and var == "relative_position_embedding":
        return prefix + "attn.relative_position_bias_table", "table"
    if layer in ("attention/q", "attention/k", "attention/v") and var in ("weight", "bias"):
        return prefix + f"attn.qkv.{var}:{layer[-1]}", "qkv"
    if layer == "attention/o" and var in ("weight", "bias"):
        return prefix + f"attn.proj.{var}", "o"
    return None


def convert_tf_state_dict(tf_vars: dict[str, Any], prefer_ema: bool = True) -> dict[str, torch.Tensor]:
    """Official MOAT TF variables (``moat/block_02_00/attention/q/weight`` -> array) -> this model's state dict.

    Conv kernels ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``; depthwise ``[kh, kw, C, 1]`` -> ``[C, 1, kh, kw]``;
    ``q/k/v`` ``[C, heads, 32]`` -> one ``qkv`` Linear ``[3·heads·32, C]`` (biases ``[heads, 32]`` flattened);
    ``o`` ``[heads, 32, C]`` -> Linear ``[C, heads·32]``; ``logits_head`` ``[1, 1, C, N]`` -> Linear ``[N, C]``;
    BN gamma/beta/moving stats -> weight/bias/running_mean/running_var (+ ``num_batches_tracked`` = 0); LN
    gamma/beta -> weight/bias; relative tables kept as ``[heads, 2P - 1, 2P - 1]``. EMA copies
    (``.../ExponentialMovingAverage``) are used where present when ``prefer_ema``.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for name, source in _tf_var_names(list(tf_vars), prefer_ema).items():
        key, kind = _tf_to_ours(name)
        t = torch.as_tensor(tf_vars[source]).float()
        if kind in ("conv", "fc") and key.endswith(".weight"):
            if t.dim() != 4:
                raise ValueError(f"{name}: expected a 4-d conv kernel, got shape {tuple(t.shape)}")
            t = t.permute(3, 2, 0, 1)
            if kind == "fc":
                t = t.flatten(1)
        elif kind == "dw":
            t = t.permute(2, 3, 0, 1)
        elif kind == "qkv":
            key, which = key.split(":")
            t = t.reshape(t.shape[0], -1).t() if key.endswith("weight") else t.reshape(-1)
            qkv.setdefault(key, {})[which] = t
            continue
        elif kind == "o":
            t = t.reshape(-1, t.shape[-1]).t() if key.endswith("weight") else t
        elif kind == "bn" and key.endswith("running_var"):
            out[key.rsplit(".", 1)[0] + ".num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        out[key] = t.contiguous()
    for key, parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise ValueError(f"checkpoint has attention projections {sorted(parts)} for {key}, needs q, k and v")
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], 0).contiguous()
    return out


def checkpoint_filter_fn(state_dict: dict[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official MOAT checkpoint (TF variable names, as read by :func:`linzoo.weights.load_state_dict_file` from
    the released ``.tar.gz``) -> this model; a state dict already in our layout is only unwrapped."""
    if any(k.startswith("moat/") for k in state_dict):
        return convert_tf_state_dict(state_dict)
    return unwrap_checkpoint(state_dict)


def _create_moat(variant: str, pretrained: bool = False, **kwargs: Any) -> MOAT:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_linzoo_model(
        MOAT,
        variant,
        pretrained,
        filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(name: str, size: int, inception_norm: bool = False, **kwargs: Any) -> dict[str, Any]:
    extra = dict(mean=IMAGENET_INCEPTION_MEAN, std=IMAGENET_INCEPTION_STD) if inception_norm else {}
    return base_cfg(
        name,
        input_size=(3, size, size),
        pool_size=(size // 32, size // 32),
        first_conv="stem.conv0",
        classifier="head.fc",
        license="apache-2.0",
        paper_name="MOAT: Alternating Mobile Convolution and Attention Brings Strong Vision Models",
        paper_ids="arXiv:2210.01820",
        origin_url="https://github.com/google-research/deeplab2",
        **extra,
        **kwargs,
    )


# Published ImageNet-1k top-1 (g3doc/projects/moat.md), with / without position embedding:
# MOAT-0 83.3 / 83.0, MOAT-1 84.2 / 84.1 (1k, 224); MOAT-2 87.5 / 87.2 (22k -> 1k, 384); MOAT-3 88.4 / 88.2,
# MOAT-4 89.1 / 88.9 (22k -> 1k, 512); tiny-MOAT-0..3 76.6 / 76.0, 79.2 / 78.9, 81.7 / 81.3, 83.3 / 83.0 (1k, 256).
# Input normalisation: option 1 (ImageNet mean/std) for the 1k models, option 2 ((x - 127.5) / 127.5 = mean/std 0.5)
# for the 22k ones. The evaluation crop is not published (deeplab2 has no ImageNet pipeline): timm's 0.875 default.
_VARIANTS = {
    # name: (stem, dims, depths, input size, 22k normalisation, official survival_prob)
    "moat_0": ((64, 64), (96, 192, 384, 768), (2, 3, 7, 2), 224, False, 0.8),
    "moat_1": ((64, 64), (96, 192, 384, 768), (2, 6, 14, 2), 224, False, 0.7),
    "moat_2": ((128, 128), (128, 256, 512, 1024), (2, 6, 14, 2), 384, True, 0.7),
    "moat_3": ((160, 160), (160, 320, 640, 1280), (2, 12, 28, 2), 512, True, 0.4),
    "moat_4": ((256, 256), (256, 512, 1024, 2048), (2, 12, 28, 2), 512, True, 0.3),
    "tiny_moat_0": ((32, 32), (32, 64, 128, 256), (2, 3, 7, 2), 256, False, 1.0),
    "tiny_moat_1": ((40, 40), (40, 80, 160, 320), (2, 3, 7, 2), 256, False, 1.0),
    "tiny_moat_2": ((56, 56), (56, 112, 224, 448), (2, 3, 7, 2), 256, False, 1.0),
    "tiny_moat_3": ((80, 80), (80, 160, 320, 640), (2, 3, 7, 2), 256, False, 0.9),
}

default_cfgs = generate_default_cfgs(
    {
        f"{name}{pe}.{'in22k_ft_in1k' if v[4] else 'in1k'}": _cfg(f"{name}{pe}", v[3], v[4])
        for name, v in _VARIANTS.items()
        for pe in ("", "_no_pe")
    }
)


def _moat(name: str, pretrained: bool, kwargs: dict[str, Any]) -> MOAT:
    base = name.removesuffix("_no_pe")
    stem, dims, depths, _, _, _ = _VARIANTS[base]
    args = dict(stem_dims=stem, dims=dims, depths=depths, pos_embed=not name.endswith("_no_pe"))
    return _create_moat(name, pretrained, **dict(args, **kwargs))


@register_model
def moat_0(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """MOAT-0: 27.8 M params, 83.3 % top-1 (1k, 224); official drop_path_rate 0.2."""
    return _moat("moat_0", pretrained, kwargs)


@register_model
def moat_0_no_pe(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """MOAT-0 without relative position bias: 27.8 M params, 83.0 % top-1 (1k, 224)."""
    return _moat("moat_0_no_pe", pretrained, kwargs)


@register_model
def moat_1(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """MOAT-1: 41.6 M params, 84.2 % top-1 (1k, 224); official drop_path_rate 0.3."""
    return _moat("moat_1", pretrained, kwargs)


@register_model
def moat_1_no_pe(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """MOAT-1 without relative position bias: 41.5 M params, 84.1 % top-1 (1k, 224)."""
    return _moat("moat_1_no_pe", pretrained, kwargs)


@register_model
def moat_2(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """MOAT-2: 73.4 M params, 87.5 % top-1 (22k -> 1k, 384); official drop_path_rate 0.3."""
    return _moat("moat_2", pretrained, kwargs)


@register_model
def moat_2_no_pe(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """MOAT-2 without relative position bias: 73.2 M params, 87.2 % top-1 (22k -> 1k, 384)."""
    return _moat("moat_2_no_pe", pretrained, kwargs)


@register_model
def moat_3(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """MOAT-3: 190.0 M params, 88.4 % top-1 (22k -> 1k, 512); official drop_path_rate 0.6."""
    return _moat("moat_3", pretrained, kwargs)


@register_model
def moat_3_no_pe(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """MOAT-3 without relative position bias: 189.5 M params, 88.2 % top-1 (22k -> 1k, 512)."""
    return _moat("moat_3_no_pe", pretrained, kwargs)


@register_model
def moat_4(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """MOAT-4: 483.2 M params, 89.1 % top-1 (22k -> 1k, 512); official drop_path_rate 0.7."""
    return _moat("moat_4", pretrained, kwargs)


@register_model
def moat_4_no_pe(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """MOAT-4 without relative position bias: 482.5 M params, 88.9 % top-1 (22k -> 1k, 512)."""
    return _moat("moat_4_no_pe", pretrained, kwargs)


@register_model
def tiny_moat_0(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """tiny-MOAT-0: 3.4 M params, 76.6 % top-1 (1k, 256)."""
    return _moat("tiny_moat_0", pretrained, kwargs)


@register_model
def tiny_moat_0_no_pe(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """tiny-MOAT-0 without relative position bias: 3.3 M params, 76.0 % top-1 (1k, 256)."""
    return _moat("tiny_moat_0_no_pe", pretrained, kwargs)


@register_model
def tiny_moat_1(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """tiny-MOAT-1: 5.1 M params, 79.2 % top-1 (1k, 256)."""
    return _moat("tiny_moat_1", pretrained, kwargs)


@register_model
def tiny_moat_1_no_pe(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """tiny-MOAT-1 without relative position bias: 5.1 M params, 78.9 % top-1 (1k, 256)."""
    return _moat("tiny_moat_1_no_pe", pretrained, kwargs)


@register_model
def tiny_moat_2(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """tiny-MOAT-2: 9.8 M params, 81.7 % top-1 (1k, 256)."""
    return _moat("tiny_moat_2", pretrained, kwargs)


@register_model
def tiny_moat_2_no_pe(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """tiny-MOAT-2 without relative position bias: 9.7 M params, 81.3 % top-1 (1k, 256)."""
    return _moat("tiny_moat_2_no_pe", pretrained, kwargs)


@register_model
def tiny_moat_3(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """tiny-MOAT-3: 19.5 M params, 83.3 % top-1 (1k, 256); official drop_path_rate 0.1."""
    return _moat("tiny_moat_3", pretrained, kwargs)


@register_model
def tiny_moat_3_no_pe(pretrained: bool = False, **kwargs: Any) -> MOAT:
    """tiny-MOAT-3 without relative position bias: 19.5 M params, 83.0 % top-1 (1k, 256)."""
    return _moat("tiny_moat_3_no_pe", pretrained, kwargs)
