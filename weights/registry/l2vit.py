"""L²ViT checkpoints, published as GitHub release assets of the official repository (release v1.0).

Source: github.com/ChuanyangZheng/L2ViT (readme.md tables). Every file is a ConvNeXt-style training checkpoint
``{'model', 'optimizer', 'epoch', 'scaler', 'args' (argparse.Namespace), ['model_ema']}``; the README's
evaluation command (``--resume`` without ``--model_ema``) reads the raw ``model`` copy, and so does linzoo.
"""

from . import OfficialCheckpoint

_BASE = "https://github.com/ChuanyangZheng/L2ViT/releases/download/v1.0/"
_NOTE = (
    "training checkpoint ({'model', 'optimizer', 'epoch', 'scaler', 'args', ['model_ema']}); linzoo loads "
    "'model' as the README's evaluation does. 'best-ema' in a file name means it was saved at the epoch where "
    "the EMA accuracy peaked."
)
_NOTE_22K = (
    " The ImageNet-22k classes follow the repository's own ordering (classification/custom_map22kto1k.txt maps "
    "them to ImageNet-1k), which differs from ConvNeXt's."
)

# (linzoo model[.tag], file, published ImageNet-1k top-1 or None, extra note)
_FILES = (
    ("l2vit_t", "L2ViT-Tiny-checkpoint-best-ema.pth", 83.1, ""),
    ("l2vit_s", "L2ViT-Small-checkpoint-best-ema.pth", 84.1, ""),
    ("l2vit_b", "L2ViT-Base-checkpoint-best-ema.pth", 84.4, ""),
    ("l2vit_b.in22k_ft_in1k", "L2ViT-Base-22k21k-finetune-224-checkpoint-best.pth", 86.0, _NOTE_22K),
    ("l2vit_b_384.in22k_ft_in1k", "L2ViT-Base-22k21k-finetune-384-checkpoint-best.pth", 87.0, _NOTE_22K),
    ("l2vit_b.in22k", "L2ViT-Base-22k-pretrain-checkpoint-best.pth", None, " 21841-class head." + _NOTE_22K),
)

CHECKPOINTS = [
    OfficialCheckpoint(
        model=model,
        filename=filename,
        url=_BASE + filename,
        state_dict_key="model",
        top1=top1,
        license="mit",
        source_repo="https://github.com/ChuanyangZheng/L2ViT",
        notes=_NOTE + extra,
    )
    for model, filename, top1, extra in _FILES
]
