"""Plain-PyTorch definition of Swin-style 2-D window attention (the readable reference).

Shapes: ``q, k, v`` are ``(B, heads, H, W, D)`` (``v`` may have its own head dim ``Dv``), the output is
``(B, heads, H, W, Dv)``; arithmetic in float32, result cast to ``q.dtype``.

Steps (Swin Transformer, Liu et al. 2021, Sec. 3.2), window ``(w_h, w_w)``, shift ``(s_h, s_w)``:

1. pad the map at the bottom/right to ``(H_p, W_p)``, multiples of the window;
2. roll it by ``(−s_h, −s_w)`` (cyclic shift), split into non-overlapping windows;
3. inside each window: ``softmax(scale · q kᵀ + B + M) v`` with the relative position bias
   ``B[h, i, j] = rpb[h, y_j − y_i + w_h − 1, x_j − x_i + w_w − 1]`` (window-local coordinates of query i
   and key j) and ``M = −inf`` between tokens that came from different regions of the rolled map
   (Swin's shift mask; Swin uses −100, which is the same after the softmax in float32);
4. roll back and crop.

The order pad → roll is the one of the official Swin detection/segmentation code. timm rolls first and
pads after; the two agree whenever H and W are multiples of the window (every 224-px Swin stage).

Padded tokens: ``pad_mode="mask"`` excludes them as keys (so the result does not depend on the padding);
``pad_mode="zeros"`` lets them take part as all-zero keys and values (logit 0 + bias), which is what
Swin/L²ViT get when they pad the activations with zeros *after* a bias-free projection. (When the
padding happens before a projection with bias, as in the official L²ViT and Swin code, pad the input
yourself and call the op on a map that is a multiple of the window.)

``rpb`` here is always ``(heads, 2w_h − 1, 2w_w − 1)`` indexed by key − query; the public op also
accepts Swin's ``relative_position_bias_table`` of shape ``((2w_h − 1)(2w_w − 1), heads)`` (indexed by
query − key) and converts it with :func:`swin_table_to_rpb`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["PAD_MODES", "rpb_to_swin_table", "swin_table_to_rpb", "window_attention_2d_reference"]

PAD_MODES = ("mask", "zeros")


def swin_table_to_rpb(table: torch.Tensor, window_size: tuple[int, int]) -> torch.Tensor:
    """Swin ``relative_position_bias_table`` ``((2w_h−1)(2w_w−1), heads)`` → ``(heads, 2w_h−1, 2w_w−1)``.

    Swin's row ``(Δy + w_h − 1)(2w_w − 1) + Δx + w_w − 1`` holds the bias for Δ = query − key; the result is
    indexed by key − query, hence the flips. Differentiable (gradients flow back into the table).
    """
    wh, ww = window_size
    return table.t().reshape(table.shape[1], 2 * wh - 1, 2 * ww - 1).flip(1, 2)


def rpb_to_swin_table(rpb: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`swin_table_to_rpb`: ``(heads, 2w_h−1, 2w_w−1)`` → ``((2w_h−1)(2w_w−1), heads)``."""
    return rpb.flip(1, 2).reshape(rpb.shape[0], -1).t()


def _region_ids(padded: int, window: int, shift: int, device) -> torch.Tensor:
    """Swin's three slices of a rolled axis: [0, L−w), [L−w, L−s), [L−s, L)."""
    pos = torch.arange(padded, device=device)
    if shift == 0:
        return torch.zeros_like(pos)
    return (pos >= padded - window).long() + (pos >= padded - shift).long()


def window_attention_2d_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window_size: tuple[int, int],
    shift: tuple[int, int] = (0, 0),
    rpb: torch.Tensor | None = None,
    scale: float | None = None,
    pad_mode: str = "mask",
) -> torch.Tensor:
    """Window attention as in Swin (pad, roll, partition, attend, merge); see the module docstring.

    ``rpb`` is ``(heads, 2w_h − 1, 2w_w − 1)`` or None; arguments are validated by the public op.
    """
    out_dtype = q.dtype
    bsz, heads, height, width, dim = q.shape
    dv = v.shape[-1]
    wh, ww = window_size
    sh, sw = shift
    scale = dim**-0.5 if scale is None else float(scale)
    hp, wp = -(-height // wh) * wh, -(-width // ww) * ww
    pad = (0, 0, 0, wp - width, 0, hp - height)
    qf, kf, vf = (F.pad(t.float(), pad) for t in (q, k, v))
    real = F.pad(torch.ones(height, width, dtype=torch.bool, device=q.device), (0, wp - width, 0, hp - height))
    if sh or sw:
        qf, kf, vf = (torch.roll(t, shifts=(-sh, -sw), dims=(2, 3)) for t in (qf, kf, vf))
        real = torch.roll(real, shifts=(-sh, -sw), dims=(0, 1))
    region = _region_ids(hp, wh, sh, q.device)[:, None] * 3 + _region_ids(wp, ww, sw, q.device)[None, :]

    def windows(t: torch.Tensor) -> torch.Tensor:  # (..., Hp, Wp, C) -> (..., nWh, nWw, wh*ww, C)
        t = t.reshape(*t.shape[:-3], hp // wh, wh, wp // ww, ww, t.shape[-1])
        return t.transpose(-4, -3).flatten(-3, -2)

    qw, kw_, vw = windows(qf), windows(kf), windows(vf)  # (B, heads, nWh, nWw, T, D)
    logits = torch.einsum("bnyxid,bnyxjd->bnyxij", qw, kw_) * scale
    if rpb is not None:
        ly = torch.arange(wh, device=q.device).repeat_interleave(ww)  # window-local coordinates
        lx = torch.arange(ww, device=q.device).repeat(wh)
        rel_y = ly[None, :] - ly[:, None] + wh - 1  # key − query
        rel_x = lx[None, :] - lx[:, None] + ww - 1
        logits = logits + rpb.float()[:, rel_y, rel_x][None, :, None, None]
    reg_w = windows(region[..., None])[..., 0]  # (nWh, nWw, T)
    allowed = reg_w[..., :, None] == reg_w[..., None, :]
    if pad_mode == "mask":
        allowed = allowed & windows(real[..., None])[..., 0][..., None, :]
        # A padded query can be left without admissible keys; it is cropped away, so let it see its window
        # (instead of a 0/0 softmax whose NaN would leak into the gradients).
        allowed = allowed | ~allowed.any(-1, keepdim=True)
    logits = logits.masked_fill(~allowed, float("-inf"))
    out = torch.einsum("bnyxij,bnyxjd->bnyxid", torch.softmax(logits, dim=-1), vw)
    out = out.reshape(bsz, heads, hp // wh, wp // ww, wh, ww, dv).transpose(3, 4).reshape(bsz, heads, hp, wp, dv)
    if sh or sw:
        out = torch.roll(out, shifts=(sh, sw), dims=(2, 3))
    return out[:, :, :height, :width].to(out_dtype)
