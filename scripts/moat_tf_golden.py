"""Golden outputs of the official MOAT (TensorFlow, deeplab2) for ``tests/vision/test_moat.py``.

Runs in its own virtualenv, never linzoo's (TensorFlow and torch do not share one)::

    python3 -m venv /work/tfvenv && /work/tfvenv/bin/pip install tensorflow-cpu==2.15.1 pyyaml numpy
    # a deeplab2 tree with model/pixel_encoder/moat.py, model/layers/moat_{blocks,attention}.py,
    # utils/hparam_configs.py and empty __init__.py files, importable as ``deeplab2``:
    /work/tfvenv/bin/python scripts/moat_tf_golden.py --deeplab2-parent /work/scratch/moat_ref \\
        --out tests/fixtures/golden --scratch /work/scratch/moat_golden

Weights are not random draws of TF's initialisers: every variable is a seeded function of its TF name and shape
(:func:`golden_array`, repeated verbatim in the test), BatchNorm statistics included, so the test rebuilds them
without storing megabytes. Inputs are a closed-form function of the position (:func:`golden_input`). Writes

- ``<out>/moat_tf_golden.npz``: per case, the logits and the stride-16/32 stage outputs (NHWC), plus metadata;
- ``<out>/moat_mini_tf/model.ckpt.{index,data-00000-of-00001}``: a real TF-written checkpoint of a shrunk MOAT
  (official builder, ``override_config`` widths/depths/head size/table sizes, 5 classes, ~50 KB) with a few
  ``/ExponentialMovingAverage`` copies and a ``global_step``; its outputs are computed with the EMA values (what a
  converter that prefers EMA must give);
- ``<scratch>/<case>/model.ckpt.*``: full-size TF checkpoints of the golden cases (not committed; the reader
  and converter are checked on them by ``--check-with`` runs of the test, see the test's docstring).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import zlib

import numpy as np


def golden_array(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """A deterministic float32 array for TF variable ``name`` (its kind picks the distribution)."""
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    base = name.removesuffix("/ExponentialMovingAverage")
    var = base.rsplit("/", 1)[-1]
    if var == "moving_variance":
        a = rng.uniform(0.5, 1.5, shape)
    elif var == "gamma":
        a = 1.0 + 0.1 * rng.standard_normal(shape)
    elif var in ("beta", "bias", "moving_mean"):
        a = 0.1 * rng.standard_normal(shape)
    elif var == "relative_position_embedding":
        a = 0.5 * rng.standard_normal(shape)
    elif var in ("kernel", "depthwise_kernel"):
        fan_in = math.prod(shape[:2]) * (1 if var == "depthwise_kernel" else shape[2])
        a = rng.standard_normal(shape) / math.sqrt(fan_in)
    elif var == "weight":  # q/k/v [C, heads, 32] (fan-in C), o [heads, 32, C] (fan-in heads * 32)
        fan_in = shape[0] if "/o/" not in base else shape[0] * shape[1]
        a = rng.standard_normal(shape) / math.sqrt(fan_in)
    else:
        raise ValueError(f"no golden rule for {name}")
    return a.astype(np.float32)


def golden_input(batch: int, height: int, width: int) -> np.ndarray:
    """``(B, H, W, 3)`` float32: smooth, non-symmetric, different per image."""
    b, h, w, c = np.meshgrid(np.arange(batch), np.arange(height), np.arange(width), np.arange(3), indexing="ij")
    x = np.sin(0.11 * h + 0.07 * w * (c + 1) + 0.3 * c + 0.9 * b) + 0.5 * np.cos(0.013 * h * w + b)
    return x.astype(np.float32)


# case name -> (deeplab2 name, H, W, kwargs of get_model)
CASES = {
    "tiny_moat_0_64x64": ("tiny_moat0_pretrain_256_1k", 64, 64, {}),  # tables shrink 27 -> 7, 13 -> 3
    "tiny_moat_0_96x128": ("tiny_moat0_pretrain_256_1k", 96, 128, {}),  # non-square resize
    "tiny_moat_0_72x100": ("tiny_moat0_pretrain_256_1k", 72, 100, {}),  # odd maps: TF 'same' padding
    "tiny_moat_0_256x256": ("tiny_moat0_pretrain_256_1k", 256, 256, {}),  # native size: 27 -> 31, 13 -> 15
    "tiny_moat_0_224x224": ("tiny_moat0_pretrain_256_1k", 224, 224, {}),  # no resize (14 and 7 maps)
    "tiny_moat_0_no_pe_96x128": ("tiny_moat0_pretrain_256_no_pe_1k", 96, 128, {}),
    "tiny_moat_0_pool3_72x100": ("tiny_moat0_pretrain_256_1k", 72, 100, {"pool_size": 3}),
    "tiny_moat_0_win_128x128": (
        "tiny_moat0_pretrain_256_1k",
        128,
        128,
        {"window_size": [None, None, [4, 4], [2, 2]], "global_attention_at_end_of_moat_stage": True},
    ),
    "moat_0_224x224": ("moat0_pretrain_224_1k", 224, 224, {}),
}
MINI = dict(
    stem_size=[8, 8],
    hidden_size=[8, 8, 16, 16],
    num_blocks=[1, 1, 1, 1],
    expansion_rate=2,
    head_size=8,
    position_embedding_size=[None, None, 4, 2],
)
MINI_EMA = ("moat/stem/conv_0/kernel", "moat/block_02_00/attention/q/weight", "moat/block_03_00/attention/o/bias")
STAGES_OF = ("tiny_moat_0_64x64", "tiny_moat_0_72x100", "tiny_moat_0_win_128x128")  # cases that keep stage outputs
BATCH = 2


def _tf_name(var) -> str:
    name = var.name.removesuffix(":0")
    return name if name.startswith("moat/") else "moat/stem/" + name  # Keras Sequential drops the stem scope


def _run(tf, get_model, dl_name, h, w, kwargs, num_classes=1000, override=None, ema=()):
    """Build in a fresh TF1 graph, load golden weights, forward. Returns (variables {name: array}, logits, stages).

    Graph mode, not eager: deeplab2's ``Attention.build`` computes the resized, re-indexed relative bias once,
    and Keras 2 runs ``build`` under ``init_scope``, so in eager mode that bias is a constant taken from the
    *initial* table: assigning (or restoring, as deeplab2's own loader does after building) the table does not
    change the output. In a graph the same code yields an op that reads the variable, the behaviour a restored
    checkpoint needs.
    """
    from deeplab2.model.layers import moat_attention

    tf.compat.v1.reset_default_graph()
    tf.keras.backend.clear_session()
    moat_attention.LOOKUP_TENSOR_CACHE.clear()  # its constants belong to the previous graph
    kwargs = {"pool_size": 2, **kwargs}
    override = {"build_classification_head_with_class_num": num_classes, **(override or {})}
    model = get_model(dl_name, input_shape=[h, w, 3], override_config=override, **kwargs)
    x = tf.constant(golden_input(BATCH, h, w))
    logits_t = model(x, training=False)
    out = model._stem(x, training=False)
    stages_t = []
    for blocks in model._blocks:
        for block in blocks:
            out = block(out, training=False)
        stages_t.append(out)
    pooled = tf.reduce_mean(out, [1, 2], keepdims=True)
    logits2_t = tf.squeeze(model._logits_head(model._final_layer_norm(pooled)), [1, 2])
    values, assign = {}, []
    for var in model.variables:
        name = _tf_name(var)
        values[name] = golden_array(name, tuple(var.shape))
        if name in ema:
            values[name + "/ExponentialMovingAverage"] = golden_array(name + "/ExponentialMovingAverage", var.shape)
        assign.append((var, values[name + "/ExponentialMovingAverage"] if name in ema else values[name]))
    tf.keras.backend.batch_set_value(assign)
    sess = tf.compat.v1.keras.backend.get_session()
    logits, logits2, *stages = sess.run([logits_t, logits2_t, *stages_t])
    np.testing.assert_allclose(logits2, logits, rtol=1e-5, atol=1e-5)
    return values, logits, stages


def _save(tf, values: dict, prefix: str) -> None:
    """A TF1-format checkpoint with exactly these names (the SaveV2 op tf.compat.v1.train.Saver runs)."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    names = sorted(values)
    tf.compat.v1.reset_default_graph()
    tensors = [tf.constant(values[n]) for n in names]
    save = tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    with tf.compat.v1.Session() as sess:
        sess.run(save)
    reader = tf.train.load_checkpoint(prefix)
    assert set(reader.get_variable_to_shape_map()) == set(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deeplab2-parent", required=True, help="folder holding the deeplab2 package")
    parser.add_argument("--out", required=True, help="where the committed golden files go")
    parser.add_argument("--scratch", required=True, help="where full-size TF checkpoints go (not committed)")
    parser.add_argument("--reference-keys", default="/work/shared/reference_keys")
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--deeplab2-commit", default="64bc1c1a6505b6cd1779b65f9127180840b8a4fa")
    args = parser.parse_args()
    sys.path.insert(0, args.deeplab2_parent)
    import tensorflow as tf
    from deeplab2.model.pixel_encoder.moat import get_model

    tf.compat.v1.disable_eager_execution()  # see _run

    golden: dict[str, np.ndarray] = {}
    meta = {"tensorflow": tf.__version__, "deeplab2": args.deeplab2_commit, "batch": BATCH, "cases": {}}
    for case in args.cases:
        dl_name, h, w, kwargs = CASES[case]
        values, logits, stages = _run(tf, get_model, dl_name, h, w, kwargs)
        variant = case.rsplit("_", 1)[0].removesuffix("_pool3").removesuffix("_win")
        ref = os.path.join(args.reference_keys, variant + ".json")
        if os.path.isfile(ref):  # the names and shapes a real checkpoint has
            keys = json.load(open(ref))["keys"]
            assert {k: list(v.shape) for k, v in values.items()} == keys, f"{case}: names differ from {ref}"
        _save(tf, values, os.path.join(args.scratch, case, "model.ckpt"))
        golden[f"{case}/logits"] = logits
        if case in STAGES_OF:  # stride-16/32 outputs of the first image, where they are small
            golden[f"{case}/stage3"] = stages[2][:1]
            golden[f"{case}/stage4"] = stages[3][:1]
        meta["cases"][case] = {"deeplab2_name": dl_name, "input_hw": [h, w], "get_model_kwargs": kwargs}
        print(case, logits.shape, float(np.abs(logits).max()), flush=True)

    # the mini model: a committed TF-written checkpoint (EMA copies + global_step), outputs with the EMA values
    values, logits, stages = _run(tf, get_model, "tiny_moat0_pretrain_256_1k", 64, 64, {}, 5, MINI, MINI_EMA)
    values["global_step"] = np.array(1234, dtype=np.int64)
    _save(tf, values, os.path.join(args.out, "moat_mini_tf", "model.ckpt"))
    golden["mini_64x64/logits"] = logits
    golden["mini_64x64/stage4"] = stages[3]
    meta["cases"]["mini_64x64"] = {"override_config": MINI, "input_hw": [64, 64], "num_classes": 5, "ema": MINI_EMA}
    golden["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez_compressed(os.path.join(args.out, "moat_tf_golden.npz"), **golden)
    print("wrote", os.path.join(args.out, "moat_tf_golden.npz"))


if __name__ == "__main__":
    main()
