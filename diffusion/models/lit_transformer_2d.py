"""LiT: a simplified linear diffusion transformer (Wang et al., "LiT: Delving into a Simplified Linear
Diffusion Transformer for Image Generation", arXiv 2501.12976, ICCV 2025) as a diffusers model.

LiT keeps DiT (class-conditional) or PixArt-Σ (text-conditional) unchanged except for every self-attention,
which becomes a *simplified linear attention* with few heads and a depthwise convolution on the values::

    φ(x) = ReLU(x) + 1e-6
    LA(Q, K, V)_i = φ(q_i)ᵀ (1/N Σ_j φ(k_j) v_jᵀ) / (φ(q_i) · 1/N Σ_j φ(k_j) + 1e-6)      (guideline 1)
    out = W_o ( LA(Q, K, V) + DWC₅ₓ₅(V) )                                                    (DWC shared by the heads)

The attention goes through :func:`linzoo.kernels.linear_attention` (``normalizer="standard"``, ``scale=1/N``),
so the N×N matrix is never formed and memory is linear in the number of tokens. The self-attention parameters
carry the official names (``attn.q``, ``attn.kv``, ``attn.dwc``, ``attn.proj``); everything else uses diffusers'
own layers and names (``pos_embed``, ``norm1.linear``, ``ff.net``, ``attn2``, ``proj_out_*`` ...), so a
diffusers ``DiTTransformer2DModel`` / ``PixArtTransformer2DModel`` maps onto it tensor for tensor
(see :mod:`linzoo.diffusion.models.lit_inherit`).

Two forms, chosen by ``norm_type``:

- ``"ada_norm_zero"``: class-conditional DiT form (patch embed, timestep + label embedder shared by the blocks,
  adaLN-Zero blocks, learned-sigma output when ``out_channels == 2 * in_channels``).
- ``"ada_norm_single"``: text-conditional PixArt-Σ form (caption projection of T5 features, adaLN-single,
  softmax cross-attention to the caption kept as in PixArt).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.embeddings import CombinedTimestepLabelEmbeddings, PatchEmbed, PixArtAlphaTextProjection
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormSingle, AdaLayerNormZero
from torch import nn

from linzoo.kernels import linear_attention

try:  # diffusers >= 0.35 groups attn_processors / set_attn_processor / fuse_qkv_projections in AttentionMixin
    from diffusers.models.attention import AttentionMixin
except ImportError:  # older diffusers: the model still works, without the processor helpers

    class AttentionMixin:  # type: ignore[no-redef]
        """Placeholder used when the installed diffusers has no ``AttentionMixin``."""


__all__ = ["LiTBlock", "LiTLinearAttention", "LiTTransformer2DModel"]

NORM_TYPES = ("ada_norm_zero", "ada_norm_single")


class LiTLinearAttention(nn.Module):
    """LiT's simplified linear self-attention on ``(B, N, C)`` tokens laid out on an ``H × W`` grid.

    ``out = proj(LA(φq, φk, v) + DWC(v))`` with φ = ReLU + ``feature_eps``, the mean normaliser with ``eps``,
    and one ``kernel_size × kernel_size`` depthwise convolution over the head dimension, shared by all heads.
    Parameter names (``q``, ``kv``, ``dwc``, ``proj``) follow the official implementation.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 2,
        qkv_bias: bool = True,
        kernel_size: int = 5,
        eps: float = 1e-6,
        feature_eps: float = 1e-6,
    ) -> None:
        super().__init__()
        if num_heads < 1 or dim % num_heads:
            raise ValueError(f"num_heads must be >= 1 and divide dim={dim}, got {num_heads}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.eps = eps
        self.feature_eps = feature_eps
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.dwc = nn.Conv2d(self.head_dim, self.head_dim, kernel_size, padding=kernel_size // 2, groups=self.head_dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, hidden_states: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """``hidden_states (B, N, C)`` with ``N = height * width`` -> ``(B, N, C)``."""
        b, n, c = hidden_states.shape
        if height * width != n:
            raise ValueError(f"height * width must equal the number of tokens {n}, got {height} x {width}")
        h, d = self.num_heads, self.head_dim
        q = self.q(hidden_states).view(b, n, h, d).transpose(1, 2)
        k, v = self.kv(hidden_states).view(b, n, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)  # (B, h, N, d) each
        # The official φ is ReLU(x) + 1e-6; the offset is applied here and the op runs with the identity map,
        # so the result matches the official module exactly (the op's "relu" map has no offset).
        q = F.relu(q) + self.feature_eps
        k = F.relu(k) + self.feature_eps
        out = linear_attention(q, k, v, feature_map="identity", normalizer="standard", scale=1.0 / n, eps=self.eps)
        local = self.dwc(v.reshape(b * h, height, width, d).permute(0, 3, 1, 2))  # (B*h, d, H, W)
        out = out + local.reshape(b, h, d, n).transpose(-1, -2)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LiTBlock(nn.Module):
    """One LiT transformer block: DiT's adaLN-Zero block or PixArt-Σ's adaLN-single block with cross-attention,
    with :class:`LiTLinearAttention` as the self-attention."""

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        num_linear_heads: int,
        norm_type: str = "ada_norm_zero",
        cross_attention_dim: int | None = None,
        dropout: float = 0.0,
        attention_bias: bool = True,
        activation_fn: str = "gelu-approximate",
        norm_elementwise_affine: bool = False,
        norm_eps: float = 1e-5,
        kernel_size: int = 5,
        attention_eps: float = 1e-6,
        timestep_freq_shift: int = 1,
    ) -> None:
        super().__init__()
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
        self.norm_type = norm_type
        if norm_type == "ada_norm_zero":
            self.norm1 = AdaLayerNormZero(dim, num_embeddings=None)  # conditioning comes from the shared embedder
        else:
            self.norm1 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine, eps=norm_eps)
            self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim**0.5)
        self.attn = LiTLinearAttention(
            dim, num_linear_heads, qkv_bias=attention_bias, kernel_size=kernel_size, eps=attention_eps
        )
        self.attn2 = None
        if cross_attention_dim is not None:
            self.attn2 = Attention(
                query_dim=dim,
                cross_attention_dim=cross_attention_dim,
                heads=num_attention_heads,
                dim_head=attention_head_dim,
                dropout=dropout,
                bias=attention_bias,
            )
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=norm_elementwise_affine, eps=norm_eps)
        self.ff = FeedForward(dim, dropout=dropout, activation_fn=activation_fn)

    def forward(
        self,
        hidden_states: torch.Tensor,
        conditioning: torch.Tensor,
        height: int,
        width: int,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """``hidden_states (B, N, C)``; ``conditioning`` is the timestep(+label) embedding ``(B, C)`` for
        ``ada_norm_zero`` or adaLN-single's ``(B, 6C)`` modulation for ``ada_norm_single``."""
        b = hidden_states.shape[0]
        if self.norm_type == "ada_norm_zero":
            norm_hidden, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, emb=conditioning)
            gate_msa, shift_mlp, scale_mlp, gate_mlp = (t[:, None] for t in (gate_msa, shift_mlp, scale_mlp, gate_mlp))
        else:
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
                self.scale_shift_table[None] + conditioning.reshape(b, 6, -1)
            ).chunk(6, dim=1)
            norm_hidden = self.norm1(hidden_states) * (1 + scale_msa) + shift_msa
        hidden_states = hidden_states + gate_msa * self.attn(norm_hidden, height, width)
        if self.attn2 is not None:
            # PixArt applies no norm before the cross-attention.
            hidden_states = hidden_states + self.attn2(
                hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                attention_mask=encoder_attention_mask,
                **(cross_attention_kwargs or {}),
            )
        norm_hidden = self.norm2(hidden_states) * (1 + scale_mlp) + shift_mlp
        return hidden_states + gate_mlp * self.ff(norm_hidden)


class LiTTransformer2DModel(ModelMixin, ConfigMixin, AttentionMixin):
    r"""LiT diffusion transformer (class-conditional DiT form or text-conditional PixArt-Σ form).

    Args:
        num_attention_heads (`int`, defaults to 16): heads of the teacher layout; ``num_attention_heads *
            attention_head_dim`` is the width, and the cross-attention (text form) uses these heads.
        attention_head_dim (`int`, defaults to 72): channels per teacher head.
        num_linear_heads (`int`, defaults to 2): heads of the linear self-attention (LiT guideline 2: few heads).
        in_channels (`int`, defaults to 4): latent (or pixel) channels.
        out_channels (`int`, *optional*): output channels; ``2 * in_channels`` means a learned-sigma head
            (noise and variance interpolation ``v``), ``None`` means ``in_channels``.
        num_layers (`int`, defaults to 28): number of blocks.
        dropout (`float`, defaults to 0.0): dropout in the feed-forward and cross-attention.
        attention_bias (`bool`, defaults to True): bias of ``attn.q``, ``attn.kv`` (and cross-attention q/k/v).
        sample_size (`int`, defaults to 32): training latent size; any other size divisible by ``patch_size``
            works at inference (positional embeddings are recomputed).
        patch_size (`int`, defaults to 2): patch size.
        activation_fn (`str`, defaults to "gelu-approximate"): feed-forward activation.
        norm_type (`str`, defaults to "ada_norm_zero"): ``"ada_norm_zero"`` (DiT form) or ``"ada_norm_single"``
            (PixArt-Σ form).
        norm_elementwise_affine (`bool`, defaults to False): affine LayerNorms.
        norm_eps (`float`, *optional*): LayerNorm eps; ``None`` means DiT's 1e-5 / PixArt's 1e-6.
        num_classes (`int`, defaults to 1000): number of classes (DiT form); label ``num_classes`` is the null
            label used for classifier-free guidance when ``class_dropout_prob > 0``.
        class_dropout_prob (`float`, defaults to 0.1): probability of the null label during training (applied
            by the training module, so that a distillation teacher sees the same labels).
        cross_attention_dim (`int`, *optional*): width of the caption tokens after projection (PixArt form).
        caption_channels (`int`, *optional*): width of the text-encoder features (4096 for T5-XXL).
        interpolation_scale (`float`, *optional*): positional-embedding scale; ``None`` means 1 (DiT form) or
            ``max(sample_size // 64, 1)`` (PixArt form).
        use_additional_conditions (`bool`, *optional*): PixArt resolution/aspect micro-conditions; ``None`` means
            ``sample_size == 128`` (diffusers' PixArt rule).
        kernel_size (`int`, defaults to 5): size of the depthwise convolution on V.
        attention_eps (`float`, defaults to 1e-6): eps of the linear-attention normaliser.
        timestep_freq_shift (`int`, defaults to 1): ``downscale_freq_shift`` of the sinusoidal timestep features
            in the DiT form: 1 as in diffusers' DiT, 0 as in the original DiT code (set by the original-format
            converter so those checkpoints reproduce exactly).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["LiTBlock", "PatchEmbed"]
    _skip_layerwise_casting_patterns = ["pos_embed", "norm", "adaln_single", "time_class_embed"]

    @register_to_config
    def __init__(
        self,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        num_linear_heads: int = 2,
        in_channels: int = 4,
        out_channels: int | None = 8,
        num_layers: int = 28,
        dropout: float = 0.0,
        attention_bias: bool = True,
        sample_size: int = 32,
        patch_size: int = 2,
        activation_fn: str = "gelu-approximate",
        norm_type: str = "ada_norm_zero",
        norm_elementwise_affine: bool = False,
        norm_eps: float | None = None,
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        cross_attention_dim: int | None = None,
        caption_channels: int | None = None,
        interpolation_scale: float | None = None,
        use_additional_conditions: bool | None = None,
        kernel_size: int = 5,
        attention_eps: float = 1e-6,
        timestep_freq_shift: int = 1,
    ) -> None:
        super().__init__()
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
        if norm_type == "ada_norm_single" and (cross_attention_dim is None or caption_channels is None):
            raise ValueError("norm_type='ada_norm_single' (PixArt form) needs cross_attention_dim and caption_channels")
        if norm_type == "ada_norm_zero" and cross_attention_dim is not None:
            raise ValueError("cross_attention_dim is only used by norm_type='ada_norm_single' (PixArt form)")
        if cross_attention_dim is not None and cross_attention_dim != num_attention_heads * attention_head_dim:
            raise ValueError(
                "cross_attention_dim must equal num_attention_heads * attention_head_dim (captions are projected to "
                f"the model width), got {cross_attention_dim} vs {num_attention_heads * attention_head_dim}"
            )
        if sample_size % patch_size:
            raise ValueError(f"sample_size ({sample_size}) must be divisible by patch_size ({patch_size})")
        inner_dim = num_attention_heads * attention_head_dim
        self.inner_dim = inner_dim
        self.out_channels = in_channels if out_channels is None else out_channels
        self.gradient_checkpointing = False
        is_dit = norm_type == "ada_norm_zero"
        norm_eps = (1e-5 if is_dit else 1e-6) if norm_eps is None else norm_eps
        if interpolation_scale is None:
            interpolation_scale = 1 if is_dit else max(sample_size // 64, 1)
        if use_additional_conditions is None:
            use_additional_conditions = sample_size == 128
        self.use_additional_conditions = bool(use_additional_conditions) and not is_dit

        self.pos_embed = PatchEmbed(
            height=sample_size,
            width=sample_size,
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=inner_dim,
            interpolation_scale=interpolation_scale,
        )
        if is_dit:
            # One timestep + label embedder shared by all blocks (as in the original DiT); diffusers' DiT keeps an
            # identical copy in every block's norm1.emb, of which the inheritance keeps block 0's.
            self.time_class_embed = CombinedTimestepLabelEmbeddings(num_classes, inner_dim, class_dropout_prob)
            # Label dropout for classifier-free guidance is done by the training module on the label tensor, so
            # a frozen teacher gets the same labels; switch off the embedder's own random dropping.
            self.time_class_embed.class_embedder.dropout_prob = 0.0
            self.time_class_embed.time_proj.downscale_freq_shift = timestep_freq_shift
        else:
            self.adaln_single = AdaLayerNormSingle(inner_dim, use_additional_conditions=self.use_additional_conditions)
            self.caption_projection = PixArtAlphaTextProjection(in_features=caption_channels, hidden_size=inner_dim)
        self.transformer_blocks = nn.ModuleList(
            [
                LiTBlock(
                    inner_dim,
                    num_attention_heads,
                    attention_head_dim,
                    num_linear_heads,
                    norm_type=norm_type,
                    cross_attention_dim=cross_attention_dim,
                    dropout=dropout,
                    attention_bias=attention_bias,
                    activation_fn=activation_fn,
                    norm_elementwise_affine=norm_elementwise_affine,
                    norm_eps=norm_eps,
                    kernel_size=kernel_size,
                    attention_eps=attention_eps,
                )
                for _ in range(num_layers)
            ]
        )
        self.norm_out = nn.LayerNorm(inner_dim, elementwise_affine=False, eps=1e-6)
        out_dim = patch_size * patch_size * self.out_channels
        if is_dit:
            self.proj_out_1 = nn.Linear(inner_dim, 2 * inner_dim)
            self.proj_out_2 = nn.Linear(inner_dim, out_dim)
        else:
            self.scale_shift_table = nn.Parameter(torch.randn(2, inner_dim) / inner_dim**0.5)
            self.proj_out = nn.Linear(inner_dim, out_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        """DiT / PixArt initialisation: Xavier-uniform linears, zero biases, N(0, 0.02) embedders, and zeros for
        the adaLN-Zero modulations, the cross-attention outputs and the final projection (the model starts as
        the identity residual stream)."""

        def basic(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic)
        proj = self.pos_embed.proj
        nn.init.xavier_uniform_(proj.weight.view(proj.weight.shape[0], -1))
        nn.init.zeros_(proj.bias)
        if self.config.norm_type == "ada_norm_zero":
            emb = self.time_class_embed
            nn.init.normal_(emb.class_embedder.embedding_table.weight, std=0.02)
            nn.init.normal_(emb.timestep_embedder.linear_1.weight, std=0.02)
            nn.init.normal_(emb.timestep_embedder.linear_2.weight, std=0.02)
            zero = [blk.norm1.linear for blk in self.transformer_blocks] + [self.proj_out_1, self.proj_out_2]
        else:
            emb = self.adaln_single.emb.timestep_embedder
            nn.init.normal_(emb.linear_1.weight, std=0.02)
            nn.init.normal_(emb.linear_2.weight, std=0.02)
            nn.init.normal_(self.adaln_single.linear.weight, std=0.02)
            nn.init.normal_(self.caption_projection.linear_1.weight, std=0.02)
            nn.init.normal_(self.caption_projection.linear_2.weight, std=0.02)
            zero = [blk.attn2.to_out[0] for blk in self.transformer_blocks] + [self.proj_out]
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor | None = None,
        class_labels: torch.LongTensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        added_cond_kwargs: dict[str, torch.Tensor] | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predict noise (and the variance interpolation for a learned-sigma head).

        Args:
            hidden_states: noisy latents ``(B, in_channels, H, W)``, H and W divisible by ``patch_size``.
            timestep: ``(B,)`` or scalar diffusion timesteps.
            class_labels: ``(B,)`` labels in ``[0, num_classes]`` (DiT form; ``num_classes`` = null label).
            encoder_hidden_states: caption features ``(B, L, caption_channels)`` (PixArt form).
            encoder_attention_mask: ``(B, L)`` keep-mask (1 keep, 0 drop) or additive bias ``(B, 1, L)``.
            added_cond_kwargs: PixArt micro-conditions ``{"resolution", "aspect_ratio"}``.
            cross_attention_kwargs: extra arguments for the cross-attention processor.
            return_dict: return a ``Transformer2DModelOutput`` instead of a tuple.

        Returns:
            ``sample (B, out_channels, H, W)``.
        """
        if hidden_states.dim() != 4 or hidden_states.shape[1] != self.config.in_channels:
            raise ValueError(
                f"hidden_states must have shape (B, {self.config.in_channels}, H, W), got {tuple(hidden_states.shape)}"
            )
        p = self.config.patch_size
        if hidden_states.shape[-2] % p or hidden_states.shape[-1] % p:
            raise ValueError(f"height and width must be divisible by patch_size={p}, got {hidden_states.shape[-2:]}")
        if timestep is None:
            raise ValueError("timestep is required")
        b = hidden_states.shape[0]
        height, width = hidden_states.shape[-2] // p, hidden_states.shape[-1] // p
        timestep = torch.as_tensor(timestep, device=hidden_states.device)
        if timestep.numel() == 1:
            timestep = timestep.reshape(1).expand(b)
        hidden_states = self.pos_embed(hidden_states)

        if self.config.norm_type == "ada_norm_zero":
            if class_labels is None:
                raise ValueError("class_labels are required by the class-conditional (ada_norm_zero) form")
            conditioning = self.time_class_embed(timestep, class_labels, hidden_dtype=hidden_states.dtype)
            block_conditioning = conditioning
        else:
            if encoder_hidden_states is None:
                raise ValueError("encoder_hidden_states are required by the text-conditional (ada_norm_single) form")
            if self.use_additional_conditions and added_cond_kwargs is None:
                raise ValueError("added_cond_kwargs (resolution, aspect_ratio) are required by this configuration")
            if encoder_attention_mask is not None and encoder_attention_mask.dim() == 2:
                encoder_attention_mask = (1 - encoder_attention_mask.to(hidden_states.dtype)) * -10000.0
                encoder_attention_mask = encoder_attention_mask.unsqueeze(1)
            block_conditioning, conditioning = self.adaln_single(
                timestep, added_cond_kwargs, batch_size=b, hidden_dtype=hidden_states.dtype
            )
            encoder_hidden_states = self.caption_projection(encoder_hidden_states).view(b, -1, self.inner_dim)

        for block in self.transformer_blocks:
            args = (hidden_states, block_conditioning, height, width, encoder_hidden_states, encoder_attention_mask)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = self._gradient_checkpointing_func(block, *args, cross_attention_kwargs)
            else:
                hidden_states = block(*args, cross_attention_kwargs)

        if self.config.norm_type == "ada_norm_zero":
            shift, scale = self.proj_out_1(F.silu(conditioning)).chunk(2, dim=1)
            hidden_states = self.norm_out(hidden_states) * (1 + scale[:, None]) + shift[:, None]
            hidden_states = self.proj_out_2(hidden_states)
        else:
            shift, scale = (self.scale_shift_table[None] + conditioning[:, None]).chunk(2, dim=1)
            hidden_states = self.norm_out(hidden_states) * (1 + scale) + shift
            hidden_states = self.proj_out(hidden_states)

        c = self.out_channels
        hidden_states = hidden_states.reshape(b, height, width, p, p, c)
        output = torch.einsum("nhwpqc->nchpwq", hidden_states).reshape(b, c, height * p, width * p)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)
