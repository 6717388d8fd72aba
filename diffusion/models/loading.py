"""Load a saved diffusers transformer (DiT, PixArt, LiT ...) by the class recorded in its ``config.json``."""

from __future__ import annotations

import json
import os

import diffusers
import torch
from diffusers.models.modeling_utils import ModelMixin

from .lit_transformer_2d import LiTTransformer2DModel

__all__ = ["load_transformer"]

_LINZOO_MODELS = {"LiTTransformer2DModel": LiTTransformer2DModel}


def load_transformer(path: str | os.PathLike, dtype: torch.dtype | None = None) -> ModelMixin:
    """Load the transformer saved in ``path``: a model folder (``config.json`` + weights), a pipeline folder
    (``model_index.json`` with a ``transformer/`` subfolder), or a Hub id of either. Parameters are materialised on
    the CPU (``low_cpu_mem_usage=False``), never left on the ``meta`` device."""
    path = str(path)
    subfolder = None
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "model_index.json")):
            subfolder = "transformer"
        config_file = os.path.join(path, subfolder or "", "config.json")
        if not os.path.isfile(config_file):
            raise ValueError(f"path must be a diffusers model or pipeline folder with a config.json, got {path!r}")
    else:  # a Hub id (downloaded, or taken from the local cache when HF_HUB_OFFLINE=1)
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            hf_hub_download(path, "model_index.json")
            subfolder = "transformer"
        except EntryNotFoundError:
            subfolder = None
        config_file = hf_hub_download(path, "config.json", subfolder=subfolder)
    with open(config_file) as f:
        name = json.load(f).get("_class_name", "")
    cls = _LINZOO_MODELS.get(name) or getattr(diffusers, name, None)
    if cls is None or not (isinstance(cls, type) and issubclass(cls, ModelMixin)):
        raise ValueError(f"{config_file} names an unknown model class {name!r}")
    return cls.from_pretrained(path, subfolder=subfolder, low_cpu_mem_usage=False, torch_dtype=dtype)
