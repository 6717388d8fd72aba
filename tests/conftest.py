"""Shared pytest fixtures and markers for linzoo's tests."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _import_installed_namesakes() -> None:
    """Import installed packages named like the repository's top-level folders before the folders can shadow them.

    The folders install as ``linzoo.<name>``, but ``python -m pytest`` and pytest's rootdir insertion put the
    repository root on ``sys.path``, where ``kernels/`` would be found for ``import kernels`` — Hugging Face's
    ``kernels`` package, which transformers >= 5.2x imports (``from kernels import CUDAProperties``) whenever
    diffusers loads it. Importing the installed one first, with the root off the path, puts it in
    ``sys.modules``; a name with no installed package is skipped.
    """
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and Path(p).resolve() != ROOT]
    try:
        for name in ("kernels", "vision", "diffusion", "train", "weights", "configs"):
            if name not in sys.modules and importlib.util.find_spec(name) is not None:
                importlib.import_module(name)
    finally:
        sys.path[:] = saved


FIXTURES = Path(__file__).resolve().parent / "fixtures"
REFERENCE_KEYS = FIXTURES / "reference_keys"
GOLDEN = FIXTURES / "golden"
BENCHMARKS = ROOT / "benchmarks"

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels run in Triton's interpreter. It must be chosen before anything imports
    # Triton; `backend="auto"` still picks the PyTorch reference on the CPU, the kernel tests ask for "triton".
    os.environ.setdefault("TRITON_INTERPRET", "1")

_import_installed_namesakes()  # after TRITON_INTERPRET: the installed packages may import Triton

if os.environ.get("PYTEST_XDIST_WORKER"):
    # one intra-op thread per xdist worker: `pytest -n 2` on two cores would otherwise run four threads
    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Skip ``gpu`` tests where CUDA is absent."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_logreport(report):
    """With LINZOO_PRINT_FAILURES=1 (the GPU runner), print each failure as it happens: a time-boxed run that
    is killed before pytest's summary still shows which test failed and why."""
    if report.failed and os.environ.get("LINZOO_PRINT_FAILURES") == "1":
        print(f"\nFAILED {report.nodeid} ({report.when})\n{report.longreprtext[-2500:]}\n", flush=True)


def load_manifest(name: str) -> dict | None:
    """The official state-dict manifest of ``name`` (tests/fixtures/reference_keys/<name>.json), if any."""
    path = REFERENCE_KEYS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


@pytest.fixture
def manifest():
    return load_manifest


def load_benchmark(script: str) -> ModuleType:
    """A fresh module of ``benchmarks/<script>`` (the scripts are not a package), under its own name."""
    spec = importlib.util.spec_from_file_location(f"linzoo_bench_{Path(script).stem}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module
