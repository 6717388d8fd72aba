"""Attention processors for diffusers' ``Attention`` modules, computing attention through :mod:`linzoo.kernels`."""

from .base import LinzooAttnProcessor, iter_attention_modules
from .linfusion import (
    LINFUSION_EPS,
    LinFusionAttnProcessor,
    LinFusionProjection,
    add_linfusion_projections,
    has_linfusion_projections,
    remove_linfusion_projections,
)

__all__ = [
    "LINFUSION_EPS",
    "LinFusionAttnProcessor",
    "LinFusionProjection",
    "LinzooAttnProcessor",
    "add_linfusion_projections",
    "has_linfusion_projections",
    "iter_attention_modules",
    "remove_linfusion_projections",
]
