"""LiTTransformer2DModel: the attention formula, both forms, diffusers model contract and weight inheritance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel, PixArtTransformer2DModel

from linzoo.diffusion.models import (
    LiTLinearAttention,
    LiTTransformer2DModel,
    convert_original_state_dict,
    lit_from_teacher,
)

DIT_KW = dict(
    num_attention_heads=2,
    attention_head_dim=8,
    in_channels=4,
    out_channels=8,
    num_layers=2,
    sample_size=8,
    patch_size=2,
)
TEXT_KW = dict(DIT_KW, norm_type="ada_norm_single", cross_attention_dim=16, caption_channels=12)


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Replace the zero-initialised (adaLN-Zero) weights so that every parameter influences the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


def _inputs(text: bool, b: int = 2, h: int = 8, w: int = 8) -> dict:
    g = torch.Generator().manual_seed(1)
    out = {"hidden_states": torch.randn(b, 4, h, w, generator=g), "timestep": torch.tensor([3, 700][:b])}
    if text:
        out["encoder_hidden_states"] = torch.randn(b, 5, 12, generator=g)
        out["encoder_attention_mask"] = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]][:b])
    else:
        out["class_labels"] = torch.tensor([1, 1000][:b])
    return out


def _model(text: bool) -> LiTTransformer2DModel:
    torch.manual_seed(0)
    return _randomize(LiTTransformer2DModel(**(TEXT_KW if text else DIT_KW), num_linear_heads=1)).eval()


def test_linear_attention_matches_paper_formula():
    """out = proj(φq (φKᵀV/N) / (φq·mean φK + 1e-6) + DWC(V)), φ = ReLU + 1e-6, DWC shared by the heads."""
    torch.manual_seed(0)
    attn = LiTLinearAttention(dim=16, num_heads=2, kernel_size=5)
    b, hgt, wid, c, h = 2, 3, 5, 16, 2
    x = torch.randn(b, hgt * wid, c)
    n, d = hgt * wid, c // h
    q = F.relu(attn.q(x)) + 1e-6
    k, v = attn.kv(x).split(c, dim=-1)
    k = F.relu(k) + 1e-6
    heads = lambda t: t.reshape(b, n, h, d).transpose(1, 2)
    q, k, v = heads(q), heads(k), heads(v)
    num = q @ (k.transpose(-1, -2) @ v / n)
    den = q @ k.mean(dim=2, keepdim=True).transpose(-1, -2) + 1e-6
    la = num / den
    conv = torch.stack([attn.dwc(v[:, i].transpose(1, 2).reshape(b, d, hgt, wid)) for i in range(h)], 1)
    expected = attn.proj((la + conv.flatten(3).transpose(-1, -2)).transpose(1, 2).reshape(b, n, c))
    torch.testing.assert_close(attn(x, hgt, wid), expected, rtol=1e-5, atol=1e-6)
    assert {n for n, _ in attn.named_parameters()} == {
        "q.weight",
        "q.bias",
        "kv.weight",
        "kv.bias",
        "dwc.weight",
        "dwc.bias",
        "proj.weight",
        "proj.bias",
    }
    assert tuple(attn.dwc.weight.shape) == (d, 1, 5, 5)
    with pytest.raises(ValueError, match="height \\* width"):
        attn(x, 4, 4)


@pytest.mark.parametrize("text", [False, True])
def test_forward_shapes_any_size_and_backward(text):
    model = _model(text).train()
    for h, w in [(8, 8), (6, 10)]:
        out = model(**_inputs(text, h=h, w=w)).sample
        assert out.shape == (2, 8, h, w)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("text", [False, True])
def test_determinism_and_return_dict(text):
    model = _model(text)
    with torch.no_grad():
        a = model(**_inputs(text)).sample
        b = model(**_inputs(text), return_dict=False)[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("text", [False, True])
def test_save_load_roundtrip(tmp_path, monkeypatch, text):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = _model(text)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = LiTTransformer2DModel.from_pretrained(tmp_path).eval()
    assert loaded.config.num_linear_heads == 1 and loaded.config.norm_type == model.config.norm_type
    assert not any(p.is_meta for p in loaded.parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**_inputs(text)).sample, model(**_inputs(text)).sample, rtol=0, atol=5e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_save_load_and_forward(tmp_path, dtype):
    model = _model(False).to(dtype)
    model.save_pretrained(tmp_path)
    loaded = LiTTransformer2DModel.from_pretrained(tmp_path, torch_dtype=dtype)
    assert loaded.dtype == dtype
    if dtype == torch.bfloat16:  # fp16 matmuls are not implemented for every CPU op; bf16 is
        inputs = _inputs(False)
        inputs["hidden_states"] = inputs["hidden_states"].to(dtype)
        with torch.no_grad():
            out = loaded(**inputs).sample
        ref = _model(False)(**_inputs(False)).sample
        assert out.dtype == dtype
        torch.testing.assert_close(out.float(), ref.detach(), rtol=0.05, atol=0.05)


def test_gradient_checkpointing_equivalence():
    model = _model(False).train()
    inputs = _inputs(False)
    model(**inputs).sample.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.enable_gradient_checkpointing()
    assert model.gradient_checkpointing
    loss = model(**inputs).sample.square().mean()
    loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], rtol=1e-5, atol=1e-6, msg=n)


def test_attention_processors_of_text_form():
    from diffusers.models.attention_processor import AttnProcessor

    model = _model(True)
    procs = model.attn_processors
    assert sorted(procs) == [f"transformer_blocks.{i}.attn2.processor" for i in range(2)]
    model.set_attn_processor(AttnProcessor())
    with torch.no_grad():
        model(**_inputs(True))


def test_input_validation():
    model = _model(False)
    bad = _inputs(False)
    bad["hidden_states"] = torch.randn(2, 4, 7, 8)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        model(**bad)
    with pytest.raises(ValueError, match="class_labels"):
        model(hidden_states=torch.randn(1, 4, 8, 8), timestep=1)
    with pytest.raises(ValueError, match="num_heads"):
        LiTTransformer2DModel(**DIT_KW, num_linear_heads=3)
    with pytest.raises(ValueError, match="cross_attention_dim and caption_channels"):
        LiTTransformer2DModel(**DIT_KW, norm_type="ada_norm_single")


# --------------------------------------------------------------------------------------------------------------
# weight inheritance
# --------------------------------------------------------------------------------------------------------------
def _zero_attention_output(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("attn1.to_out.0") or name.endswith("attn.proj"):
                module.weight.zero_()
                module.bias.zero_()


def _tiny_dit() -> DiTTransformer2DModel:
    torch.manual_seed(0)
    dit = DiTTransformer2DModel(**DIT_KW, num_embeds_ada_norm=10).eval()
    _randomize(dit)
    # A converted DiT checkpoint holds one embedder, copied into every block; make the random one alike.
    for block in dit.transformer_blocks[1:]:
        block.norm1.emb.load_state_dict(dit.transformer_blocks[0].norm1.emb.state_dict())
    return dit


def test_inherit_from_dit_copies_exactly_all_but_qkv():
    dit = _tiny_dit()
    lit, report = lit_from_teacher(dit, num_linear_heads=1)
    teacher = dit.state_dict()
    expected_new = {f"transformer_blocks.{i}.attn.{m}.{p}" for i in range(2) for m in ("q", "kv", "dwc") for p in "wb"}
    expected_new = {k.replace(".w", ".weight").replace(".b", ".bias") for k in expected_new}
    assert set(report.new) == expected_new
    assert set(report.copied) | set(report.new) == set(lit.state_dict())
    dropped = {k for k in teacher if ".attn1.to_q." in k or ".attn1.to_k." in k or ".attn1.to_v." in k}
    dropped |= {k for k in teacher if k.startswith("transformer_blocks.1.norm1.emb.")}
    assert set(report.dropped) == dropped
    own = lit.state_dict()
    for i in range(2):
        for p in ("weight", "bias"):
            assert torch.equal(
                own[f"transformer_blocks.{i}.attn.proj.{p}"], teacher[f"transformer_blocks.{i}.attn1.to_out.0.{p}"]
            )
            assert torch.equal(
                own[f"transformer_blocks.{i}.ff.net.2.{p}"], teacher[f"transformer_blocks.{i}.ff.net.2.{p}"]
            )
    assert torch.equal(
        own["time_class_embed.class_embedder.embedding_table.weight"],
        teacher["transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight"],
    )
    # With the attention outputs switched off, the rest of the network is the teacher's, exactly.
    _zero_attention_output(dit)
    _zero_attention_output(lit)
    inputs = _inputs(False)
    inputs["class_labels"] = torch.tensor([1, 10])
    with torch.no_grad():
        torch.testing.assert_close(lit.eval()(**inputs).sample, dit(**inputs).sample, rtol=0, atol=1e-6)
    assert "copied" in report.summary() and not any(p.is_meta for p in lit.parameters())


def test_inherit_from_pixart_and_folder(tmp_path):
    torch.manual_seed(0)
    pix = _randomize(PixArtTransformer2DModel(**{k: v for k, v in TEXT_KW.items() if k != "norm_type"})).eval()
    pix.save_pretrained(tmp_path)
    lit, report = lit_from_teacher(str(tmp_path), num_linear_heads=1)
    assert all(".attn.q." in k or ".attn.kv." in k or ".attn.dwc." in k for k in report.new)
    assert len(report.new) == 12 and len(report.dropped) == 12  # q/k/v weight+bias x 2 blocks
    assert any(k.endswith("attn2.to_k.weight") for k in report.copied)
    _zero_attention_output(pix)
    _zero_attention_output(lit)
    inputs = _inputs(True)
    with torch.no_grad():
        ref = pix(**inputs, added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        torch.testing.assert_close(lit.eval()(**inputs).sample, ref, rtol=0, atol=1e-6)


def test_inherit_from_original_dit_layout():
    """An original-code DiT state dict (x_embedder, blocks.{i}.attn.qkv, final_layer ...) maps onto the same
    tensors as its diffusers conversion, and selects the original (unshifted) timestep frequencies."""
    dit = _tiny_dit()
    sd = dit.state_dict()
    orig = {
        "x_embedder.proj.weight": sd["pos_embed.proj.weight"],
        "x_embedder.proj.bias": sd["pos_embed.proj.bias"],
        "t_embedder.mlp.0.weight": sd["transformer_blocks.0.norm1.emb.timestep_embedder.linear_1.weight"],
        "t_embedder.mlp.0.bias": sd["transformer_blocks.0.norm1.emb.timestep_embedder.linear_1.bias"],
        "t_embedder.mlp.2.weight": sd["transformer_blocks.0.norm1.emb.timestep_embedder.linear_2.weight"],
        "t_embedder.mlp.2.bias": sd["transformer_blocks.0.norm1.emb.timestep_embedder.linear_2.bias"],
        "y_embedder.embedding_table.weight": sd["transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight"],
        "final_layer.adaLN_modulation.1.weight": sd["proj_out_1.weight"],
        "final_layer.adaLN_modulation.1.bias": sd["proj_out_1.bias"],
        "final_layer.linear.weight": sd["proj_out_2.weight"],
        "final_layer.linear.bias": sd["proj_out_2.bias"],
        "pos_embed": torch.zeros(1, 16, 16),
    }
    for i in range(2):
        p = f"transformer_blocks.{i}."
        for s in ("weight", "bias"):
            orig[f"blocks.{i}.attn.qkv.{s}"] = torch.cat([sd[f"{p}attn1.to_{n}.{s}"] for n in "qkv"])
            orig[f"blocks.{i}.attn.proj.{s}"] = sd[f"{p}attn1.to_out.0.{s}"]
            orig[f"blocks.{i}.mlp.fc1.{s}"] = sd[f"{p}ff.net.0.proj.{s}"]
            orig[f"blocks.{i}.mlp.fc2.{s}"] = sd[f"{p}ff.net.2.{s}"]
            orig[f"blocks.{i}.adaLN_modulation.1.{s}"] = sd[f"{p}norm1.linear.{s}"]
    converted = convert_original_state_dict(orig)
    assert torch.equal(
        converted["transformer_blocks.1.attn1.to_k.weight"], sd["transformer_blocks.1.attn1.to_k.weight"]
    )
    lit_a, rep_a = lit_from_teacher(state_dict=orig, teacher_config=dict(dit.config), num_linear_heads=1)
    lit_b, rep_b = lit_from_teacher(dit, num_linear_heads=1)
    assert rep_a.copied == rep_b.copied and lit_a.config.timestep_freq_shift == 0
    a, b = lit_a.state_dict(), lit_b.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in rep_a.copied)
    with pytest.raises(ValueError, match="does not know"):
        convert_original_state_dict({"blocks.0.unknown.weight": torch.zeros(1)})
