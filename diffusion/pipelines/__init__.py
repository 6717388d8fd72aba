"""Diffusers pipelines of the zoo.

Importing this package also makes the pipeline classes visible as attributes of the ``diffusers`` module,
which is where ``DiffusionPipeline.from_pretrained`` looks up the ``_class_name`` of a saved ``model_index.json``
(diffusers resolves it with ``getattr(diffusers, name)``), so after ``import linzoo.diffusion`` a saved LiT
pipeline loads with the generic ``DiffusionPipeline.from_pretrained(folder)``, offline, without
``custom_pipeline`` or ``trust_remote_code``.
"""

import diffusers

from .pipeline_lit import LiTPipeline
from .pipeline_lit_pixart import LiTPixArtPipeline

__all__ = ["LiTPipeline", "LiTPixArtPipeline"]


def _register_with_diffusers() -> None:
    for cls in (LiTPipeline, LiTPixArtPipeline):
        existing = getattr(diffusers, cls.__name__, None) if cls.__name__ in dir(diffusers) else None
        if existing is None:
            setattr(diffusers, cls.__name__, cls)


_register_with_diffusers()
