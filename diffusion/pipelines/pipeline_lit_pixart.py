"""Text-to-image LiT pipeline (prompts -> images) over a text-conditional LiT (the PixArt-Σ form).

The LiT transformer takes exactly the inputs of diffusers' ``PixArtTransformer2DModel`` (caption features,
their mask, timestep, micro-conditions), so this pipeline reuses ``PixArtSigmaPipeline`` for prompt encoding
(T5), resolution binning, CFG and decoding; it adds checks for the LiT transformer and for ``height`` / ``width``
being multiples of the latent patch.
"""

from __future__ import annotations

from typing import Any

from diffusers import PixArtSigmaPipeline
from diffusers.models import AutoencoderKL
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers import KarrasDiffusionSchedulers
from transformers import T5EncoderModel, T5Tokenizer

from ..models.lit_transformer_2d import LiTTransformer2DModel

__all__ = ["LiTPixArtPipeline"]


class LiTPixArtPipeline(PixArtSigmaPipeline):
    r"""Generate images from prompts with a text-conditional :class:`LiTTransformer2DModel`.

    Args:
        tokenizer, text_encoder: the T5 tokenizer and encoder (``caption_channels`` wide features).
        vae: the ``AutoencoderKL``.
        transformer: the LiT transformer with ``norm_type="ada_norm_single"``.
        scheduler: any diffusers scheduler.

    ``__call__`` takes PixArt-Σ's arguments (``prompt``, ``negative_prompt``, ``height``, ``width``,
    ``num_inference_steps``, ``guidance_scale``, ``generator``, ``output_type``, ``use_resolution_binning``,
    ``max_sequence_length`` ...). Set ``use_resolution_binning=False`` for a ``sample_size`` outside PixArt's
    256/512/1024/2048 bins or for exact sizes.
    """

    def __init__(
        self,
        tokenizer: T5Tokenizer,
        text_encoder: T5EncoderModel,
        vae: AutoencoderKL,
        transformer: LiTTransformer2DModel,
        scheduler: KarrasDiffusionSchedulers,
    ) -> None:
        if getattr(transformer, "config", None) is None or transformer.config.get("norm_type") != "ada_norm_single":
            raise ValueError(
                "transformer must be a text-conditional LiTTransformer2DModel (norm_type='ada_norm_single')"
            )
        super().__init__(
            tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
        )

    def __call__(self, *args: Any, **kwargs: Any) -> ImagePipelineOutput | tuple:
        """Run PixArt-Σ's sampling loop with the LiT transformer; see ``PixArtSigmaPipeline.__call__``."""
        multiple = self.transformer.config.patch_size * self.vae_scale_factor
        for name in ("height", "width"):
            value = kwargs.get(name)
            if value is not None and value % multiple:
                raise ValueError(f"{name} must be a multiple of {multiple} (patch x VAE factor), got {value}")
        return super().__call__(*args, **kwargs)
