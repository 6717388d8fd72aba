"""Diffusers models of the zoo: the LiT transformer and its weight inheritance from DiT / PixArt-Σ."""

from .lit_inherit import InheritanceReport, convert_original_state_dict, lit_config_from_teacher, lit_from_teacher
from .lit_transformer_2d import LiTBlock, LiTLinearAttention, LiTTransformer2DModel
from .loading import load_transformer

__all__ = [
    "InheritanceReport",
    "LiTBlock",
    "LiTLinearAttention",
    "LiTTransformer2DModel",
    "convert_original_state_dict",
    "lit_config_from_teacher",
    "lit_from_teacher",
    "load_transformer",
]
