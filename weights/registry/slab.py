"""SLAB (ICML 2024) ImageNet-1k checkpoints, released as GitHub release assets of xinghaochen/SLAB."""

from . import OfficialCheckpoint

_BASE = "https://github.com/xinghaochen/SLAB/releases/download/ckpts/"
_LICENSE = "unknown (the official SLAB repository has no LICENSE file)"
_NOTE = (
    "loaded by the official eval.py as torch.load(path)['model'] (training checkpoints also pickle a yacs "
    "CfgNode 'config', 'optimizer', 'lr_scheduler', 'max_accuracy', 'epoch'); the release assets could not be "
    "inspected, a bare state dict is accepted too. The weights' licence is unknown."
)

# linzoo name -> (release file name, README top-1)
_FILES = {
    "deit_t_prepbn": ("deit_tiny_prepbn.pth", 73.6),
    "deit_s_prepbn": ("deit_small_prepbn.pth", 80.2),
    "slab_deit_t": ("slab_deit_tiny.pth", 74.3),
    "slab_deit_s": ("slab_deit_small.pth", 80.0),
    "pvt_t_prepbn": ("pvt_tiny_prepbn.pth", 76.0),
    "pvt_s_prepbn": ("pvt_small_prepbn.pth", 80.1),
    "pvt_m_prepbn": ("pvt_medium_prepbn.pth", 81.7),
    "slab_pvt_t": ("slab_pvt_tiny.pth", 76.5),
    "swin_t_prepbn": ("swin_tiny_prepbn.pth", 81.4),
    "slab_swin_t": ("slab_swin_tiny.pth", 81.8),
    "slab_swin_s": ("slab_swin_small.pth", 83.6),
    "slab_cswin_t": ("slab_cswin_tiny.pth", 82.8),
}

CHECKPOINTS = [
    OfficialCheckpoint(
        model=name,
        filename=filename,
        url=_BASE + filename,
        state_dict_key="model",
        top1=top1,
        license=_LICENSE,
        source_repo="https://github.com/xinghaochen/SLAB",
        notes=_NOTE,
    )
    for name, (filename, top1) in _FILES.items()
]
