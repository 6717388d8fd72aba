"""Low-overhead launches of ``@triton.jit`` kernels: Triton's binding done once per specialization.

``kernel[grid](*args, **meta)`` goes through ``JITFunction.run`` on every call: it binds and specialises each
argument, builds a cache key from them and the options, and computes launch metadata for the profiler hooks.
For the 30–45 argument kernels of this package that costs ~32 µs of host time per launch on the H100 machine
(``benchmarks/host_overhead.py``: 31.8 µs vs 12.5 µs through the compiled kernel's own launcher), and at
224-px backbone shapes the fused ops are host-bound: a RALA forward is 4 launches (~250–350 µs of host for
~130–230 µs of GPU work), so the kernels' host cost, not their GPU time, decided the model-level throughput.

:func:`launch` keeps, per kernel, a dict from a cheap key of the call to the ``CompiledKernel`` Triton returned
for the first call with that key, and launches later calls through ``CompiledKernel.run`` directly. The key is
at least as fine as Triton's own specialization (so a cached binary is only reused where Triton would reuse
it): the values of the keyword meta-parameters (constexprs, ``num_warps``, ``num_stages``); for each
positional tensor its dtype and whether its address is 16-byte aligned; each int itself (finer than Triton's
"is it 1, divisible by 16, within int32": a new size or stride costs one more trip through Triton's path, while
a key of those three tests cost ~0.2 µs per argument, ~8 µs per launch on a fast host and ~25 µs on the H100
machine's); the type of every other argument; and the current device. Everything else goes
through Triton's normal path: the first call of a key (compilation), the interpreter (``TRITON_INTERPRET=1``),
launch hooks installed by a profiler (e.g. proton), and ``LINZOO_FAST_LAUNCH=0``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["launch", "resident_per_sm"]

_ENABLED = os.environ.get("LINZOO_FAST_LAUNCH", "1") != "0"
# Triton reads TRITON_INTERPRET when it is imported (as do the kernel modules): read it once, not per launch.
_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# id(fn) -> (fn, {key: (compiled kernel, values of the parameters after the positional ones)}); keyed by id
# because a JITFunction's own __hash__ computes its cache key, and holding fn keeps that id from being reused.
_CACHE: dict[int, tuple[Any, dict[tuple, tuple[Any, tuple]]]] = {}


# (id(fn), launch meta items) -> thread blocks of that compiled kernel one SM holds at once (see resident_per_sm)
_RESIDENT: dict[tuple, int] = {}


def resident_per_sm(fn: Any, **meta: Any) -> int | None:
    """Thread blocks of ``fn`` compiled with ``meta`` that fit on one SM at once (registers, shared memory,
    threads), known once :func:`launch` has compiled that specialization on this process's GPU; else None.

    A grid of more blocks than the GPU holds runs in waves, and a last partial wave costs about as long as a full
    one: the linear-attention passes size their chunks with it (``LINZOO_LA_WAVES``)."""
    return _RESIDENT.get((id(fn), tuple(meta.items())))


def _record_residency(fn: Any, meta: dict, compiled: Any, device: int) -> None:
    try:
        regs, shared, warps = compiled.n_regs, compiled.metadata.shared, compiled.metadata.num_warps
        props = torch.cuda.get_device_properties(device)
    except (AttributeError, RuntimeError):  # another backend or an older Triton: no residency
        return
    regs_per_warp = -(-max(regs, 1) * props.warp_size // 256) * 256  # allocated per warp in units of 256
    by_regs = props.regs_per_multiprocessor // (regs_per_warp * warps)
    by_smem = props.shared_memory_per_multiprocessor // (shared + 1024) if shared else 32  # 1 KB reserved per block
    by_threads = props.max_threads_per_multi_processor // (props.warp_size * warps)
    _RESIDENT[(id(fn), tuple(meta.items()))] = max(1, min(by_regs, by_smem, by_threads, 32))


def _interpret() -> bool:
    return _INTERPRET


try:
    from triton import knobs as _knobs
except ImportError:  # Triton absent, or < 3.3 (no knobs): launches always take Triton's own path
    _knobs = None


def _hooks_idle() -> bool:
    """True when no Triton launch hook is installed (a profiler's hooks need Triton's own launch path)."""
    if _knobs is None:
        return False
    for hook in (_knobs.runtime.launch_enter_hook, _knobs.runtime.launch_exit_hook):
        if hook is not None and getattr(hook, "calls", True):  # HookChain: idle when it holds no calls
            return False
    return True


def _arg_key(arg: Any) -> Any:
    """Key of a positional argument that is not a plain ``int`` (those are their own key, inline in launch)."""
    if isinstance(arg, torch.Tensor):  # nn.Parameter and other subclasses too
        return (arg.dtype, arg.data_ptr() % 16 == 0)
    if isinstance(arg, int) and not isinstance(arg, bool):  # int subclasses (e.g. IntEnum): by value, as ints
        return int(arg)
    return type(arg)


def _tail(fn: Any, num_positional: int, meta: dict) -> tuple:
    """Values of the parameters after the positional arguments, in signature order (constexprs included:
    ``CompiledKernel.run`` takes every parameter and its launcher skips the compile-time ones)."""
    values = []
    for param in fn.params[num_positional:]:
        if param.name in meta:
            values.append(meta[param.name])
        elif param.has_default:
            values.append(param.default)
        else:
            raise TypeError(f"{fn.__name__}: missing argument {param.name!r}")
    return tuple(values)


def launch(fn: Any, grid: tuple[int, ...], *args: Any, **meta: Any) -> None:
    """``fn[grid](*args, **meta)`` with the host work of Triton's launch path done once per specialization.

    ``args`` are the kernel's leading runtime parameters, positionally; ``meta`` the rest by name (constexprs)
    plus launch options (``num_warps``, ``num_stages``). ``grid`` is a tuple of 1–3 ints.
    """
    if _interpret():
        fn[grid](*args, **meta)
        return
    device = torch.cuda.current_device()
    first = args[0] if args and isinstance(args[0], torch.Tensor) else None  # every kernel's first argument
    if first is None:
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
    if first is not None and first.is_cuda and first.device.index != device:
        # Triton launches on the current device and stream: run on the tensors' own GPU (and its stream)
        with torch.cuda.device(first.device):
            launch(fn, grid, *args, **meta)
        return
    if not _ENABLED:
        fn[grid](*args, **meta)
        return
    key = (device, *[a if type(a) is int else _arg_key(a) for a in args], *meta.items())
    cached = _CACHE.get(id(fn))
    if cached is None:
        cached = _CACHE[id(fn)] = (fn, {})
    per_fn = cached[1]
    entry = per_fn.get(key)
    if entry is None or not _hooks_idle():
        compiled = fn[grid](*args, **meta)  # Triton's own path: compiles on a miss, calls the hooks
        if entry is None and compiled is not None:
            if len(per_fn) > 256:  # many distinct specializations: start over rather than grow without bound
                per_fn.clear()
            per_fn[key] = (compiled, _tail(fn, len(args), meta))
            _record_residency(fn, meta, compiled, device)
        return
    compiled, tail = entry
    grid_x, grid_y, grid_z = (*grid, 1, 1)[:3]
    stream = torch._C._cuda_getCurrentRawStream(device)
    compiled.run(
        grid_x, grid_y, grid_z, stream, compiled.function, compiled.packed_metadata, None, None, None, *args, *tail
    )
