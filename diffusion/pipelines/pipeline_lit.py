"""Class-conditional LiT pipeline (class labels -> images), the LiT counterpart of diffusers' ``DiTPipeline``.

Differences from ``DiTPipeline``: any ``height``/``width`` that is a multiple of the latent patch (the LiT
transformer recomputes positional embeddings and its depthwise convolution sees the real grid), the null label
taken from the transformer config instead of a hard-coded 1000, an optional VAE (pixel-space models such as
the digits demo), the learned variance handed to schedulers that use it (``variance_type="learned_range"``),
and the canonical diffusers call arguments (``generator``, ``latents``, ``output_type``, callbacks).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from diffusers.image_processor import VaeImageProcessor
from diffusers.models import AutoencoderKL
from diffusers.pipelines.pipeline_utils import DiffusionPipeline, ImagePipelineOutput
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils.torch_utils import randn_tensor

from ..models.lit_transformer_2d import LiTTransformer2DModel

__all__ = ["LiTPipeline"]

_VARIANCE_SCHEDULERS = ("DDPMScheduler", "DDPMParallelScheduler")


class LiTPipeline(DiffusionPipeline):
    r"""Generate images of given classes with a class-conditional :class:`LiTTransformer2DModel`.

    Args:
        transformer: the class-conditional (``norm_type="ada_norm_zero"``) LiT transformer.
        scheduler: any diffusers scheduler (DDIM, DPM-Solver, DDPM ...).
        vae (*optional*): the ``AutoencoderKL`` decoding latents; ``None`` for pixel-space models.
        id2label (*optional*): ``{class id: "name, synonym, ..."}`` so that ``class_labels`` may be names.
    """

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        transformer: LiTTransformer2DModel,
        scheduler: KarrasDiffusionSchedulers,
        vae: AutoencoderKL | None = None,
        id2label: dict[int, str] | dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)
        self.register_to_config(id2label=id2label)
        self.vae_scale_factor = (
            2 ** (len(self.vae.config.block_out_channels) - 1) if getattr(self, "vae", None) is not None else 1
        )
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)
        self.labels: dict[str, int] = {}
        for key, value in (id2label or {}).items():
            for name in str(value).split(","):
                self.labels[name.strip()] = int(key)

    def get_label_ids(self, label: str | Sequence[str]) -> list[int]:
        """Class ids of label names (from ``id2label``)."""
        names = [label] if isinstance(label, str) else list(label)
        missing = [n for n in names if n not in self.labels]
        if missing:
            raise ValueError(f"unknown label names {missing}; known: {sorted(self.labels)[:20]} ...")
        return [self.labels[n] for n in names]

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    def _class_tensor(self, class_labels: Any, device: torch.device) -> torch.Tensor:
        if isinstance(class_labels, torch.Tensor):
            labels = class_labels.reshape(-1).to(device=device, dtype=torch.long)
        else:
            items = [class_labels] if isinstance(class_labels, (int, str)) else list(class_labels)
            ids = [self.get_label_ids(x)[0] if isinstance(x, str) else int(x) for x in items]
            labels = torch.tensor(ids, device=device, dtype=torch.long)
        num_classes = self.transformer.config.num_classes
        if labels.numel() == 0 or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"class_labels must be non-empty ids in [0, {num_classes}), got {labels.tolist()}")
        return labels

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | Sequence[int | str] | torch.Tensor,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[..., dict[str, Any]] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
    ) -> ImagePipelineOutput | tuple:
        r"""Sample images of ``class_labels``.

        Args:
            class_labels: class ids (or names when ``id2label`` was given), one image (per
                ``num_images_per_prompt``) each.
            height, width: image size in pixels; multiples of ``patch_size * vae_scale_factor``; default
                ``sample_size * vae_scale_factor``.
            num_inference_steps: denoising steps.
            guidance_scale: classifier-free guidance weight on the noise prediction (``<= 1`` disables it).
            num_images_per_prompt: images per class label.
            generator: torch generator(s) for reproducible sampling (a list gives one per image).
            latents: initial noise ``(B, C, h, w)`` instead of sampling it.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` or ``"latent"``.
            return_dict: return an ``ImagePipelineOutput`` instead of a tuple.
            callback_on_step_end: ``fn(pipe, step, timestep, callback_kwargs) -> dict`` called after every step.
            callback_on_step_end_tensor_inputs: tensors passed to the callback (subset of ``["latents"]``).
        """
        tensor_inputs = callback_on_step_end_tensor_inputs or ["latents"]
        bad = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs must be in {self._callback_tensor_inputs}, got {bad}")
        if output_type not in ("pil", "np", "pt", "latent"):
            raise ValueError(f"output_type must be 'pil', 'np', 'pt' or 'latent', got {output_type!r}")
        if num_inference_steps < 1 or num_images_per_prompt < 1:
            raise ValueError("num_inference_steps and num_images_per_prompt must be >= 1")
        cfg = self.transformer.config
        multiple = cfg.patch_size * self.vae_scale_factor
        height = height or cfg.sample_size * self.vae_scale_factor
        width = width or cfg.sample_size * self.vae_scale_factor
        if height % multiple or width % multiple:
            raise ValueError(f"height and width must be multiples of {multiple}, got {height} x {width}")
        do_cfg = guidance_scale > 1.0
        if do_cfg and cfg.class_dropout_prob <= 0:
            raise ValueError("guidance_scale > 1 needs a null label: the transformer has class_dropout_prob = 0")
        self._guidance_scale = guidance_scale

        device = self._execution_device
        labels = self._class_tensor(class_labels, device).repeat_interleave(num_images_per_prompt)
        batch = labels.shape[0]
        channels = cfg.in_channels
        shape = (batch, channels, height // self.vae_scale_factor, width // self.vae_scale_factor)
        dtype = self.transformer.dtype
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape}, got {tuple(latents.shape)}")
        else:
            latents = latents.to(device=device, dtype=dtype)
        latents = latents * self.scheduler.init_noise_sigma
        labels_in = torch.cat([labels, torch.full_like(labels, cfg.num_classes)]) if do_cfg else labels

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)
        learned_sigma = self.transformer.out_channels == 2 * channels
        # Only the DDPM samplers turn a learned variance into the step's noise level (others ignore or mis-slice
        # it, and configs converted from DDPM keep the key), so the variance is passed to those alone.
        use_variance = type(self.scheduler).__name__ in _VARIANCE_SCHEDULERS and (
            self.scheduler.config.get("variance_type", None) in ("learned", "learned_range")
        )
        step_kwargs = {}
        if "generator" in inspect.signature(self.scheduler.step).parameters:
            step_kwargs["generator"] = generator

        for i, t in enumerate(self.progress_bar(timesteps)):
            model_in = torch.cat([latents, latents]) if do_cfg else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            t_in = t.to(device).reshape(1).expand(model_in.shape[0])
            out = self.transformer(model_in, timestep=t_in, class_labels=labels_in, return_dict=False)[0]
            eps, var = (out[:, :channels], out[:, channels:]) if learned_sigma else (out, None)
            if do_cfg:
                eps_cond, eps_uncond = eps.chunk(2)
                eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
                var = var.chunk(2)[0] if var is not None else None
            model_output = torch.cat([eps, var], dim=1) if (use_variance and var is not None) else eps
            latents = self.scheduler.step(model_output, t, latents, **step_kwargs, return_dict=False)[0]
            if callback_on_step_end is not None:
                values = callback_on_step_end(self, i, t, {"latents": latents})
                latents = values.pop("latents", latents)

        if output_type == "latent":
            images = latents
        else:
            if self.vae is not None:
                images = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
            else:
                images = latents
            images = self.image_processor.postprocess(images.float(), output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
