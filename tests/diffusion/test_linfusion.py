"""LinFusion: the attention formula, official key layout (full-size UNets on the meta device), weights I/O,
linearize / unlinearize on tiny SD-1.5 / SD-2.1 / SDXL-shaped UNets."""

from __future__ import annotations

import copy
import importlib
import json

import pytest
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from linzoo.diffusion import LinFusionAttnProcessor, linearize, linfusion_state_dict, save_linfusion, unlinearize
from linzoo.diffusion.attention import LinFusionProjection, add_linfusion_projections
from linzoo.diffusion.linearize import linfusion_config, list_linearizations, resolve_linfusion_weights
from linzoo.kernels import linear_attention
from linzoo.weights import StateDictMismatchError, get_checkpoint

from ..conftest import GOLDEN, load_manifest

FAMILIES = ("sd15", "sd21", "sdxl")
EXPECTED_LAYERS = {"sd15": 16, "sd21": 16, "sdxl": 70}
MID_DIM_SCALE = {"sd15": None, "sd21": None, "sdxl": 16}  # official recipes (distill_sdxl.sh: --mid_dim_scale=16)


def tiny_unet(family: str, seed: int = 0) -> UNet2DConditionModel:
    """A small UNet with the block structure of ``family`` (its manifest config, channels and depths shrunk)."""
    cfg = dict(load_manifest(f"linfusion_{family}")["unet_config"])
    levels = len(cfg["block_out_channels"])
    cfg.update(block_out_channels=[16, 32, 32, 32][:levels], norm_num_groups=8, sample_size=8, layers_per_block=1)
    if family == "sd15":
        cfg.update(cross_attention_dim=16, attention_head_dim=4)
    elif family == "sd21":
        cfg.update(cross_attention_dim=16, attention_head_dim=[2, 4, 4, 4])
    else:
        cfg.update(
            cross_attention_dim=32,
            attention_head_dim=[2, 4, 4],
            transformer_layers_per_block=[1, 1, 2],
            addition_time_embed_dim=8,
            projection_class_embeddings_input_dim=6 * 8 + 16,
        )
    torch.manual_seed(seed)
    return UNet2DConditionModel(**cfg).eval()


def unet_inputs(unet: UNet2DConditionModel, size: int = 8, batch: int = 2) -> dict:
    g = torch.Generator().manual_seed(1)
    cfg = unet.config
    kwargs = {
        "sample": torch.randn(batch, 4, size, size, generator=g),
        "timestep": torch.tensor([10, 700][:batch]),
        "encoder_hidden_states": torch.randn(batch, 5, cfg.cross_attention_dim, generator=g),
    }
    if cfg.addition_embed_type == "text_time":
        text_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, text_dim, generator=g),
            "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]] * batch),
        }
    return kwargs


def forward(unet: UNet2DConditionModel, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return unet(**(kwargs or unet_inputs(unet))).sample


def randomize_linfusion(unet: UNet2DConditionModel, seed: int = 3) -> None:
    """Give the projections non-zero last layers (a trained state) so they change the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, value in linfusion_state_dict(unet).items():
            if ".to_q_." in key or ".to_k_." in key:
                value.copy_(torch.randn(value.shape, generator=g) * 0.2)


# ------------------------------------------------------------------------------------------------- attention


def test_kernel_call_equals_the_official_formula():
    """linear_attention(elu+1, standard, scale=1/N, eps=1e-4) == official z / kv computation."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 8, generator=g, dtype=torch.float64) for _ in range(3))
    n = q.shape[-2]
    fq, fk = F.elu(q) + 1, F.elu(k) + 1
    z = fq @ fk.mean(dim=-2, keepdim=True).transpose(-2, -1) + 1e-4
    kv = (fk.transpose(-2, -1) * n**-0.5) @ (v * n**-0.5)
    official = fq @ kv / z
    ours = linear_attention(q, k, v, feature_map="elu+1", normalizer="standard", scale=1 / n, eps=1e-4, backend="torch")
    torch.testing.assert_close(ours, official, rtol=1e-6, atol=1e-6)


def test_processor_matches_official_golden_output():
    """One layer against tensors produced by the official GeneralizedLinearAttention (see the golden's source)."""
    golden = torch.load(GOLDEN / "linfusion_attention.pt", weights_only=True)
    attn = Attention(query_dim=32, heads=golden["heads"], dim_head=32 // golden["heads"], out_bias=True)
    add_linfusion_projections(attn, golden["projection_mid_dim"])
    attn.load_state_dict(golden["state_dict"])  # strict: key-for-key the official module
    attn.set_processor(LinFusionAttnProcessor(backend="torch"))
    with torch.no_grad():
        out = attn(golden["x"])
    torch.testing.assert_close(out, golden["y"], rtol=1e-5, atol=1e-5)


def test_projection_structure_and_zero_init():
    proj = LinFusionProjection(32, 8)
    assert [type(m).__name__ for m in proj] == ["Linear", "LayerNorm", "LeakyReLU", "Linear"]
    assert list(proj.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias"]
    x = torch.randn(2, 5, 32)
    assert torch.equal(proj(x), torch.zeros_like(x))
    with pytest.raises(ValueError, match="projection_mid_dim"):
        LinFusionProjection(32, 0)


def test_processor_without_projections_raises():
    attn = Attention(query_dim=16, heads=2, dim_head=8)
    attn.set_processor(LinFusionAttnProcessor())
    with pytest.raises(ValueError, match="to_q_/to_k_"):
        attn(torch.randn(1, 4, 16))
    with pytest.raises(ValueError, match="backend"):
        LinFusionAttnProcessor(backend="cuda")


def test_processor_residual_and_output_rescale():
    """``residual_connection`` and ``rescale_output_factor`` as in diffusers (the division is skipped only at 1.0)."""
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    outs = {}
    for residual, factor in ((False, 1.0), (True, 2.0)):
        torch.manual_seed(1)
        attn = Attention(query_dim=16, heads=2, dim_head=8, residual_connection=residual, rescale_output_factor=factor)
        add_linfusion_projections(attn, 8, zero_init=False)
        attn.set_processor(LinFusionAttnProcessor(backend="torch"))
        with torch.no_grad():
            outs[factor] = attn(x)
    torch.testing.assert_close(outs[2.0], (outs[1.0] + x) / 2.0, rtol=0, atol=0)


# -------------------------------------------------------------------------------------- official key layout


@pytest.mark.parametrize("family", FAMILIES)
def test_full_size_layout_matches_the_official_manifest(family):
    """Full-size SD-1.5 / 2.1 / XL UNets on the meta device: the LinFusion weights are key-for-key official."""
    manifest = load_manifest(f"linfusion_{family}")
    with torch.device("meta"):
        unet = UNet2DConditionModel(**manifest["unet_config"])
    result = linearize(unet, mid_dim_scale=MID_DIM_SCALE[family], keep_originals=False)
    assert result.num_replaced == EXPECTED_LAYERS[family] == len(manifest["config"]["modules_list"])
    state = linfusion_state_dict(unet)
    assert {k: list(v.shape) for k, v in state.items()} == manifest["keys"]
    assert list(state) == list(manifest["keys"])  # same order as the official module registers them
    assert sum(v.numel() for v in state.values()) == manifest["num_params"]
    assert linfusion_config(unet)["modules_list"] == manifest["config"]["modules_list"]
    # everything but self-attention is untouched
    assert all(not isinstance(p, LinFusionAttnProcessor) for n, p in unet.attn_processors.items() if "attn2" in n)


# ------------------------------------------------------------------------------------ linearize / unlinearize


@pytest.mark.parametrize("family", FAMILIES)
def test_linearize_tiny_unets_and_unlinearize_exactly(family):
    unet = tiny_unet(family)
    original_state = copy.deepcopy(unet.state_dict())
    reference = forward(unet)
    result = linearize(unet, mid_dim_scale=MID_DIM_SCALE[family])
    assert int(result) == len(result.modules) > 0
    assert all(name.endswith("attn1") for name in result.modules)
    procs = unet.attn_processors
    assert all(isinstance(procs[f"{n}.processor"], LinFusionAttnProcessor) for n in result.modules)
    assert all(isinstance(p, AttnProcessor2_0) for n, p in procs.items() if n.endswith("attn2.processor"))
    linear = forward(unet)
    assert linear.shape == reference.shape and torch.isfinite(linear).all()
    assert not torch.allclose(linear, reference)
    # a fresh swap starts from the inherited weights: the projections are zero, only the attention changed
    assert all(torch.count_nonzero(v) == 0 for k, v in linfusion_state_dict(unet).items() if "_.3." in k)
    # other resolutions (the linear attention has no fixed token count)
    inputs = unet_inputs(unet, size=16, batch=1)
    assert forward(unet, **inputs).shape == (1, 4, 16, 16)

    randomize_linfusion(unet)
    with torch.no_grad():
        for name in result.modules:  # also overwrite inherited q/k/v/out, as loading official weights does
            unet.get_submodule(name).to_q.weight.mul_(1.5)
    assert unlinearize(unet) == result.num_replaced
    assert unlinearize(unet) == 0
    restored = unet.state_dict()
    assert list(restored) == list(original_state)
    assert all(torch.equal(restored[k], original_state[k]) for k in original_state)
    torch.testing.assert_close(forward(unet), reference, rtol=0, atol=0)


def test_linearize_again_reinstalls_a_replaced_processor():
    unet = tiny_unet("sd15")
    first = linearize(unet)
    randomize_linfusion(unet)
    expected = forward(unet)
    unet.set_attn_processor(AttnProcessor2_0())  # e.g. a later set_default_attn_processor()
    assert not torch.allclose(forward(unet), expected)
    again = linearize(unet)
    assert again.num_replaced == first.num_replaced
    torch.testing.assert_close(forward(unet), expected)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision(dtype):
    unet = tiny_unet("sd15").to(dtype)
    linearize(unet)
    assert all(p.dtype == dtype for p in unet.parameters())
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in unet_inputs(unet).items()}
    out = forward(unet, **inputs)
    assert out.dtype == dtype and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------------------- weights


@pytest.mark.parametrize("family", ["sd21", "sdxl"])
def test_official_layout_round_trip(tmp_path, family):
    src = tiny_unet(family)
    linearize(src, mid_dim_scale=4 if family == "sdxl" else None)
    randomize_linfusion(src)
    with torch.no_grad():
        for name in linfusion_config(src)["modules_list"]:
            src.get_submodule(name["module_name"]).to_v.weight.normal_()
    folder = save_linfusion(src, tmp_path / "linfusion")
    config = json.loads((folder / "config.json").read_text())
    assert config["_class_name"] == "LinFusion"
    state, _, _ = resolve_linfusion_weights(folder)
    assert all(v.dtype == torch.float16 for v in state.values())  # published precision

    dst = tiny_unet(family, seed=1)
    result = linearize(dst, weights=folder)
    assert result.weights == str(folder) and result.num_replaced == len(config["modules_list"])
    if family == "sdxl":  # mid dim read from the weights, not from an argument
        assert all(dst.get_submodule(n).to_q_.mid_dim == dst.get_submodule(n).to_q_.dim // 4 for n in result.modules)
    loaded = linfusion_state_dict(dst)
    for key, value in linfusion_state_dict(src).items():
        torch.testing.assert_close(loaded[key], value.half().float())
    # a bare weight file (no config.json beside it) maps by layer order
    bare = tmp_path / "bare.safetensors"
    (folder / "diffusion_pytorch_model.safetensors").rename(bare)
    other = tiny_unet(family, seed=2)
    linearize(other, weights=bare)
    assert all(torch.equal(linfusion_state_dict(other)[k], loaded[k]) for k in loaded)


def test_mismatched_weights_raise_and_leave_the_model_unchanged(tmp_path):
    src = tiny_unet("sd15")
    linearize(src)
    state = {k: v.clone() for k, v in linfusion_state_dict(src).items()}
    target = tiny_unet("sd15")
    keys_before = list(target.state_dict())

    bad_shape = dict(state)
    bad_shape["0.to_v.weight"] = torch.zeros(3, 3)
    with pytest.raises(StateDictMismatchError, match=r"wrong shape.*0\.to_v\.weight"):
        linearize(target, weights=bad_shape)
    assert list(target.state_dict()) == keys_before
    assert all(isinstance(p, AttnProcessor2_0) for p in target.attn_processors.values())

    missing = {k: v for k, v in state.items() if k != "1.to_k_.1.bias"}
    with pytest.raises(StateDictMismatchError, match=r"missing.*1\.to_k_\.1\.bias"):
        linearize(target, weights=missing)
    too_few = {k: v for k, v in state.items() if not k.startswith("3.")}
    with pytest.raises(ValueError, match="attn1 layers"):
        linearize(target, weights=too_few)
    with pytest.raises(ValueError, match="official form"):
        linearize(target, weights={"to_q.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="neither an existing file"):
        linearize(target, weights=str(tmp_path / "nothing.safetensors"))
    assert list(target.state_dict()) == keys_before


def test_config_naming_unknown_layers_is_rejected(tmp_path):
    src = tiny_unet("sd15")
    linearize(src)
    folder = save_linfusion(src, tmp_path / "w")
    config = json.loads((folder / "config.json").read_text())
    config["modules_list"][0]["module_name"] = "down_blocks.9.attentions.0.transformer_blocks.0.attn1"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="lacks"):
        linearize(tiny_unet("sd15"), weights=folder)


def test_auto_weights_resolve_through_the_registry(monkeypatch, tmp_path):
    lin = importlib.import_module("linzoo.diffusion.linearize")  # the module (the package exports the function)

    src = tiny_unet("sd15")
    linearize(src)
    folder = save_linfusion(src, tmp_path / "hub")
    asked = []
    monkeypatch.setattr(lin, "_download_hub", lambda repo: asked.append(repo) or folder / lin._WEIGHT_FILES[0])
    unet = tiny_unet("sd15")
    unet.register_to_config(_name_or_path="Lykon/dreamshaper-8")
    assert linearize(unet, weights="auto").num_replaced == 10
    assert asked == ["Yuanshi/LinFusion-1-5"]
    linearize(tiny_unet("sd15"), weights="Yuanshi/LinFusion-2-1")
    assert asked[-1] == "Yuanshi/LinFusion-2-1"
    unknown = tiny_unet("sd15")
    unknown.register_to_config(_name_or_path="someone/custom-model")
    with pytest.raises(ValueError, match="known bases"):
        linearize(unknown, weights="auto")


def test_registry_records_the_hub_ids():
    for name, hub_id, n in (("sd15", "Yuanshi/LinFusion-1-5", 16), ("sd21", "Yuanshi/LinFusion-2-1", 16)):
        ckpt = get_checkpoint(f"linfusion_{name}")
        assert ckpt.hf_hub_id == hub_id and ckpt.format == "diffusers" and ckpt.extra["num_modules"] == n
    assert get_checkpoint("linfusion_sdxl").hf_hub_id == "Yuanshi/LinFusion-XL"


def test_argument_errors():
    unet = tiny_unet("sd15")
    with pytest.raises(ValueError, match="method must be one of"):
        linearize(unet, method="nope")
    assert "linfusion" in list_linearizations()
    with pytest.raises(ValueError, match="not both"):
        linearize(unet, projection_mid_dim=8, mid_dim_scale=2)
    with pytest.raises(ValueError, match="no self-attention"):
        linearize(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="pipe_or_unet"):
        linearize("not a model")
    with pytest.raises(ValueError, match="weights must be"):
        linearize(unet, weights=3.0)
    assert all(isinstance(p, AttnProcessor2_0) for p in unet.attn_processors.values())


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_kernel_backends_agree_inside_the_unet(dtype):
    """On CUDA the processor runs the fused kernel ("auto"); it must match the PyTorch reference."""
    unet = tiny_unet("sdxl").to("cuda", dtype)
    result = linearize(unet, mid_dim_scale=4)
    randomize_linfusion(unet)
    inputs = unet_inputs(unet, size=32)
    inputs = {k: v.to("cuda") for k, v in inputs.items() if k != "added_cond_kwargs"} | {
        "added_cond_kwargs": {k: v.to("cuda", dtype) for k, v in inputs["added_cond_kwargs"].items()}
    }
    inputs = {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in inputs.items()}
    fused = forward(unet, **inputs)
    unet.set_attn_processor(
        {
            n: (LinFusionAttnProcessor("torch") if n[: -len(".processor")] in result.modules else p)
            for n, p in unet.attn_processors.items()
        }
    )
    reference = forward(unet, **inputs)
    assert torch.isfinite(fused).all()
    torch.testing.assert_close(fused.float(), reference.float(), rtol=3e-2, atol=3e-2)
