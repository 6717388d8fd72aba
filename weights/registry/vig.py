"""ViG (plain ViG-T/S/B, hierarchical ViG-H-T/S/B) ImageNet-1k checkpoints, on the authors' HF hub (hustvl/ViG).

Source: github.com/hustvl/ViG @ dfb9d321 (README "Main results") and hf://hustvl/ViG @ af36a61.
"""

from . import OfficialCheckpoint

_NOTE = (
    "fp32 state dict only (no optimizer, no EMA); whether it is bare or wrapped as {'model': ...} is not stated, "
    "linzoo accepts both (the official loader reads checkpoint['model']). Code licence MIT (repo LICENSE); the HF "
    "model card says apache-2.0."
)

# (linzoo name, file, published ImageNet-1k top-1 at 224)
_FILES = (
    ("vig_t", "vig_t_77p2acc.pth", 77.2),
    ("vig_s", "vig_s_81p7acc.pth", 81.7),
    ("vig_b", "vig_b_82p6acc.pth", 82.6),
    ("vig_h_t", "vig_h_t_82p8acc.pth", 82.8),
    ("vig_h_s", "vig_h_s_83p8acc.pth", 83.8),
    ("vig_h_b", "vig_h_b_84p2acc.pth", 84.2),
)

CHECKPOINTS = [
    OfficialCheckpoint(
        model=model,
        filename=filename,
        hf_hub_id="hustvl/ViG",
        hf_hub_filename=filename,
        url=f"https://huggingface.co/hustvl/ViG/resolve/main/{filename}",
        state_dict_key=None,
        top1=top1,
        license="mit",
        source_repo="https://github.com/hustvl/ViG",
        notes=_NOTE,
    )
    for model, filename, top1 in _FILES
]
