"""ClassificationModule(compile=...): torch.compile in place, checkpoints unchanged, clear errors."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from linzoo.train.classification import ClassificationModule, compile_options


def test_compile_options_forms_and_errors():
    assert compile_options(None) is None and compile_options(False) is None
    assert compile_options(True) == {}
    assert compile_options("reduce-overhead") == {"mode": "reduce-overhead"}
    assert compile_options({"backend": "eager", "dynamic": False}) == {"backend": "eager", "dynamic": False}
    with pytest.raises(ValueError, match="compile must be"):
        compile_options("fast")
    with pytest.raises(ValueError, match="compile must be"):
        compile_options(3)


def test_compiled_module_trains_and_keeps_its_checkpoint_keys(tmp_path):
    torch.manual_seed(0)
    kwargs = dict(model_name="van_b0", num_classes=3, warmup_epochs=0, scheduler="none", label_smoothing=0.0)
    eager = ClassificationModule(**kwargs)
    compiled = ClassificationModule(**kwargs, compile={"backend": "eager"})  # Dynamo tracing, no Inductor on CI
    assert compiled.model._compiled_call_impl is not None and eager.model._compiled_call_impl is None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no "_orig_mod." prefix
    compiled.load_state_dict(eager.state_dict())
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 3, (8,))
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    trainer = pl.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        limit_val_batches=1, default_root_dir=tmp_path,
    )  # fmt: skip
    before = {k: v.clone() for k, v in compiled.model.state_dict().items()}
    trainer.fit(compiled, loader, loader)
    after = compiled.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    eager.load_state_dict(compiled.state_dict())  # the trained weights, read back by the eager module
    with torch.no_grad():
        torch.testing.assert_close(compiled.eval()(x), eager.eval()(x))
