"""RAVLT: Rank-Augmented Vision Linear Transformer (RALA attention).

Paper: "Breaking the Low-Rank Dilemma of Linear Attention" (CVPR 2025), https://arxiv.org/abs/2411.07635
Official code: https://github.com/qhfan/RALA (classfication/RALA.py @ a86314f6); re-implemented here, not copied.

RAVLT is a hybrid: stages 1–2 use rank-augmented linear attention (RALA), stages 3–4 full softmax
attention with 2-D RoPE; both kinds share the parameter names ``qkvo / lepe / proj``. The state dict equals
the official one key for key (buffers included), so official checkpoints load without remapping.
Any input size works: the stride-2 convolutions round up (``ceil(H/2)``), RoPE is computed for the actual
grid, and stages 3–4 run through ``F.scaled_dot_product_attention`` (flash / cuDNN on GPU).

Speed (same numbers as the official code up to float rounding): each stage keeps its map in ``channels_last``
memory, so the blocks work on a free ``(B, H, W, C)`` view — LayerNorm without permute copies, 1×1 convs as GEMMs
with the bias fused, every elementwise op on same-layout dense tensors — layer scale + residual is one ``addcmul``,
and the RoPE tables are computed once per input size (see :mod:`linzoo.vision.layers.fused`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from linzoo.kernels import linear_attention, rope_2d

from ._builder import base_cfg, build_linzoo_model, check_image_input, load_pretrained_file, unwrap_checkpoint
from .layers.fused import conv1x1_nhwc, layer_scale_add, rope_full_tables, rotate_pairs

__all__ = ["RAVLT"]

_ATTN_KINDS = ("linear", "softmax")


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of a channels-last ``(B, H, W, C)`` map, stored as ``.norm`` (official keys).

    The official ``LayerNorm2d`` permutes ``(B, C, H, W)`` to ``(B, H, W, C)``, normalises the last dim and permutes
    back; the blocks here already hold that ``(B, H, W, C)`` view (free for a channels_last map), so the norm is one
    ``F.layer_norm`` with no layout copy. (timm's ``LayerNorm2d`` would store ``norm1.weight``, not the official
    ``norm1.norm.weight``.)
    """

    def __init__(self, dim: int, eps: float = 1e-6, **dd: Any) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.norm
        return F.layer_norm(x, n.normalized_shape, n.weight, n.bias, n.eps)


class RALAttention(nn.Module):
    """RALA (stages 1–2) or softmax attention with RoPE (stages 3–4) on a channels-last ``(B, H, W, C)`` map.

    ``qkvo`` (1×1 conv, C→4C) gives q, k, v and the output gate o; LePE is a 5×5 depthwise conv on v.
    Output: ``proj((Attn(q, k, v) + LePE(v)) ⊙ o)``. RALA (paper Eq. 6–8):
    φ = ELU+1, α_j = softmax_j(d^-½ · mean_i φ(q_i) · φ(k_j)), k'_j = N·α_j·φ(k_j),
    out_i = R(φq_i)ᵀ (1/N Σ_j R(k'_j) v_jᵀ) / (φq_i · mean_j k'_j + 1e-6), with R the 2-D RoPE.

    The 1×1 convs run as GEMMs on the ``(B, H, W, C)`` tensor (bias fused, no permute); the head split is a
    view of the ``qkvo`` output and the attention output is added to LePE in LePE's layout, so no copy is made
    between ``qkvo`` and ``proj`` except the one the depthwise conv needs for its strided input.
    ``rope`` is what :meth:`RoPEAngles.tables` returns for ``kind``.
    """

    def __init__(self, dim: int, num_heads: int, kind: str = "linear", **dd: Any) -> None:
        super().__init__()
        if kind not in _ATTN_KINDS:
            raise ValueError(f"kind must be one of {_ATTN_KINDS}, got {kind!r}")
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.kind = kind
        self.qkvo = nn.Conv2d(dim, dim * 4, 1, **dd)
        self.lepe = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim, **dd)
        self.proj = nn.Conv2d(dim, dim, 1, **dd)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> (B, heads, N, d), a view when the channels are the innermost dim."""
        b, h, w, _ = t.shape
        return t.reshape(b, h * w, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, h, w, c = x.shape
        qkvo = conv1x1_nhwc(x, self.qkvo)  # (B, H, W, 4C)
        # one split (its backward is one cat) rather than slices (each slice's backward fills a zero tensor of
        # the whole qkvo and copies into it)
        parts = qkvo.split((2 * c, c, c), dim=-1)  # indexed, not unpacked: FX proxies cannot be iterated
        qk, v, o = parts[0], parts[1], parts[2]
        lepe = self.lepe(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (B, H, W, C)
        if self.kind == "linear":
            halves = qk.split(c, dim=-1)
            q, k = self._heads(halves[0]), self._heads(halves[1])
            out = linear_attention(q, k, self._heads(v), feature_map="elu+1", normalizer="rala", eps=1e-6, rope=rope)
        else:
            # RoPE on q and k together: (B, N, 2, heads, d) view of qkvo, tables (N, d) broadcast over the rest.
            # As in the official code the rotation runs in the tables' fp32; attention gets v's dtype.
            cos, sin = rope
            qk = qk.reshape(b, h * w, 2, self.num_heads, self.head_dim)
            qk = rotate_pairs(qk, cos[:, None, None], sin[:, None, None]).to(v.dtype)
            q, k = qk.unbind(2)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), self._heads(v))
        # (B, heads, N, d) -> (B, N, heads, d) view, summed into LePE's layout: no reshape copy of the output.
        out = torch.add(lepe.reshape(b, h * w, self.num_heads, self.head_dim), out.transpose(1, 2))
        return conv1x1_nhwc(out.reshape(b, h, w, c) * o, self.proj)


class ConvFFN(nn.Module):
    """1×1 conv → GELU → (h + DWConv3×3(h)) → 1×1 conv, on a channels-last ``(B, H, W, C)`` map."""

    def __init__(self, dim: int, hidden_dim: int, **dd: Any) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1, **dd)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim, **dd)
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.gelu(conv1x1_nhwc(x, self.fc1)).permute(0, 3, 1, 2)  # (B, hidden, H, W), channels_last memory
        return conv1x1_nhwc((x + self.dwconv(x)).permute(0, 2, 3, 1), self.fc2)


class RAVLTBlock(nn.Module):
    """``x += CPE(x); x += γ1·Attn(LN(x)); x += γ2·FFN(LN(x))`` with a 3×3 depthwise CPE (``pos``).

    Takes and returns ``(B, C, H, W)``; everything after the CPE runs on the ``(B, H, W, C)`` view, which is
    free (and every op contiguous) when the map is in ``torch.channels_last`` memory, as :class:`RAVLTStage`
    makes it. Layer scale + stochastic depth + residual are one ``addcmul``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        hidden_dim: int,
        kind: str,
        drop_path: float = 0.0,
        layer_scale_init: float | None = 1.0,
        **dd: Any,
    ) -> None:
        super().__init__()
        self.pos = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, **dd)
        self.norm1 = ChannelLayerNorm(dim, eps=1e-6, **dd)
        self.attn = RALAttention(dim, num_heads, kind, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = ChannelLayerNorm(dim, eps=1e-6, **dd)
        self.ffn = ConvFFN(dim, hidden_dim, **dd)
        self.layer_scale = layer_scale_init is not None
        if self.layer_scale:
            self.gamma_1 = nn.Parameter(torch.full((1, dim, 1, 1), float(layer_scale_init), **dd))
            self.gamma_2 = nn.Parameter(torch.full((1, dim, 1, 1), float(layer_scale_init), **dd))

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.pos(x)
        t = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        g1, g2 = (self.gamma_1.view(-1), self.gamma_2.view(-1)) if self.layer_scale else (None, None)
        # stochastic depth as timm's DropPath(drop_prob, scale_by_keep), folded into the layer-scale addcmul
        p, keep = getattr(self.drop_path, "drop_prob", 0.0), getattr(self.drop_path, "scale_by_keep", True)
        t = layer_scale_add(t, self.attn(self.norm1(t), rope), g1, p, self.training, keep)
        t = layer_scale_add(t, self.ffn(self.norm2(t)), g2, p, self.training, keep)
        return t.permute(0, 3, 1, 2)


class RoPEAngles(nn.Module):
    """Holds the official ``angle`` buffer (``(d/2,)``: each RoPE frequency repeated twice) and its tables.

    The tables depend only on the grid, so they are computed once per ``(H, W, kind)`` and kept in a small
    cache (not in the state dict), emptied when the module moves (``.to``/``.cuda``) or loads a state dict.
    Tracing (``torch.compile``, ``torch.export``, FX) and CUDA-graph capture compute them inline instead.
    """

    _CACHE_SIZE = 4

    def __init__(self, head_dim: int, **dd: Any) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"head_dim must be a multiple of 4 for 2-D RoPE, got {head_dim}")
        freqs = 1.0 / 10000 ** torch.linspace(0, 1, head_dim // 4, device=dd.get("device"))
        self.register_buffer("angle", freqs.repeat_interleave(2).to(dd.get("dtype") or torch.float32))
        self._cache: OrderedDict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def forward(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` of shape ``(H·W, d/2)`` for the grid; see :func:`linzoo.kernels.rope_2d`."""
        return self.tables(height, width, "linear")

    def tables(self, height: int, width: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 RoPE tables for ``kind``: ``(H·W, d/2)`` per-pair ``(cos, sin)`` for ``"linear"`` (the kernel's
        ``rope`` argument), ``(H·W, d)`` ``(cos, sin±)`` of :func:`linzoo.vision.layers.fused.rope_full_tables`
        for ``"softmax"``."""
        if kind not in _ATTN_KINDS:
            raise ValueError(f"kind must be one of {_ATTN_KINDS}, got {kind!r}")
        cacheable = (
            isinstance(height, int)
            and isinstance(width, int)
            and type(self.angle) is torch.Tensor
            and not torch.compiler.is_compiling()
            and not (self.angle.is_cuda and torch.cuda.is_current_stream_capturing())
        )
        if not cacheable:
            return self._compute(height, width, kind)
        key = (height, width, kind)
        hit = self._cache.get(key)
        if hit is None:
            # Plain tensors even inside inference_mode, so a cache filled by inference serves training too.
            with torch.inference_mode(False), torch.no_grad():
                hit = self._compute(height, width, kind)
            self._cache[key] = hit
            while len(self._cache) > self._CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit

    def _compute(self, height: int, width: int, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = rope_2d(height, width, self.angle[0::2].float(), device=self.angle.device)
        return rope_full_tables(cos, sin) if kind == "softmax" else (cos, sin)

    def _apply(self, fn, recurse: bool = True):  # .to() / .cuda() / .half(): the cached tables are stale
        self._cache.clear()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        self._cache.clear()
        super()._load_from_state_dict(*args, **kwargs)


class Downsample(nn.Module):
    """3×3 stride-2 conv (``reduction``) + BatchNorm (``norm``)."""

    def __init__(self, dim: int, out_dim: int, **dd: Any) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(dim, out_dim, 3, 2, 1, **dd)
        self.norm = nn.BatchNorm2d(out_dim, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.reduction(x))


class RAVLTStage(nn.Module):
    """Blocks of one resolution, then (except the last stage) the downsample to the next."""

    def __init__(
        self,
        dim: int,
        out_dim: int | None,
        depth: int,
        num_heads: int,
        hidden_dim: int,
        kind: str,
        drop_path: Sequence[float],
        layer_scale_init: float | None,
        **dd: Any,
    ) -> None:
        super().__init__()
        self.kind = kind
        self.RoPE = RoPEAngles(dim // num_heads, **dd)
        self.blocks = nn.ModuleList(
            RAVLTBlock(dim, num_heads, hidden_dim, kind, drop_path[i], layer_scale_init, **dd) for i in range(depth)
        )
        self.downsample = Downsample(dim, out_dim, **dd) if out_dim is not None else nn.Identity()
        self.grad_checkpointing = False

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        # One layout for the whole stage: channels_last memory makes each block's (B, H, W, C) view contiguous
        # (a no-op after the first stage, whose downsample conv keeps the format).
        x = x.contiguous(memory_format=torch.channels_last)
        rope = self.RoPE.tables(x.shape[2], x.shape[3], self.kind)
        for block in self.blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.forward_blocks(x))


class PatchEmbed(nn.Module):
    """Stride-4 conv stem: 3×3 s2 → 3×3 → 3×3 → 3×3 s2, each conv + BN, GELU between (``proj.0``…``proj.10``)."""

    def __init__(self, in_chans: int, dim: int, **dd: Any) -> None:
        super().__init__()
        half = dim // 2
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, half, 3, 2, 1, **dd),
            nn.BatchNorm2d(half, **dd),
            nn.GELU(),
            nn.Conv2d(half, half, 3, 1, 1, **dd),
            nn.BatchNorm2d(half, **dd),
            nn.GELU(),
            nn.Conv2d(half, half, 3, 1, 1, **dd),
            nn.BatchNorm2d(half, **dd),
            nn.GELU(),
            nn.Conv2d(half, dim, 3, 2, 1, **dd),
            nn.BatchNorm2d(dim, **dd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class RAVLT(nn.Module):
    """RAVLT backbone + classifier.

    ``forward_features`` returns the unpooled stage-4 map ``(B, C4, H/32, W/32)``; ``forward_head`` applies
    the official conv head (1×1 ``proj`` to ``projection`` channels, BN, Swish, global average pool, 1×1
    conv ``head``).
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        depths: Sequence[int] = (3, 5, 9, 3),
        num_heads: Sequence[int] = (1, 2, 5, 8),
        mlp_ratio: float = 3.5,
        attn_kinds: Sequence[str] = ("linear", "linear", "softmax", "softmax"),
        layer_scale_init: Sequence[float | None] = (1.0, 1.0, 1.0, 1.0),
        projection: int = 1024,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        num_stages = len(depths)
        for name, value in (("embed_dims", embed_dims), ("num_heads", num_heads), ("attn_kinds", attn_kinds)):
            if len(value) != num_stages:
                raise ValueError(f"{name} must have one entry per stage ({num_stages}), got {list(value)}")
        dd = {"device": device, "dtype": dtype}
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.embed_dims = tuple(embed_dims)
        self.num_features = embed_dims[-1]
        self.head_hidden_size = projection
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(in_chans, embed_dims[0], **dd)
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        self.feature_info = []
        for i in range(num_stages):
            start = sum(depths[:i])
            self.layers.append(
                RAVLTStage(
                    embed_dims[i],
                    embed_dims[i + 1] if i < num_stages - 1 else None,
                    depths[i],
                    num_heads[i],
                    int(mlp_ratio * embed_dims[i]),
                    attn_kinds[i],
                    dpr[start : start + depths[i]],
                    layer_scale_init[i],
                    **dd,
                )
            )
            # The stage's last block: its output is the feature map before the stage-final downsample.
            module = f"layers.{i}.blocks.{depths[i] - 1}"
            self.feature_info.append({"num_chs": embed_dims[i], "reduction": 4 * 2**i, "module": module})
        self.proj = nn.Conv2d(self.num_features, projection, 1, **dd)
        self.norm = nn.BatchNorm2d(projection, **dd)
        self.head = nn.Conv2d(projection, num_classes, 1, **dd) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Conv2d):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # timm API ------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        # The official recipe decays every parameter that timm's optimizer factory does not already exempt
        # (biases and 1-D norm weights); layer-scale gammas are 4-D and were decayed too.
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return {
            "stem": r"^patch_embed",
            "blocks": r"^layers\.(\d+)"
            if coarse
            else [
                (r"^layers\.(\d+)\.blocks\.(\d+)", None),
                (r"^layers\.(\d+)\.(?:downsample|RoPE)", (0,)),
                (r"^proj|^norm", (99999,)),
            ],
        }

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in self.layers:
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        w = self.patch_embed.proj[0].weight
        self.head = (
            nn.Conv2d(self.head_hidden_size, num_classes, 1, device=w.device, dtype=w.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        if num_classes > 0:
            self._init_weights(self.head)

    def load_pretrained(self, checkpoint_path: str) -> None:
        """Load an official RAVLT checkpoint (or a linzoo safetensors file) into this model."""
        load_pretrained_file(self, checkpoint_path, checkpoint_filter_fn)

    # forward ------------------------------------------------------------------------------------
    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs (before each stage's downsample) at strides 4, 8, 16, 32, as timm models return them."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        check_image_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        intermediates = []
        x = self.patch_embed(x)
        stages = self.layers[: max_index + 1] if (stop_early or intermediates_only) else self.layers
        for i, stage in enumerate(stages):
            x = stage.forward_blocks(x)
            if i in take_indices:
                intermediates.append(x)
            x = stage.downsample(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop stages after the last requested index (and the head) for feature extraction."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        self.layers[-1].downsample = nn.Identity()
        if prune_head:
            self.proj, self.norm = nn.Identity(), nn.Identity()
            self.reset_classifier(0, "")
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_image_input(x, self.in_chans)
        x = self.patch_embed(x)
        for stage in self.layers:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.silu(self.norm(self.proj(x)))
        if self.global_pool == "avg":
            x = x.mean((2, 3), keepdim=True)
        if self.drop_rate > 0.0:
            x = F.dropout(x, self.drop_rate, self.training)
        if pre_logits:
            return x.flatten(1) if self.global_pool == "avg" else x
        x = self.head(x)
        return x.flatten(1) if self.global_pool == "avg" else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: RAVLT) -> dict[str, torch.Tensor]:
    """Official RAVLT checkpoints already use our keys; unwrap training dicts and detection prefixes."""
    return unwrap_checkpoint(state_dict, prefixes=("module.", "backbone."), tensors_only=False)


def _create_ravlt(variant: str, pretrained: bool = False, **kwargs: Any) -> RAVLT:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_linzoo_model(
        RAVLT,
        variant,
        pretrained,
        filter_fn=checkpoint_filter_fn,
        feature_cfg={"out_indices": out_indices, "feature_cls": "getter"},
        **kwargs,
    )


def _cfg(name: str, **kwargs: Any) -> dict[str, Any]:
    return base_cfg(
        name,
        paper_name="Breaking the Low-Rank Dilemma of Linear Attention",
        paper_ids="arXiv:2411.07635",
        origin_url="https://github.com/qhfan/RALA",
        **kwargs,
    )


default_cfgs = generate_default_cfgs({f"ravlt_{s}.in1k": _cfg(f"ravlt_{s}") for s in ("t", "s", "b", "l")})


@register_model
def ravlt_t(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    """RAVLT-T: 15 M params, 2.4 GFLOPs at 224."""
    args = dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8), drop_path_rate=0.1)
    return _create_ravlt("ravlt_t", pretrained, **dict(args, **kwargs))


@register_model
def ravlt_s(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    """RAVLT-S: 26 M params, 4.6 GFLOPs, 84.4 % ImageNet top-1."""
    args = dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8), drop_path_rate=0.15)
    return _create_ravlt("ravlt_s", pretrained, **dict(args, **kwargs))


@register_model
def ravlt_b(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    """RAVLT-B: 48 M params, 9.9 GFLOPs at 224."""
    args = dict(
        embed_dims=(96, 192, 384, 512),
        depths=(4, 6, 12, 6),
        num_heads=(1, 2, 6, 8),
        layer_scale_init=(1.0, 1.0, 1e-6, 1e-6),
        drop_path_rate=0.4,
    )
    return _create_ravlt("ravlt_b", pretrained, **dict(args, **kwargs))


@register_model
def ravlt_l(pretrained: bool = False, **kwargs: Any) -> RAVLT:
    """RAVLT-L: 95 M params, 16.0 GFLOPs at 224."""
    args = dict(
        embed_dims=(96, 192, 448, 640),
        depths=(4, 7, 19, 8),
        num_heads=(1, 2, 7, 10),
        layer_scale_init=(1e-6, 1e-6, 1e-6, 1e-6),
        drop_path_rate=0.55,
    )
    return _create_ravlt("ravlt_l", pretrained, **dict(args, **kwargs))
