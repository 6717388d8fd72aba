"""kernels/_launch.py: the cached launch path binds once per specialization and falls back where it must.

The direct ``CompiledKernel.run`` launch needs a GPU (covered by every ``-m gpu`` kernel test, which run through
it); here a stand-in kernel records what each path receives.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from linzoo.kernels import _launch


class _Param:
    def __init__(self, p: inspect.Parameter) -> None:
        self.name = p.name
        self.default = p.default
        self.has_default = p.default is not inspect.Parameter.empty


class _Compiled:
    function = "fn-handle"
    packed_metadata = "meta"

    def __init__(self, log: list) -> None:
        self.log = log

    def run(self, *args):
        self.log.append(("fast", args))


class _FakeKernel:
    """``kernel[grid](*args, **meta)`` like a JITFunction: records the call and returns a compiled kernel."""

    __name__ = "fake_kernel"

    def __init__(self) -> None:
        def signature(x, n, stride, scale, BLOCK, FLAG=False):
            """The stand-in kernel's parameters, in order (its body is never run)."""

        self.params = [_Param(p) for p in inspect.signature(signature).parameters.values()]
        self.log: list = []

    def __getitem__(self, grid):
        def run(*args, **meta):
            self.log.append(("jit", grid, args, meta))
            return _Compiled(self.log)

        return run


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(_launch, "_ENABLED", True)
    monkeypatch.setattr(_launch, "_interpret", lambda: False)
    monkeypatch.setattr(_launch, "_hooks_idle", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: 1234, raising=False)
    _launch._CACHE.clear()
    yield
    _launch._CACHE.clear()


def test_first_call_compiles_then_direct_launch_with_every_parameter(fast):
    kernel = _FakeKernel()
    x = torch.zeros(8)
    _launch.launch(kernel, (3, 2), x, 100, 32, 0.5, BLOCK=16, num_warps=4)
    _launch.launch(kernel, (5,), x, 100, 32, 0.25, BLOCK=16, num_warps=4)
    assert [entry[0] for entry in kernel.log] == ["jit", "fast"]
    assert kernel.log[0][1:] == ((3, 2), (x, 100, 32, 0.5), {"BLOCK": 16, "num_warps": 4})
    # grid padded to 3 dims, current stream, handle, metadata, no launch metadata or hooks, then every parameter
    # in signature order: the positional ones, the constexpr BLOCK and the defaulted FLAG
    assert kernel.log[1][1] == (5, 1, 1, 1234, "fn-handle", "meta", None, None, None, x, 100, 32, 0.25, 16, False)


@pytest.mark.parametrize(
    "change",
    [
        dict(n=1),  # Triton specialises ints equal to 1
        dict(n=96),  # ... and divisibility by 16 (100 is not divisible, 96 is)
        dict(n=2**31),  # ... and int64 ranges
        dict(x=torch.zeros(8, dtype=torch.float16)),  # tensor dtype
        dict(x=torch.zeros(9)[1:]),  # 4-byte offset: no longer 16-byte aligned
        dict(block=32),  # constexpr value
        dict(warps=8),  # launch option
    ],
)
def test_each_specialization_change_goes_back_to_triton(fast, change):
    kernel = _FakeKernel()
    base = dict(x=torch.zeros(8), n=100, block=16, warps=4)

    def call(x, n, block, warps):
        _launch.launch(kernel, (1,), x, n, 32, 0.5, BLOCK=block, num_warps=warps)

    call(**base)
    call(**base)
    call(**{**base, **change})
    assert [entry[0] for entry in kernel.log] == ["jit", "fast", "jit"]


def test_parameters_are_keyed_like_tensors_and_ints_by_value(fast):
    """nn.Parameter (a Tensor subclass) is keyed by dtype and alignment, not by its type alone; an int is its own
    key, so a new size goes through Triton once and then launches directly."""
    kernel = _FakeKernel()

    def call(x, n):
        _launch.launch(kernel, (1,), x, n, 32, 0.5, BLOCK=16)

    w32, w16 = torch.nn.Parameter(torch.zeros(8)), torch.nn.Parameter(torch.zeros(8, dtype=torch.float16))
    call(w32, 100)
    call(w16, 100)
    call(w16, 101)
    call(w16, 101)
    assert [entry[0] for entry in kernel.log] == ["jit", "jit", "jit", "fast"]


def test_interpreter_and_switch_off_use_triton_every_time(fast, monkeypatch):
    kernel = _FakeKernel()
    x = torch.zeros(8)
    monkeypatch.setattr(_launch, "_interpret", lambda: True)
    for _ in range(2):
        _launch.launch(kernel, (1,), x, 100, 32, 0.5, BLOCK=16)
    monkeypatch.setattr(_launch, "_interpret", lambda: False)
    monkeypatch.setattr(_launch, "_ENABLED", False)
    for _ in range(2):
        _launch.launch(kernel, (1,), x, 100, 32, 0.5, BLOCK=16)
    assert [entry[0] for entry in kernel.log] == ["jit"] * 4


def test_installed_launch_hooks_keep_tritons_path(fast, monkeypatch):
    kernel = _FakeKernel()
    x = torch.zeros(8)
    _launch.launch(kernel, (1,), x, 100, 32, 0.5, BLOCK=16)
    monkeypatch.setattr(_launch, "_hooks_idle", lambda: False)
    _launch.launch(kernel, (1,), x, 100, 32, 0.5, BLOCK=16)
    assert [entry[0] for entry in kernel.log] == ["jit", "jit"]


def test_missing_parameter_is_named(fast):
    kernel = _FakeKernel()
    with pytest.raises(TypeError, match="missing argument 'BLOCK'"):
        _launch.launch(kernel, (1,), torch.zeros(8), 100, 32, 0.5)


def test_hooks_idle_reads_tritons_hook_chains():
    pytest.importorskip("triton")
    from triton import knobs

    assert _launch._hooks_idle() is True

    def hook(metadata):
        return None

    knobs.runtime.launch_enter_hook.add(hook)
    try:
        assert _launch._hooks_idle() is False
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)


@pytest.mark.parametrize(
    "regs,shared,warps,expected",
    [
        (80, 24576, 4, 6),  # the d = 64 state pass under Triton 3.6: registers bound it
        (255, 40960, 4, 2),  # the (q, dO) pass: 255 registers round up to 8192 per warp
        (64, 12288, 4, 8),  # the out pass
        (32, 0, 4, 16),  # small kernels: threads bound it (2048 per SM)
        (40, 200000, 4, 1),  # shared memory bound it
    ],
)
def test_residency_from_registers_shared_memory_and_threads(monkeypatch, regs, shared, warps, expected):
    """H100 limits: 65,536 registers (allocated per warp in units of 256), 228 KB shared memory (+1 KB per
    block), 2,048 threads per SM."""
    from types import SimpleNamespace

    props = SimpleNamespace(
        regs_per_multiprocessor=65536, shared_memory_per_multiprocessor=233472, max_threads_per_multi_processor=2048,
        warp_size=32,
    )  # fmt: skip
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: props)
    compiled = SimpleNamespace(n_regs=regs, metadata=SimpleNamespace(shared=shared, num_warps=warps))

    kernel = object()  # stands in for a JITFunction: only its identity keys the table
    meta = {"BLOCK_N": 32, "num_warps": warps}
    assert _launch.resident_per_sm(kernel, **meta) is None
    _launch._record_residency(kernel, meta, compiled, 0)
    assert _launch.resident_per_sm(kernel, **meta) == expected
    assert _launch.resident_per_sm(kernel, BLOCK_N=64, num_warps=warps) is None
    _launch._RESIDENT.clear()


class _OnSecondGPU(torch.Tensor):
    """A CPU tensor that reports living on ``cuda:1`` (the launch path reads only its device)."""

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", 1)


def test_tensors_on_another_gpu_launch_on_that_gpu(fast, monkeypatch):
    """Triton launches on the current device and stream: inputs on cuda:1 while cuda:0 is current must switch."""
    current = [0]
    switched: list = []

    class _Device:
        def __init__(self, device) -> None:
            self.index = torch.device(device).index

        def __enter__(self) -> None:
            switched.append(self.index)
            current.append(self.index)

        def __exit__(self, *exc) -> None:
            current.pop()

    monkeypatch.setattr(torch.cuda, "current_device", lambda: current[-1])
    monkeypatch.setattr(torch.cuda, "device", _Device)
    streams: list = []
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda device: streams.append(device) or 99)
    kernel = _FakeKernel()
    x = torch.zeros(8).as_subclass(_OnSecondGPU)
    for _ in range(2):
        _launch.launch(kernel, (1,), x, 100, 32, 0.5, BLOCK=16)
    assert switched == [1, 1] and current == [0]
    assert [entry[0] for entry in kernel.log] == ["jit", "fast"] and streams == [1]  # cuda:1's stream
    _launch.launch(kernel, (1,), torch.zeros(8), 100, 32, 0.5, BLOCK=16)  # a current-device tensor: no switch
    assert switched == [1, 1]
