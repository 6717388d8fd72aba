"""ViG: Linear-complexity Visual Sequence Learning with Gated Linear Attention (Liao et al., AAAI 2025,
arXiv 2405.18425).

Re-implemented for timm from the paper and the facts of the official code (github.com/hustvl/ViG @ dfb9d321,
``classification/models/vig.py`` for the plain ViG-T/S/B, ``vig_h.py`` for the hierarchical ViG-H-T/S/B). The
state-dict layouts equal the official ones, so the published checkpoints (``hf://hustvl/ViG``) load without renaming
(the ViG-H legacy names the official loader renames are handled by :func:`checkpoint_filter_fn`).

Token mixer (bidirectional gated linear attention with 2-D locality, per block, tokens in raster order)::

    U = DWConv3x3(x)  (+ SiLU for ViG-T)                               # local branch, input of every projection
    q, k, v = W_q U, W_k U, W_v U                                      # dk = D / (2 heads), dv = D / heads
    g^f, g^b = logsigmoid(W_2 W_1 U + b_2) / 16                        # direction-wise log-decays (rank 16)
    O = (o^f + o^b) / 4                                                # bidirectional GLA, linzoo.kernels.gla
    y = sigmoid(W_g U + b_g) ⊙ RMSNorm_g(O) + (1 - sigmoid(...)) ⊙ RMSNorm_l(U)   # per head
    out = W_o (SiLU(y) for ViG-T, else y)

Blocks are pre-norm (RMSNorm, eps 1e-6) with a SwiGLU MLP; a learned absolute position table (14 x 14 at 224 px,
bicubically resized for other grids, as the official code) is added after the two-conv patch embedding
(Conv9x9/8 - LN - SiLU - Conv3x3/2 - LN, stride 16); the classifier reads the average of the normalised tokens.
Any input size works (the grid is ``floor((floor((H - 7) / 8) + 1 + 1) / 2)``, 14 at 224).

ViG-H (:class:`HierViG`) runs the same mixer (output ``(o^f + o^b) / 2``, no SiLUs) in channels-first blocks with
LayerNorm2d (eps 1e-5) and a SwiGLU MLP, 4 stages at strides 4/8/16/32 (stem Conv3x3/2 - LN - GELU - Conv3x3/2 - LN,
Conv3x3/2 - LN downsampling), no position embedding; its classifier normalises, then averages.

The bidirectional scan is :func:`linzoo.kernels.gla.bidirectional_gla`: its fused recurrent Triton kernels on CUDA
(forward and backward), the chunked PyTorch form elsewhere (``LINZOO_KERNEL_BACKEND`` picks one).
Official-code details kept for bit-faithful outputs: the mixer output is ``(o^f + o^b) / 4`` (the official eval path
divides the kernel's mean by 2 again; only the next RMSNorm's eps sees it), used in training too (the official
training path uses ``/ 2``); ViG-T alone has the SiLU after the depthwise conv and before ``o_proj``; the same
depthwise-conv output feeds q/k/v, the gates, the output gate and the local branch; ``l_norm`` normalises that output
in per-head groups of ``D / heads`` channels.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, RmsNorm, calculate_drop_path_rates, resample_abs_pos_embed, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from linzoo.kernels.gla import bidirectional_gla

from ._builder import base_cfg, build_linzoo_model, check_image_input, load_pretrained_file, unwrap_checkpoint

__all__ = ["GLABlock", "GatedLinearAttention2d", "HierGLABlock", "HierViG", "ViG", "checkpoint_filter_fn"]

_HF = "https://huggingface.co/hustvl/ViG/resolve/main/"

# FX (timm's feature extraction) must treat the scan as a leaf: its chunk loop depends on the sequence length.


class GatedLinearAttention2d(nn.Module):
    """ViG's token mixer on tokens ``(B, H·W, C)`` of an ``H x W`` grid (official ``GatedLinearAttention``, eval).

    Keys: ``in_proj.0`` (depthwise 3x3, no bias), ``qkv_proj`` (rows q | k | v), ``gk_proj.{0,1}`` (low-rank gate,
    rows forward | backward), ``o_proj``, ``g_norm`` / ``l_norm`` (RMSNorm over a head's ``dv`` channels) and
    ``g_proj`` (output gate, with bias).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        gate_low_rank_dim: int = 16,
        gate_logit_normalizer: float = 16.0,
        act_in_conv: bool = False,
        out_act: bool = False,
        norm_eps: float = 1e-6,
        output_divisor: float = 4.0,
        chunk_size: int = 64,
        **dd: Any,
    ) -> None:
        super().__init__()
        self.key_dim, self.value_dim = int(dim * expand_k), int(dim * expand_v)
        if self.key_dim % num_heads or self.value_dim % num_heads:
            raise ValueError(
                f"num_heads ({num_heads}) must divide the key ({self.key_dim}) and value ({self.value_dim}) dims"
            )
        if self.value_dim != dim:
            # the local branch RMSNorm_l(U) is split into heads of dv channels: U has dim channels
            raise ValueError(f"expand_v must be 1 (the local branch has dim channels), got {expand_v}")
        self.num_heads = num_heads
        self.gate_logit_normalizer = gate_logit_normalizer
        self.output_divisor = output_divisor
        self.chunk_size = chunk_size
        head_v = self.value_dim // num_heads
        self.in_proj = nn.Sequential(
            nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False, **dd),
            nn.SiLU() if act_in_conv else nn.Identity(),
        )
        self.qkv_proj = nn.Linear(dim, 2 * self.key_dim + self.value_dim, bias=False, **dd)
        self.gk_proj = nn.Sequential(
            nn.Linear(dim, gate_low_rank_dim, bias=False, **dd),
            nn.Linear(gate_low_rank_dim, 2 * self.key_dim, bias=True, **dd),
        )
        self.o_proj = nn.Linear(self.value_dim, dim, bias=False, **dd)
        self.g_norm = RmsNorm(head_v, eps=norm_eps, **dd)
        self.l_norm = RmsNorm(head_v, eps=norm_eps, **dd)
        self.g_proj = nn.Linear(dim, self.value_dim, bias=True, **dd)
        self.out_act = nn.SiLU() if out_act else nn.Identity()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The official initialisation: Xavier-uniform with gain 2^-2.5 on every projection and the dwconv."""
        for w in (self.qkv_proj.weight, self.in_proj[0].weight, self.g_proj.weight, self.o_proj.weight):
            nn.init.xavier_uniform_(w, gain=2**-2.5)
        for lin in self.gk_proj:
            nn.init.xavier_uniform_(lin.weight, gain=2**-2.5)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        nh = self.num_heads
        u = self.in_proj(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)  # (B, L, C)
        q, k, v = self.qkv_proj(u).split([self.key_dim, self.key_dim, self.value_dim], dim=-1)
        gk = F.logsigmoid(self.gk_proj(u)) / self.gate_logit_normalizer
        g_fwd, g_bwd = gk.chunk(2, dim=-1)
        heads = lambda t: t.reshape(b, n, nh, -1).transpose(1, 2)
        o = bidirectional_gla(heads(q), heads(k), heads(v), heads(g_fwd), heads(g_bwd), chunk_size=self.chunk_size)
        o = self.g_norm((o / self.output_divisor).transpose(1, 2))  # (B, L, heads, dv)
        local = self.l_norm(u.reshape(b, n, nh, -1))
        g = self.g_proj(u).sigmoid().reshape(b, n, nh, -1)
        y = (o * g + local * (1 - g)).reshape(b, n, self.value_dim)
        return self.o_proj(self.out_act(y))


class GLAMlp(nn.Module):
    """SwiGLU MLP with the official keys: ``down_proj(SiLU(a) ⊙ b)``, ``[a; b] = gate_proj(x)`` (no biases).

    timm's ``SwiGLU`` / ``GluMlp`` name their layers ``fc1_g`` / ``fc1`` and order the halves differently.
    """

    def __init__(self, dim: int, hidden_dim: int, **dd: Any) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, 2 * hidden_dim, bias=False, **dd)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False, **dd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, y = self.gate_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * y)


class GLABlock(nn.Module):
    """``x + DropPath(Mixer(RMSNorm(x)))`` then ``x + DropPath(SwiGLU(RMSNorm(x)))`` (official ``GLABlock``)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_hidden_dim: int,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        **mixer_kwargs: Any,
    ) -> None:
        super().__init__()
        dd = {k: mixer_kwargs[k] for k in ("device", "dtype") if k in mixer_kwargs}
        self.attn_norm = RmsNorm(dim, eps=norm_eps, **dd)
        self.attn = GatedLinearAttention2d(dim, num_heads, norm_eps=norm_eps, **mixer_kwargs)
        self.mlp_norm = RmsNorm(dim, eps=norm_eps, **dd)
        self.mlp = GLAMlp(dim, mlp_hidden_dim, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.attn_norm(x), hw))
        return x + self.drop_path(self.mlp(self.mlp_norm(x)))


class PatchEmbed(nn.Module):
    """``proj``: Conv(k p/2+1, s p/2, pad 1) - LN2d - SiLU - Conv(k3, s2, pad 1) - LN2d (official ``V2PatchEmbed``).

    LayerNorm eps 1e-5 (the official ``LayerNorm2d`` subclasses ``nn.LayerNorm``; timm's default is 1e-6).
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, **dd: Any) -> None:
        super().__init__()
        stride = patch_size // 2
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, stride + 1, stride=stride, padding=1, **dd),
            LayerNorm2d(embed_dim // 2, eps=1e-5, **dd),
            nn.SiLU(),
            nn.Conv2d(embed_dim // 2, embed_dim, 3, stride=2, padding=1, **dd),
            LayerNorm2d(embed_dim, eps=1e-5, **dd),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class ViG(nn.Module):
    """Plain (isotropic, stride 16) ViG. Attributes ``patch_embed``, ``pos_embed``, ``blocks``, ``norm`` and
    ``head`` mirror the official layout.

    ``forward_features`` returns the normalised tokens ``(B, H'·W', D)``; ``forward_head`` averages them
    (``global_pool="avg"``, the official classifier). ``img_size`` sets the position table's grid
    (``img_size // patch_size``, 14 at 224); other inputs resize it bicubically on the fly.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        embed_dim: int = 192,
        depth: int = 12,
        num_heads: int = 3,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        mlp_hidden_dim: int | None = None,
        act_in_conv: bool = False,
        out_act: bool = False,
        norm_eps: float = 1e-6,
        chunk_size: int = 64,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        if not isinstance(img_size, int) or img_size < patch_size:
            raise ValueError(f"img_size must be an int >= patch_size ({patch_size}), got {img_size!r}")
        if patch_size < 4 or patch_size % 4:
            raise ValueError(
                f"patch_size must be a multiple of 4 (a conv of stride p/2, then stride 2), got {patch_size}"
            )
        if mlp_hidden_dim is None:  # the official GLAMLP rule: 2/3 of 4 D, rounded up to a multiple of 256
            mlp_hidden_dim = 256 * -(-int(embed_dim * 4 * 2 / 3) // 256)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.pos_grid = (img_size // patch_size,) * 2
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, **dd)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1], embed_dim, **dd))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        dpr = calculate_drop_path_rates(drop_path_rate, depth)
        mixer = dict(
            expand_k=expand_k, expand_v=expand_v, act_in_conv=act_in_conv, out_act=out_act, chunk_size=chunk_size
        )
        self.blocks = nn.ModuleList(
            [GLABlock(embed_dim, num_heads, mlp_hidden_dim, dpr[i], norm_eps, **mixer, **dd) for i in range(depth)]
        )
        self.feature_info = [dict(num_chs=embed_dim, reduction=patch_size, module=f"blocks.{i}") for i in range(depth)]
        self.norm = RmsNorm(embed_dim, eps=norm_eps, **dd)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        """The official initialisation: N(0, 0.02) linears with zero bias, then the mixers' Xavier init, and a
        trunc-normal(0.02) position table; convolutions and norms keep PyTorch's defaults."""
        self.apply(self._init_weights)
        for m in self.modules():
            if isinstance(m, GatedLinearAttention2d):
                m.reset_parameters()
        trunc_normal_(self.pos_embed, std=0.02)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    # --- timm API -----------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(stem=r"^pos_embed|^patch_embed", blocks=[(r"^blocks\.(\d+)", None), (r"^norm\.", (99999,))])

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
        w = self.pos_embed  # the device and dtype the new classifier takes
        self.head = (
            nn.Linear(self.num_features, num_classes, device=w.device, dtype=w.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        if num_classes > 0:
            self._init_weights(self.head)

    def load_pretrained(self, path: str) -> None:
        """Load an official checkpoint (bare state dict or ``{'model': ...}``) or a converted state dict."""
        load_pretrained_file(self, path, checkpoint_filter_fn)

    # --- forward ------------------------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Image -> tokens ``(B, H'·W', D)`` with the (resized) position table added, and the grid ``(H', W')``."""
        check_image_input(x, self.in_chans)
        x = self.patch_embed(x)
        hw = (x.shape[2], x.shape[3])
        pos = self.pos_embed
        if hw != self.pos_grid:  # bicubic, align_corners False, no antialias: the official resize_pos_embed
            pos = resample_abs_pos_embed(pos, list(hw), list(self.pos_grid), num_prefix_tokens=0, antialias=False)
        return self.pos_drop(x.flatten(2).transpose(1, 2) + pos), hw

    def _block(self, blk: nn.Module, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint(blk, x, hw, use_reentrant=False)
        return blk(x, hw)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Block outputs as maps ``(B, D, H', W')`` (stride 16).

        Args:
            indices: take the last n blocks if an int, all if None, else the listed block indices.
            norm: apply the final RMSNorm to each intermediate.
            stop_early: stop after the last requested block.
            output_fmt: ``"NCHW"`` or ``"NLC"`` (tokens).
            intermediates_only: return only the list of intermediates.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        x, hw = self._embed(x)
        blocks = self.blocks if not (stop_early or intermediates_only) else self.blocks[: max_index + 1]
        intermediates = []
        for i, blk in enumerate(blocks):
            x = self._block(blk, x, hw)
            if i in take_indices:
                y = self.norm(x) if norm else x
                intermediates.append(y if output_fmt == "NLC" else y.transpose(1, 2).reshape(y.shape[0], -1, *hw))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the blocks after the last requested one (and the head / final norm); returns the taken indices."""
        take_indices, max_index = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[: max_index + 1]
        self.feature_info = self.feature_info[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.head_drop = nn.Identity()
            self.head = nn.Identity()
            self.num_classes = 0
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> normalised tokens ``(B, H'·W', D)`` in raster order."""
        x, hw = self._embed(x)
        for blk in self.blocks:
            x = self._block(blk, x, hw)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --- hierarchical ViG (ViG-H) ---------------------------------------------------------------------------------
class Linear2d(nn.Linear):
    """A linear layer applied over the channels of a ``(B, C, H, W)`` map (a 1x1 conv with a 2-D weight), the layout
    of the official ViG-H ``Linear2d`` keys."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight[:, :, None, None], self.bias)


class GatedMlp2d(nn.Module):
    """ViG-H's channels-first SwiGLU MLP (official ``gMlp``): ``fc2(SiLU(a) ⊙ b)``, ``[a; b] = fc1(x)`` on channels.

    Hidden size ``32 · ceil(int(8 C / 3) / 32)``; no biases.
    """

    def __init__(self, dim: int, drop: float = 0.0, **dd: Any) -> None:
        super().__init__()
        hidden = 32 * -(-int(dim * 4 * 2 / 3) // 32)
        self.fc1 = Linear2d(dim, 2 * hidden, bias=False, **dd)
        self.fc2 = Linear2d(hidden, dim, bias=False, **dd)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, y = self.fc1(x).chunk(2, dim=1)
        return self.drop(self.fc2(F.silu(gate) * y))


class HierGLABlock(nn.Module):
    """Channels-first ViG-H block (official ``VSSBlock``): ``x + DropPath(GLA(LN2d(x)))``, then
    ``x + DropPath(gMlp(LN2d(x)))``.

    The mixer is :class:`GatedLinearAttention2d` on the raster-ordered tokens, with the official ViG-H output
    ``(o^f + o^b) / 2``; its 1x1-conv projections are plain linear layers on tokens (same weights, same maths).
    """

    def __init__(
        self, dim: int, num_heads: int, drop_path: float = 0.0, mlp_drop: float = 0.0, chunk_size: int = 64, **dd: Any
    ) -> None:
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=1e-5, **dd)
        self.op = GatedLinearAttention2d(dim, num_heads, output_divisor=2.0, chunk_size=chunk_size, **dd)
        self.norm2 = LayerNorm2d(dim, eps=1e-5, **dd)
        self.mlp = GatedMlp2d(dim, mlp_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.op(self.norm(x).flatten(2).transpose(1, 2), (h, w))
        x = x + self.drop_path(y.transpose(1, 2).reshape(b, c, h, w))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class HierViG(nn.Module):
    """Hierarchical ViG (ViG-H): 4 channels-first stages at strides 4/8/16/32, official ``HierViG`` layout.

    ``patch_embed`` = Conv3x3/2 - LN2d - GELU - Conv3x3/2 - LN2d (indices 0, 2, 4, 5, 7; the rest Identity),
    ``layers.{i}.blocks.{j}``, ``layers.{i}.downsample`` = Conv3x3/2 - LN2d (indices 1, 3; Identity after the last
    stage) and ``classifier.{norm, head}``. ``forward_features`` returns the last stage map (before the norm);
    ``forward_head`` applies ``classifier.norm`` per position, then averages, as the official classifier.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        dims: int | tuple[int, ...] = 96,
        depths: tuple[int, ...] = (2, 2, 5, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        chunk_size: int = 64,
        drop_rate: float = 0.0,
        mlp_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        if isinstance(dims, int):
            dims = tuple(dims * 2**i for i in range(len(depths)))
        if not (len(dims) == len(depths) == len(num_heads)):
            raise ValueError(f"dims, depths and num_heads need one entry per stage, got {dims}, {depths}, {num_heads}")
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.dims = tuple(dims)
        self.num_features = self.head_hidden_size = dims[-1]
        self.grad_checkpointing = False
        c0 = dims[0]
        self.patch_embed = nn.Sequential(
            nn.Conv2d(in_chans, c0 // 2, 3, stride=2, padding=1, **dd),
            nn.Identity(),
            LayerNorm2d(c0 // 2, eps=1e-5, **dd),
            nn.Identity(),
            nn.GELU(),
            nn.Conv2d(c0 // 2, c0, 3, stride=2, padding=1, **dd),
            nn.Identity(),
            LayerNorm2d(c0, eps=1e-5, **dd),
        )
        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        self.layers = nn.ModuleList()
        self.feature_info = []
        cur = 0
        for i, (dim, depth, heads) in enumerate(zip(dims, depths, num_heads)):
            blocks = [HierGLABlock(dim, heads, dpr[cur + j], mlp_drop_rate, chunk_size, **dd) for j in range(depth)]
            cur += depth
            if i < len(dims) - 1:
                downsample = nn.Sequential(
                    nn.Identity(),
                    nn.Conv2d(dim, dims[i + 1], 3, stride=2, padding=1, **dd),
                    nn.Identity(),
                    LayerNorm2d(dims[i + 1], eps=1e-5, **dd),
                )
            else:
                downsample = nn.Identity()
            self.layers.append(nn.Sequential(OrderedDict(blocks=nn.Sequential(*blocks), downsample=downsample)))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2**i, module=f"layers.{i}"))
        self.classifier = nn.Sequential(
            OrderedDict(
                norm=LayerNorm2d(dims[-1], eps=1e-5, **dd),
                head_drop=nn.Dropout(drop_rate),
                head=nn.Linear(dims[-1], num_classes, **dd) if num_classes > 0 else nn.Identity(),
            )
        )
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The official initialisation: trunc-normal(0.02) linears (also the 1x1 ones) with zero bias, unit
        # LayerNorms; the mixers' depthwise convs keep their Xavier init, other convs PyTorch's default.
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # --- timm API -----------------------------------------------------------------------------------------
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^patch_embed",
            blocks=r"^layers\.(\d+)"
            if coarse
            else [
                (r"^layers\.(\d+)\.downsample", (0,)),
                (r"^layers\.(\d+)\.blocks\.(\d+)", None),
                (r"^classifier\.norm", (99999,)),
            ],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.classifier.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        w = self.classifier.norm.weight
        self.classifier.head = (
            nn.Linear(self.num_features, num_classes, device=w.device, dtype=w.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        if num_classes > 0:
            self._init_weights(self.classifier.head)

    def load_pretrained(self, path: str) -> None:
        """Load an official checkpoint (bare state dict or ``{'model': ...}``, legacy key names too)."""
        load_pretrained_file(self, path, checkpoint_filter_fn)

    # --- forward ------------------------------------------------------------------------------------------
    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        for blk in self.layers[i].blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
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
        """Stage outputs (before each downsample) ``(B, C_i, H / 2^(i+2), W / 2^(i+2))`` (rounded up).

        Args:
            indices: take the last n stages if an int, all if None, else the listed stage indices.
            norm: apply ``classifier.norm`` to the last stage's map.
            stop_early: stop after the last requested stage.
            output_fmt: only ``"NCHW"``.
            intermediates_only: return only the list of intermediates.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        check_image_input(x, self.in_chans)
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        last = max_index if (stop_early or intermediates_only) else len(self.layers) - 1
        x = self.patch_embed(x)
        intermediates = []
        for i in range(last + 1):
            x = self._stage(i, x)
            if i in take_indices:
                final = i == len(self.layers) - 1
                intermediates.append(self.classifier.norm(x) if (norm and final) else x)
            x = self.layers[i].downsample(x)
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last requested one (and the head / final norm); returns the taken indices."""
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        self.layers = self.layers[: max_index + 1]
        self.layers[-1].downsample = nn.Identity()
        self.feature_info = self.feature_info[: max_index + 1]
        if max_index < len(self.dims) - 1:
            prune_norm = True
            self.num_features = self.head_hidden_size = self.dims[max_index]
        if prune_norm:
            self.classifier.norm = nn.Identity()
        if prune_head:
            self.classifier.head_drop = nn.Identity()
            self.classifier.head = nn.Identity()
            self.num_classes = 0
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> last stage map ``(B, C_4, ceil(H/32), ceil(W/32))`` (before the final norm)."""
        check_image_input(x, self.in_chans)
        x = self.patch_embed(x)
        for i in range(len(self.layers)):
            x = self.layers[i].downsample(self._stage(i, x))
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.classifier.norm(x)
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        x = self.classifier.head_drop(x)
        return x if pre_logits else self.classifier.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# Legacy HierViG key names the official ``_load_from_state_dict`` renames (prefix match).
_LEGACY_H = (
    (re.compile(r"^patch_embed\.proj\."), "patch_embed.0."),
    (re.compile(r"^patch_embed\.norm\."), "patch_embed.2."),
    (re.compile(r"^(layers\.\d+\.blocks\.\d+)\.ln_1\."), r"\1.norm."),
    (re.compile(r"^(layers\.\d+\.blocks\.\d+)\.self_attention\."), r"\1.op."),
    (re.compile(r"^norm\."), "classifier.norm."),
    (re.compile(r"^head\."), "classifier.head."),
)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official ViG / ViG-H checkpoint -> this model. The layouts are equal; this unwraps ``{'model': ...}`` (the
    official loader's key; a bare state dict is taken as is) and drops ``module.``. For ViG it resizes ``pos_embed``
    (bicubic) when the model's table grid (``img_size // 16``) differs from the checkpoint's; for ViG-H it applies the
    official legacy renames (``patch_embed.proj/norm``, ``ln_1``, ``self_attention``, top-level ``norm`` / ``head``)
    and flattens 1x1-conv weights ``(out, in, 1, 1)`` stored for its 1x1 linear layers."""
    state_dict = unwrap_checkpoint(state_dict, containers=("model", "state_dict", "model_ema", "state_dict_ema"))
    own = model.state_dict()
    out = {}
    for k, v in state_dict.items():
        if isinstance(model, HierViG):
            for pattern, repl in _LEGACY_H:
                k = pattern.sub(repl, k)
            if k in own and own[k].dim() == 2 and v.dim() == 4 and v.shape[2:] == (1, 1):
                v = v.flatten(1)
        elif k == "pos_embed" and v.shape != own[k].shape and v.dim() == 3:
            old = int(round(v.shape[1] ** 0.5))
            if old * old == v.shape[1]:
                v = resample_abs_pos_embed(v, list(model.pos_grid), [old, old], num_prefix_tokens=0, antialias=False)
        out[k] = v
    return out


def _create_vig(variant: str, pretrained: bool = False, **kwargs: Any) -> ViG:
    out_indices = kwargs.pop("out_indices", tuple(range(kwargs.get("depth", 12))))
    return build_linzoo_model(
        ViG,
        variant,
        pretrained,
        filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _create_vig_h(variant: str, pretrained: bool = False, **kwargs: Any) -> HierViG:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_linzoo_model(
        HierViG,
        variant,
        pretrained,
        filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(name: str, filename: str, hier: bool = False, **kwargs: Any) -> dict[str, Any]:
    return base_cfg(
        name,
        url=_HF + filename,
        pool_size=(7, 7) if hier else None,
        crop_pct=0.875,  # official eval: Resize(256, bicubic) + CenterCrop(224)
        first_conv="patch_embed.0" if hier else "patch_embed.proj.0",
        classifier="classifier.head" if hier else "head",
        license="mit",
        paper_name="ViG: Linear-complexity Visual Sequence Learning with Gated Linear Attention",
        paper_ids="arXiv:2405.18425",
        origin_url="https://github.com/hustvl/ViG",
        **kwargs,
    )


default_cfgs = generate_default_cfgs(
    {
        "vig_t.in1k": _cfg("vig_t", "vig_t_77p2acc.pth"),
        "vig_s.in1k": _cfg("vig_s", "vig_s_81p7acc.pth"),
        "vig_b.in1k": _cfg("vig_b", "vig_b_82p6acc.pth"),
        "vig_h_t.in1k": _cfg("vig_h_t", "vig_h_t_82p8acc.pth", True),
        "vig_h_s.in1k": _cfg("vig_h_s", "vig_h_s_83p8acc.pth", True),
        "vig_h_b.in1k": _cfg("vig_h_b", "vig_h_b_84p2acc.pth", True),
    }
)


@register_model
def vig_t(pretrained: bool = False, **kwargs: Any) -> ViG:
    """ViG-T: D 192, 3 heads, 12 blocks, SiLU after the dwconv and before o_proj; 5.8 M params, 77.2 % top-1."""
    args = dict(embed_dim=192, depth=12, num_heads=3, act_in_conv=True, out_act=True)
    return _create_vig("vig_t", pretrained, **dict(args, **kwargs))


@register_model
def vig_s(pretrained: bool = False, **kwargs: Any) -> ViG:
    """ViG-S: D 384, 6 heads, 12 blocks; 22.6 M params, 81.7 % top-1."""
    args = dict(embed_dim=384, depth=12, num_heads=6)
    return _create_vig("vig_s", pretrained, **dict(args, **kwargs))


@register_model
def vig_b(pretrained: bool = False, **kwargs: Any) -> ViG:
    """ViG-B: D 768, 12 heads, 12 blocks; 89.0 M params, 82.6 % top-1."""
    args = dict(embed_dim=768, depth=12, num_heads=12)
    return _create_vig("vig_b", pretrained, **dict(args, **kwargs))


@register_model
def vig_h_t(pretrained: bool = False, **kwargs: Any) -> HierViG:
    """ViG-H-T: dims 96-768, depths 2/2/5/2, heads 3/6/12/24; 28.6 M params, 82.8 % top-1."""
    args = dict(dims=96, depths=(2, 2, 5, 2), num_heads=(3, 6, 12, 24))
    return _create_vig_h("vig_h_t", pretrained, **dict(args, **kwargs))


@register_model
def vig_h_s(pretrained: bool = False, **kwargs: Any) -> HierViG:
    """ViG-H-S: dims 96-768, depths 2/2/17/2, heads 3/6/12/24; 50.1 M params, 83.8 % top-1."""
    args = dict(dims=96, depths=(2, 2, 17, 2), num_heads=(3, 6, 12, 24))
    return _create_vig_h("vig_h_s", pretrained, **dict(args, **kwargs))


@register_model
def vig_h_b(pretrained: bool = False, **kwargs: Any) -> HierViG:
    """ViG-H-B: dims 128-1024, depths 2/2/17/2, heads 4/8/16/32; 88.9 M params, 84.2 % top-1."""
    args = dict(dims=128, depths=(2, 2, 17, 2), num_heads=(4, 8, 16, 32))
    return _create_vig_h("vig_h_b", pretrained, **dict(args, **kwargs))
