"""Attention processors for diffusers' ``Attention`` modules, computing attention through :mod:`linzoo.kernels`."""

from .base import LinzooAttnProcessor, iter_attention_modules
from .clear import ClearAttnProcessor, ClearGrid, clear_attention, grid_from_image_ids
from .flux import flux_attention_output, flux_qkv
from .linfusion import (
    LINFUSION_EPS,
    LinFusionAttnProcessor,
    LinFusionProjection,
    add_linfusion_projections,
    has_linfusion_projections,
    remove_linfusion_projections,
)
from .sla import (
    SLAAttnProcessor,
    SLAFluxAttnProcessor,
    SLAJointAttnProcessor,
    SLALTXAttnProcessor,
    SLAWanAttnProcessor,
    sla_module,
)

__all__ = [
    "ClearAttnProcessor",
    "ClearGrid",
    "LINFUSION_EPS",
    "LinFusionAttnProcessor",
    "LinFusionProjection",
    "LinzooAttnProcessor",
    "SLAAttnProcessor",
    "SLAFluxAttnProcessor",
    "SLAJointAttnProcessor",
    "SLALTXAttnProcessor",
    "SLAWanAttnProcessor",
    "add_linfusion_projections",
    "clear_attention",
    "flux_attention_output",
    "flux_qkv",
    "grid_from_image_ids",
    "has_linfusion_projections",
    "iter_attention_modules",
    "remove_linfusion_projections",
    "sla_module",
]
