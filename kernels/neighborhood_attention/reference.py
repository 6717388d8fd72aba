"""Plain-PyTorch definition of 2-D neighborhood attention (the readable reference).

Shapes: ``q, k, v`` are ``(B, heads, H, W, D)`` (``v`` may have its own head dim ``Dv``), the output is
``(B, heads, H, W, Dv)``. Arithmetic runs in float32; the result is cast to ``q.dtype``. This version
gathers every query's k_h×k_w keys, so it needs O(B·heads·H·W·k_h·k_w·D) memory: it is the definition the
fused kernels are tested against, not a fast path.

Window of a query (NATTEN semantics, per axis, kernel size k = 2r+1 odd, dilation δ):

- the axis of length L is split into δ interleaved groups (positions with the same residue g = i mod δ);
  a query only sees keys of its own group. Group g has L_g = ceil((L − g)/δ) positions, and position
  i sits at index i' = i // δ inside it;
- ``window_shape="square"``: the window is the k consecutive group indices starting at
  ``clamp(i' − r, 0, L_g − k)``, i.e. centred on the query and shifted inward at the borders, so every
  query sees exactly k_h·k_w keys (needs k·δ ≤ L);
- ``window_shape="circle"`` (CLEAR, needs k_h = k_w = k): offsets (Δy, Δx) in group units around the
  query itself, with Δy² + Δx² < R² and R = (k + 1)/2, truncated (not shifted) at the borders. CLEAR's
  radius r corresponds to ``kernel_size = 2r − 1`` (the bounding box of the disc).

Attention logits, for a query at group index (i'_y, i'_x) and a key at (j'_y, j'_x) of its window:

    s = scale · q·k + rpb[h, j'_y − i'_y + k_h − 1, j'_x − i'_x + k_w − 1]

(``rpb`` is optional, shape ``(heads, 2k_h − 1, 2k_w − 1)``: NATTEN's layout before 0.20). The optional
``extra_kv = (k_e, v_e)`` of shape ``(B, heads, M, D)`` adds M keys seen by every query with logit
``scale · q·k_e`` (no bias) in the same softmax:

    o = Σ_window softmax(s)·v + Σ_M softmax(s)·v_e.
"""

from __future__ import annotations

import torch

__all__ = [
    "WINDOW_SHAPES",
    "axis_window_start",
    "neighborhood_attention_2d_bruteforce",
    "neighborhood_attention_2d_reference",
]

WINDOW_SHAPES = ("square", "circle")


def axis_window_start(length: int, kernel: int, dilation: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per position of an axis: ``(group index i', start index of its square window in group units)``."""
    pos = torch.arange(length, device=device)
    group = pos % dilation
    group_len = (length - group + dilation - 1) // dilation
    idx = pos // dilation
    start = torch.minimum(torch.clamp(idx - kernel // 2, min=0), group_len - kernel)
    return idx, start


def _axis_keys(length: int, kernel: int, dilation: int, circle: bool, device) -> tuple[torch.Tensor, ...]:
    """For each position: key positions (L, k), their validity (L, k) and the bias index (L, k)."""
    pos = torch.arange(length, device=device)
    group = pos % dilation
    group_len = (length - group + dilation - 1) // dilation
    idx = pos // dilation
    j = torch.arange(kernel, device=device)
    if circle:  # centred on the query, truncated at the borders
        key_idx = idx[:, None] + j[None, :] - kernel // 2
        valid = (key_idx >= 0) & (key_idx < group_len[:, None])
    else:  # NATTEN: centred, shifted inward at the borders
        start = torch.minimum(torch.clamp(idx - kernel // 2, min=0), group_len - kernel)
        key_idx = start[:, None] + j[None, :]
        valid = torch.ones_like(key_idx, dtype=torch.bool)
    rel = key_idx - idx[:, None] + kernel - 1
    key_pos = (key_idx.clamp(min=0) * dilation + group[:, None]).clamp(max=length - 1)
    return key_pos, valid, rel


def neighborhood_attention_2d_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    rpb: torch.Tensor | None = None,
    k_extra: torch.Tensor | None = None,
    v_extra: torch.Tensor | None = None,
    window_shape: str = "square",
    scale: float | None = None,
) -> torch.Tensor:
    """2-D neighborhood attention by gathering each query's window; see the module docstring.

    ``kernel_size`` and ``dilation`` are ``(kh, kw)`` / ``(dh, dw)`` pairs (validated by the public op).
    """
    out_dtype = q.dtype
    bsz, heads, height, width, dim = q.shape
    kh, kw = kernel_size
    dh, dw = dilation
    circle = window_shape == "circle"
    scale = dim**-0.5 if scale is None else float(scale)
    qf, kf, vf = q.float(), k.float(), v.float()

    ky, valid_y, rel_y = _axis_keys(height, kh, dh, circle, q.device)  # (H, kh)
    kx, valid_x, rel_x = _axis_keys(width, kw, dw, circle, q.device)  # (W, kw)
    iy = ky[:, None, :, None]  # (H, 1, kh, 1)
    ix = kx[None, :, None, :]  # (1, W, 1, kw)
    k_win = kf[:, :, iy, ix]  # (B, heads, H, W, kh, kw, D)
    v_win = vf[:, :, iy, ix]
    logits = torch.einsum("bnhwd,bnhwyxd->bnhwyx", qf, k_win) * scale
    if rpb is not None:
        logits = logits + rpb.float()[:, rel_y[:, None, :, None], rel_x[None, :, None, :]][None]
    valid = valid_y[:, None, :, None] & valid_x[None, :, None, :]  # (H, W, kh, kw)
    if circle:
        radius = (kh + 1) / 2
        dy = (torch.arange(kh, device=q.device) - kh // 2).float()
        dx = (torch.arange(kw, device=q.device) - kw // 2).float()
        disc = dy[:, None] ** 2 + dx[None, :] ** 2 < radius**2  # (kh, kw)
        valid = valid & disc
    logits = logits.masked_fill(~valid, float("-inf")).flatten(-2)  # (B, heads, H, W, kh*kw)
    v_win = v_win.flatten(-3, -2)  # (B, heads, H, W, kh*kw, Dv)
    if k_extra is not None:
        extra = torch.einsum("bnhwd,bnmd->bnhwm", qf, k_extra.float()) * scale
        probs = torch.softmax(torch.cat((logits, extra), dim=-1), dim=-1)
        p_win, p_extra = probs.split([kh * kw, extra.shape[-1]], dim=-1)
        out = torch.einsum("bnhwk,bnhwkd->bnhwd", p_win, v_win)
        out = out + torch.einsum("bnhwm,bnmd->bnhwd", p_extra, v_extra.float())
    else:
        probs = torch.softmax(logits, dim=-1)
        out = torch.einsum("bnhwk,bnhwkd->bnhwd", probs, v_win)
    return out.to(out_dtype)


def _natten_window_start(index: int, length: int, kernel: int, dilation: int) -> int:
    """NATTEN's own per-position window start (in positions), written out case by case."""
    r = kernel // 2
    if dilation <= 1:
        return max(index - r, 0) + (length - index - r - 1 if index + r >= length else 0)
    if index - r * dilation < 0:
        return index % dilation
    if index + r * dilation >= length:
        imodd = index % dilation
        a = (length // dilation) * dilation
        b = length - a
        if imodd < b:
            return length - b + imodd - 2 * r * dilation
        return a + imodd - kernel * dilation
    return index - r * dilation


def neighborhood_attention_2d_bruteforce(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kernel_size: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    rpb: torch.Tensor | None = None,
    k_extra: torch.Tensor | None = None,
    v_extra: torch.Tensor | None = None,
    window_shape: str = "square",
    scale: float | None = None,
) -> torch.Tensor:
    """Independent per-query loop (tiny inputs only) used to check the reference in tests.

    Square windows follow NATTEN's case-by-case start formula; circles test every key of the map.
    """
    bsz, heads, height, width, dim = q.shape
    kh, kw = kernel_size
    dh, dw = dilation
    scale = dim**-0.5 if scale is None else float(scale)
    qf, kf, vf = q.double(), k.double(), v.double()
    out = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=torch.float64)
    for y in range(height):
        for x in range(width):
            keys = []  # (ky, kx, bias row, bias col)
            if window_shape == "square":
                sy = _natten_window_start(y, height, kh, dh)
                sx = _natten_window_start(x, width, kw, dw)
                for a in range(kh):
                    for b in range(kw):
                        yy, xx = sy + a * dh, sx + b * dw
                        keys.append((yy, xx, (yy - y) // dh + kh - 1, (xx - x) // dw + kw - 1))
            else:
                radius = (kh + 1) / 2
                for yy in range(height):
                    for xx in range(width):
                        if (yy - y) % dh or (xx - x) % dw:
                            continue
                        ry, rx = (yy - y) // dh, (xx - x) // dw
                        if ry * ry + rx * rx < radius * radius:
                            keys.append((yy, xx, ry + kh - 1, rx + kw - 1))
            kk = torch.stack([kf[:, :, yy, xx] for yy, xx, _, _ in keys], dim=2)  # (B, heads, n, D)
            vv = torch.stack([vf[:, :, yy, xx] for yy, xx, _, _ in keys], dim=2)
            s = torch.einsum("bnd,bnkd->bnk", qf[:, :, y, x], kk) * scale
            if rpb is not None:
                s = s + torch.stack([rpb.double()[:, a, b] for _, _, a, b in keys], dim=-1)[None]
            if k_extra is not None:
                s = torch.cat((s, torch.einsum("bnd,bnmd->bnm", qf[:, :, y, x], k_extra.double()) * scale), -1)
                vv = torch.cat((vv, v_extra.double()), dim=2)
            out[:, :, y, x] = torch.einsum("bnk,bnkd->bnd", torch.softmax(s, -1), vv)
    return out
