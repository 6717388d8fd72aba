"""LinFusion inside diffusers pipelines, offline: text-to-image, img2img, ControlNet, IP-Adapter, SDEdit ladder.

Also home of the tiny offline SD pipeline builders used by the other LinFusion tests (in-memory CLIP tokenizer,
random-init CLIP text encoder, UNet and VAE; nothing is downloaded).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    AutoPipelineForImage2Image,
    ControlNetModel,
    DDIMScheduler,
    StableDiffusionControlNetPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.models.attention_processor import AttnProcessor2_0, IPAdapterAttnProcessor2_0
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from linzoo.diffusion import LinFusionAttnProcessor, enable_vae_tiling, linearize, sdedit_upscale, unlinearize

CROSS_DIM = 16
N_SELF_ATTN = 4  # tiny UNet: 1 down + 2 up + 1 mid transformer blocks


def tiny_clip_tokenizer(max_length: int = 16) -> CLIPTokenizer:
    """A character-level CLIP BPE tokenizer built in memory (no files)."""
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def tiny_sd_unet(seed: int = 0) -> UNet2DConditionModel:
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=CROSS_DIM,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def tiny_sd_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """A random-init SD-1.5-shaped pipeline: 2 UNet levels (16, 32 ch), VAE factor 2, 1-layer CLIP."""
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer.get_vocab()),
            hidden_size=CROSS_DIM,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=tokenizer.model_max_length,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=tiny_sd_unet(seed),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_clip_config(tokenizer: CLIPTokenizer, hidden: int, **kwargs) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        **kwargs,
    )


def tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """A random-init SDXL-shaped pipeline: two CLIP encoders (8 + 8 = 16 context channels, pooled 8), text_time
    conditioning, attention only on the lower levels, 2 transformer layers at the deepest."""
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(_tiny_clip_config(tokenizer, 8))
    text_encoder_2 = CLIPTextModelWithProjection(_tiny_clip_config(tokenizer, 8, projection_dim=8))
    unet = UNet2DConditionModel(
        sample_size=8,
        layers_per_block=1,
        block_out_channels=(16, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=[1, 1, 2],
        attention_head_dim=[2, 4, 4],
        cross_attention_dim=16,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        projection_class_embeddings_input_dim=6 * 4 + 8,
        norm_num_groups=8,
    )
    base = tiny_sd_pipeline(seed)
    pipe = StableDiffusionXLPipeline(
        vae=base.vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tiny_clip_tokenizer(),
        unet=unet,
        scheduler=base.scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _self_attn_processors(unet) -> list:
    return [p for name, p in unet.attn_processors.items() if name.endswith("attn1.processor")]


def _run(pipe, **kwargs) -> np.ndarray:
    kwargs.setdefault("num_inference_steps", 2)
    kwargs.setdefault("output_type", "np")
    return pipe("a red cat", generator=torch.Generator().manual_seed(0), **kwargs).images


def test_text_to_image_and_img2img_share_the_linearised_unet():
    pipe = tiny_sd_pipeline()
    before = _run(pipe, height=16, width=16)
    result = linearize(pipe)
    assert result.num_replaced == N_SELF_ATTN
    after = _run(pipe, height=32, width=24)
    assert after.shape == (1, 32, 24, 3) and np.isfinite(after).all()
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    assert img2img.unet is pipe.unet
    out = _run(img2img, image=Image.new("RGB", (24, 16), (200, 30, 30)), strength=0.6)
    assert out.shape == (1, 16, 24, 3) and np.isfinite(out).all()
    assert unlinearize(pipe) == N_SELF_ATTN
    np.testing.assert_allclose(_run(pipe, height=16, width=16), before, atol=1e-6)


def test_controlnet_pipeline_runs_with_a_linearised_unet():
    pipe = tiny_sd_pipeline()
    torch.manual_seed(1)
    controlnet = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(8, 16))
    cn_pipe = StableDiffusionControlNetPipeline(**pipe.components, controlnet=controlnet)
    cn_pipe.set_progress_bar_config(disable=True)
    linearize(cn_pipe)
    assert all(isinstance(p, LinFusionAttnProcessor) for p in _self_attn_processors(cn_pipe.unet))
    # the ControlNet keeps its own softmax attention (LinFusion's weights cover the UNet only)
    assert not any(isinstance(p, LinFusionAttnProcessor) for p in controlnet.attn_processors.values())
    out = _run(cn_pipe, image=Image.new("RGB", (16, 16), (255, 255, 255)), height=16, width=16)
    assert out.shape == (1, 16, 16, 3) and np.isfinite(out).all()


def _tiny_ip_adapter_state_dict(unet, clip_dim: int = 12) -> dict:
    """An IP-Adapter (plain image projection) state dict sized for ``unet``, with random weights."""
    image_proj = {
        "proj.weight": torch.randn(4 * CROSS_DIM, clip_dim) * 0.1,
        "proj.bias": torch.zeros(4 * CROSS_DIM),
        "norm.weight": torch.ones(CROSS_DIM),
        "norm.bias": torch.zeros(CROSS_DIM),
    }
    ip, key_id = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn2.processor"):
            module = unet.get_submodule(name.rsplit(".", 1)[0])
            inner = module.to_k.out_features
            ip[f"{key_id}.to_k_ip.weight"] = torch.randn(inner, CROSS_DIM) * 0.1
            ip[f"{key_id}.to_v_ip.weight"] = torch.randn(inner, CROSS_DIM) * 0.1
            key_id += 2  # diffusers' numbering of cross-attention layers: 1, 3, 5, ...
    return {"image_proj": image_proj, "ip_adapter": ip}


def test_ip_adapter_load_and_unload_keep_linfusion(tmp_path):
    """The IP-Adapter trap: diffusers rebuilds every self-attention processor as ``type(proc)()``.

    LinFusion's processor is stateless and its weights live on the Attention module, so it survives loading and
    unloading; the IP-Adapter's own processors go on the cross-attention layers as usual.
    """
    pipe = tiny_sd_pipeline()
    linearize(pipe)
    torch.save(_tiny_ip_adapter_state_dict(pipe.unet), tmp_path / "ip_adapter.bin")
    pipe.load_ip_adapter(str(tmp_path), subfolder="", weight_name="ip_adapter.bin", image_encoder_folder=None)
    assert all(isinstance(p, LinFusionAttnProcessor) for p in _self_attn_processors(pipe.unet))
    cross = [p for n, p in pipe.unet.attn_processors.items() if n.endswith("attn2.processor")]
    assert all(isinstance(p, IPAdapterAttnProcessor2_0) for p in cross)
    embeds = [torch.randn(2, 1, 12)]  # (negative, positive) x 1 image x clip_dim
    out = _run(pipe, height=16, width=16, ip_adapter_image_embeds=embeds)
    assert np.isfinite(out).all()
    pipe.unload_ip_adapter()
    assert all(isinstance(p, LinFusionAttnProcessor) for p in _self_attn_processors(pipe.unet))
    assert unlinearize(pipe) == N_SELF_ATTN
    assert all(isinstance(p, AttnProcessor2_0) for p in _self_attn_processors(pipe.unet))


def test_sdedit_ladder_with_vae_tiling():
    pipe = tiny_sd_pipeline()
    linearize(pipe)
    base = pipe("a red cat", height=16, width=16, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    stages = sdedit_upscale(
        pipe, "a red cat", base.images[0], sizes=[(32, 32), (64, 48)], num_inference_steps=4, tile_sample_min_size=32
    )
    assert [s.size for s in stages] == [(32, 32), (64, 48)]
    assert pipe.vae.use_tiling and pipe.vae.tile_sample_min_size == 32 and pipe.vae.tile_latent_min_size == 16
    with pytest.raises(ValueError, match="strengths"):
        sdedit_upscale(pipe, "x", base.images[0], sizes=[(32, 32)], strengths=[0.4, 0.3])
    with pytest.raises(ValueError, match="multiple of 8"):
        enable_vae_tiling(pipe, 30)


def test_sdxl_pipeline_linearised_with_official_mid_dim():
    pipe = tiny_sdxl_pipeline()
    before = _run(pipe, height=32, width=32)
    result = linearize(pipe, mid_dim_scale=16)
    assert result.num_replaced == 1 + 2 + 2 + 2 * 2 + 2 * 1  # down 1, down 2, mid, up 0 (2 blocks), up 1
    assert all(pipe.unet.get_submodule(n).to_q_.mid_dim == 2 for n in result.modules)  # 32 // 16
    out = _run(pipe, height=32, width=48)
    assert out.shape == (1, 32, 48, 3) and np.isfinite(out).all()
    unlinearize(pipe)
    np.testing.assert_allclose(_run(pipe, height=32, width=32), before, atol=1e-6)
