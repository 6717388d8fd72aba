"""Backend selection shared by every op: argument, then ``LINZOO_KERNEL_BACKEND``, then auto."""

from __future__ import annotations

import os

import torch

__all__ = ["BACKENDS", "ENV_VAR", "cdiv", "next_pow2", "resolve_backend", "triton_available"]

BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "LINZOO_KERNEL_BACKEND"


def cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ for host-side launch arithmetic (``triton.cdiv`` is a constexpr function: ~4 µs per call)."""
    return -(-a // b)


def next_pow2(x: int) -> int:
    """The smallest power of two ≥ x (x ≥ 1), like ``triton.next_power_of_2`` without its call overhead."""
    return 1 << (x - 1).bit_length()


def _probe_triton() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # Triton absent or broken: the torch backend still works.
        return False
    return True


_TRITON_AVAILABLE = _probe_triton()


def triton_available() -> bool:
    """True when Triton imports (it ships with Linux CUDA builds of torch)."""
    return _TRITON_AVAILABLE


def _interpret_mode() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def resolve_backend(backend: str, device: torch.device, *, triton_supported: bool = True) -> str:
    """Return ``"triton"`` or ``"torch"`` for a call on ``device``.

    ``backend="auto"`` defers to the env var ``LINZOO_KERNEL_BACKEND`` and otherwise picks Triton on CUDA
    and the reference elsewhere. An explicit ``"triton"`` runs on the CPU only under ``TRITON_INTERPRET=1``
    (how CI tests the kernels) and otherwise raises instead of silently falling back.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        env = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        if env not in BACKENDS:
            raise ValueError(f"{ENV_VAR} must be one of {BACKENDS}, got {env!r}")
        backend = env
    if backend == "auto":
        usable = triton_supported and triton_available() and device.type == "cuda"
        return "triton" if usable else "torch"
    if backend == "triton":
        if not triton_supported:
            raise RuntimeError("backend='triton' requested but this op has no Triton kernel for these arguments")
        if not triton_available():
            raise RuntimeError("backend='triton' requested but Triton is not installed")
        if device.type != "cuda" and not _interpret_mode():
            raise RuntimeError(
                f"backend='triton' needs CUDA tensors (got {device.type}); set TRITON_INTERPRET=1 to run on the CPU"
            )
    return backend
