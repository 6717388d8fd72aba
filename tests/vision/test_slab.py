"""SLAB / PRepBN backbones: parity with the official code, PRepBN schedule, re-parameterisation, loading, any size.

The golden files (tests/fixtures/golden/slab_*.pt, described in slab_golden.json) hold reduced-config weights of the
official models (xinghaochen/SLAB@f58db00b), an input, and the official eval / training-mode logits.
"""

from __future__ import annotations

import copy
import json
import sys
import types

import pytest
import timm
import torch
from timm.utils.model import reparameterize_model

import linzoo.vision.slab as slab
from linzoo.vision.layers.prepbn import ChannelAffine, LinearNorm, RepBN, fold_affine_after_conv

from ..conftest import GOLDEN

GOLDEN_FILES = sorted(json.loads((GOLDEN / "slab_golden.json").read_text())["files"])
NAMES = [
    "slab_deit_t",
    "slab_deit_s",
    "deit_t_prepbn",
    "deit_s_prepbn",
    "slab_pvt_t",
    "slab_pvt_s",
    "slab_pvt_m",
    "pvt_t_prepbn",
    "pvt_s_prepbn",
    "pvt_m_prepbn",
    "slab_swin_t",
    "slab_swin_s",
    "slab_swin_b",
    "swin_t_prepbn",
    "slab_cswin_t",
    "slab_cswin_s",
]


def _golden(file: str) -> dict:
    blob = torch.load(GOLDEN / file, weights_only=True)
    p = blob["packed_state_dict"]
    state, offset = {}, 0
    for key, shape in zip(p["float_keys"], p["float_shapes"]):
        n = int(torch.Size(shape).numel())
        state[key] = p["float_data"][offset : offset + n].reshape(shape).clone()
        offset += n
    for i, (key, shape) in enumerate(zip(p["int_keys"], p["int_shapes"])):
        state[key] = p["int_data"][i].reshape(shape).clone()
    blob["state_dict"] = state
    blob["x"] = torch.nn.functional.interpolate(blob["small_input"], size=(blob["size"],) * 2, mode="nearest")
    return blob


def _model(blob: dict, **extra) -> torch.nn.Module:
    model = timm.create_model(blob["model"], drop_path_rate=0.0, **dict(blob["kwargs"], **extra))
    model.load_state_dict(slab.checkpoint_filter_fn({"model": blob["state_dict"]}, model), strict=True)
    return model.eval()


def test_names_registered_by_linzoo_and_not_timm():
    for name in NAMES:
        assert timm.models._registry._model_to_module[name] == "slab"
        assert timm.models._registry.model_entrypoint(name).__module__ == "linzoo.vision.slab"
        cfg = timm.models.get_pretrained_cfg(name)
        assert "unknown" in cfg.license


@pytest.mark.parametrize("file", GOLDEN_FILES)
def test_matches_official_eval_and_training_forward(file):
    blob = _golden(file)
    model = _model(blob)
    with torch.no_grad():
        torch.testing.assert_close(model(blob["x"]), blob["eval_logits"], rtol=1e-4, atol=1e-5)
        model.train()  # LinearNorm at mid-schedule: λ·LN + (1 − λ)·RepBN with batch statistics, counters step
        torch.testing.assert_close(model(blob["x"]), blob["train_logits"], rtol=1e-4, atol=1e-5)
    iters = {k: int(v) for k, v in model.state_dict().items() if k.endswith(".iter")}
    assert iters == blob["iter_after_train"]


@pytest.mark.parametrize("file", GOLDEN_FILES)
def test_reparameterize_keeps_eval_outputs(file):
    blob = _golden(file)
    model = _model(blob)
    via_timm = reparameterize_model(model)  # a converted deep copy
    with torch.no_grad():
        ref = model(blob["x"])
        model.reparameterize()
        model.reparameterize()  # idempotent
        torch.testing.assert_close(model(blob["x"]), ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(via_timm(blob["x"]), ref, rtol=1e-4, atol=1e-5)
    for m in (model, via_timm):
        assert not any(isinstance(mod, (RepBN, LinearNorm)) for mod in m.modules())
    # only final norms without a following linear layer stay as a per-channel affine
    assert sum(isinstance(mod, ChannelAffine) for mod in model.modules()) <= 1


def test_patch_embed_fold_keeps_the_alpha_times_conv_bias_term():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 4, 4)
    norm = RepBN(8).eval()
    with torch.no_grad():
        norm.alpha.fill_(1.7)
        norm.bn.running_mean.normal_()
        norm.bn.running_var.uniform_(0.5, 2.0)
        norm.bn.weight.normal_()
        norm.bn.bias.normal_()
        conv.bias.normal_()
        x = torch.randn(2, 3, 16, 16)
        ref = norm(conv(x).flatten(2).transpose(1, 2))
        fold_affine_after_conv(conv, *norm.affine())
        torch.testing.assert_close(conv(x).flatten(2).transpose(1, 2), ref, rtol=1e-5, atol=1e-5)


def test_linear_norm_schedule_counts_forwards_then_follows_the_trainer():
    torch.manual_seed(0)
    norm = LinearNorm(8, step=10, warm=2).train()
    x = torch.randn(4, 5, 8)
    with torch.no_grad():
        ln, bn = norm.norm1, norm.norm2
        torch.testing.assert_close(norm(x), ln(x))  # warm-up: LayerNorm only, counts down `warm`
        norm(x)
        assert int(norm.warm) == 0 and int(norm.iter) == 10
        out = norm(x)  # λ = 1 at the first mixed step, then iter counts down
        torch.testing.assert_close(out, ln(x))
        assert int(norm.iter) == 9

        norm.set_step(5)  # global step 5 = 2 warm-up steps + 3 mixed steps
        assert int(norm.warm) == 0 and int(norm.iter) == 7
        out = norm(x)
        torch.testing.assert_close(out, 0.7 * ln(x) + 0.3 * bn(x))
        assert int(norm.iter) == 7  # driven by the trainer: forwards (and recomputations) do not move it
        norm.set_step(1000)
        assert int(norm.iter) == 0
        torch.testing.assert_close(norm(x), bn(x))
        norm.set_step(1)
        assert int(norm.warm) == 1
        norm.eval()
        torch.testing.assert_close(norm(x), bn(x))  # eval: RepBN only, whatever the counters say
    with pytest.raises(ValueError, match="step"):
        norm.set_step(-1)


def test_linear_norm_training_forward_never_reads_its_counters_on_the_host():
    """The warm-up branch follows a host mirror of ``warm`` and ``iter`` counts down on the device: no
    ``bool(tensor)`` (a GPU sync per layer in eager training, a graph break under torch.compile)."""
    norm = LinearNorm(8, step=10, warm=0).train()
    x = torch.randn(4, 5, 8)
    compiled = torch.compile(norm, backend="eager", fullgraph=True)  # raises on a graph break
    with torch.no_grad():
        for _ in range(3):
            compiled(x)
    assert int(norm.iter) == 7
    resumed = LinearNorm(8, step=10, warm=3)
    resumed.load_state_dict(LinearNorm(8, step=10, warm=1).state_dict())  # mid-warm-up checkpoint
    with torch.no_grad():
        torch.testing.assert_close(resumed.train()(x), resumed.norm1(x))  # the last warm-up step
        assert int(resumed.warm) == 0 and int(resumed.iter) == 10
        resumed(x)
        assert int(resumed.iter) == 9  # mixing started: the mirror followed the loaded buffer


def test_set_prepbn_step_on_the_model_survives_a_checkpoint_round_trip():
    blob = _golden("slab_deit_sla.pt")
    model = _model(blob)
    assert model.set_prepbn_step(30) == 2 * 2 + 1  # two norms per block + the final norm
    state = model.state_dict()
    assert {int(v) for k, v in state.items() if k.endswith(".iter")} == {70}
    resumed = _model(dict(blob, state_dict=state))
    assert {int(v) for k, v in resumed.state_dict().items() if k.endswith(".iter")} == {70}


def test_official_training_checkpoint_with_yacs_config_and_dropped_buffers(tmp_path, monkeypatch):
    blob = _golden("slab_swin_prepbn.pt")
    model = _model(blob)
    # An official training checkpoint pickles a yacs CfgNode; a stand-in module makes torch.save write that global.
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")
    cfg_node = type("CfgNode", (dict,), {"__module__": "yacs.config"})
    config.CfgNode = cfg_node
    monkeypatch.setitem(sys.modules, "yacs", yacs)
    monkeypatch.setitem(sys.modules, "yacs.config", config)
    dropped = ("attn_mask", "relative_position_index", "num_batches_tracked")
    state = {k: v for k, v in model.state_dict().items() if not k.endswith(dropped)}
    path = tmp_path / "swin_tiny_prepbn.pth"
    torch.save({"model": state, "config": cfg_node(MODEL=cfg_node(TYPE="SwinTransformer")), "epoch": 299}, path)
    monkeypatch.delitem(sys.modules, "yacs.config")
    fresh = timm.create_model(blob["model"], **blob["kwargs"]).eval()
    fresh.load_pretrained(str(path))
    with torch.no_grad():
        torch.testing.assert_close(fresh(blob["x"]), model(blob["x"]))


@pytest.mark.parametrize("file", GOLDEN_FILES)
def test_any_input_size_and_features(file):
    blob = _golden(file)
    model = _model(blob)
    size = blob["size"]
    x = torch.randn(1, 3, size + 32, size - 24)
    with torch.no_grad():
        assert model(x).shape == (1, 10)
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, model.forward_features(x))
    feats = timm.create_model(blob["model"], features_only=True, **blob["kwargs"]).eval()
    with torch.no_grad():
        out = feats(x)
    assert [f.shape[1] for f in out] == feats.feature_info.channels()
    for f, r in zip(out, feats.feature_info.reduction()):
        assert abs(f.shape[-2] - x.shape[-2] / r) < 1 and abs(f.shape[-1] - x.shape[-1] / r) < 1


def test_filter_resizes_positional_encodings_for_another_img_size():
    blob = _golden("slab_deit_sla.pt")
    model = timm.create_model(blob["model"], **dict(blob["kwargs"], img_size=72)).eval()  # 18×18 grid
    model.load_state_dict(slab.checkpoint_filter_fn(blob["state_dict"], model), strict=True)
    assert model.pos_embed.shape == (1, 18 * 18, 16)
    assert model.blocks[0].attn.positional_encoding.shape == (1, 18 * 18, 16)
    reference = _model(blob)
    with torch.no_grad():  # at 72 px both resize the 14×14 encodings bicubically to the 18×18 grid
        x = torch.randn(1, 3, 72, 72)
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)


def test_grad_checkpointing_with_trainer_driven_schedule_gives_the_same_gradients():
    blob = _golden("slab_pvt_sla.pt")
    grads = []
    for ckpt in (False, True):
        model = _model(blob).train()
        model.set_prepbn_step(10)
        model.set_grad_checkpointing(ckpt)
        model(blob["x"]).square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        assert {int(v) for k, v in model.state_dict().items() if k.endswith(".iter")} == {90}
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6)


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="attn_kinds"):
        timm.create_model("slab_pvt_t", attn_kinds="LLX")
    with pytest.raises(ValueError, match="global_pool"):
        timm.create_model("slab_deit_t", global_pool="token")
    with pytest.raises(ValueError, match="norm"):
        timm.create_model("slab_swin_t", norm="layer")
    with pytest.raises(TypeError):
        timm.create_model("slab_cswin_t", not_an_argument=1)
    model = copy.deepcopy(_model(_golden("slab_cswin_sla.pt")))
    with pytest.raises(ValueError, match="channels"):
        model(torch.randn(1, 4, 64, 64))


def test_repbn_matches_the_transposed_batchnorm_formula():
    """RepBN = BN1d over the transposed (B, C, N) view + α·x (the official form): same output, gradients and
    running statistics in training; one affine pass in eval, cached between grad-free calls."""
    torch.manual_seed(0)
    ours = RepBN(6).double()
    ref_bn = torch.nn.BatchNorm1d(6).double()
    with torch.no_grad():
        ours.alpha.fill_(0.7)
        ours.bn.weight.normal_()
        ours.bn.bias.normal_()
    ref_bn.load_state_dict(ours.bn.state_dict())

    def official(x: torch.Tensor) -> torch.Tensor:
        xt = x.transpose(1, 2)
        return (ref_bn(xt) + ours.alpha * xt).transpose(1, 2)

    x = torch.randn(3, 10, 6, dtype=torch.float64, requires_grad=True)
    out, expected = ours(x), official(x)
    torch.testing.assert_close(out, expected)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    (g_ref,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(g, g_ref)
    torch.testing.assert_close(ours.bn.running_mean, ref_bn.running_mean)
    torch.testing.assert_close(ours.bn.running_var, ref_bn.running_var)

    ours.eval(), ref_bn.eval()
    torch.testing.assert_close(ours(x), official(x))  # grad enabled: affine computed on the fly
    with torch.no_grad():
        first = ours(x)
        torch.testing.assert_close(first, official(x))
        ours.bn.running_var.mul_(2.0)  # the cache follows in-place updates
        ref_bn.running_var.mul_(2.0)
        torch.testing.assert_close(ours(x), official(x))
