"""Attention ops shared by the zoo: a PyTorch reference beside each fused Triton kernel.

The attention ops with a Triton kernel (linear, neighborhood, window and sparse-linear attention, and ViG's
bidirectional GLA) take ``backend="auto" | "triton" | "torch"`` (``auto``: the env var ``LINZOO_KERNEL_BACKEND``,
else Triton on CUDA, else the reference) and are ``torch.library`` custom ops with a fake implementation and
autograd. ``bidirectional_gla``'s ``"torch"`` backend is a chunked PyTorch scan beside its recurrent reference.
``sparse_linear_attention`` (SLA) returns the block-sparse softmax branch and the linear branch; the sparse branch
is a fused block-sparse FlashAttention (Triton forward and backward), the linear branch over all keys the fused
linear-attention op (over the non-selected blocks: PyTorch matmuls); ``sla_block_map`` is its block selection and
``SparseLinearAttention`` the official module (``O_s + proj_l(O_l)``).
``depthwise_conv2d`` fuses a stride-1 depthwise convolution with its bias, GELU and shortcut (same backends).
"""

from ._backend import BACKENDS, ENV_VAR, resolve_backend, triton_available
from .depthwise_conv import depthwise_conv2d, depthwise_conv2d_reference
from .gla import bidirectional_gla
from .linear_attention import linear_attention, linear_attention_reference
from .neighborhood_attention import neighborhood_attention_2d, neighborhood_attention_2d_reference
from .rope import apply_rope, rope_2d, rope_2d_frequencies
from .sparse_linear_attention import (
    SparseLinearAttention,
    sla_block_map,
    sparse_linear_attention,
    sparse_linear_attention_reference,
)
from .window_attention import (
    rpb_to_swin_table,
    swin_table_to_rpb,
    window_attention_2d,
    window_attention_2d_reference,
)

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "SparseLinearAttention",
    "apply_rope",
    "bidirectional_gla",
    "depthwise_conv2d",
    "depthwise_conv2d_reference",
    "linear_attention",
    "linear_attention_reference",
    "neighborhood_attention_2d",
    "neighborhood_attention_2d_reference",
    "resolve_backend",
    "rope_2d",
    "rope_2d_frequencies",
    "rpb_to_swin_table",
    "sla_block_map",
    "sparse_linear_attention",
    "sparse_linear_attention_reference",
    "swin_table_to_rpb",
    "triton_available",
    "window_attention_2d",
    "window_attention_2d_reference",
]
