"""Diffusers-compatible linear diffusion models, attention processors and pipelines."""

# LinFusion, CLEAR and SLA: linearisation of existing pipelines (diffusion/linearize.py, diffusion/attention/)
from .attention import ClearAttnProcessor, LinFusionAttnProcessor, LinzooAttnProcessor  # noqa: F401
from .linearize import (  # noqa: F401
    LinearizeResult,
    clear_state_dict,
    enable_vae_tiling,
    linearize,
    linfusion_state_dict,
    list_linearizations,
    load_linfusion_weights,
    save_linfusion,
    sdedit_upscale,
    unlinearize,
)

# LiT: linear diffusion transformer model, weight inheritance and pipelines (diffusion/models/, diffusion/pipelines/)
from .models import (  # noqa: F401
    InheritanceReport,
    LiTTransformer2DModel,
    convert_original_state_dict,
    lit_from_teacher,
    load_transformer,
)
from .pipelines import LiTPipeline, LiTPixArtPipeline  # noqa: F401

# SLA: sparse-linear attention in Wan / FLUX / UNet self-attention (registers linearize(method="sla"))
from .sla import load_turbodiffusion_wan, save_sla, sla_state_dict  # noqa: F401
