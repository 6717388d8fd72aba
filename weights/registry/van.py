"""VAN (Visual Attention Network) ImageNet-1k checkpoints, hosted on the Hugging Face hub by the authors.

Source: github.com/Visual-Attention-Network/VAN-Classification (README and ``models/van.py:model_urls``).
"""

from . import OfficialCheckpoint

_NOTE = (
    "timm train.py checkpoint ({'state_dict', 'optimizer', 'args' (argparse.Namespace), ...}); the official "
    "code loads 'state_dict'. Mirrors on Google Drive / Tsinghua Cloud are listed in the README. The README "
    "adds: for commercial use, please contact the authors."
)

# (size, HF repo suffix, file name, published ImageNet-1k top-1 at 224)
_FILES = (
    ("b0", "Tiny", "van_tiny_754.pth.tar", 75.4),
    ("b1", "Small", "van_small_811.pth.tar", 81.1),
    ("b2", "Base", "van_base_828.pth.tar", 82.8),
    ("b3", "Large", "van_large_839.pth.tar", 83.9),
)

CHECKPOINTS = [
    OfficialCheckpoint(
        model=f"van_{size}",
        filename=filename,
        hf_hub_id=f"Visual-Attention-Network/VAN-{repo}-original",
        hf_hub_filename=filename,
        url=f"https://huggingface.co/Visual-Attention-Network/VAN-{repo}-original/resolve/main/{filename}",
        state_dict_key="state_dict",
        top1=top1,
        license="apache-2.0",
        source_repo="https://github.com/Visual-Attention-Network/VAN-Classification",
        notes=_NOTE,
    )
    for size, repo, filename, top1 in _FILES
]
