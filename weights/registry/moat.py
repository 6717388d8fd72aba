"""MOAT ImageNet checkpoints (TF1 tensor bundles in tar.gz archives), published by the deeplab2 authors.

Source: github.com/google-research/deeplab2 ``g3doc/projects/moat_imagenet_pretrained_checkpoints.md``. Each archive
holds a ``.index`` + ``.data-00000-of-00001`` pair named by TF variables (``moat/block_02_00/attention/q/weight``);
:mod:`linzoo.weights.tf_checkpoint` reads them without TensorFlow and ``linzoo.vision.moat.checkpoint_filter_fn``
maps the names. ``pretrained=True`` downloads the archive through timm's cache and converts it on load.
"""

from . import OfficialCheckpoint

_BASE = "https://storage.googleapis.com/gresearch/tf-deeplab/checkpoint/"
_NOTE = (
    "TF1 checkpoint (tensor bundle) in a tar.gz; BatchNorm moving statistics are read from it (deeplab2's own "
    "loader restores trainable variables only); '/ExponentialMovingAverage' copies are preferred where present. "
    "Input normalisation: {norm}."
)
_OPT1 = "option 1, ImageNet mean/std (timm IMAGENET_DEFAULT on [0, 1])"
_OPT2 = "option 2, (x - 127.5) / 127.5 (mean/std 0.5)"

# (linzoo name, archive stem, top-1 with PE, top-1 without PE, 22k normalisation)
_FILES = (
    ("moat_0", "moat0_imagenet_1k_224", 83.3, 83.0, False),
    ("moat_1", "moat1_imagenet_1k_224", 84.2, 84.1, False),
    ("moat_2", "moat2_imagenet_22k_and_1k_384", 87.5, 87.2, True),
    ("moat_3", "moat3_imagenet_22k_and_1k_512", 88.4, 88.2, True),
    ("moat_4", "moat4_imagenet_22k_and_1k_512", 89.1, 88.9, True),
    ("tiny_moat_0", "tiny_moat0_imagenet_1k_256", 76.6, 76.0, False),
    ("tiny_moat_1", "tiny_moat1_imagenet_1k_256", 79.2, 78.9, False),
    ("tiny_moat_2", "tiny_moat2_imagenet_1k_256", 81.7, 81.3, False),
    ("tiny_moat_3", "tiny_moat3_imagenet_1k_256", 83.3, 83.0, False),
)

CHECKPOINTS = [
    OfficialCheckpoint(
        model=name + suffix,
        filename=f"{stem}_{pe}_position_embedding.tar.gz",
        format="tf1-bundle-tar.gz",
        url=f"{_BASE}{stem}_{pe}_position_embedding.tar.gz",
        top1=top1,
        license="apache-2.0",
        source_repo="https://github.com/google-research/deeplab2",
        notes=_NOTE.format(norm=_OPT2 if in22k else _OPT1),
    )
    for name, stem, top1_pe, top1_no_pe, in22k in _FILES
    for suffix, pe, top1 in (("", "w", top1_pe), ("_no_pe", "wo", top1_no_pe))
]
