"""Measuring a PyTorch model's latency on a hardware profile.

``prepare`` turns (model, example input, profile) into a zero-argument call that runs one
inference the way the profile's runtime deploys it; ``measure_latency`` times that call with
``protocol.measure`` under the profile's thread count, one measurement per device at a time.
Runtimes are looked up in ``RUNTIME_BUILDERS``; a new runtime is one more entry there.
"""

from __future__ import annotations

import copy
import os
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch

from core.errors import InvalidInput
from core.tracing import TRACING

from .isolated import run_isolated
from .protocol import LatencyStats, measure
from .registry import is_available
from .schema import HardwareProfile

InferenceCall = Callable[[], None]
RuntimeBuilder = Callable[[torch.nn.Module, torch.Tensor, HardwareProfile], InferenceCall]

ONNX_OPSET = 17
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Untimed forward passes before a CUDA graph is captured (cuDNN/cuBLAS pick their kernels and
# allocate workspaces here, which must not happen during capture).
_CAPTURE_WARMUP = 3


@dataclass(frozen=True)
class LatencyMeasurement(LatencyStats):
    """A measured latency and the conditions that produced it (its provenance)."""

    profile_id: str
    runtime: str
    torch_device: str
    threads: int | None
    batch_size: int
    dtype: str
    provenance: Literal["measured"] = "measured"


def prepare(
    model: torch.nn.Module, example_input: torch.Tensor, profile: HardwareProfile
) -> InferenceCall:
    """A zero-argument call running one inference of ``model`` as ``profile`` deploys it.

    The model is copied (the caller's module keeps its device, dtype and mode), put in eval
    mode, moved to the profile's device and dtype; the input gets the profile's batch size and
    is placed on the device here, so a timed call moves no input data.
    """
    builder = RUNTIME_BUILDERS.get(profile.runtime or "")
    if builder is None:
        raise InvalidInput(
            f"hardware profile {profile.id!r} is {profile.kind} with no runtime to measure",
            field="device",
        )
    module, inputs = _placed(model, example_input, profile)
    # TRACING: the TorchScript and ONNX Runtime builders trace, as exports do (core.tracing).
    with TRACING, _known_deprecations():
        return builder(module, inputs, profile)


def measure_latency(
    model: torch.nn.Module, example_input: torch.Tensor, profile: HardwareProfile
) -> LatencyMeasurement:
    """Measure ``model`` on ``profile`` following ``profile.protocol``.

    Thread-safe. Measurements on one device (``profile.torch_device``: all CPU profiles share
    'cpu') never overlap within this process: concurrent runs would compete for the same cores
    or SMs and inflate each other's numbers, and ``torch.set_num_threads`` is process state
    that a concurrent measurement would change under our feet. Separate worker processes on
    one host are not coordinated; run one measuring worker per device.
    """
    if not is_available(profile):
        raise InvalidInput(
            f"hardware profile {profile.id!r} cannot be measured on this machine", field="device"
        )
    with device_lock(profile.torch_device):
        if profile.runtime in ISOLATED_RUNTIMES:
            measurement: LatencyMeasurement = run_isolated(
                _measure_here, profile.torch_device, model, example_input, profile
            )
            return measurement
        return _measure_here(model, example_input, profile)


#: Runtimes timed in a child process (``hardware_profiles.isolated``): preparing a network
#: for them leaks in torch (TorchScript's tracing and freezing: its JIT type registry).
ISOLATED_RUNTIMES = frozenset({"torchscript"})


def _measure_here(
    model: torch.nn.Module, example_input: torch.Tensor, profile: HardwareProfile
) -> LatencyMeasurement:
    """``measure_latency`` in this process, its caller holding the device's lock."""
    threads = resolved_threads(profile)
    with _torch_threads(threads):
        call = prepare(model, example_input, profile)
        stats = measure(call, profile.protocol, sync=_device_sync(profile))
    return LatencyMeasurement(
        **asdict(stats),
        profile_id=profile.id,
        runtime=str(profile.runtime),
        torch_device=profile.torch_device,
        threads=threads,
        batch_size=profile.batch_size,
        dtype=profile.dtype,
    )


def resolved_threads(profile: HardwareProfile) -> int | None:
    """CPU threads a measurement on ``profile`` uses; None where the host CPU is not timed."""
    if profile.kind != "cpu":
        return None
    return profile.threads or usable_cpus()


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a pinned container), else all."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def device_lock(torch_device: str) -> threading.Lock:
    """The process-wide lock that serialises measurements on ``torch_device``."""
    key = "cuda:0" if torch_device == "cuda" else torch_device
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


def _placed(
    model: torch.nn.Module, example_input: torch.Tensor, profile: HardwareProfile
) -> tuple[torch.nn.Module, torch.Tensor]:
    if example_input.dim() == 0:
        raise InvalidInput("example_input: needs a leading batch dimension", field="example_input")
    device = torch.device(profile.torch_device)
    dtype = _TORCH_DTYPES[profile.dtype]
    module = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
    inputs = _with_batch(example_input.detach(), profile.batch_size).to(device)
    return module, inputs.to(dtype) if inputs.is_floating_point() else inputs


def _with_batch(inputs: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``inputs`` with its leading (batch) dimension set to ``batch_size``."""
    if inputs.shape[0] == batch_size:
        return inputs
    # contiguous: a stride-0 expanded batch would select different (cheaper) kernels.
    return inputs[:1].expand(batch_size, *inputs.shape[1:]).contiguous()


def _torch_eager(
    module: torch.nn.Module, inputs: torch.Tensor, _: HardwareProfile
) -> InferenceCall:
    def run() -> None:
        with torch.inference_mode():
            module(inputs)

    return run


def _torchscript(
    module: torch.nn.Module, inputs: torch.Tensor, _: HardwareProfile
) -> InferenceCall:
    with torch.no_grad():
        traced = torch.jit.trace(module, inputs)
        scripted = torch.jit.optimize_for_inference(torch.jit.freeze(traced))

    def run() -> None:
        with torch.inference_mode():
            scripted(inputs)

    # The profiling executor re-optimises the graph during the first calls; do them here so
    # even a protocol without warm-up times the optimised graph.
    run()
    run()
    return run


def _onnxruntime(
    module: torch.nn.Module, inputs: torch.Tensor, profile: HardwareProfile
) -> InferenceCall:
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="hwnas-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(
            module, (inputs,), str(path), dynamo=False, opset_version=ONNX_OPSET,
            input_names=["input"],
        )  # fmt: skip
        session = ort.InferenceSession(
            str(path), _ort_options(profile), providers=[_ort_provider(profile)]
        )
    # IO binding: the input lives on the device once; a timed call copies no numpy arrays in.
    device_type, device_id = _ort_device(profile)
    binding = session.io_binding()
    feed = ort.OrtValue.ortvalue_from_numpy(inputs.cpu().numpy(), device_type, device_id)
    binding.bind_ortvalue_input(session.get_inputs()[0].name, feed)
    for output in session.get_outputs():
        binding.bind_output(output.name, device_type, device_id)

    def run() -> None:
        session.run_with_iobinding(binding)

    return run


def _ort_options(profile: HardwareProfile) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = resolved_threads(profile) or usable_cpus()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return options


def _ort_provider(profile: HardwareProfile) -> str:
    return "CUDAExecutionProvider" if profile.kind == "cuda" else "CPUExecutionProvider"


def _ort_device(profile: HardwareProfile) -> tuple[str, int]:
    if profile.kind == "cuda":
        return "cuda", torch.device(profile.torch_device).index or 0
    return "cpu", 0


@dataclass(frozen=True)
class _GraphReplay:
    graph: torch.cuda.CUDAGraph
    buffers: tuple[object, ...]  # the graph reads and writes these: keep them alive

    def __call__(self) -> None:
        self.graph.replay()


def _cuda_graph(
    module: torch.nn.Module, inputs: torch.Tensor, profile: HardwareProfile
) -> InferenceCall:
    static_input = inputs.clone()
    side = torch.cuda.Stream(device=inputs.device)
    side.wait_stream(torch.cuda.current_stream(inputs.device))
    with torch.cuda.stream(side), torch.inference_mode():
        for _warmup in range(_CAPTURE_WARMUP):
            module(static_input)
    torch.cuda.current_stream(inputs.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_output = module(static_input)
    torch.cuda.synchronize(inputs.device)
    return _GraphReplay(graph, (static_input, static_output))


RUNTIME_BUILDERS: dict[str, RuntimeBuilder] = {
    "torch_eager": _torch_eager,
    "torchscript": _torchscript,
    "onnxruntime": _onnxruntime,
    "cuda_graph": _cuda_graph,
}


def _device_sync(profile: HardwareProfile) -> Callable[[], None] | None:
    if profile.kind != "cuda":
        return None
    return partial(torch.cuda.synchronize, torch.device(profile.torch_device))


@contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """``torch.set_num_threads(count)`` for the block, then the previous value again."""
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _known_deprecations() -> Iterator[None]:
    # TorchScript and the TorchScript-based ONNX exporter warn that they are deprecated; the
    # profile names them on purpose, so the warning says nothing to the user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield
