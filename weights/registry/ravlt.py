"""RAVLT (RALA, CVPR 2025) ImageNet-1k checkpoints, hosted on the Hugging Face hub by the authors."""

from . import OfficialCheckpoint

_NOTE = (
    "training checkpoint dict ({'model', 'model_ema', 'optimizer', 'args', ...}); the repo's --finetune path "
    "loads 'model'. The repo has no LICENSE file; the HF model card says MIT."
)
_TOP1 = {"s": 84.4}  # the only top-1 the repo/README states (RAVLT-S, 26M / 4.6G)

CHECKPOINTS = [
    OfficialCheckpoint(
        model=f"ravlt_{size}",
        filename=f"RAVLT_{size.upper()}.pth",
        hf_hub_id="aldjalkdf/RAVLT",
        hf_hub_filename=f"RAVLT_{size.upper()}.pth",
        url=f"https://huggingface.co/aldjalkdf/RAVLT/resolve/main/RAVLT_{size.upper()}.pth",
        state_dict_key="model",
        top1=_TOP1.get(size),
        license="mit (HF model card; no LICENSE in the code repo)",
        source_repo="https://github.com/qhfan/RALA",
        notes=_NOTE,
    )
    for size in ("t", "s", "b", "l")
]
