"""SOFT: Softmax-free Transformer (Lu et al., NeurIPS 2021, arXiv 2110.11945) and SOFT-Norm (IJCV 2024,
arXiv 2207.03341).

Re-implemented for timm from the papers and the facts of the official code
(github.com/fudan-zvg/SOFT @ d3febc33, ``models/softmax_free_{vision_,}transformer.py``, ``SOFT/kernel/``). The
state-dict layout equals the official one, so the published checkpoints load without renaming.

SOFT attention (per head, head dim d = 32, token grid H x W, landmark stride r)::

    Q = W_q x / d^{1/4};   K = Q                                  # no key projection
    Q~ = GELU(LN(Conv_rxr/r(Q)))                                  # m = floor(H/r)·floor(W/r) landmarks
    G(a, b) = exp(-||a - b||^2 / 2)                               # Gaussian kernel
    K1 = G(Q, Q~) (N x m),  K2 = G(Q~, Q~) (m x m)
    SOFT:       out = K1 · NewtonPinv(K2) · (K1^T V)
    SOFT-Norm:  out = K1 · (D^{-1/2} Ninv(K2) D^{-1/2}) · (K1^T V),   D = diag(K2 1)
    out += DWConv_kxk(V) (one k x k kernel per head, shared by the head's d channels);  y = ff(out)

Stages 1-3 use post-norm SOFT blocks (``X = LN1(X + Attn(X)); X = LN2(X + FFN(X))``, LN eps 1e-5, tanh-GELU FFN
4x); stage 4 prepends a cls token and runs PVT-style pre-norm softmax attention blocks (LN eps 1e-6). The
classifier reads the cls token after the final norm. Absolute position embeddings have fixed shapes (a 56/28/14/7
grid) and are bilinearly resized to the actual grid on every call, so any input size works as long as every stage's
grid is at least its landmark stride (an input side of at least 29 px; a clear ``ValueError`` below that).

Why plain PyTorch instead of the official extensions:

- The official ``subtraction_gaussian_kernel`` is a compiled CUDA op (``SOFT._C``) that evaluates ``||a - b||^2``
  entry by entry. Here it is the GEMM form ``||a||^2 + ||b||^2 - 2 a·b`` (exactly what the official
  ``kernel_method="torch"`` computes, the one every non-``_cuda`` config trains with): one batched matmul, no
  extension to build, runs on any device. Both forms give the same distances up to rounding (checked in the tests).
- The official ``newton_inverse_kernel`` asserts CUDA tensors; its body (``newton_inv``) is pure PyTorch. It is
  reproduced below with the same initialisation (``+0.01 I``, ``alpha = 0.9 · 2 / max_row_sum^2`` per sample and
  head), the same iteration count (``newton_max_iter``, 20) and the same analytic backward (``-V^T g V^T``).
- SOFT-Norm's ``newton_inv`` (a method of the attention kernel, differentiated by autograd) is reproduced with the
  same global ``alpha`` (max over the whole batch and all heads) and the same halving search; the search runs as
  ten masked steps on the device instead of a data-dependent Python loop, so it needs no host synchronisation.

The Gaussian kernel and the inverse always run in fp32 (also under autocast): the GEMM-form distance cancels
catastrophically in half precision.

The published checkpoints are Google-Drive links (see ``linzoo.weights.registry.soft``): download them and pass the
file, ``timm.create_model("soft_tiny", pretrained=True, pretrained_cfg_overlay=dict(file=path))``; the EMA weights
(``state_dict_ema``, what the official ``--eval`` loads and the published top-1 measures) are used.

Official-code oddities kept for weight compatibility: the ``soft_small`` config (depths 1/3/20/4, 38.9 M params)
does not match the README's SOFT-Small (24 M / 3.3 G); it is the configuration in the code and the manifests.
The official ``soft_norm_*`` models cannot be built as published (a NameError in
``SoftmaxFreeNormAttentionKernel.__init__``); the intended computation is clear and implemented here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, calculate_drop_path_rates, trunc_normal_
from timm.models import generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from ._builder import base_cfg, build_linzoo_model, check_image_input, load_pretrained_file, unwrap_checkpoint

__all__ = ["SOFT", "checkpoint_filter_fn", "gaussian_kernel", "newton_inverse", "newton_inverse_norm"]

# Fixed position-embedding grids of the official model (224 / 4, / 8, / 16, / 32).
_POS_GRIDS = (56, 28, 14, 7)
# Local (depthwise over heads) convolution sizes of stages 1-3, hard-coded in the official model.
_LOCAL_CONV = (9, 5, 3)


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``exp(-||a_i - b_j||^2 / 2)`` for ``a`` (..., N, d) and ``b`` (..., M, d) -> (..., N, M).

    The squared distance uses the GEMM form ``||a||^2 + ||b||^2 - 2 a·b`` (one batched matmul; see the module
    docstring for why this replaces the official CUDA subtraction op). Call it in fp32.
    """
    lead = a.shape[:-2]
    a3, b3 = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    sq = a3.square().sum(-1, keepdim=True) + b3.square().sum(-1).unsqueeze(-2)
    dist = torch.baddbmm(sq, a3, b3.transpose(-1, -2), beta=1.0, alpha=-2.0)
    return torch.exp(-0.5 * dist).reshape(*lead, a.shape[-2], b.shape[-2])


def _newton_iterations(v: torch.Tensor, p: torch.Tensor, iters: int) -> torch.Tensor:
    """``V <- 2V - V P V``, ``iters`` times (Newton-Schulz iteration towards ``P^+``)."""
    for _ in range(iters):
        v = 2 * v - v @ p @ v
    return v


class _NewtonInverse(torch.autograd.Function):
    """SOFT's pseudo-inverse: Newton iterations in the forward (no graph), ``-V^T g V^T`` in the backward
    (the official ``_NewtonInverseKernel``)."""

    @staticmethod
    def forward(ctx: Any, mat: torch.Tensor, iters: int) -> torch.Tensor:
        with torch.no_grad():
            eye = torch.eye(mat.shape[-1], device=mat.device, dtype=mat.dtype)
            alpha = 0.9 * 2 / mat.sum(-1).amax(-1).square()
            p = mat + 0.01 * eye
            inv = _newton_iterations(alpha[..., None, None] * p, p, iters)
        ctx.save_for_backward(inv)
        return inv

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (inv,) = ctx.saved_tensors
        inv_t = inv.transpose(-1, -2)
        return -(inv_t @ grad @ inv_t), None


def newton_inverse(mat: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """SOFT's Moore-Penrose inverse of ``mat`` (B, heads, m, m) by Newton iteration (official ``newton_inv``).

    ``P = mat + 0.01 I``, ``V_0 = alpha P`` with ``alpha = 0.9 · 2 / (max_i sum_j mat_ij)^2`` per (batch, head),
    then ``V <- 2V - V P V`` ``iters`` times. Backward: ``-V^T g V^T`` (the official analytic gradient).
    """
    return _NewtonInverse.apply(mat, iters)


def newton_inverse_norm(mat: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """SOFT-Norm's inverse of ``mat`` (B, heads, m, m), differentiated by autograd as in the official code.

    ``alpha = 2 / (max over batch, heads and rows of the row sums)^2``; while ``max_col ||I - mat·alpha mat||_1 >
    1.01`` (at most 10 times) ``alpha <- alpha / 2``; ``V_0 = alpha mat``; ``V <- 2V - V mat V`` ``iters`` times.
    The halving search is ten masked steps (no data-dependent Python branch); the result is the official one.
    """
    eye = torch.eye(mat.shape[-1], device=mat.device, dtype=mat.dtype)
    alpha = 2 / mat.sum(-1).max().square()
    with torch.no_grad():
        a = alpha.detach()
        searching = torch.ones((), dtype=torch.bool, device=mat.device)
        for _ in range(10):
            pnorm = (eye - mat @ (a * mat)).abs().sum(-2).max()
            searching = searching & (pnorm > 1.01)
            a = torch.where(searching, a * 0.5, a)
        scale = a / alpha.detach()  # 0.5^k exactly
    return _newton_iterations(alpha * scale * mat, mat, iters)


class SoftAttentionKernel(nn.Module):
    """The SOFT attention core on per-head ``q``, ``v`` (B, heads, H·W, d) -> (B, heads, H·W, d).

    Keys ``Qlandmark_op`` (landmark conv shared by all heads), ``Qnorm_act.0`` (landmark LayerNorm) and ``conv``
    (local depthwise-over-heads conv) follow the official ``SoftmaxFreeAttentionKernel``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ratio: int,
        conv_size: int,
        max_iter: int = 20,
        normalized: bool = False,
        **dd: Any,
    ) -> None:
        super().__init__()
        if ratio < 2:
            # The official ratio == 1 branch is dead code in every config (it reads an attribute never set).
            raise ValueError(f"ratio (the landmark stride) must be >= 2, got {ratio}")
        self.head_dim = dim // num_heads
        self.num_head = num_heads
        self.ratio = ratio
        self.max_iter = max_iter
        self.normalized = normalized
        d = self.head_dim
        self.Qlandmark_op = nn.Conv2d(d, d, kernel_size=ratio, stride=ratio, bias=False, **dd)
        self.Qnorm_act = nn.Sequential(nn.LayerNorm(d, **dd), nn.GELU())
        self.conv = nn.Conv2d(
            num_heads, num_heads, conv_size, padding=conv_size // 2, groups=num_heads, bias=False, **dd
        )

    def forward(self, q: torch.Tensor, v: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, nh, n, d = q.shape
        h, w = hw
        q = q / math.sqrt(math.sqrt(d))
        lm = self.Qlandmark_op(q.reshape(b * nh, h, w, d).permute(0, 3, 1, 2))
        lm = self.Qnorm_act(lm.flatten(2).transpose(1, 2).reshape(b, nh, -1, d))
        with torch.autocast(q.device.type, enabled=False):
            ct = torch.promote_types(q.dtype, torch.float32)  # fp32 at least (fp64 stays fp64)
            q32, lm32, v32 = q.to(ct), lm.to(ct), v.to(ct)
            k1 = gaussian_kernel(q32, lm32)
            k2 = gaussian_kernel(lm32, lm32)
            if self.normalized:
                d_sym = k2.sum(-1, keepdim=True).rsqrt()
                inv = d_sym * newton_inverse_norm(k2, self.max_iter) * d_sym.transpose(-1, -2)
            else:
                inv = newton_inverse(k2, self.max_iter)
            out = (k1 @ inv) @ (k1.transpose(-1, -2) @ v32)
        out = out.to(v.dtype)
        # Local term: V as (B·d, heads, H, W), one k x k kernel per head shared by the head's d channels.
        vc = v.reshape(b, nh, h, w, d).permute(0, 4, 1, 2, 3).reshape(b * d, nh, h, w)
        local = self.conv(vc).reshape(b, d, nh, n).permute(0, 2, 3, 1)
        return out + local


class SoftAttention(nn.Module):
    """``ff(merge_heads(SoftAttentionKernel(W_q x, W_v x)))`` on ``(B, N, C)`` (official ``SoftmaxFreeAttention``)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ratio: int,
        conv_size: int,
        max_iter: int = 20,
        normalized: bool = False,
        **dd: Any,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_head = num_heads
        self.W_q = nn.Linear(dim, dim, **dd)
        self.W_v = nn.Linear(dim, dim, **dd)
        self.attn = SoftAttentionKernel(dim, num_heads, ratio, conv_size, max_iter, normalized, **dd)
        self.ff = nn.Linear(dim, dim, **dd)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        q = self.W_q(x).reshape(b, n, self.num_head, -1).transpose(1, 2)
        v = self.W_v(x).reshape(b, n, self.num_head, -1).transpose(1, 2)
        out = self.attn(q, v, hw).transpose(1, 2).reshape(b, n, c)
        return self.ff(out)


class SoftTransformer(nn.Module):
    """Post-norm SOFT layer: ``X = LN1(X + drop(Attn(X))); X = LN2(X + drop(ff2(tanhGELU(ff1(X)))))``.

    ``drop`` is plain dropout with the block's drop-path rate, as in the official code (no stochastic depth).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ratio: int,
        conv_size: int,
        drop: float = 0.0,
        max_iter: int = 20,
        normalized: bool = False,
        **dd: Any,
    ) -> None:
        super().__init__()
        self.mha = SoftAttention(dim, num_heads, ratio, conv_size, max_iter, normalized, **dd)
        self.dropout1 = nn.Dropout(drop)
        self.norm1 = nn.LayerNorm(dim, **dd)
        self.ff1 = nn.Linear(dim, 4 * dim, **dd)
        self.act = nn.GELU(approximate="tanh")  # the official Approx_GeLU formula
        self.ff2 = nn.Linear(4 * dim, dim, **dd)
        self.dropout2 = nn.Dropout(drop)
        self.norm2 = nn.LayerNorm(dim, **dd)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = self.norm1(x + self.dropout1(self.mha(x, hw)))
        return self.norm2(x + self.dropout2(self.ff2(self.act(self.ff1(x)))))


class SoftBlock(nn.Module):
    """Wrapper kept for the official ``block{i}.{j}.att.*`` key layout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.att = SoftTransformer(*args, **kwargs)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return self.att(x, hw)


class Attention(nn.Module):
    """Stage-4 multi-head softmax attention with separate ``q`` / ``kv`` projections (PVT layout, sr 1).

    timm's ``Attention`` fuses q, k, v into one ``qkv`` projection; the official keys need ``q`` and ``kv``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        **dd: Any,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias, **dd)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias, **dd)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim, **dd)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, -1).transpose(1, 2)
        k, v = self.kv(x).reshape(b, n, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(x.transpose(1, 2).reshape(b, n, c)))


class Block(nn.Module):
    """Stage-4 pre-norm block: ``x + DropPath(Attn(LN1(x)))`` then ``x + DropPath(Mlp(LN2(x)))`` (exact GELU)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        **dd: Any,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, proj_drop, **dd)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=proj_drop, **dd)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvPatchEmbed(nn.Module):
    """``proj``: Conv3x3 stride 2 + BN + ReLU (stage 1: three conv-BN-ReLU, strides 2/1/2, 32 hidden channels).

    ``(B, C_in, H, W)`` -> tokens ``(B, H'·W', C)`` and ``(H', W')`` with ``H' = ceil(H / stride)``.
    """

    def __init__(self, in_chans: int, embed_dim: int, stem: bool = False, **dd: Any) -> None:
        super().__init__()
        if stem:
            self.proj = nn.Sequential(
                nn.Conv2d(in_chans, 32, 3, stride=2, padding=1, **dd),
                nn.BatchNorm2d(32, **dd),
                nn.ReLU(),
                nn.Conv2d(32, 32, 3, stride=1, padding=1, **dd),
                nn.BatchNorm2d(32, **dd),
                nn.ReLU(),
                nn.Conv2d(32, embed_dim, 3, stride=2, padding=1, **dd),
                nn.BatchNorm2d(embed_dim, **dd),
                nn.ReLU(),
            )
        else:
            self.proj = nn.Sequential(
                nn.Conv2d(in_chans, embed_dim, 3, stride=2, padding=1, **dd),
                nn.BatchNorm2d(embed_dim, **dd),
                nn.ReLU(),
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return x.flatten(2).transpose(1, 2), (h, w)


def _resize_pos(pos: torch.Tensor, grid: int, hw: tuple[int, int]) -> torch.Tensor:
    """Fixed ``(1, grid², C)`` position embedding -> ``(1, H·W, C)``, bilinear, align_corners False (official)."""
    if hw == (grid, grid):
        return pos  # the official same-size bilinear resize is an exact copy
    pos = pos.reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(pos, size=hw, mode="bilinear", align_corners=False)
    return pos.flatten(2).transpose(1, 2)


class SOFT(nn.Module):
    """Softmax-free vision transformer (SOFT / SOFT-Norm), 4 stages at strides 4/8/16/32.

    Attributes ``patch_embed{i}``, ``pos_embed{i}``, ``block{i}`` (i = 1..4), ``cls_token``, ``norm`` and ``head``
    mirror the official layout. Dropouts (all 0 by default): ``drop_rate`` is the classifier dropout (timm
    convention); ``pos_drop_rate`` / ``proj_drop_rate`` / ``attn_drop_rate`` are the official ``drop_rate``
    (after each position embedding, stage-4 projections) and ``attn_drop_rate``; ``drop_path_rate`` follows the
    official linear rule: plain dropout inside stage 1-3 SOFT layers, stochastic depth in stage 4.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "token",
        embed_dims: Sequence[int] = (64, 128, 320, 512),
        num_heads: Sequence[int] = (2, 4, 10, 16),
        depths: Sequence[int] = (1, 2, 3, 2),
        sr_ratios: Sequence[int] = (8, 4, 2),
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        normalized: bool = False,
        newton_max_iter: int = 20,
        drop_rate: float = 0.0,
        pos_drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        for name, value, n in (("embed_dims", embed_dims, 4), ("num_heads", num_heads, 4), ("depths", depths, 4)):
            if len(value) != n:
                raise ValueError(f"{name} must have {n} entries (one per stage), got {tuple(value)}")
        if len(sr_ratios) != 3:
            raise ValueError(f"sr_ratios must have 3 entries (landmark strides of stages 1-3), got {tuple(sr_ratios)}")
        if global_pool not in ("token", "avg", ""):
            raise ValueError(f"global_pool must be 'token', 'avg' or '', got {global_pool!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_stages = 4
        self.sr_ratios = tuple(sr_ratios)
        self.grad_checkpointing = False
        self.feature_info: list[dict[str, Any]] = []

        dpr = calculate_drop_path_rates(drop_path_rate, sum(depths))
        cur = 0
        for i in range(4):
            in_dim = in_chans if i == 0 else embed_dims[i - 1]
            setattr(self, f"patch_embed{i + 1}", ConvPatchEmbed(in_dim, embed_dims[i], stem=i == 0, **dd))
            tokens = _POS_GRIDS[i] ** 2 + (1 if i == 3 else 0)
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, tokens, embed_dims[i], **dd)))
            if i < 3:
                blocks = [
                    SoftBlock(
                        embed_dims[i],
                        num_heads[i],
                        sr_ratios[i],
                        _LOCAL_CONV[i],
                        dpr[cur + j],
                        newton_max_iter,
                        normalized,
                        **dd,
                    )
                    for j in range(depths[i])
                ]
            else:
                blocks = [
                    Block(
                        embed_dims[i],
                        num_heads[i],
                        mlp_ratio,
                        qkv_bias,
                        proj_drop_rate,
                        attn_drop_rate,
                        dpr[cur + j],
                        **dd,
                    )
                    for j in range(depths[i])
                ]
            cur += depths[i]
            setattr(self, f"block{i + 1}", nn.ModuleList(blocks))
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=4 * 2**i, module=f"block{i + 1}"))
        self.pos_drop = nn.Dropout(pos_drop_rate)
        self.norm = nn.LayerNorm(embed_dims[3], eps=1e-6, **dd)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[3], **dd))
        self.num_features = self.head_hidden_size = embed_dims[3]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[3], num_classes, **dd) if num_classes > 0 else nn.Identity()

        for i in range(4):
            trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # The official initialisation: trunc-normal linears with zero bias, unit LayerNorms, default convolutions.
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
        return {"cls_token"}  # as the official model

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^patch_embed1\.|^pos_embed1$",
            blocks=r"^(?:patch_embed|pos_embed|block)(\d+)"
            if coarse
            else [
                (r"^(?:patch_embed|pos_embed)(\d+)", (0,)),
                (r"^block(\d+)\.(\d+)", None),
                (r"^cls_token", (4, 0)),
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
            if global_pool not in ("token", "avg", ""):
                raise ValueError(f"global_pool must be 'token', 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        w = self.cls_token  # the device and dtype the new classifier takes
        self.head = (
            nn.Linear(self.num_features, num_classes, device=w.device, dtype=w.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        if num_classes > 0:
            self._init_weights(self.head)

    def load_pretrained(self, path: str) -> None:
        """Load an official checkpoint (the EMA weights ``state_dict_ema``) or a converted state dict."""
        load_pretrained_file(self, path, checkpoint_filter_fn)

    # --- forward ------------------------------------------------------------------------------------------
    def _run_blocks(self, blocks: nn.ModuleList, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        for blk in blocks:
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(blk, x, hw, use_reentrant=False)
            else:
                x = blk(x, hw)
        return x

    def _stage(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Stage ``i`` on a map (B, C, H, W) -> tokens (B, [1+] H'·W', C_i) and the grid (H', W')."""
        x, hw = getattr(self, f"patch_embed{i + 1}")(x)
        pos = getattr(self, f"pos_embed{i + 1}")
        if i < 3:
            r = self.sr_ratios[i]
            if hw[0] < r or hw[1] < r:
                raise ValueError(
                    f"x is too small: stage {i + 1} has a {hw[0]}x{hw[1]} grid, smaller than its landmark stride {r} "
                    "(SOFT needs an input of at least 29x29 pixels)"
                )
            x = self.pos_drop(x + _resize_pos(pos, _POS_GRIDS[i], hw))
        else:
            pos = torch.cat([pos[:, :1], _resize_pos(pos[:, 1:], _POS_GRIDS[i], hw)], dim=1)
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + pos
        return self._run_blocks(getattr(self, f"block{i + 1}"), x, hw), hw

    @staticmethod
    def _to_map(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], -1, *hw)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs as maps ``(B, C_i, ceil(H / 2^(i+2)), ceil(W / 2^(i+2)))`` (stage 4 without the cls token).

        Args:
            indices: take the last n stages if an int, all if None, else the listed stage indices.
            norm: apply the final LayerNorm to the stage-4 map (stages 1-3 already end with a LayerNorm).
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
            x, hw = self._stage(i, x)
            if i < 3:
                x = self._to_map(x, hw)
                if i in take_indices:
                    intermediates.append(x)
            elif i in take_indices:
                intermediates.append(self._to_map((self.norm(x) if norm else x)[:, 1:], hw))
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last requested one (and the head / final norm); returns the taken indices."""
        take_indices, max_index = feature_take_indices(self.num_stages, indices)
        for i in range(max_index + 1, self.num_stages):
            for name in (f"patch_embed{i + 1}", f"pos_embed{i + 1}", f"block{i + 1}"):
                delattr(self, name)
        if max_index < 3:
            del self.cls_token
            self.register_parameter("cls_token", None)
            prune_norm = True
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        self.num_stages = max_index + 1
        self.feature_info = self.feature_info[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.head_drop = nn.Identity()
            self.head = nn.Identity()
            self.num_classes = 0
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_chans, H, W)`` -> normalised stage-4 tokens ``(B, 1 + ceil(H/32)·ceil(W/32), C_4)`` (cls first)."""
        check_image_input(x, self.in_chans)
        for i in range(3):
            x, hw = self._stage(i, x)
            x = self._to_map(x, hw)
        x, _ = self._stage(3, x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, 1:].mean(1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Official SOFT checkpoint -> this model. The layouts are equal; this unwraps a timm ``CheckpointSaver`` file
    (the EMA copy ``state_dict_ema`` first, as the official ``--eval``) and drops ``module.`` / ``backbone.``."""
    return unwrap_checkpoint(state_dict, ("state_dict_ema", "state_dict", "model"), ("module.", "backbone."))


def _create_soft(variant: str, pretrained: bool = False, **kwargs: Any) -> SOFT:
    out_indices = kwargs.pop("out_indices", (0, 1, 2, 3))
    return build_linzoo_model(
        SOFT,
        variant,
        pretrained,
        filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(feature_cls="getter", out_indices=out_indices),
        **kwargs,
    )


def _cfg(name: str, normalized: bool = False, **kwargs: Any) -> dict[str, Any]:
    return base_cfg(
        name,
        pool_size=None,
        crop_pct=0.9,  # timm 0.3.2 vision_transformer._cfg, the official eval transform
        first_conv="patch_embed1.proj.0",
        license="mit",
        paper_name="Softmax-free Linear Transformers" if normalized else "SOFT: Softmax-free Transformer",
        paper_ids="arXiv:2207.03341" if normalized else "arXiv:2110.11945",
        origin_url="https://github.com/fudan-zvg/SOFT",
        **kwargs,
    )


# Published ImageNet-1k top-1 at 224 (README): SOFT T/S/M/L/H 79.3/82.2/82.9/83.1/83.3; SOFT-Norm T/S/M/L/H
# 79.4/82.4/83.1/83.3/83.4. Weights exist for SOFT-Tiny (torch and CUDA Gaussian kernel) and SOFT-Norm T/S/M/L only.
default_cfgs = generate_default_cfgs(
    {
        "soft_tiny.in1k": _cfg("soft_tiny"),
        "soft_tiny.cuda_in1k": _cfg("soft_tiny.cuda_in1k"),
        "soft_small": _cfg("soft_small", notes=("published top-1 82.2; no released weights",)),
        "soft_medium": _cfg("soft_medium", notes=("published top-1 82.9; no released weights",)),
        "soft_large": _cfg("soft_large", notes=("published top-1 83.1; no released weights",)),
        "soft_huge": _cfg("soft_huge", notes=("published top-1 83.3; no released weights",)),
        "soft_norm_tiny.in1k": _cfg("soft_norm_tiny", True),
        "soft_norm_small.in1k": _cfg("soft_norm_small", True),
        "soft_norm_medium.in1k": _cfg("soft_norm_medium", True),
        "soft_norm_large.in1k": _cfg("soft_norm_large", True),
        "soft_norm_huge": _cfg("soft_norm_huge", True, notes=("published top-1 83.4; no released weights",)),
    }
)

_TINY = dict(embed_dims=(64, 128, 320, 512), num_heads=(2, 4, 10, 16), depths=(1, 2, 3, 2))
_SMALL = dict(embed_dims=(64, 128, 320, 512), num_heads=(2, 4, 10, 16), depths=(1, 3, 20, 4))
_MEDIUM = dict(embed_dims=(64, 128, 288, 512), num_heads=(2, 4, 9, 16), depths=(1, 3, 29, 5))
_LARGE = dict(embed_dims=(64, 128, 320, 512), num_heads=(2, 4, 10, 16), depths=(1, 3, 40, 5))
_HUGE = dict(embed_dims=(64, 128, 352, 512), num_heads=(2, 4, 11, 16), depths=(1, 5, 49, 5))


@register_model
def soft_tiny(pretrained: bool = False, **kwargs: Any) -> SOFT:
    """SOFT-Tiny: dims 64/128/320/512, depths 1/2/3/2; 13.1 M params, 79.3 % top-1."""
    return _create_soft("soft_tiny", pretrained, **dict(_TINY, **kwargs))


@register_model
def soft_small(pretrained: bool = False, **kwargs: Any) -> SOFT:
    """SOFT-Small as in the official code: depths 1/3/20/4, 38.9 M params (the README says 24 M; no weights)."""
    return _create_soft("soft_small", pretrained, **dict(_SMALL, **kwargs))


@register_model
def soft_medium(pretrained: bool = False, **kwargs: Any) -> SOFT:
    """SOFT-Medium: dims 64/128/288/512, depths 1/3/29/5; 45.8 M params, 82.9 % top-1 (no weights)."""
    return _create_soft("soft_medium", pretrained, **dict(_MEDIUM, **kwargs))


@register_model
def soft_large(pretrained: bool = False, **kwargs: Any) -> SOFT:
    """SOFT-Large: dims 64/128/320/512, depths 1/3/40/5; 64.7 M params, 83.1 % top-1 (no weights)."""
    return _create_soft("soft_large", pretrained, **dict(_LARGE, **kwargs))


@register_model
def soft_huge(pretrained: bool = False, **kwargs: Any) -> SOFT:
    """SOFT-Huge: dims 64/128/352/512, depths 1/5/49/5; 87.1 M params, 83.3 % top-1 (no weights)."""
    return _create_soft("soft_huge", pretrained, **dict(_HUGE, **kwargs))


@register_model
def soft_norm_tiny(pretrained: bool = False, **kwargs: Any) -> SOFT:
    """SOFT-Tiny-Norm: SOFT-Tiny with the normalised inverse; 13.1 M params, 79.4 % top-1."""
    return _create_soft("soft_norm_tiny", pretrained, **dict(_TINY, normalized=True, **kwargs))


@register_model
def soft_norm_small(pretrained: bool = False, **kwargs: Any) -> SOFT:
    """SOFT-Small-Norm (code config, depths 1/3/20/4): 38.9 M params, 82.4 % top-1."""
    return _create_soft("soft_norm_small", pretrained, **dict(_SMALL, normalized=True, **kwargs))


@register_model
def soft_norm_medium(pretrained: bool = False, **kwargs: Any) -> SOFT:
    """SOFT-Medium-Norm: 45.8 M params, 83.1 % top-1."""
    return _create_soft("soft_norm_medium", pretrained, **dict(_MEDIUM, normalized=True, **kwargs))


@register_model
def soft_norm_large(pretrained: bool = False, **kwargs: Any) -> SOFT:
    """SOFT-Large-Norm: 64.7 M params, 83.3 % top-1."""
    return _create_soft("soft_norm_large", pretrained, **dict(_LARGE, normalized=True, **kwargs))


@register_model
def soft_norm_huge(pretrained: bool = False, **kwargs: Any) -> SOFT:
    """SOFT-Huge-Norm: 87.1 M params, 83.4 % top-1 (no released weights)."""
    return _create_soft("soft_norm_huge", pretrained, **dict(_HUGE, normalized=True, **kwargs))
