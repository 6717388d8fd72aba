"""torch.compile sees every family's model as one graph, in training and in eval (issue 12: no graph breaks).

``torch._dynamo.explain`` traces without compiling kernels (CPU, no Inductor), so this runs in CI; the GPU
benchmark compiles the same models for real (``benchmarks/models.py --compile``).
"""

from __future__ import annotations

import pytest
import timm
import torch

import linzoo.vision  # noqa: F401  (registers the models)

SMALLEST = [
    "ravlt_t",
    "inline_deit_t",
    "inline_cswin_t",
    "soft_norm_tiny",
    "l2vit_t",
    "vig_t",
    "van_b0",
    "slab_deit_t",
    "slab_swin_t",
    "tiny_moat_0",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALLEST)
@pytest.mark.parametrize("training", [False, True])
def test_whole_model_traces_without_graph_breaks(name, training):
    torch.manual_seed(0)
    model = timm.create_model(name).train(training)
    explanation = torch._dynamo.explain(model)(torch.randn(2, 3, 224, 224))
    reasons = [str(r.reason).splitlines()[0][:200] for r in explanation.break_reasons]
    assert explanation.graph_break_count == 0, f"{name}: {reasons}"
