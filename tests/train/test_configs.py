"""Every Lightning config under configs/ parses with the ``linzoo`` CLI (``--print_config``: nothing is trained)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from linzoo.train.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ALL = sorted(p for p in CONFIGS.rglob("*.yaml"))
# overlays meant to be combined with a full config (`-c base.yaml -c overlay.yaml`)
OVERLAYS = {"classification/fsdp_example.yaml": "classification/ravlt_l_imagenet.yaml"}


def _skip_reason(config: dict) -> str | None:
    model = config.get("model")
    if not isinstance(model, dict) or "class_path" not in model:
        return "not a LightningCLI config (no model.class_path)"
    module = model["class_path"].rpartition(".")[0]
    try:
        importlib.import_module(module)
    except ImportError as err:
        return f"{module} cannot be imported yet ({err})"
    name = (model.get("init_args") or {}).get("model_name")
    if name:
        import timm

        import linzoo.vision  # noqa: F401

        if not timm.is_model(name):
            return f"model {name!r} is not registered yet"
    return None


@pytest.mark.parametrize("path", ALL, ids=[str(p.relative_to(CONFIGS)) for p in ALL])
def test_config_parses(path: Path, capsys: pytest.CaptureFixture) -> None:
    rel = str(path.relative_to(CONFIGS))
    files = [CONFIGS / OVERLAYS[rel], path] if rel in OVERLAYS else [path]
    merged: dict = {}
    for f in files:
        for key, value in (yaml.safe_load(f.read_text()) or {}).items():
            merged[key] = {**merged.get(key, {}), **value} if isinstance(value, dict) else value
    reason = _skip_reason(merged)
    if reason:
        pytest.skip(reason)
    args = ["fit"] + [a for f in files for a in ("-c", str(f))] + ["--print_config"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"] == merged["model"]["class_path"]
    name = (merged["model"].get("init_args") or {}).get("model_name")
    if name:
        assert printed["model"]["init_args"]["model_name"] == name
    assert "checkpoint" in printed and "curves" in printed
