"""SOFT / SOFT-Norm ImageNet-1k checkpoints (Google Drive links from the official README).

Source: github.com/fudan-zvg/SOFT @ d3febc33 (README "Main results"). Google Drive needs a confirm-token download
that timm cannot do: download the file by hand and pass it with ``pretrained_cfg_overlay=dict(file=...)``.
"""

from . import OfficialCheckpoint

_NOTE = (
    "timm 0.3.2 CheckpointSaver file ({'epoch', 'arch', 'state_dict', 'optimizer', 'version', 'args', "
    "'state_dict_ema', 'metric'}); the official --eval loads the EMA copy 'state_dict_ema' (model EMA decay "
    "0.99996), which the published top-1 measures. Google Drive link: download by hand (the README gives no file "
    "name; 'filename' is the README's link label)."
)

# (linzoo name, README label, Google Drive file id, published ImageNet-1k top-1 at 224, extra note)
_FILES = (
    ("soft_tiny", "SOFT_Tiny", "1S04DCotIOkP0DaBb8WStQ513z82qT9de", 79.3, " Trained with the PyTorch Gaussian kernel."),
    (
        "soft_tiny.cuda_in1k",
        "SOFT_Tiny_cuda",
        "1inDKh3Wz_2KQgGH_2ywU5H_gLKZpIz_u",
        79.3,
        " Trained with the CUDA (exact subtraction) Gaussian kernel; the README gives one top-1 for both kernels.",
    ),
    ("soft_norm_tiny", "SOFT_Tiny_norm", "1Isy5b9v_4pyIXDqhKPNRq3WKH0etDlfl", 79.4, ""),
    ("soft_norm_small", "SOFT_Small_norm", "1OBjn7FzVdNP1Urqxq7X0yDykyPhxAAW1", 82.4, ""),
    ("soft_norm_medium", "SOFT_Medium_norm", "1K2C6daaJn3jwurWh38uvV7rexirWjuzh", 83.1, ""),
    ("soft_norm_large", "SOFT_Large_norm", "1aRYuF_gbBGyiXUDKEcpHJmM04SdvTUdP", 83.3, ""),
)

CHECKPOINTS = [
    OfficialCheckpoint(
        model=model,
        filename=label,
        url=f"https://drive.google.com/file/d/{file_id}/view?usp=sharing",
        state_dict_key="state_dict_ema",
        top1=top1,
        license="mit",
        source_repo="https://github.com/fudan-zvg/SOFT",
        notes=_NOTE + extra,
    )
    for model, label, file_id, top1, extra in _FILES
]
