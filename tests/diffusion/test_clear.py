"""CLEAR (arXiv 2412.16112) on diffusers' FluxTransformer2DModel: processor numerics, linearize/unlinearize, weights.

Official layout facts (Huage001/CLEAR@98e9fed, distill.py final save; /work/shared/reference_keys/clear_flux_r*.json):
the released files hold the FLUX parameters whose names contain ``.attn.to_q.``, ``.attn.to_k.``, ``.attn.to_v.``,
``.attn.to_out.`` or ``spatial_weight``: 380 entries / 1,793,648,640 values for FLUX.1-dev, plus 57
``...attn.processor.spatial_weight`` (1, 1, 1, 4, 1, 4, 1) for the ``*_down_4`` files (437 / 1,793,649,552).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from diffusers import FluxTransformer2DModel
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

from linzoo.diffusion import linearize, list_linearizations, unlinearize
from linzoo.diffusion.attention.clear import ClearAttnProcessor, ClearGrid, grid_from_image_ids
from linzoo.diffusion.linearize import clear_state_dict
from linzoo.weights.convert import StateDictMismatchError

H, W, T = 6, 9, 5  # latent token grid and text length of the tiny inputs
MANIFESTS = Path(__file__).resolve().parents[1] / "fixtures" / "reference_keys"
#: every key suffix of the official files (after ``transformer_blocks.{i}.`` / ``single_transformer_blocks.{i}.``)
OFFICIAL_SUFFIXES = {
    "attn.to_q.weight",
    "attn.to_q.bias",
    "attn.to_k.weight",
    "attn.to_k.bias",
    "attn.to_v.weight",
    "attn.to_v.bias",
    "attn.to_out.0.weight",
    "attn.to_out.0.bias",
}
KEY_PATTERN = re.compile(r"^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$")


def tiny_flux() -> FluxTransformer2DModel:
    torch.manual_seed(0)
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=8,
        num_layers=2,
        num_single_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        pooled_projection_dim=16,
        axes_dims_rope=(4, 6, 6),
    )
    return model.eval()


def image_ids(height: int, width: int) -> torch.Tensor:
    ids = torch.zeros(height, width, 3)
    ids[..., 1] = torch.arange(height)[:, None]
    ids[..., 2] = torch.arange(width)[None, :]
    return ids.reshape(-1, 3)


def flux_inputs(height: int = H, width: int = W, text: int = T, seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(2, height * width, 8, generator=gen),
        "encoder_hidden_states": torch.randn(2, text, 24, generator=gen),
        "pooled_projections": torch.randn(2, 16, generator=gen),
        "timestep": torch.tensor([0.3, 0.8]),
        "img_ids": image_ids(height, width),
        "txt_ids": torch.zeros(text, 3),
        "return_dict": False,
    }


def clear_mask(text: int, height: int, width: int, radius: int, pooled: int = 0) -> torch.Tensor:
    """Official CLEAR mask over [text | image] queries x [text | image | pooled] keys (True = attend)."""
    seq = text + height * width
    y = torch.arange(height).repeat_interleave(width)
    x = torch.arange(width).repeat(height)
    disc = (y[:, None] - y[None, :]) ** 2 + (x[:, None] - x[None, :]) ** 2 < radius**2
    mask = torch.zeros(seq, seq + pooled, dtype=torch.bool)
    mask[:text, :seq] = True  # text queries: all text and full-resolution image tokens
    mask[text:, :text] = True  # image queries: all text tokens ...
    mask[text:, text:seq] = disc  # ... their disc ...
    mask[text:, seq:] = True  # ... and every pooled token
    return mask


def dense_clear_reference(attn, hidden, context, rotary, radius: int, down: int = 1, weight=None) -> torch.Tensor:
    """Dense masked softmax attention written from the paper/official mask (independent of linzoo's kernel)."""
    heads, dim = attn.heads, attn.head_dim

    def split(x):  # (B, S, C) -> (B, S, heads, D)
        return x.unflatten(-1, (heads, dim))

    q, k, v = split(attn.to_q(hidden)), split(attn.to_k(hidden)), split(attn.to_v(hidden))
    q, k = attn.norm_q(q), attn.norm_k(k)
    if context is not None:
        cq = attn.norm_added_q(split(attn.add_q_proj(context)))
        ck = attn.norm_added_k(split(attn.add_k_proj(context)))
        q, k, v = torch.cat((cq, q), 1), torch.cat((ck, k), 1), torch.cat((split(attn.add_v_proj(context)), v), 1)
    q, k = apply_rotary_emb(q, rotary, sequence_dim=1), apply_rotary_emb(k, rotary, sequence_dim=1)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    text = q.shape[2] - H * W
    pooled = 0
    if down > 1:
        pk, pv = [], []
        for t in (k, v):
            img = t[:, :, text:].reshape(*t.shape[:2], H // down, down, W // down, down, dim)
            pooled_t = (img * weight.reshape(1, 1, 1, down, 1, down, 1)).sum(dim=(3, 5)).flatten(2, 3)
            (pk if t is k else pv).append(pooled_t)
        k, v = torch.cat((k, pk[0]), 2), torch.cat((v, pv[0]), 2)
        pooled = pk[0].shape[2]
    mask = clear_mask(text, H, W, radius, pooled)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).flatten(2, 3)
    if context is not None:
        txt, img = out[:, :text], out[:, text:]
        return attn.to_out[0](img), attn.to_add_out(txt)
    return out


@pytest.fixture(scope="module")
def model() -> FluxTransformer2DModel:
    return tiny_flux()


def test_clear_is_registered() -> None:
    assert "clear" in list_linearizations()


def test_radius_covering_grid_equals_default_processor(model) -> None:
    inputs = flux_inputs()
    with torch.no_grad():
        dense = model(**inputs)[0]
        result = linearize(model, "clear", radius=10)  # 10^2 > 5^2 + 8^2: every image key is in every disc
        try:
            out = model(**inputs)[0]
        finally:
            unlinearize(model)
    assert result.num_replaced == 4 and int(result) == 4
    assert result.modules == [
        "transformer_blocks.0.attn",
        "transformer_blocks.1.attn",
        "single_transformer_blocks.0.attn",
        "single_transformer_blocks.1.attn",
    ]
    torch.testing.assert_close(out, dense, atol=1e-5, rtol=0)


def test_small_radius_equals_dense_masked_attention(model) -> None:
    inputs = flux_inputs()
    radius = 3
    mask = clear_mask(T, H, W, radius)[None, None]
    with torch.no_grad():
        dense = model(**inputs)[0]
        reference = model(**inputs, joint_attention_kwargs={"attention_mask": mask})[0]  # stock processor + mask
        linearize(model, "clear", radius=radius)
        try:
            out = model(**inputs)[0]
        finally:
            unlinearize(model)
    assert (out - dense).abs().max() > 1e-3  # the local window changes the result ...
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)  # ... exactly as the official mask does


@pytest.mark.parametrize("down", [1, 3])
@pytest.mark.parametrize("block", ["transformer_blocks", "single_transformer_blocks"])
def test_processor_matches_dense_reference_per_block(model, block: str, down: int) -> None:
    attn = getattr(model, block)[0].attn
    gen = torch.Generator().manual_seed(3)
    dim = attn.to_q.in_features
    seq = H * W if block == "transformer_blocks" else T + H * W
    hidden = torch.randn(2, seq, dim, generator=gen)
    context = torch.randn(2, T, dim, generator=gen) if block == "transformer_blocks" else None
    rotary = model.pos_embed(torch.cat((torch.zeros(T, 3), image_ids(H, W))))
    processor = ClearAttnProcessor(2, down_factor=down, grid=ClearGrid(H, W))
    if down > 1:
        with torch.no_grad():
            processor.spatial_weight.copy_(torch.rand(processor.spatial_weight.shape, generator=gen))
    with torch.no_grad():
        out = processor(attn, hidden, context, None, rotary)
        ref = dense_clear_reference(attn, hidden, context, rotary, 2, down, getattr(processor, "spatial_weight", None))
    for got, want in zip(out if context is not None else (out,), ref if context is not None else (ref,)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_proportional_attention_scale(model) -> None:
    attn = model.single_transformer_blocks[0].attn
    hidden = torch.randn(1, T + H * W, attn.to_q.in_features)
    rotary = model.pos_embed(torch.cat((torch.zeros(T, 3), image_ids(H, W))))
    processor = ClearAttnProcessor(30, grid=ClearGrid(H, W), proportional_attention=True)
    scale = math.sqrt(math.log(T + H * W, 64**2 + 512) / attn.head_dim)
    with torch.no_grad():
        out = processor(attn, hidden, None, None, rotary)
        q = attn.norm_q(attn.to_q(hidden).unflatten(-1, (attn.heads, -1)))
        k = attn.norm_k(attn.to_k(hidden).unflatten(-1, (attn.heads, -1)))
        q, k = apply_rotary_emb(q, rotary, sequence_dim=1), apply_rotary_emb(k, rotary, sequence_dim=1)
        v = attn.to_v(hidden).unflatten(-1, (attn.heads, -1))
        ref = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=scale)
    torch.testing.assert_close(out, ref.transpose(1, 2).flatten(2, 3), atol=1e-5, rtol=0)


def test_linearize_unlinearize_round_trip_with_weights_and_pipeline(model) -> None:
    pipe = SimpleNamespace(transformer=model)  # what linearize reads from a FluxPipeline
    inputs = flux_inputs()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        dense = model(**inputs)[0]
    gen = torch.Generator().manual_seed(5)
    names = clear_state_dict(model)
    weights = {k: torch.randn(v.shape, generator=gen) for k, v in names.items()}
    result = linearize(pipe, "clear", radius=2, weights=weights)
    assert result.num_replaced == 4 and result.weights == "state dict"
    assert all(isinstance(m.attn.processor, ClearAttnProcessor) for m in model.transformer_blocks)
    state = model.state_dict()
    for key, value in weights.items():
        torch.testing.assert_close(state[key], value, atol=0, rtol=0)
    with torch.no_grad():  # a second resolution in the same process: the grid follows img_ids
        assert model(**flux_inputs(4, 9))[0].shape == (2, 36, 8)
    assert unlinearize(pipe, "clear") == 4
    assert unlinearize(pipe, "clear") == 0
    assert all(type(m.attn.processor) is FluxAttnProcessor for m in model.single_transformer_blocks)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], atol=0, rtol=0)
    assert not model._forward_pre_hooks
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs)[0], dense, atol=0, rtol=0)


def test_weight_names_follow_official_pattern(model) -> None:
    for down in (1, 4):
        linearize(model, "clear", radius=8, down_factor=down)
        try:
            keys = clear_state_dict(model)
        finally:
            unlinearize(model)
        suffixes = {}
        for key in keys:
            match = KEY_PATTERN.match(key)
            assert match, key
            suffixes.setdefault(match.group(1), set()).add(match.group(3))
        extra = {"attn.processor.spatial_weight"} if down > 1 else set()
        assert suffixes["transformer_blocks"] == OFFICIAL_SUFFIXES | extra
        single = OFFICIAL_SUFFIXES - {"attn.to_out.0.weight", "attn.to_out.0.bias"}  # single blocks have no to_out
        assert suffixes["single_transformer_blocks"] == single | extra
        assert len(keys) == 2 * 8 + 2 * 6 + 4 * len(extra)


def test_down_factor_inferred_from_weights_and_trainable(model) -> None:
    gen = torch.Generator().manual_seed(7)
    linearize(model, "clear", radius=2, down_factor=3)
    try:
        weights = {k: torch.rand(v.shape, generator=gen) for k, v in clear_state_dict(model).items()}
    finally:
        unlinearize(model)
    try:
        linearize(model, "clear", radius=2, weights=weights)
        processor = model.transformer_blocks[1].attn.processor
        assert processor.down_factor == 3
        key = "transformer_blocks.1.attn.processor.spatial_weight"
        torch.testing.assert_close(processor.spatial_weight.detach(), weights[key], atol=0, rtol=0)
        out = model(**flux_inputs(6, 6))[0]
        out.square().mean().backward()  # the CPU reference kernel is differentiable
        assert processor.spatial_weight.grad is not None and processor.spatial_weight.grad.abs().sum() > 0
        with pytest.raises(ValueError, match="down_factor 3 must divide"):
            model(**flux_inputs(4, 9))
        with pytest.raises(ValueError, match="down_factor"):
            linearize(model, "clear", radius=2, down_factor=2, weights=weights)
    finally:
        model.zero_grad(set_to_none=True)
        unlinearize(model)


def test_mismatched_weights_raise_and_leave_model_unchanged(model) -> None:
    weights = {k: torch.zeros(v.shape) for k, v in clear_state_dict(model).items()}
    weights["transformer_blocks.0.attn.to_q.weight"] = torch.zeros(3, 3)
    weights.pop("single_transformer_blocks.1.attn.to_v.bias")
    with pytest.raises(StateDictMismatchError, match="missing.*single_transformer_blocks.1.attn.to_v.bias"):
        linearize(model, "clear", radius=4, weights=weights)
    assert isinstance(StateDictMismatchError("x"), ValueError)
    assert all(type(m.attn.processor) is FluxAttnProcessor for m in model.transformer_blocks)
    assert not model._forward_pre_hooks


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "radius"),
        ({"radius": 0}, "radius"),
        ({"radius": "8"}, "radius"),
        ({"radius": 8, "down_factor": 0}, "down_factor"),
        ({"radius": 8, "backend": "cuda"}, "backend"),
        ({"radius": 8, "weights": 3}, "weights"),
        ({"radius": 8, "weights": "/no/such/file.safetensors"}, "weights"),
        ({"radius": 12, "weights": "Huage001/CLEAR"}, "radius=12"),
    ],
)
def test_bad_arguments_raise(model, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        linearize(model, "clear", **kwargs)
    assert all(type(m.attn.processor) is FluxAttnProcessor for m in model.single_transformer_blocks)


def test_bad_targets_and_inputs_raise(model) -> None:
    with pytest.raises(ValueError, match="method"):
        linearize(model, "clearr", radius=8)
    with pytest.raises(ValueError, match="pipe_or_unet"):
        linearize(torch.nn.Linear(2, 2), "clear", radius=8)
    with pytest.raises(ValueError, match="pipe_or_unet"):
        linearize(object(), "clear", radius=8)
    with pytest.raises(ValueError, match="img_ids"):
        grid_from_image_ids(image_ids(3, 4)[torch.randperm(12, generator=torch.Generator().manual_seed(0))])
    assert grid_from_image_ids(image_ids(3, 4)) == (3, 4)
    processor = ClearAttnProcessor(4)
    attn = model.single_transformer_blocks[0].attn
    with pytest.raises(ValueError, match="grid"):
        processor(attn, torch.randn(1, T + H * W, attn.to_q.in_features))
    with pytest.raises(ValueError, match="attention_mask"):
        processor(attn, torch.randn(1, 4, attn.to_q.in_features), attention_mask=torch.ones(4, 4, dtype=torch.bool))


@pytest.mark.parametrize("variant", ["clear_flux_r8", "clear_flux_r8_down4"])
def test_full_flux_keys_match_official_manifest(variant: str) -> None:
    """FLUX.1-dev on the meta device: the loader's expected keys are exactly the official file's keys."""
    with torch.device("meta"):
        flux = FluxTransformer2DModel(guidance_embeds=True)
    down = 4 if variant.endswith("down4") else 1
    linearize(flux, "clear", radius=8, down_factor=down)
    keys = clear_state_dict(flux)
    assert len(keys) == (437 if down > 1 else 380)
    assert sum(v.numel() for v in keys.values()) == (1_793_649_552 if down > 1 else 1_793_648_640)
    manifest = MANIFESTS / f"{variant}.json"
    if manifest.is_file():  # the exact official manifest, when the fixture is present
        official = json.loads(manifest.read_text())["keys"]
        assert {k: tuple(v.shape) for k, v in keys.items()} == {k: tuple(v) for k, v in official.items()}
    weights = {k: torch.empty(v.shape, device="meta") for k, v in keys.items()}
    result = linearize(flux, "clear", radius=8, weights=weights)  # key-for-key load of the official layout
    assert result.num_replaced == 57 and flux.transformer_blocks[0].attn.processor.down_factor == down
    assert unlinearize(flux) == 57


@pytest.mark.parametrize("pooled", [False, True])
def test_triton_kernel_path_matches_reference(pooled: bool) -> None:
    """The fused neighborhood kernel (Triton interpreter on CPU, compiled on GPU) vs the gather reference."""
    from linzoo.diffusion.attention.clear import clear_attention

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator().manual_seed(11)
    q, k, v = (torch.randn(1, 2, T + H * W, 16, generator=gen).to(device) for _ in range(3))
    extra = tuple(torch.randn(1, 2, 6, 16, generator=gen).to(device) for _ in range(2)) if pooled else None
    ref = clear_attention(q, k, v, T, (H, W), 3, pooled_kv=extra, backend="torch")
    out = clear_attention(q, k, v, T, (H, W), 3, pooled_kv=extra, backend="triton")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_model_matches_masked_dense_bf16() -> None:
    """Whole tiny FLUX on CUDA (auto backend = Triton) in bf16 vs the stock processor fed the CLEAR mask."""
    flux = tiny_flux().to("cuda", torch.bfloat16)
    inputs = {k: (v.to("cuda", torch.bfloat16) if torch.is_tensor(v) else v) for k, v in flux_inputs().items()}
    mask = clear_mask(T, H, W, 3)[None, None].cuda()
    with torch.no_grad():
        reference = flux(**inputs, joint_attention_kwargs={"attention_mask": mask})[0].float()
        linearize(flux, "clear", radius=3)
        out = flux(**inputs)[0].float()
    assert (out - reference).abs().max() < 3e-2
