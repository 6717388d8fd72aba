"""Lightning training, data modules and the ``linzoo`` command line (see docs/training.md).

Names are imported on first use, so ``linzoo --help`` does not pay for importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClassificationModule": "classification",
    "create_classifier": "classification",
    "DigitsDataModule": "data",
    "ImageClassificationDataModule": "data",
    "ImageFolderDataModule": "data",
    "LearningCurves": "callbacks",
    "LinzooCheckpoint": "callbacks",
    "AppendingCSVLogger": "callbacks",
    "DetectionModule": "detection",
    "CocoDetectionDataModule": "detection",
    "SyntheticCocoDataModule": "detection",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
