"""Linearise the attention of an existing diffusers model in place: ``linearize(pipe, method="linfusion")``.

Methods are registered by name (:func:`register_linearization`); ``"linfusion"`` and ``"clear"`` ship here,
``"sla"`` in :mod:`linzoo.diffusion.sla`.

CLEAR (arXiv 2412.16112) keeps the softmax attention of FLUX (``FluxTransformer2DModel``, or a ``FluxPipeline``'s
``transformer``) and restricts every image query to the text tokens plus a circular window of radius ``r`` on the
latent grid (see :mod:`linzoo.diffusion.attention.clear`); ``weights=`` loads the official files
(``Huage001/CLEAR``: ``clear_local_{8,16,32}.safetensors``, ``clear_local_{8,16}_down_4.safetensors``) key-for-key.

LinFusion
(arXiv 2409.02097) swaps the self-attention (``attn1``) of every transformer block of a Stable Diffusion 1.5 /
2.1 / XL ``UNet2DConditionModel`` for generalized linear attention (see
:mod:`linzoo.diffusion.attention.linfusion`): the diffusers ``Attention`` module and its ``to_q/to_k/to_v/to_out``
stay, two residual projections ``to_q_``/``to_k_`` are added and the processor is set to
:class:`~linzoo.diffusion.attention.LinFusionAttnProcessor`. Cross-attention, ResNets and FFNs are untouched.

Official weights (``Yuanshi/LinFusion-1-5``, ``-2-1``, ``-XL``) are diffusers folders of the official ``LinFusion``
class; :func:`load_linfusion_weights` reads them key-for-key and :func:`save_linfusion` writes that layout back.

The module also holds the high-resolution helpers of the official recipe: :func:`enable_vae_tiling` and
:func:`sdedit_upscale` (the SDEdit ladder of the ``ultra_text2image_w_sdedit`` notebook).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from linzoo.weights import check_state_dict, list_checkpoints, load_state_dict_file

from .attention.base import iter_attention_modules
from .attention.linfusion import (
    LinFusionAttnProcessor,
    add_linfusion_projections,
    has_linfusion_projections,
    remove_linfusion_projections,
)

__all__ = [
    "CLEAR_HUB_FILES",
    "CLEAR_HUB_ID",
    "LinearizeResult",
    "clear_state_dict",
    "enable_vae_tiling",
    "linearize",
    "linfusion_config",
    "linfusion_state_dict",
    "list_linearizations",
    "load_linfusion_weights",
    "register_linearization",
    "resolve_linfusion_weights",
    "save_linfusion",
    "sdedit_upscale",
    "unlinearize",
]

logger = logging.getLogger(__name__)

#: official per-module keys (in the order the official module registers them), without the ``{i}.`` prefix.
_OFFICIAL_PREFIXES = ("to_q", "to_k", "to_v", "to_out", "to_q_", "to_k_")
_WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
_ORIGINAL_ATTR = "_linzoo_linfusion_original"


@dataclass
class LinearizeResult:
    """What :func:`linearize` did: ``num_replaced`` attention layers (their names in ``modules``)."""

    method: str
    num_replaced: int
    modules: list[str] = field(default_factory=list)
    weights: str | None = None

    def __int__(self) -> int:
        return self.num_replaced


_Apply = Callable[..., LinearizeResult]
_Remove = Callable[[nn.Module], int]
_METHODS: dict[str, tuple[_Apply, _Remove]] = {}


def register_linearization(name: str, apply: _Apply, remove: _Remove) -> None:
    """Register a method: ``apply(model, weights, source=pipe, **options) -> LinearizeResult`` and
    ``remove(model) -> int`` (layers restored)."""
    if name in _METHODS:
        raise ValueError(f"linearization method {name!r} is already registered")
    _METHODS[name] = (apply, remove)


def list_linearizations() -> list[str]:
    """Names accepted by ``linearize(..., method=...)``."""
    return sorted(_METHODS)


def _target_model(pipe_or_model: Any) -> nn.Module:
    for attr in ("unet", "transformer"):
        denoiser = getattr(pipe_or_model, attr, None)
        if isinstance(denoiser, nn.Module):
            return denoiser
    if isinstance(pipe_or_model, nn.Module):
        return pipe_or_model
    raise ValueError(
        "pipe_or_unet must be a diffusers pipeline with a `unet` or `transformer`, or an nn.Module (a "
        f"UNet2DConditionModel, a FluxTransformer2DModel), got {type(pipe_or_model).__name__}"
    )


def linearize(pipe_or_unet: Any, method: str = "linfusion", weights: Any = None, **options: Any) -> LinearizeResult:
    """Swap the attention of ``pipe_or_unet`` (a pipeline's ``unet``, or the model itself) in place.

    Args:
        pipe_or_unet: a diffusers pipeline (its ``unet`` is changed) or a model such as ``UNet2DConditionModel``.
        method: a registered method (:func:`list_linearizations`), ``"linfusion"`` by default.
        weights: the method's learned weights: for LinFusion a folder in the official layout (``config.json`` +
            ``diffusion_pytorch_model.safetensors``), a weight file, a state dict, a hub id such as
            ``"Yuanshi/LinFusion-1-5"`` (downloaded with ``huggingface_hub``), ``"auto"`` (the hub id registered
            for the pipeline's base model) or ``None`` (fresh, zero-initialised projections: outputs differ from
            the original only through the attention kernel until distilled).
        **options: method options; LinFusion takes ``projection_mid_dim`` (int, None = channels),
            ``mid_dim_scale`` (mid = channels // scale; SDXL's official value is 16), ``keep_originals``
            (default True: keep a CPU copy of the replaced q/k/v/out weights so :func:`unlinearize` restores
            them exactly), ``zero_init`` (default True: the projections' last layers start at zero, so the
            model starts from the inherited weights; False keeps PyTorch's default init, as the official
            script does since its commit 1b07891) and ``backend`` (kernel backend).
            CLEAR (``method="clear"``, FLUX) takes ``radius`` (required, latent tokens: 8, 16 or 32 for the
            official weights), ``down_factor`` (None: from the weights, else 1; 4 for the ``*_down_4`` files),
            ``proportional_attention`` (the official length-dependent scale), ``keep_originals`` and ``backend``;
            its ``weights`` are an official file or folder, a state dict in that layout, or ``"Huage001/CLEAR"``
            (the file for ``radius``/``down_factor`` is downloaded).
            SLA (``method="sla"``, Wan / FLUX / diffusers ``Attention`` self-attention, see
            :mod:`linzoo.diffusion.sla`) takes ``topk`` (fraction of key blocks kept per query block, default
            0.2), ``block_q``/``block_k`` (64), ``feature_map`` (``"softmax"``, ``"elu+1"``, ``"relu"``),
            ``linear_keys`` (``"all"``: the official main branch; ``"complement"``: the paper's SLA-1 form) and
            ``backend``; its ``weights`` are a file/folder/state dict holding ``...sla.proj_l.*`` entries
            (:func:`linzoo.diffusion.sla.save_sla` writes them), ``None`` = zero-initialised ``proj_l``.

    Returns:
        :class:`LinearizeResult` with the number of layers replaced (``int(result)``).
    """
    if method not in _METHODS:
        raise ValueError(f"method must be one of {list_linearizations()}, got {method!r}")
    apply, _ = _METHODS[method]
    model = _target_model(pipe_or_unet)
    result = apply(model, weights, source=pipe_or_unet, **options)
    logger.info("linearize(method=%r): replaced %d attention layers", method, result.num_replaced)
    return result


def unlinearize(pipe_or_unet: Any, method: str | None = None) -> int:
    """Undo :func:`linearize` in place; returns how many layers were restored (0 if none was linearised).

    With ``keep_originals=True`` (the default of :func:`linearize`) the original processors, modules and
    q/k/v/out weights come back exactly, even after official weights were loaded or the student was trained.
    """
    if method is not None and method not in _METHODS:
        raise ValueError(f"method must be None or one of {list_linearizations()}, got {method!r}")
    model = _target_model(pipe_or_unet)
    names = [method] if method is not None else list_linearizations()
    return sum(_METHODS[name][1](model) for name in names)


# --------------------------------------------------------------------------------------------------- LinFusion


def _linfusion_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = list(iter_attention_modules(model, "self"))
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no self-attention (`attn1`) diffusers Attention layers; LinFusion applies to "
            "UNet2DConditionModel-style models (SD 1.5 / 2.1 / XL). For diffusion transformers see CLEAR."
        )
    return layers


def _module_official_state(attn: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in attn.state_dict().items() if k.split(".", 1)[0] in _OFFICIAL_PREFIXES}


def linfusion_state_dict(pipe_or_unet: Any) -> dict[str, torch.Tensor]:
    """The LinFusion weights of a linearised model in the official layout: ``{i}.to_q.weight``, ...,
    ``{i}.to_k_.3.bias`` with ``i`` the index of the layer among the linearised ``attn1`` layers."""
    model = _target_model(pipe_or_unet)
    out: dict[str, torch.Tensor] = {}
    for i, (_, attn) in enumerate(_linearized_layers(model)):
        out.update({f"{i}.{k}": v for k, v in _module_official_state(attn).items()})
    return out


def _linearized_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    layers = [(n, m) for n, m in iter_attention_modules(model, "self") if has_linfusion_projections(m)]
    if not layers:
        raise ValueError(f"{type(model).__name__} is not linearised with LinFusion (call linearize first)")
    return layers


def linfusion_config(pipe_or_unet: Any) -> dict[str, Any]:
    """The official ``config.json`` content for a linearised model (``_class_name`` ``LinFusion``, ``modules_list``)."""
    import diffusers

    model = _target_model(pipe_or_unet)
    modules = []
    for name, attn in _linearized_layers(model):
        dim, mid = attn.to_q_.dim, attn.to_q_.mid_dim
        modules.append(
            {"module_name": name, "dim_n": dim, "heads": attn.heads, "projection_mid_dim": None if mid == dim else mid}
        )
    return {"_class_name": "LinFusion", "_diffusers_version": diffusers.__version__, "modules_list": modules}


def save_linfusion(pipe_or_unet: Any, directory: str | os.PathLike, dtype: torch.dtype | None = torch.float16) -> Path:
    """Write the official layout (``config.json`` + ``diffusion_pytorch_model.safetensors``) to ``directory``.

    The result loads with ``linearize(..., weights=directory)`` and with the official ``LinFusion.from_pretrained``.
    ``dtype`` defaults to fp16 as published; ``None`` keeps the parameters' dtype. Returns the folder.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = linfusion_config(pipe_or_unet)
    state = {
        k: (v.detach().to("cpu", dtype or v.dtype)).contiguous() for k, v in linfusion_state_dict(pipe_or_unet).items()
    }
    save_file(state, str(directory / _WEIGHT_FILES[0]), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return directory


def _source_name(source: Any) -> str | None:
    for obj in (source, getattr(source, "unet", None)):
        name = getattr(obj, "name_or_path", None) or getattr(getattr(obj, "config", None), "_name_or_path", None)
        if name:
            return str(name)
    return None


def _hub_id_for(base: str | None) -> str:
    for ckpt in list_checkpoints():
        if ckpt.model.startswith("linfusion_") and base in ckpt.extra.get("base_models", ()):
            return ckpt.hf_hub_id
    known = sorted(b for c in list_checkpoints() if c.model.startswith("linfusion_") for b in c.extra["base_models"])
    raise ValueError(
        f"weights='auto' found no LinFusion checkpoint for the base model {base!r}; known bases: {known}. "
        "Pass a folder, a file or a hub id instead."
    )


def resolve_linfusion_weights(weights: Any, source: Any = None) -> tuple[dict[str, torch.Tensor], dict | None, str]:
    """Read LinFusion weights: ``(state_dict in the official layout, config dict or None, description)``.

    ``weights`` may be a state dict, a folder, a file (a ``config.json`` beside it is used), a hub id or
    ``"auto"`` (resolved from ``source``'s ``_name_or_path`` through the weights registry).
    """
    if isinstance(weights, Mapping):
        return dict(weights), None, "state dict"
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            f"weights must be a path, a hub id, 'auto', a state dict or None, got {type(weights).__name__}"
        )
    if str(weights) == "auto":
        weights = _hub_id_for(_source_name(source))
    path = Path(weights)
    if path.is_dir():
        files = [path / f for f in _WEIGHT_FILES if (path / f).is_file()]
        if not files:
            raise ValueError(f"weights folder {path} holds none of {list(_WEIGHT_FILES)}")
        weight_file = files[0]
    elif path.is_file():
        weight_file = path
    elif isinstance(weights, str) and weights.count("/") == 1 and not weights.startswith((".", "/")):
        weight_file = _download_hub(weights)
    else:
        raise ValueError(f"weights {str(weights)!r} is neither an existing file or folder nor a hub id 'owner/name'")
    config = None
    config_file = weight_file.parent / "config.json"
    if config_file.is_file():
        loaded = json.loads(config_file.read_text())
        if "modules_list" in loaded:
            config = loaded
    return load_state_dict_file(weight_file), config, str(weights)


def _download_hub(repo_id: str) -> Path:
    try:
        from huggingface_hub import hf_hub_download

        hf_hub_download(repo_id, "config.json")
        return Path(hf_hub_download(repo_id, _WEIGHT_FILES[0]))
    except Exception as err:  # offline, unknown repo, gated: say what was attempted
        raise OSError(f"could not download LinFusion weights {repo_id!r} from the Hugging Face hub: {err}") from err


def _official_to_local(
    state: Mapping[str, torch.Tensor], config: dict | None, names: Sequence[str]
) -> dict[str, dict[str, torch.Tensor]]:
    """Group ``{i}.<key>`` by module name (from ``config['modules_list']``, else by order)."""
    grouped: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        index, _, rest = key.partition(".")
        if not index.isdigit() or not rest:
            raise ValueError(f"LinFusion weights: key {key!r} is not of the official form '<index>.<param>'")
        grouped.setdefault(int(index), {})[rest] = value
    if config is not None:
        entries = config["modules_list"]
        order = [e["module_name"] if isinstance(e, Mapping) else e[0] for e in entries]  # StableMamba: triples
        unknown = sorted(set(order) - set(names))
        if unknown:
            raise ValueError(f"LinFusion config names layers this model lacks: {unknown[:6]} (of {len(unknown)})")
        if len(order) != len(names):
            raise ValueError(f"LinFusion config lists {len(order)} layers, the model has {len(names)} attn1 layers")
    else:
        order = list(names)
    if sorted(grouped) != list(range(len(order))):
        raise ValueError(
            f"LinFusion weights hold module indices {sorted(grouped)[:8]}... ({len(grouped)}), the model has "
            f"{len(order)} attn1 layers"
        )
    return {order[i]: grouped[i] for i in range(len(order))}


def _mid_dim_of(params: Mapping[str, torch.Tensor] | None, default: int | None) -> int | None:
    if params is not None and "to_q_.0.weight" in params:
        return int(params["to_q_.0.weight"].shape[0])
    return default


def _apply_linfusion(
    model: nn.Module,
    weights: Any = None,
    *,
    source: Any = None,
    projection_mid_dim: int | None = None,
    mid_dim_scale: int | None = None,
    keep_originals: bool = True,
    zero_init: bool = True,
    backend: str = "auto",
) -> LinearizeResult:
    if projection_mid_dim is not None and mid_dim_scale is not None:
        raise ValueError("pass projection_mid_dim or mid_dim_scale, not both")
    if mid_dim_scale is not None and (not isinstance(mid_dim_scale, int) or mid_dim_scale <= 0):
        raise ValueError(f"mid_dim_scale must be a positive int, got {mid_dim_scale!r}")
    layers = _linfusion_layers(model)
    names = [n for n, _ in layers]
    per_module: dict[str, dict[str, torch.Tensor]] = {}
    description = None
    if weights is not None:
        state, config, description = resolve_linfusion_weights(weights, source)
        per_module = _official_to_local(state, config, names)

    processor = LinFusionAttnProcessor(backend=backend)  # validates backend before anything changes
    added: list[nn.Module] = []
    try:
        for name, attn in layers:
            if not has_linfusion_projections(attn):
                dim = attn.to_q.in_features
                default_mid = dim // mid_dim_scale if mid_dim_scale is not None else projection_mid_dim
                original = {"processor": attn.processor, "weights": None}
                if keep_originals:
                    original["weights"] = {
                        k: (v.detach().clone() if v.is_meta else v.detach().to("cpu", copy=True))
                        for k, v in _module_official_state(attn).items()
                    }
                add_linfusion_projections(attn, _mid_dim_of(per_module.get(name), default_mid), zero_init=zero_init)
                setattr(attn, _ORIGINAL_ATTR, original)
                added.append(attn)
            attn.set_processor(processor)
        if per_module:
            expected = {
                f"{i}.{k}": v for i, (_, attn) in enumerate(layers) for k, v in _module_official_state(attn).items()
            }
            given = {f"{names.index(n)}.{k}": v for n, params in per_module.items() for k, v in params.items()}
            check_state_dict(given, expected, what=f"LinFusion weights {description!r}")
            with torch.no_grad():
                for name, attn in layers:
                    own = _module_official_state(attn)
                    for key, value in per_module[name].items():
                        own[key].copy_(value)
    except Exception:
        for attn in added:  # leave the model as it was
            _restore_layer(attn)
        raise
    return LinearizeResult("linfusion", len(layers), names, description)


def load_linfusion_weights(pipe_or_unet: Any, weights: Any) -> LinearizeResult:
    """Load official-layout LinFusion weights into a model (linearising it first if needed)."""
    return linearize(pipe_or_unet, "linfusion", weights)


def _restore_layer(attn: nn.Module) -> None:
    from diffusers.models.attention_processor import AttnProcessor2_0

    original = getattr(attn, _ORIGINAL_ATTR, None) or {"processor": None, "weights": None}
    remove_linfusion_projections(attn)
    if original["weights"] is not None:
        own = _module_official_state(attn)
        with torch.no_grad():
            for key, value in original["weights"].items():
                own[key].copy_(value)
    attn.set_processor(original["processor"] if original["processor"] is not None else AttnProcessor2_0())
    if hasattr(attn, _ORIGINAL_ATTR):
        delattr(attn, _ORIGINAL_ATTR)


def _remove_linfusion(model: nn.Module) -> int:
    layers = [attn for _, attn in iter_attention_modules(model, "self") if has_linfusion_projections(attn)]
    for attn in layers:
        _restore_layer(attn)
    return len(layers)


register_linearization("linfusion", _apply_linfusion, _remove_linfusion)


# ------------------------------------------------------------------------------------------------------- CLEAR

#: official CLEAR checkpoints on the hub (huggingface.co/Huage001/CLEAR): file per (radius, down_factor).
CLEAR_HUB_ID = "Huage001/CLEAR"
CLEAR_HUB_FILES = {
    (32, 1): "clear_local_32.safetensors",
    (16, 1): "clear_local_16.safetensors",
    (8, 1): "clear_local_8.safetensors",
    (16, 4): "clear_local_16_down_4.safetensors",
    (8, 4): "clear_local_8_down_4.safetensors",
}
#: what the official ``distill.py`` saves (and the released files hold): parameter names containing one of these.
_CLEAR_KEY_PARTS = (".attn.to_q.", ".attn.to_k.", ".attn.to_v.", ".attn.to_out.", "spatial_weight")
_CLEAR_ORIGINAL_ATTR = "_linzoo_clear_original"
_CLEAR_HOOK_ATTR = "_linzoo_clear_hook"


def _flux_attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from diffusers.models.transformers.transformer_flux import FluxAttention

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, FluxAttention)]
    if not layers:
        raise ValueError(
            f"pipe_or_unet must be a FluxTransformer2DModel or a pipeline holding one as `transformer`; "
            f"{type(model).__name__} has no FluxAttention layers (CLEAR linearises FLUX)"
        )
    return layers


def _is_clear_key(key: str) -> bool:
    return any(part in key for part in _CLEAR_KEY_PARTS)


def _clear_reference_keys(model: nn.Module, layers: Sequence[tuple[str, nn.Module]], down_factor: int) -> dict:
    """Key -> shape of the official CLEAR file for ``model`` (``distill.py``'s filter over its state dict)."""
    keys = {k: tuple(v.shape) for k, v in model.state_dict().items() if _is_clear_key(k)}
    if down_factor > 1:
        keys.update(
            {f"{name}.processor.spatial_weight": (1, 1, 1, down_factor, 1, down_factor, 1) for name, _ in layers}
        )
    return keys


def clear_state_dict(pipe_or_transformer: Any) -> dict[str, torch.Tensor]:
    """The CLEAR weights of a FLUX transformer in the official layout (what ``distill.py`` saves).

    Keys: ``transformer_blocks.{i}.attn.to_{q,k,v}.{weight,bias}``, ``...attn.to_out.0.*``,
    ``single_transformer_blocks.{i}.attn.to_{q,k,v}.*`` and, for ``down_factor > 1``,
    ``...attn.processor.spatial_weight``.
    """
    model = _target_model(pipe_or_transformer)
    return {k: v for k, v in model.state_dict().items() if _is_clear_key(k)}


def _resolve_clear_weights(weights: Any, radius: int, down_factor: int | None) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(weights, Mapping):
        return dict(weights), "state dict"
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights must be a path, a hub id, a state dict or None, got {type(weights).__name__}")
    path = Path(weights)
    if path.is_file():
        return load_state_dict_file(path), str(weights)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise ValueError(f"weights folder {path} must hold exactly one .safetensors file, found {len(files)}")
        return load_state_dict_file(files[0]), str(files[0])
    if str(weights) == CLEAR_HUB_ID:
        name = CLEAR_HUB_FILES.get((radius, down_factor or 1))
        if name is None:
            raise ValueError(
                f"{CLEAR_HUB_ID} has no checkpoint for radius={radius}, down_factor={down_factor or 1}; "
                f"published (radius, down_factor): {sorted(CLEAR_HUB_FILES)}"
            )
        try:
            from huggingface_hub import hf_hub_download

            return load_state_dict_file(hf_hub_download(CLEAR_HUB_ID, name)), f"{CLEAR_HUB_ID}/{name}"
        except Exception as err:  # offline, gated: say what was attempted
            raise OSError(f"could not download {CLEAR_HUB_ID}/{name} from the Hugging Face hub: {err}") from err
    raise ValueError(f"weights {str(weights)!r} is neither an existing file or folder nor {CLEAR_HUB_ID!r}")


def _install_clear_hook(model: nn.Module, grid: Any) -> None:
    """Forward pre-hook filling the processors' shared grid from ``img_ids`` on every transformer call."""
    import inspect

    from .attention.clear import grid_from_image_ids

    params = list(inspect.signature(model.forward).parameters)
    position = params.index("img_ids") if "img_ids" in params else None

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        img_ids = kwargs.get("img_ids")
        if img_ids is None and position is not None and len(args) > position:
            img_ids = args[position]
        if img_ids is not None:
            grid.height, grid.width = grid_from_image_ids(img_ids)

    old = getattr(model, _CLEAR_HOOK_ATTR, None)
    if old is not None:
        old.remove()
    setattr(model, _CLEAR_HOOK_ATTR, model.register_forward_pre_hook(hook, with_kwargs=True))


def _apply_clear(
    model: nn.Module,
    weights: Any = None,
    *,
    source: Any = None,
    radius: int | None = None,
    down_factor: int | None = None,
    proportional_attention: bool = False,
    keep_originals: bool = True,
    backend: str = "auto",
) -> LinearizeResult:
    from .attention.clear import ClearAttnProcessor, ClearGrid

    if radius is None:
        raise ValueError("radius must be given for method='clear' (latent tokens; official checkpoints: 8, 16, 32)")
    layers = _flux_attention_layers(model)
    names = [n for n, _ in layers]
    state, description = None, None
    if weights is not None:
        state, description = _resolve_clear_weights(weights, radius, down_factor)
        pooled = [v for k, v in state.items() if k.endswith("processor.spatial_weight")]
        found = int(pooled[0].shape[3]) if pooled and pooled[0].dim() == 7 else 1
        if down_factor is None:
            down_factor = found
        elif down_factor != found:
            raise ValueError(f"down_factor={down_factor} but the CLEAR weights {description!r} are for {found}")
    down_factor = 1 if down_factor is None else down_factor
    grid = ClearGrid()
    processors = [
        ClearAttnProcessor(radius, down_factor, grid, proportional_attention, backend) for _ in layers
    ]  # validates radius / down_factor / backend before anything changes
    if state is not None:
        check_state_dict(
            state, _clear_reference_keys(model, layers, down_factor), what=f"CLEAR weights {description!r}"
        )

    for (_, attn), processor in zip(layers, processors):
        original = getattr(attn, _CLEAR_ORIGINAL_ATTR, None)
        if original is None:
            original = {"processor": attn.processor, "weights": {}}
            setattr(attn, _CLEAR_ORIGINAL_ATTR, original)
        if state is not None and keep_originals:
            own = {k: v for k, v in attn.state_dict().items() if k.startswith(("to_q.", "to_k.", "to_v.", "to_out."))}
            for key, value in own.items():
                kept = value.detach().clone() if value.is_meta else value.detach().to("cpu", copy=True)
                original["weights"].setdefault(key, kept)
        processor.to(device=attn.to_q.weight.device, dtype=attn.to_q.weight.dtype)
        attn.set_processor(processor)
    _install_clear_hook(model, grid)
    if state is not None:
        own = model.state_dict(keep_vars=True)
        with torch.no_grad():
            for key, value in state.items():
                own[key].copy_(value)
    return LinearizeResult("clear", len(layers), names, description)


def _remove_clear(model: nn.Module) -> int:
    from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor

    count = 0
    for _, attn in model.named_modules():
        original = getattr(attn, _CLEAR_ORIGINAL_ATTR, None) if isinstance(attn, FluxAttention) else None
        if original is None:
            continue
        attn.set_processor(original["processor"] if original["processor"] is not None else FluxAttnProcessor())
        if original["weights"]:
            own = attn.state_dict(keep_vars=True)
            with torch.no_grad():
                for key, value in original["weights"].items():
                    own[key].copy_(value)
        delattr(attn, _CLEAR_ORIGINAL_ATTR)
        count += 1
    hook = getattr(model, _CLEAR_HOOK_ATTR, None)
    if hook is not None:
        hook.remove()
        delattr(model, _CLEAR_HOOK_ATTR)
    return count


register_linearization("clear", _apply_clear, _remove_clear)


# --------------------------------------------------------------------------------------------- high resolution


def enable_vae_tiling(pipe: Any, tile_sample_min_size: int | None = 2048) -> None:
    """Tiled VAE encode/decode with tiles of ``tile_sample_min_size`` pixels (the official recipe uses 2048).

    Works across diffusers versions (``pipe.enable_vae_tiling`` was removed in favour of ``vae.enable_tiling``).
    ``None`` keeps the VAE's default tile size (its ``sample_size``).
    """
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling"):
        raise ValueError(f"pipe must have a `vae` that supports tiling, got {type(vae).__name__}")
    vae.enable_tiling()
    if tile_sample_min_size is not None:
        if tile_sample_min_size <= 0 or tile_sample_min_size % 8:
            raise ValueError(f"tile_sample_min_size must be a positive multiple of 8, got {tile_sample_min_size}")
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        vae.tile_sample_min_size = tile_sample_min_size
        vae.tile_latent_min_size = tile_sample_min_size // factor


#: official SDEdit strengths of the 2x steps of the ladder (ultra_text2image_w_sdedit.ipynb).
SDEDIT_STRENGTHS = (0.4, 0.3, 0.2, 0.1)


def sdedit_upscale(
    pipe: Any,
    prompt: str | list[str],
    image: Any,
    sizes: Sequence[tuple[int, int]],
    strengths: Sequence[float] | None = None,
    *,
    tile_sample_min_size: int = 2048,
    seed: int | None = None,
    **call_kwargs: Any,
) -> list[Any]:
    """The official SDEdit ladder: resize ``image`` to each ``(width, height)`` of ``sizes`` and re-noise/denoise
    it with image-to-image at the matching strength (default 0.4, 0.3, 0.2, 0.1 for successive 2x steps).

    ``pipe`` is a text-to-image or image-to-image SD / SDXL pipeline (the image-to-image pipeline shares its
    components via ``AutoPipelineForImage2Image.from_pipe``); linearise it first, e.g. with official weights.
    VAE tiling (``tile_sample_min_size``) is switched on once a side exceeds that size. Returns the image of
    every step (PIL). Example for 4096x4096 with SD-1.5: 512 px text-to-image, then
    ``sizes=[(1024, 1024), (2048, 2048), (4096, 4096)]``.
    """
    from diffusers import AutoPipelineForImage2Image
    from PIL import Image

    if not sizes:
        raise ValueError("sizes must list at least one (width, height)")
    strengths = list(SDEDIT_STRENGTHS[: len(sizes)] if strengths is None else strengths)
    if len(strengths) != len(sizes):
        raise ValueError(f"strengths must have one value per size ({len(sizes)}), got {len(strengths)}")
    for w, h in sizes:
        if w % 8 or h % 8 or w <= 0 or h <= 0:
            raise ValueError(f"every size must be positive multiples of 8, got {(w, h)}")
    img2img = pipe if "Img2Img" in type(pipe).__name__ else AutoPipelineForImage2Image.from_pipe(pipe)
    outputs = []
    for (width, height), strength in zip(sizes, strengths):
        if max(width, height) > tile_sample_min_size and not getattr(img2img.vae, "use_tiling", False):
            enable_vae_tiling(img2img, tile_sample_min_size)
        image = image.resize((width, height), Image.BICUBIC)
        generator = torch.Generator("cpu").manual_seed(seed) if seed is not None else None
        image = img2img(prompt, image=image, strength=strength, generator=generator, **call_kwargs).images[0]
        outputs.append(image)
    return outputs
