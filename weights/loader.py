"""Load official checkpoint files safely.

Official training scripts pickle more than tensors: an ``argparse.Namespace`` of the run's arguments,
a ``yacs`` ``CfgNode``, numpy scalars for the best accuracy. ``torch.load(weights_only=True)`` refuses
those, and ``weights_only=False`` would run arbitrary code from a downloaded file. We first try
``weights_only=True``; if the file holds other objects we retry with an unpickler that allows exactly
torch's own weights-only globals plus the few named in :data:`EXTRA_ALLOWED_GLOBALS`, and nothing else.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .tf_checkpoint import is_tf_checkpoint, load_tf_checkpoint

__all__ = [
    "EXTRA_ALLOWED_GLOBALS",
    "CheckpointLoadError",
    "extract_state_dict",
    "load_checkpoint_file",
    "load_state_dict_file",
    "sha256_file",
]

STATE_DICT_KEYS = ("model", "state_dict", "model_ema", "state_dict_ema", "module")


class CheckpointLoadError(RuntimeError):
    """A checkpoint file could not be read or did not hold what was asked for."""


class CfgNodeStandIn(dict):
    """Stand-in for ``yacs.config.CfgNode`` (a dict subclass) so yacs need not be installed."""


def _numpy_globals() -> dict[str, Any]:
    try:
        import numpy as np
    except ImportError:
        return {}
    scalar = getattr(np, "_core", np.core).multiarray.scalar
    out = {"numpy.dtype": np.dtype, "numpy.core.multiarray.scalar": scalar, "numpy._core.multiarray.scalar": scalar}
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        if hasattr(np.dtypes, name):
            out[f"numpy.dtypes.{name}"] = getattr(np.dtypes, name)
    return out


#: Globals beyond torch's weights-only set that official files are known to pickle.
EXTRA_ALLOWED_GLOBALS: dict[str, Any] = {
    "argparse.Namespace": argparse.Namespace,
    "yacs.config.CfgNode": CfgNodeStandIn,
    **_numpy_globals(),
}


def _allowed_globals() -> dict[str, Any]:
    from torch import _weights_only_unpickler as wou

    return {**wou._get_allowed_globals(), **EXTRA_ALLOWED_GLOBALS}


class _AllowListUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; anything else raises, naming the global."""

    def find_class(self, module: str, name: str) -> Any:
        full = f"{module}.{name}"
        allowed = _allowed_globals()
        if full in allowed:
            return allowed[full]
        raise pickle.UnpicklingError(f"global '{full}' is not in linzoo's allow-list")


class _AllowListPickleModule:
    """A ``pickle_module`` for ``torch.load`` whose Unpickler is :class:`_AllowListUnpickler`."""

    Unpickler = _AllowListUnpickler
    load = staticmethod(pickle.load)
    __name__ = "linzoo_allowlist_pickle"


def load_checkpoint_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Read a ``.pth``/``.pt``/``.bin``/``.safetensors`` file without executing pickled code.

    A TensorFlow checkpoint (``.tar.gz`` archive, ``.index`` file or prefix) is read by
    :func:`linzoo.weights.tf_checkpoint.load_tf_checkpoint` into ``{TF variable name: tensor}`` (TF layouts).
    """
    path = Path(path)
    if is_tf_checkpoint(path):
        return load_tf_checkpoint(path)
    if not path.is_file():
        raise CheckpointLoadError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(map_location))
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith(b"<") and b"html" in head:
        raise CheckpointLoadError(
            f"{path} is an HTML page, not a checkpoint: the download link led to a web page (e.g. a Google Drive "
            "share page or a login wall). Download the file in a browser and load that file."
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        pass  # the file pickles more than tensors: retry with the explicit allow-list below
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointLoadError(f"could not read {path} as a torch checkpoint: {err}") from err
    try:
        return torch.load(path, map_location=map_location, weights_only=False, pickle_module=_AllowListPickleModule)
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointLoadError(f"could not read {path} as a torch checkpoint: {err}") from err
    except pickle.UnpicklingError as err:
        raise CheckpointLoadError(
            f"refused to load {path}: {err}. Only torch's weights-only globals and "
            f"{sorted(EXTRA_ALLOWED_GLOBALS)} are allowed; a file that needs more is not loaded."
        ) from err


def _strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return dict(state_dict)


def extract_state_dict(checkpoint: Any, state_dict_key: str | None = None) -> dict[str, torch.Tensor]:
    """Pick the weights out of a training checkpoint.

    ``state_dict_key`` names the entry to take (``"model"``, ``"model_ema"``...); ``None`` tries
    ``model``, ``state_dict``, ``model_ema``, ``state_dict_ema``, ``module`` in that order and otherwise
    accepts a bare state dict. A ``module.`` prefix (DDP) is removed.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointLoadError(f"expected a dict-like checkpoint, got {type(checkpoint).__name__}")
    if state_dict_key is not None:
        if state_dict_key not in checkpoint:
            raise CheckpointLoadError(
                f"checkpoint has no entry {state_dict_key!r}; top-level keys: {sorted(map(str, checkpoint))[:20]}"
            )
        found = checkpoint[state_dict_key]
    else:
        found = next((checkpoint[k] for k in STATE_DICT_KEYS if isinstance(checkpoint.get(k), Mapping)), checkpoint)
    tensors = {k: v for k, v in found.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointLoadError(f"no tensors found in the checkpoint (keys: {sorted(map(str, found))[:20]})")
    return _strip_prefix(tensors, "module.")


def load_state_dict_file(path: str | os.PathLike, state_dict_key: str | None = None) -> dict[str, torch.Tensor]:
    """:func:`load_checkpoint_file` then :func:`extract_state_dict`."""
    return extract_state_dict(load_checkpoint_file(path), state_dict_key)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
