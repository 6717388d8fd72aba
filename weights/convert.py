"""Convert an official checkpoint into linzoo's layout: ``model.safetensors`` + ``config.json``."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .loader import load_state_dict_file

__all__ = ["StateDictMismatchError", "check_state_dict", "convert_checkpoint"]


class StateDictMismatchError(ValueError):
    """Keys or shapes of a state dict do not match the model."""


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor], reference: Mapping[str, Any], *, what: str = "checkpoint"
) -> None:
    """Raise :class:`StateDictMismatchError` listing missing, unexpected and wrong-shape keys.

    ``reference`` maps key -> tensor or shape (a model's ``state_dict()`` or a manifest's ``keys``).
    """
    ref_shapes = {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in reference.items()}
    missing = sorted(set(ref_shapes) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(ref_shapes))
    wrong = sorted(
        f"{k}: {tuple(state_dict[k].shape)} != {ref_shapes[k]}"
        for k in set(ref_shapes) & set(state_dict)
        if tuple(state_dict[k].shape) != ref_shapes[k]
    )
    if missing or unexpected or wrong:
        lines = [f"{what} does not match the model:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                shown = ", ".join(items[:12]) + (f", ... (+{len(items) - 12})" if len(items) > 12 else "")
                lines.append(f"  {title} ({len(items)}): {shown}")
        raise StateDictMismatchError("\n".join(lines))


def convert_checkpoint(
    model: nn.Module,
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike,
    filter_fn: Callable[[dict, nn.Module], dict] | None = None,
    state_dict_key: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Read ``checkpoint`` safely, map it with ``filter_fn`` onto ``model``'s keys, check every key and shape,
    and write ``out_dir/model.safetensors`` and ``out_dir/config.json``. Returns the safetensors path."""
    from safetensors.torch import save_file

    state_dict = load_state_dict_file(checkpoint, state_dict_key)
    if filter_fn is not None:
        state_dict = filter_fn(state_dict, model)
    check_state_dict(state_dict, model.state_dict(), what=f"converted {checkpoint}")
    model.load_state_dict(state_dict, strict=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    path = out / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "source": os.fspath(checkpoint)})
    (out / "config.json").write_text(json.dumps(dict(config or {}), indent=2, default=str))
    return path
