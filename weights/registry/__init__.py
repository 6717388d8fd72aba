"""Registry of official checkpoints: where each model's published weights live and how they are stored.

Each family adds a module here (``weights/registry/<family>.py``) defining ``CHECKPOINTS``, a list of
:class:`OfficialCheckpoint`; the modules are discovered automatically.
"""

from __future__ import annotations

import importlib
import pkgutil
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlparse

__all__ = ["OfficialCheckpoint", "get_checkpoint", "list_checkpoints", "pretrained_source"]


@dataclass(frozen=True)
class OfficialCheckpoint:
    """One published weight file.

    Attributes:
        model: linzoo model name (``ravlt_s``) optionally with a timm tag (``l2vit_b.in22k_ft_in1k``).
        url: direct download URL, if any.
        hf_hub_id / hf_hub_filename: Hugging Face repository and file, if hosted there.
        filename: the file's name as published.
        format: ``"torch-pickle"`` (a ``torch.save`` dict), ``"safetensors"``, ``"diffusers"`` (a folder), ...
        state_dict_key: the top-level entry holding the weights (``model``, ``state_dict``...), None for a bare dict.
        sha256: hex digest where known.
        top1: published ImageNet top-1 (%), where the paper/README gives one.
        license: the licence under which the weights are published ("unknown" if the repo states none).
        notes: anything a user needs to know (EMA copies, alternative mirrors, pickled extras).
    """

    model: str
    filename: str
    format: str = "torch-pickle"
    url: str | None = None
    hf_hub_id: str | None = None
    hf_hub_filename: str | None = None
    state_dict_key: str | None = None
    sha256: str | None = None
    top1: float | None = None
    license: str = "unknown"
    source_repo: str | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_REGISTRY: dict[str, OfficialCheckpoint] | None = None


def _load() -> dict[str, OfficialCheckpoint]:
    global _REGISTRY
    if _REGISTRY is None:
        registry: dict[str, OfficialCheckpoint] = {}
        for info in pkgutil.iter_modules(__path__):
            module = importlib.import_module(f"{__name__}.{info.name}")
            for ckpt in getattr(module, "CHECKPOINTS", ()):
                if ckpt.model in registry:
                    raise RuntimeError(f"official checkpoint for {ckpt.model!r} registered twice")
                registry[ckpt.model] = ckpt
        _REGISTRY = registry
    return _REGISTRY


def list_checkpoints() -> list[OfficialCheckpoint]:
    """All registered official checkpoints, sorted by model name."""
    return [v for _, v in sorted(_load().items())]


def get_checkpoint(model: str) -> OfficialCheckpoint | None:
    """The official checkpoint of ``model`` (``name`` or ``name.tag``), or None."""
    return _load().get(model)


def pretrained_source(model: str) -> dict[str, Any]:
    """timm ``pretrained_cfg`` fields (url / hf_hub_id / hf_hub_filename / license) for ``model``'s weights.

    ``custom_load`` is set so timm hands the downloaded file to the model's ``load_pretrained``, which reads
    it through linzoo's safe loader and the family's ``checkpoint_filter_fn``.
    """
    ckpt = get_checkpoint(model)
    if ckpt is None:
        return {}
    cfg: dict[str, Any] = {"license": ckpt.license, "custom_load": "hf" if ckpt.hf_hub_id else True}
    if ckpt.hf_hub_id:
        cfg["hf_hub_id"] = ckpt.hf_hub_id
        cfg["hf_hub_filename"] = ckpt.hf_hub_filename or ckpt.filename
    if ckpt.url:
        # timm caches a download under the URL's last path segment; a link whose path ends in "/" (InLine's
        # Tsinghua Cloud ".../f/<id>/?dl=1") has none and goes through timm's (url, filename) form instead
        has_name = bool(posixpath.basename(urlparse(ckpt.url).path))
        cfg["url"] = ckpt.url if has_name else (ckpt.url, ckpt.filename)
    return cfg
