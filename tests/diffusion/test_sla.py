"""``linearize(..., method="sla")`` on tiny offline Wan, FLUX and PixArt models (CPU, torch reference kernels).

The processors are checked against the models' own diffusers processors with their attention call swapped for
the same SLA op (so every projection, norm and RoPE must match), and against the dense model at ``topk=1``
(every key block kept, ``proj_l`` zero: SLA is exactly softmax attention).
"""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from diffusers import LTXVideoTransformer3DModel, PixArtTransformer2DModel, SD3Transformer2DModel, WanTransformer3DModel
from diffusers.models import attention_processor
from diffusers.models.transformers import transformer_flux, transformer_ltx, transformer_wan

from linzoo.diffusion import linearize, list_linearizations, unlinearize
from linzoo.diffusion.attention.sla import (
    SLAAttnProcessor,
    SLAFluxAttnProcessor,
    SLAJointAttnProcessor,
    SLALTXAttnProcessor,
    SLAWanAttnProcessor,
)
from linzoo.diffusion.sla import SLA_WEIGHTS_FILE, save_sla, sla_state_dict
from linzoo.kernels import SparseLinearAttention
from linzoo.weights import StateDictMismatchError

from .test_clear import flux_inputs, tiny_flux

BLOCK = 16


def tiny_wan() -> WanTransformer3DModel:
    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=24,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        rope_max_seq_len=32,
    )
    return model.eval()


def wan_inputs(seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {  # (B, C, F, H, W) -> 2 x 6 x 8 = 96 tokens (6 blocks of 16), text of 7 tokens
        "hidden_states": torch.randn(2, 4, 2, 12, 16, generator=gen),
        "timestep": torch.tensor([3, 700]),
        "encoder_hidden_states": torch.randn(2, 7, 16, generator=gen),
        "return_dict": False,
    }


def tiny_pixart() -> PixArtTransformer2DModel:
    torch.manual_seed(0)
    model = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=32,
        caption_channels=24,
        sample_size=16,
        patch_size=2,
        norm_type="ada_norm_single",
    )
    return model.eval()


def pixart_inputs(seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {  # 16 x 16 latents, patch 2 -> 64 tokens
        "hidden_states": torch.randn(2, 4, 16, 16, generator=gen),
        "encoder_hidden_states": torch.randn(2, 5, 24, generator=gen),
        "timestep": torch.tensor([10, 500]),
        "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
        "return_dict": False,
    }


def tiny_sd3() -> SD3Transformer2DModel:
    torch.manual_seed(0)
    model = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=24,
        caption_projection_dim=32,
        pooled_projection_dim=16,
        out_channels=4,
        qk_norm="rms_norm",
        dual_attention_layers=(0,),  # SD3.5's image-only second attention in block 0
    )
    return model.eval()


def sd3_inputs(seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {  # 16 x 16 latents, patch 2 -> 64 image tokens, then 9 text tokens
        "hidden_states": torch.randn(2, 4, 16, 16, generator=gen),
        "encoder_hidden_states": torch.randn(2, 9, 24, generator=gen),
        "pooled_projections": torch.randn(2, 16, generator=gen),
        "timestep": torch.tensor([10, 500]),
        "return_dict": False,
    }


def tiny_ltx() -> LTXVideoTransformer3DModel:
    torch.manual_seed(0)
    model = LTXVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=24,
        cross_attention_dim=48,
        num_layers=2,
        caption_channels=16,
        qk_norm="rms_norm_across_heads",
    )
    return model.eval()


def ltx_inputs(seed: int = 1) -> dict:
    gen = torch.Generator().manual_seed(seed)
    return {  # 3 latent frames of 8 x 8 -> 192 tokens
        "hidden_states": torch.randn(2, 3 * 8 * 8, 4, generator=gen),
        "encoder_hidden_states": torch.randn(2, 7, 16, generator=gen),
        "timestep": torch.tensor([10, 500]),
        "encoder_attention_mask": torch.ones(2, 7),
        "num_frames": 3,
        "height": 8,
        "width": 8,
        "return_dict": False,
    }


MODELS = {
    "ltx": (tiny_ltx, ltx_inputs, SLALTXAttnProcessor, 2),
    "sd3": (tiny_sd3, sd3_inputs, SLAJointAttnProcessor, 3),
    "wan": (tiny_wan, wan_inputs, SLAWanAttnProcessor, 2),
    "flux": (tiny_flux, flux_inputs, SLAFluxAttnProcessor, 4),
    "pixart": (tiny_pixart, pixart_inputs, SLAAttnProcessor, 2),
}


def run(model: torch.nn.Module, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs)[0]


def randomize_proj(model: torch.nn.Module, seed: int = 3) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".sla.proj_l." in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)


def test_sla_is_registered() -> None:
    assert "sla" in list_linearizations()


@pytest.mark.parametrize("family", sorted(MODELS))
def test_all_blocks_kept_equals_dense_model(family: str) -> None:
    build, inputs, processor, layers = MODELS[family]
    model = build()
    dense = run(model, inputs())
    result = linearize(model, method="sla", topk=1.0, block_q=BLOCK, block_k=BLOCK)
    assert result.num_replaced == layers
    assert all(isinstance(model.get_submodule(n).processor, processor) for n in result.modules)
    torch.testing.assert_close(run(model, inputs()), dense, rtol=1e-4, atol=1e-5)
    assert unlinearize(model) == layers
    assert not any(".sla." in k for k in model.state_dict())
    torch.testing.assert_close(run(model, inputs()), dense, rtol=0, atol=0)


def _sla_dispatch(sla: SparseLinearAttention, dense_fn):
    """A stand-in for diffusers' ``dispatch_attention_fn`` ((B, L, heads, D) layout) computing SLA for
    self-attention calls (as many keys as queries) and dense attention for cross-attention."""

    def dispatch(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, **_):
        if query.shape[1] != key.shape[1]:
            return dense_fn(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)
        out = sla(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
        return out.transpose(1, 2)

    return dispatch


class _FunctionalWithSLA:
    """``torch.nn.functional`` whose ``scaled_dot_product_attention`` ((B, heads, L, D) layout) computes ``sla``."""

    def __init__(self, sla: SparseLinearAttention) -> None:
        self.sla = sla

    def __getattr__(self, name: str):
        return getattr(F, name)

    def scaled_dot_product_attention(self, query, key, value, **kwargs):
        return self.sla(query, key, value)


@pytest.mark.parametrize("family", ["wan", "flux", "sd3", "ltx"])
def test_processor_matches_official_processor_with_sla_attention(family: str, monkeypatch) -> None:
    """Our processor == the model's diffusers processor whose attention call computes the same SLA op."""
    build, inputs, _, _ = MODELS[family]
    model = build()
    sla = SparseLinearAttention(model.config.attention_head_dim, 0.5, block_q=BLOCK, block_k=BLOCK)
    with torch.no_grad():
        sla.proj_l.weight.normal_(0, 0.5)
        sla.proj_l.bias.normal_(0, 0.5)

    def bshd_dense(query, key, value, **kwargs):
        out = F.scaled_dot_product_attention(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
        return out.transpose(1, 2)

    with monkeypatch.context() as patch:
        if family == "sd3":  # JointAttnProcessor2_0 calls F.scaled_dot_product_attention of its module
            patch.setattr(attention_processor, "F", _FunctionalWithSLA(sla))
        else:
            module = {"wan": transformer_wan, "flux": transformer_flux, "ltx": transformer_ltx}[family]
            patch.setattr(module, "dispatch_attention_fn", _sla_dispatch(sla, bshd_dense))
        expected = run(model, inputs())

    linearize(model, method="sla", topk=0.5, block_q=BLOCK, block_k=BLOCK)
    state = {f"{n}.sla.{k}": v for n in sla_layer_names(model) for k, v in sla.state_dict().items()}
    model.load_state_dict(state, strict=False)
    got = run(model, inputs())
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    unlinearize(model)
    assert (run(model, inputs()) - got).abs().max() > 1e-3  # SLA at topk=0.5 is not the dense model


def sla_layer_names(model: torch.nn.Module) -> list[str]:
    return sorted({k.split(".sla.", 1)[0] for k in model.state_dict() if ".sla.proj_l." in k})


def test_training_reaches_proj_l_and_the_model() -> None:
    model = tiny_wan().train()
    linearize(model, method="sla", topk=0.5, block_q=BLOCK, block_k=BLOCK)
    out = model(**wan_inputs())[0]
    out.square().mean().backward()
    names = sla_layer_names(model)
    assert len(names) == 2
    for name in names:
        proj = model.get_submodule(f"{name}.sla.proj_l")
        assert proj.weight.dtype == torch.float32
        assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0  # the linear branch is live
        attn = model.get_submodule(name)
        assert attn.to_q.weight.grad.abs().sum() > 0 and attn.to_v.weight.grad.abs().sum() > 0


def test_weights_round_trip_file_folder_and_full_model(tmp_path) -> None:
    model = tiny_wan()
    linearize(model, method="sla", topk=0.5, block_q=BLOCK, block_k=BLOCK)
    randomize_proj(model)
    expected = run(model, wan_inputs())
    state = sla_state_dict(types.SimpleNamespace(transformer=model))
    assert sorted(state) == sorted(f"{n}.sla.proj_l.{p}" for n in sla_layer_names(model) for p in ("weight", "bias"))

    file = save_sla(model, tmp_path / "proj.safetensors")
    folder = save_sla(model, tmp_path / "folder")
    assert folder.name == SLA_WEIGHTS_FILE
    full = tmp_path / "full.pt"
    torch.save(model.state_dict(), full)  # a fully fine-tuned model file: its other keys are ignored
    for weights in (file, tmp_path / "folder", full, state):
        fresh = tiny_wan()
        result = linearize(fresh, method="sla", weights=weights, topk=0.5, block_q=BLOCK, block_k=BLOCK)
        assert result.weights is not None
        torch.testing.assert_close(run(fresh, wan_inputs()), expected, rtol=0, atol=0)


def test_mismatched_weights_raise_before_the_model_changes(tmp_path) -> None:
    model = tiny_wan()
    linearize(model, method="sla", topk=0.5, block_q=BLOCK, block_k=BLOCK)
    state = sla_state_dict(model)
    fresh = tiny_wan()
    processors = {n: type(p) for n, p in fresh.attn_processors.items()}
    partial = {k: v for k, v in state.items() if not k.startswith("blocks.1.")}
    with pytest.raises(StateDictMismatchError, match="missing"):
        linearize(fresh, method="sla", weights=partial, topk=0.5)
    wrong = {k: v[..., :8] if k.endswith("weight") else v for k, v in state.items()}
    with pytest.raises(StateDictMismatchError, match="wrong shape"):
        linearize(fresh, method="sla", weights=wrong, topk=0.5)
    with pytest.raises(ValueError, match="no '\\*.sla.proj_l.\\*' entries"):
        linearize(fresh, method="sla", weights={"x.weight": torch.zeros(1)}, topk=0.5)
    with pytest.raises(FileNotFoundError, match="neither a file nor a folder"):
        linearize(fresh, method="sla", weights=tmp_path / "missing.safetensors", topk=0.5)
    assert {n: type(p) for n, p in fresh.attn_processors.items()} == processors
    assert not any(".sla." in k for k in fresh.state_dict())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"topk": 0.0}, "topk"),
        ({"topk": 1.5}, "topk"),
        ({"feature_map": "tanh"}, "feature_map"),
        ({"linear_keys": "some"}, "linear_keys"),
        ({"block_q": 24}, "block_q"),
        ({"backend": "cuda"}, "backend"),
    ],
)
def test_bad_options_raise_before_the_model_changes(kwargs: dict, match: str) -> None:
    model = tiny_wan()
    processors = {n: type(p) for n, p in model.attn_processors.items()}
    with pytest.raises(ValueError, match=match):
        linearize(model, method="sla", **kwargs)
    assert {n: type(p) for n, p in model.attn_processors.items()} == processors


def test_bad_targets_and_calls_raise() -> None:
    with pytest.raises(ValueError, match="no self-attention layer SLA applies to"):
        linearize(torch.nn.Linear(2, 2), method="sla")
    model = tiny_wan()
    with pytest.raises(ValueError, match="not linearised with SLA"):
        sla_state_dict(model)
    attn = model.blocks[0].attn1
    attn.set_processor(SLAWanAttnProcessor())  # set by hand, without linearize: no proj_l to use
    with pytest.raises(ValueError, match="call linzoo.diffusion.linearize"):
        run(model, wan_inputs())
    linearize(model, method="sla", topk=0.5, block_q=BLOCK, block_k=BLOCK)
    hidden = torch.randn(1, 32, model.config.num_attention_heads * model.config.attention_head_dim)
    with pytest.raises(ValueError, match="attention_mask"):
        attn(hidden, attention_mask=torch.ones(1, 32, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="encoder_hidden_states must be None"):
        attn(hidden, encoder_hidden_states=hidden)


def test_pipeline_generates_with_sla_and_is_restored() -> None:
    """A whole text-to-image pipeline runs through SLA (SD-shaped UNet: attn1 at two levels) and back."""
    from .test_linfusion_pipelines import tiny_sd_pipeline

    pipe = tiny_sd_pipeline(seed=0)
    call = {"prompt": "a red cat", "height": 64, "width": 64, "num_inference_steps": 2, "output_type": "pt"}
    dense = pipe(**call, generator=torch.Generator().manual_seed(0)).images
    result = linearize(pipe, "sla", topk=0.25, block_q=BLOCK, block_k=BLOCK)
    assert result.num_replaced > 0 and all(".attn1" in n for n in result.modules)
    sparse = pipe(**call, generator=torch.Generator().manual_seed(0)).images
    assert sparse.shape == dense.shape and torch.isfinite(sparse).all()
    assert (sparse - dense).abs().max() > 1e-4  # a quarter of the key blocks: not the dense image
    unlinearize(pipe)
    torch.testing.assert_close(pipe(**call, generator=torch.Generator().manual_seed(0)).images, dense)


_WAN_TO_ORIGINAL = [  # diffusers -> original Wan names (the inverse of diffusers' convert_wan_transformer_to_diffusers)
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("attn1", "self_attn"),
    ("attn2", "cross_attn"),
    (".to_out.0.", ".o."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    ("ffn.net.0.proj", "ffn.0"),
    ("ffn.net.2", "ffn.2"),
    ("norm2", "norm__swap"),
    ("norm3", "norm2"),
    ("norm__swap", "norm3"),
    ("proj_out", "head.head"),
]


def turbodiffusion_checkpoint(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A linearised tiny diffusers Wan written in TurboDiffusion's layout (original Wan names, SLA in attn_op)."""
    out = {}
    for key, value in model.state_dict().items():
        if ".sla.proj_l." in key:
            out[key.replace(".attn1.sla.", ".self_attn.attn_op.local_attn.")] = value.clone()
            continue
        for new, old in _WAN_TO_ORIGINAL:
            key = key.replace(new, old)
        key = "head.modulation" if key == "scale_shift_table" else key.replace(".scale_shift_table", ".modulation")
        out[key] = value.clone()
    return out


def test_turbodiffusion_checkpoint_loads_into_diffusers_wan(tmp_path) -> None:
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    from linzoo.diffusion import load_turbodiffusion_wan

    source = tiny_wan()
    linearize(source, method="sla", topk=0.5, block_q=BLOCK, block_k=BLOCK)
    randomize_proj(source)
    expected = run(source, wan_inputs())
    checkpoint = turbodiffusion_checkpoint(source)
    wan_only = {k: v for k, v in checkpoint.items() if "local_attn" not in k}
    back = convert_wan_transformer_to_diffusers(dict(wan_only))  # the test's inverse is exact
    assert back.keys() == {k for k in source.state_dict() if ".sla." not in k}
    torch.save({"state_dict": {f"net.{k}": v for k, v in checkpoint.items()}}, tmp_path / "turbo.pth")

    target = tiny_wan()
    with torch.no_grad():
        for param in target.parameters():
            param.add_(torch.randn_like(param))
    result = load_turbodiffusion_wan(target, tmp_path / "turbo.pth", topk=0.5, block_q=BLOCK, block_k=BLOCK)
    assert result.num_replaced == 2 and result.weights.endswith("turbo.pth")
    torch.testing.assert_close(run(target, wan_inputs()), expected, rtol=0, atol=0)

    with pytest.raises(ValueError, match="quantized"):
        load_turbodiffusion_wan(tiny_wan(), {**checkpoint, "blocks.0.ffn.0.int8_weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="no SLA weights"):
        load_turbodiffusion_wan(tiny_wan(), wan_only)
    del checkpoint["blocks.1.ffn.2.bias"]
    with pytest.raises(StateDictMismatchError, match="missing"):
        load_turbodiffusion_wan(tiny_wan(), checkpoint)


@pytest.mark.slow
def test_sla_models_compile_without_graph_breaks() -> None:
    """``torch.compile(fullgraph=True)`` traces a linearised Wan (the SLA op is a custom op, the processor plain)."""
    model = tiny_wan()
    linearize(model, method="sla", topk=0.5, block_q=BLOCK, block_k=BLOCK)
    expected = run(model, wan_inputs())
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(run(compiled, wan_inputs()), expected, rtol=1e-4, atol=1e-5)
