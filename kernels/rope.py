"""2-D rotary position embedding (RoPE) tables shared by every family that uses one."""

from __future__ import annotations

import torch

from .linear_attention.reference import apply_rope

__all__ = ["apply_rope", "rope_2d", "rope_2d_frequencies"]


def rope_2d_frequencies(head_dim: int, theta: float = 10000.0, inclusive: bool = True) -> torch.Tensor:
    """Frequencies ``θ`` of shape ``(head_dim/4,)``, one per rotated channel pair of each half.

    ``θ_f = theta^{-t_f}`` with ``t = linspace(0, 1, head_dim/4)`` (``inclusive=True``, RAVLT's choice) or
    ``t = arange(head_dim/4) / (head_dim/4)`` (the usual RoPE spacing).
    """
    if head_dim % 4:
        raise ValueError(f"head_dim must be a multiple of 4 for 2-D RoPE, got {head_dim}")
    quarter = head_dim // 4
    t = torch.linspace(0, 1, quarter) if inclusive else torch.arange(quarter, dtype=torch.float32) / quarter
    return 1.0 / theta**t


def rope_2d(
    height: int, width: int, frequencies: torch.Tensor, *, device=None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, each ``(H·W, head_dim/2)``, for a row-major ``H×W`` grid.

    Channel pair i < d/4 of a token at (y, x) turns by ``y·θ_i``, pair d/4 + i by ``x·θ_i``
    (rows rotate the first half of the channels, columns the second); apply with :func:`apply_rope`.
    """
    freqs = frequencies.to(device=device, dtype=torch.float32)
    quarter = freqs.numel()
    ys = torch.arange(height, device=device, dtype=torch.float32)
    xs = torch.arange(width, device=device, dtype=torch.float32)
    ang_y = (ys[:, None] * freqs[None, :])[:, None, :].expand(height, width, quarter)
    ang_x = (xs[:, None] * freqs[None, :])[None, :, :].expand(height, width, quarter)
    angles = torch.cat((ang_y, ang_x), dim=-1).reshape(height * width, 2 * quarter)
    return angles.cos().to(dtype), angles.sin().to(dtype)
