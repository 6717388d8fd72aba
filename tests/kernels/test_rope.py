"""2-D RoPE tables against a direct per-token transcription."""

import math

import pytest
import torch

from linzoo.kernels import apply_rope, rope_2d, rope_2d_frequencies


@pytest.mark.parametrize("inclusive", [True, False])
def test_rope_2d_matches_direct_rotation(inclusive):
    h, w, d = 3, 4, 8
    freqs = rope_2d_frequencies(d, inclusive=inclusive)
    cos, sin = rope_2d(h, w, freqs)
    assert cos.shape == sin.shape == (h * w, d // 2)
    x = torch.randn(h * w, d)
    out = apply_rope(x, cos, sin)
    for n in range(h * w):
        y, xx = divmod(n, w)
        for pair in range(d // 2):
            pos = y if pair < d // 4 else xx
            angle = pos * freqs[pair % (d // 4)].item()
            a, b = x[n, 2 * pair].item(), x[n, 2 * pair + 1].item()
            assert out[n, 2 * pair].item() == pytest.approx(a * math.cos(angle) - b * math.sin(angle), abs=1e-5)
            assert out[n, 2 * pair + 1].item() == pytest.approx(a * math.sin(angle) + b * math.cos(angle), abs=1e-5)


def test_rope_preserves_norm_and_validates():
    cos, sin = rope_2d(5, 6, rope_2d_frequencies(16))
    x = torch.randn(2, 3, 30, 16)
    torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    with pytest.raises(ValueError, match="multiple of 4"):
        rope_2d_frequencies(6)
