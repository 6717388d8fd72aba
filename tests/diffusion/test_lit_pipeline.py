"""LiTPipeline / LiTPixArtPipeline: tiny random components built offline (in-memory T5 tokenizer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, DiffusionPipeline
from transformers import T5Config, T5EncoderModel, T5Tokenizer

import linzoo.diffusion.pipelines  # noqa: F401  (registers the pipelines with diffusers)
from linzoo.diffusion.models import LiTTransformer2DModel
from linzoo.diffusion.pipelines import LiTPipeline, LiTPixArtPipeline


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 8),
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
    )


def _transformer(**kw) -> LiTTransformer2DModel:
    torch.manual_seed(0)
    model = LiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        num_linear_heads=1,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        **kw,
    )
    with torch.no_grad():  # leave the adaLN-Zero init so that outputs depend on labels and prompts
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def _class_pipe() -> LiTPipeline:
    pipe = LiTPipeline(
        transformer=_transformer(num_classes=10),
        scheduler=DDIMScheduler(),
        vae=_vae(),
        id2label={0: "zero, nil", 1: "one"},
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _call(pipe, **kw):
    args = dict(
        class_labels=[0, 1], num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np"
    )
    args.update(kw)
    return pipe(**args).images


def test_class_pipeline_shapes_seed_and_names():
    pipe = _class_pipe()
    a = _call(pipe, height=16, width=24)  # vae factor 2 x patch 2: any multiple of 4
    assert a.shape == (2, 16, 24, 3) and a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, _call(pipe, height=16, width=24))
    np.testing.assert_array_equal(a, _call(pipe, class_labels=["nil", "one"], height=16, width=24))
    assert not np.array_equal(a[0], _call(pipe, class_labels=[2, 1], height=16, width=24)[0])
    assert _call(pipe, guidance_scale=1.0).shape == (2, 16, 16, 3)  # default size: sample_size x vae factor
    pt = _call(pipe, output_type="pt", num_images_per_prompt=2)
    assert pt.shape == (4, 3, 16, 16)
    latents = _call(pipe, output_type="latent")
    assert latents.shape == (2, 4, 8, 8)
    steps = []
    _call(pipe, callback_on_step_end=lambda p, i, t, kw: steps.append(i) or kw)
    assert steps == [0, 1]
    with pytest.raises(ValueError, match="multiples of 4"):
        _call(pipe, height=18)
    with pytest.raises(ValueError, match="class_labels"):
        _call(pipe, class_labels=[10])


def test_class_pipeline_save_load_offline(tmp_path, monkeypatch):
    pipe = _class_pipe()
    ref = _call(pipe)
    pipe.save_pretrained(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded, LiTPipeline) and isinstance(loaded.transformer, LiTTransformer2DModel)
    assert loaded.labels["nil"] == 0
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(_call(loaded), ref, atol=1e-5)


def test_pixel_space_pipeline_with_learned_variance(tmp_path):
    tr = LiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=1,
        out_channels=2,
        num_layers=1,
        sample_size=8,
        patch_size=2,
        num_classes=10,
    )
    pipe = LiTPipeline(transformer=tr, scheduler=DDPMScheduler(variance_type="learned_range"))
    pipe.set_progress_bar_config(disable=True)
    images = _call(pipe, output_type="pil", num_inference_steps=3)
    assert images[0].size == (8, 8) and images[0].mode == "L"
    pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert loaded.vae is None


def _text_pipe() -> LiTPixArtPipeline:
    pieces = ["▁a", "▁cat", "▁dog", "▁red", "▁photo", "▁of", "a", "c", "t", "▁"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(p, -float(i)) for i, p in enumerate(pieces)]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    torch.manual_seed(0)
    encoder = T5EncoderModel(
        T5Config(vocab_size=len(vocab), d_model=12, d_ff=16, d_kv=6, num_layers=1, num_heads=2)
    ).eval()
    tr = _transformer(norm_type="ada_norm_single", cross_attention_dim=16, caption_channels=12)
    pipe = LiTPixArtPipeline(
        tokenizer=tokenizer, text_encoder=encoder, vae=_vae(), transformer=tr, scheduler=DDIMScheduler()
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _text_call(pipe, **kw):
    args = dict(
        prompt=["a photo of a cat", "a red dog"],
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
        use_resolution_binning=False,
        max_sequence_length=8,
        height=16,
        width=24,
    )
    args.update(kw)
    return pipe(**args).images


def test_text_pipeline_seed_and_save_load(tmp_path, monkeypatch):
    pipe = _text_pipe()
    a = _text_call(pipe)
    assert a.shape == (2, 16, 24, 3)
    np.testing.assert_array_equal(a, _text_call(pipe))
    pipe.save_pretrained(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = DiffusionPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded, LiTPixArtPipeline)
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_allclose(_text_call(loaded), a, atol=1e-5)
    with pytest.raises(ValueError, match="multiple of 4"):
        _text_call(pipe, height=18)


def test_text_pipeline_rejects_class_form():
    with pytest.raises(ValueError, match="text-conditional"):
        LiTPixArtPipeline(None, None, _vae(), _transformer(num_classes=10), DDIMScheduler())
