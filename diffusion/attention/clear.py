"""CLEAR attention processor for diffusers' FLUX attention (``FluxAttention`` of ``FluxTransformer2DModel``).

CLEAR (arXiv 2412.16112, official code Huage001/CLEAR ``attention_processor.py``) keeps FLUX's softmax attention
(RMSNorm q/k, RoPE, scale ``1/sqrt(d)``) and only restricts which keys each query sees. Tokens are
``[T text | H*W image]`` (image tokens row-major on the latent grid, one token per 2x2 latent patch):

- an image query at ``(y, x)`` sees every text token and the image keys with ``dy^2 + dx^2 < r^2`` (a disc of
  radius ``r`` on the grid, strict inequality, truncated at the borders): a convolution-like local window, so
  the cost grows linearly with the number of image tokens;
- a text query sees every token (text and all image tokens), exactly as in the dense model.

With ``down_factor = d > 1`` (the ``*_down_4`` checkpoints) the RoPE'd image keys and values are also pooled over
``d x d`` cells with a learned ``spatial_weight`` of shape ``(1, 1, 1, d, 1, d, 1)`` (initialised to the mean,
shared by K and V), and image queries additionally see all ``(H/d)(W/d)`` pooled tokens; text queries do not.

The image part runs through :func:`linzoo.kernels.neighborhood_attention_2d` (``window_shape="circle"``,
``kernel_size = 2r - 1``, text (+ pooled) keys passed as ``extra_kv`` and attended in the same softmax); the text
part is a dense ``scaled_dot_product_attention`` over ``T + H*W`` keys (``O(T * N)``).

Differences from the official processor (all deliberate):

- the grid ``(H, W)`` and text length come from the transformer call (``img_ids`` via a forward pre-hook, see
  :class:`ClearGrid`) instead of module globals fixed once per process, so one model serves any resolution and
  any prompt length (the official mask hard-codes 512 text tokens and one resolution);
- no FlexAttention block mask / ``torch.compile``: the local part uses linzoo's neighborhood-attention kernel
  (Triton on CUDA, a gather reference on CPU), so it also runs backward on CPU;
- the distillation hooks (module-level ``attn_outputs`` lists) are not reproduced (training code owns that);
- q/k/v projections, norms, RoPE (``apply_rotary_emb(..., sequence_dim=1)``) and the output projections follow
  diffusers' current ``FluxAttnProcessor`` (which the official code predates; the arithmetic is the same).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from linzoo.kernels import neighborhood_attention_2d

from .flux import flux_attention_output, flux_qkv

__all__ = ["CLEAR_TRAIN_SEQ_LEN", "ClearAttnProcessor", "ClearGrid", "clear_attention", "grid_from_image_ids"]

#: sequence length FLUX.1-dev was trained at (64^2 image tokens + 512 text tokens): base of the official
#: ``proportional_attention`` scale ``sqrt(log_{4608}(N_kv) / d)``.
CLEAR_TRAIN_SEQ_LEN = 64**2 + 512


@dataclass
class ClearGrid:
    """The latent token grid ``(height, width)`` of the current transformer call, shared by a model's processors.

    :func:`linzoo.diffusion.linearize` installs a forward pre-hook that fills it from ``img_ids`` on every call;
    set it by hand (``processor.grid.height = ...``) when calling attention modules directly.
    """

    height: int | None = None
    width: int | None = None

    def get(self, num_image_tokens: int | None = None) -> tuple[int, int]:
        """``(height, width)``; checks ``height * width == num_image_tokens`` when that is given."""
        if self.height is None or self.width is None:
            raise ValueError(
                "CLEAR needs the latent grid size: call the FluxTransformer2DModel (its img_ids set it) or set "
                "processor.grid.height / .width before calling the attention module directly"
            )
        if num_image_tokens is not None and self.height * self.width != num_image_tokens:
            raise ValueError(
                f"CLEAR grid {self.height}x{self.width} does not match the {num_image_tokens} image tokens of this call"
            )
        return self.height, self.width


def grid_from_image_ids(img_ids: torch.Tensor) -> tuple[int, int]:
    """``(H, W)`` of FLUX ``img_ids`` ``(N, 3)`` (or deprecated ``(B, N, 3)``): rows in column 1, columns in 2.

    Raises a ValueError unless the ids describe one row-major ``H x W`` grid (as ``FluxPipeline`` builds them);
    other layouts (e.g. Kontext's extra reference-image tokens) have no single 2-D grid for the local window.
    """
    if img_ids.ndim == 3:
        img_ids = img_ids[0]
    if img_ids.ndim != 2 or img_ids.shape[-1] < 3 or img_ids.shape[0] == 0:
        raise ValueError(f"img_ids must have shape (N, 3), got {tuple(img_ids.shape)}")
    rows, cols = img_ids[:, 1], img_ids[:, 2]
    count = img_ids.shape[0]
    height = int(torch.unique(rows).numel())
    width = count // height
    ok = height * width == count
    if ok:
        grid_rows, grid_cols = rows.reshape(height, width), cols.reshape(height, width)
        ok = bool((grid_rows == grid_rows[:, :1]).all() and (grid_cols == grid_cols[:1]).all())
        ok = ok and bool((grid_rows[1:, 0] > grid_rows[:-1, 0]).all() and (grid_cols[0, 1:] > grid_cols[0, :-1]).all())
    if not ok:
        raise ValueError(
            f"img_ids of {count} tokens do not form one row-major 2-D grid; CLEAR's local window needs the "
            "FluxPipeline layout (row index in column 1, column index in column 2)"
        )
    return height, width


def clear_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    text_length: int,
    grid: tuple[int, int],
    radius: int,
    *,
    pooled_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """CLEAR attention on ``(B, heads, T + H*W, D)`` tensors laid out ``[text | image row-major]``.

    Text queries: dense softmax over all ``T + H*W`` keys. Image query ``(y, x)``: softmax over the text keys,
    the image keys with ``dy^2 + dx^2 < radius^2`` and, if given, ``pooled_kv`` ``(B, heads, P, D)`` (the
    down-sampled keys/values of the ``down_factor`` variant). Returns ``(B, heads, T + H*W, D)``.
    """
    bsz, heads, seq, dim = query.shape
    height, width = grid
    if seq != text_length + height * width:
        raise ValueError(f"sequence length {seq} != text_length {text_length} + {height}*{width} image tokens")
    scale = dim**-0.5 if scale is None else float(scale)
    q_img = query[:, :, text_length:].unflatten(2, (height, width))
    k_img = key[:, :, text_length:].unflatten(2, (height, width))
    v_img = value[:, :, text_length:].unflatten(2, (height, width))
    k_extra, v_extra = key[:, :, :text_length], value[:, :, :text_length]
    if pooled_kv is not None:
        k_extra = torch.cat((k_extra, pooled_kv[0]), dim=2)
        v_extra = torch.cat((v_extra, pooled_kv[1]), dim=2)
    extra = (k_extra, v_extra) if k_extra.shape[2] > 0 else None
    out_img = neighborhood_attention_2d(
        q_img,
        k_img,
        v_img,
        2 * radius - 1,
        window_shape="circle",
        extra_kv=extra,
        scale=scale,
        backend=backend,
    ).flatten(2, 3)
    if text_length == 0:
        return out_img
    out_txt = F.scaled_dot_product_attention(query[:, :, :text_length], key, value, scale=scale)
    return torch.cat((out_txt, out_img.to(out_txt.dtype)), dim=2)


class ClearAttnProcessor(nn.Module):
    """Processor for ``FluxAttention`` computing CLEAR attention (see the module docstring).

    Args:
        radius: window radius ``r`` in latent tokens (official checkpoints: 8, 16, 32); keys with
            ``dy^2 + dx^2 < r^2`` are seen.
        down_factor: ``1`` (local only) or ``d > 1`` (adds ``d x d``-pooled keys/values with a learned
            ``spatial_weight``; the grid must then be divisible by ``d``).
        grid: shared :class:`ClearGrid` (one per model, filled by the transformer's forward pre-hook).
        proportional_attention: use the official length-dependent scale ``sqrt(log_{4608}(N_kv) / d)``
            (``N_kv`` = all tokens, times 10 for the down-sampled variant, as in the official code); can also
            be passed per call through ``joint_attention_kwargs``.
        backend: kernel backend of :func:`linzoo.kernels.neighborhood_attention_2d`.

    It is an ``nn.Module`` so that ``spatial_weight`` is registered under ``...attn.processor.spatial_weight``,
    the official key; with ``down_factor == 1`` it holds no parameters.
    """

    def __init__(
        self,
        radius: int,
        down_factor: int = 1,
        grid: ClearGrid | None = None,
        proportional_attention: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if isinstance(radius, bool) or not isinstance(radius, int) or radius < 1:
            raise ValueError(f"radius must be a positive int (latent tokens), got {radius!r}")
        if isinstance(down_factor, bool) or not isinstance(down_factor, int) or down_factor < 1:
            raise ValueError(f"down_factor must be a positive int, got {down_factor!r}")
        if backend not in ("auto", "triton", "torch"):
            raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")
        self.radius = radius
        self.down_factor = down_factor
        self.grid = grid if grid is not None else ClearGrid()
        self.proportional_attention = bool(proportional_attention)
        self.backend = backend
        if down_factor > 1:
            weight = torch.full((1, 1, 1, down_factor, 1, down_factor, 1), 1.0 / down_factor**2)
            self.spatial_weight = nn.Parameter(weight)

    def extra_repr(self) -> str:
        return f"radius={self.radius}, down_factor={self.down_factor}, backend={self.backend!r}"

    def _pool(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(B, heads, H*W, D)`` image tokens -> ``(B, heads, (H/d)(W/d), D)`` weighted ``d x d`` sums."""
        d, (height, width) = self.down_factor, grid
        cells = x.unflatten(2, (height // d, d, width // d, d))  # (B, heads, H/d, d, W/d, d, D)
        return (cells * self.spatial_weight.to(x.dtype)).sum(dim=(3, 5)).flatten(2, 3)

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        proportional_attention: bool | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if attention_mask is not None:
            raise ValueError("ClearAttnProcessor does not take attention_mask: CLEAR defines its own local mask")
        query, key, value, joint = flux_qkv(attn, hidden_states, encoder_hidden_states, image_rotary_emb)
        # single-stream blocks get [text | image] in hidden_states; the grid then gives the split
        grid = self.grid.get(hidden_states.shape[1] if joint else None)

        seq = query.shape[1]
        text_length = seq - grid[0] * grid[1]
        if text_length < 0:
            raise ValueError(f"CLEAR grid {grid[0]}x{grid[1]} has more tokens than this call's {seq}")
        query, key, value = query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2)  # (B, heads, S, D)

        use_prop = self.proportional_attention if proportional_attention is None else bool(proportional_attention)
        pooled = None
        if self.down_factor > 1:
            d = self.down_factor
            if grid[0] % d or grid[1] % d:
                raise ValueError(f"down_factor {d} must divide the latent grid {grid[0]}x{grid[1]}")
            pooled = (self._pool(key[:, :, text_length:], grid), self._pool(value[:, :, text_length:], grid))
        scale = None
        if use_prop:
            n_kv = key.shape[2] * (10 if self.down_factor > 1 else 1)
            scale = math.sqrt(math.log(n_kv, CLEAR_TRAIN_SEQ_LEN) / attn.head_dim)
        out = clear_attention(
            query, key, value, text_length, grid, self.radius, pooled_kv=pooled, scale=scale, backend=self.backend
        )
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)  # (B, S, heads*D)
        return flux_attention_output(attn, out, joint, text_length)
