"""The classification module drives SLAB's PRepBN schedule from Lightning's global step."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from linzoo.train.classification import ClassificationModule
from linzoo.vision.layers.prepbn import LinearNorm


def test_prepbn_schedule_follows_global_step(monkeypatch):
    module = ClassificationModule(model_name="slab_deit_t", num_classes=3, model_kwargs={"img_size": 32})
    norms = [m for m in module.model.modules() if isinstance(m, LinearNorm)]
    assert norms
    fake_trainer = SimpleNamespace(global_step=1234, current_epoch=0, global_rank=0)
    monkeypatch.setattr(ClassificationModule, "trainer", property(lambda self: fake_trainer), raising=False)
    monkeypatch.setattr(ClassificationModule, "global_step", property(lambda self: 1234), raising=False)
    module.on_train_batch_start((torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long)), 0)
    for norm in norms:
        assert norm.externally_driven
        expected_warm = max(norm.warm_steps - 1234, 0)
        expected_iter = max(int(norm.total_step) - max(1234 - norm.warm_steps, 0), 0)
        assert int(norm.warm) == expected_warm and int(norm.iter) == expected_iter
