"""PyTorch reference for the fused depthwise convolution: ``y = act(DWConv(x) + bias) + residual``.

Depthwise (one filter per channel, ``groups = C``), stride 1, zero padding, dilation ``d``::

    z[b, c, i, j] = Σ_{u, v < K} w[c, 0, u, v] · x[b, c, i + d·u − p_h, j + d·v − p_w] + bias[c]
    y = act(z) + residual            act ∈ {identity, GELU (erf form, nn.GELU's default)}

These are the blocks' own ``nn.Conv2d(C, C, K, padding, dilation, groups=C)`` → ``nn.GELU`` → ``+ shortcut``
chains (VAN's large-kernel attention and MLP, RAVLT's MLP and positional encoding), written out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = (None, "gelu")


def depthwise_conv2d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: tuple[int, int] = (0, 0),
    dilation: int = 1,
    activation: str | None = None,
    residual: torch.Tensor | None = None,
) -> torch.Tensor:
    """``act(conv2d(x, weight, bias, padding, dilation, groups=C)) + residual``; x (B, C, H, W), weight (C, 1, K, K)."""
    out = F.conv2d(x, weight, bias, 1, padding, dilation, x.shape[1])
    if activation == "gelu":
        out = F.gelu(out)
    if residual is not None:
        out = out + residual
    return out
