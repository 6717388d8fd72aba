"""InLine (NeurIPS 2024) ImageNet-1k checkpoints, hosted by the authors on Tsinghua Cloud (LeapLabTHU/InLine README).

The files are training checkpoints of the official Swin-style trainer: ``{'model', 'optimizer', 'lr_scheduler',
'max_accuracy', 'epoch', 'config' (a pickled yacs CfgNode), ...}`` (CSwin runs with ``main_ema.py`` also keep
``state_dict_ema``; the README does not say which copy its accuracy is for, its eval command loads ``model``).
The share links end in ``/?dl=1`` and carry no file name: :func:`linzoo.weights.pretrained_source` hands timm
``(url, "<model>.pth")`` so ``pretrained=True`` caches the download under that name (not tried against the
live server: no network where this was written). A file downloaded by hand loads with
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))``.
"""

from . import OfficialCheckpoint

_NOTE = (
    "training checkpoint dict ({'model', 'optimizer', 'lr_scheduler', 'max_accuracy', 'epoch', 'config' (yacs)}); "
    "the weights are under 'model'. The share link has no file name: timm caches it as <model>.pth; a file "
    "downloaded by hand loads with pretrained_cfg_overlay=dict(file=...). The repo has no LICENSE file."
)
_URL = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"

# (model, Tsinghua Cloud id, README top-1, README params, note)
_PUBLISHED = (
    ("inline_deit_t", "1d6b8191ad6d4114b291", 74.5, "6.5M", ""),
    ("inline_deit_s", "2f3898b07e9247f3beb3", 80.2, "16.7M", " Trained and evaluated at 288."),
    ("inline_deit_b", "10bdd726d4b0435eb34e", 82.3, "23.8M", " Trained and evaluated at 448."),
    ("inline_pvt_t", "90ac52b1555b401eb5e6", 78.2, "12.0M", ""),
    ("inline_pvt_s", "1ab953b2479d433080a3", 82.0, "21.6M", ""),
    ("inline_pvt_m", "a72aec31e6084bc0a280", 83.2, "37.6M", ""),
    ("inline_pvt_l", "efd91318ba964f01b288", 83.6, "50.2M", " Official cfg inline_pvt_b.yaml; the code has 51.2M."),
    ("inline_swin_t", "32810869fcc34410966b", 82.4, "30M", ""),
    ("inline_swin_s", "e9657fd247c04c7cb1a1", 83.6, "50M", ""),
    ("inline_swin_b", "bf23564bb64c420aafe1", 84.1, "88M", ""),
    ("inline_cswin_t", "49fa2ecc543647c4b970", 83.2, "25M", " The code (and the repo's figure) have 20.6M params."),
    ("inline_cswin_s", "59f4e65f776f4052b93c", 83.8, "43M", " The code (and the repo's figure) have 33.0M params."),
    ("inline_cswin_b", "91e17121df284ae38521", 84.5, "96M", " The code (and the repo's figure) have 73.4M params."),
)

CHECKPOINTS = [
    OfficialCheckpoint(
        model=model,
        filename=f"{model}.pth",
        url=_URL.format(share_id),
        state_dict_key="model",
        top1=top1,
        license="unknown (no LICENSE in LeapLabTHU/InLine)",
        source_repo="https://github.com/LeapLabTHU/InLine",
        notes=f"README: {params} params.{extra} {_NOTE}",
    )
    for model, share_id, top1, params, extra in _PUBLISHED
]
