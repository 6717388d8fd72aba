"""linzoo's vision backbones. Importing this package registers every family with timm.

>>> import timm, linzoo.vision
>>> model = timm.create_model("ravlt_s", features_only=True, out_indices=(1, 2, 3))
"""

from . import inline, l2vit, moat, ravlt, slab, soft, van, vig  # noqa: F401  (registers the models)
from ._builder import list_linzoo_models

__all__ = ["list_linzoo_models"]
