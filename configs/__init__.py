"""YAML configs shipped with linzoo (``linzoo fit -c configs/...`` or by package path)."""

from pathlib import Path

CONFIG_ROOT = Path(__file__).resolve().parent


def config_path(relative: str) -> Path:
    """Absolute path of a shipped config, e.g. ``config_path("demo/digits_ravlt_t.yaml")``."""
    path = CONFIG_ROOT / relative
    if not path.is_file():
        available = sorted(str(p.relative_to(CONFIG_ROOT)) for p in CONFIG_ROOT.rglob("*.yaml"))
        raise FileNotFoundError(f"no shipped config {relative!r}; available: {available}")
    return path
