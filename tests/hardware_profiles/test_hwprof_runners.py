"""Runtimes and measure_latency on real (tiny) models. No assertion on absolute timings."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import get_args

import pytest
import torch
from torch import nn

import hardware_profiles.runners as runners
from core.errors import InvalidInput
from core.tracing import TRACING
from hardware_profiles import (
    RUNTIME_BUILDERS,
    HardwareProfile,
    LatencyStats,
    device_lock,
    get_profile,
    is_available,
    measure_latency,
    prepare,
)
from hardware_profiles.schema import Runtime

ProfileFactory = Callable[..., HardwareProfile]
CPU_RUNTIMES = ["torch_eager", "torchscript", "onnxruntime"]
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


class Probe(nn.Module):
    """Records what each forward call saw: thread count, input shape and dtype."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.fail = fail
        self.seen: list[tuple[int, tuple[int, ...], torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.get_num_threads(), tuple(x.shape), x.dtype))
        if self.fail:
            raise RuntimeError("forward failed")
        return self.linear(x)


def assert_sane(stats: LatencyStats) -> None:
    values = [stats.median_ms, stats.p10_ms, stats.p90_ms, stats.mean_ms, stats.iqr_ms]
    assert all(math.isfinite(value) for value in values)
    assert stats.median_ms > 0 and stats.iqr_ms >= 0 and stats.repeats >= 3
    assert stats.p10_ms <= stats.median_ms <= stats.p90_ms


@pytest.mark.parametrize("runtime", CPU_RUNTIMES)
def test_each_cpu_runtime_measures_a_conv_net(
    runtime: str, fast_profile: ProfileFactory, tiny_net: nn.Module, example_input: torch.Tensor
) -> None:
    profile = fast_profile("cpu-1t", runtime=runtime)
    result = measure_latency(tiny_net, example_input, profile)
    assert_sane(result)
    assert (result.profile_id, result.runtime, result.provenance) == (
        profile.id, runtime, "measured",
    )  # fmt: skip
    assert (result.threads, result.batch_size, result.torch_device) == (1, 1, "cpu")
    assert asdict(result)["stopped_by"] in {"precision", "time_cap", "max_repeats"}


def test_every_runtime_has_a_builder() -> None:
    assert set(RUNTIME_BUILDERS) == set(get_args(Runtime))


def test_threads_are_restored_after(fast_profile: ProfileFactory) -> None:
    before = torch.get_num_threads()
    result = measure_latency(nn.Linear(4, 2), torch.randn(1, 4), fast_profile("cpu-all", threads=3))
    assert result.threads == 3
    assert torch.get_num_threads() == before


def test_threads_seen_by_the_model_are_the_profiles(fast_profile: ProfileFactory) -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    profile = fast_profile("cpu-all", threads=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runners, "measure", lambda call, protocol, sync: _record(seen, call))
        with pytest.raises(_Recorded):
            measure_latency(nn.Linear(4, 2), torch.randn(1, 4), profile)
    assert seen == [3]
    assert torch.get_num_threads() == before


class _Recorded(Exception):
    pass


def _record(seen: list[int], call: Callable[[], None]) -> None:
    call()
    seen.append(torch.get_num_threads())
    raise _Recorded  # also checks that threads are restored when measuring fails


def test_threads_restored_when_the_model_fails(fast_profile: ProfileFactory) -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="forward failed"):
        measure_latency(Probe(fail=True), torch.randn(1, 4), fast_profile("cpu-all", threads=3))
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("given", "wanted"), [(1, 3), (5, 3), (3, 3), (2, 1)])
def test_batch_dimension_becomes_the_profiles(
    given: int, wanted: int, fast_profile: ProfileFactory
) -> None:
    module, inputs = runners._placed(
        Probe(), torch.randn(given, 4), fast_profile(batch_size=wanted)
    )
    assert tuple(inputs.shape) == (wanted, 4) and inputs.is_contiguous()
    module(inputs)
    assert isinstance(module, Probe) and module.seen[-1][1] == (wanted, 4)


def test_dtype_applies_to_a_copy_of_the_model(fast_profile: ProfileFactory) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).train()
    result = measure_latency(model, torch.randn(1, 4), fast_profile(dtype="bfloat16"))
    assert_sane(result)
    assert result.dtype == "bfloat16"
    assert model.training and next(model.parameters()).dtype == torch.float32


def test_measurements_on_one_device_never_overlap(fast_profile: ProfileFactory) -> None:
    active, most = [0], [0]
    guard = threading.Lock()

    def fake_measure(call: Callable[[], None], protocol: object, sync: object) -> LatencyStats:
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        with guard:
            active[0] -= 1
        return LatencyStats(1.0, 0.0, 1.0, 1.0, 1.0, 3, 1, 0.0, "precision")

    profiles = [fast_profile("cpu-1t"), fast_profile("cpu-all"), fast_profile("cpu-1t")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runners, "measure", fake_measure)
        workers = [
            threading.Thread(target=measure_latency, args=(nn.Linear(4, 2), torch.randn(1, 4), p))
            for p in profiles
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert most[0] == 1


@pytest.mark.parametrize("runtime", ["torchscript", "onnxruntime"])
def test_a_runner_that_traces_waits_for_an_export_tracing_meanwhile(
    runtime: str, fast_profile: ProfileFactory, tiny_net: nn.Module, example_input: torch.Tensor
) -> None:
    """torch's tracer is process state: a download traced beside the cpu-ts runner in the
    embedded server and failed both job and download ("Graphs differed across invocations")."""
    profile = fast_profile("cpu-1t", runtime=runtime)
    done = threading.Event()
    runner = threading.Thread(
        target=lambda: (prepare(tiny_net, example_input, profile), done.set())
    )
    with TRACING:  # as models.export holds it while it traces
        runner.start()
        assert not done.wait(1.0)
    runner.join(60)
    assert done.is_set()


def test_device_locks_are_per_device() -> None:
    assert device_lock("cuda") is device_lock("cuda:0")
    assert device_lock("cpu") is not device_lock("cuda:0")
    assert device_lock("cuda:1") is not device_lock("cuda:0")


def test_recorded_profile_cannot_be_prepared() -> None:
    recorded = HardwareProfile.model_validate(
        {"id": "phone", "name": "Phone", "kind": "recorded", "source": "t.csv",
         "recorded_column": "ms"}
    )  # fmt: skip
    with pytest.raises(InvalidInput, match="no runtime"):
        prepare(nn.Linear(4, 2), torch.randn(1, 4), recorded)
    with pytest.raises(InvalidInput, match="cannot be measured"):
        measure_latency(nn.Linear(4, 2), torch.randn(1, 4), recorded)


def test_scalar_input_is_rejected(fast_profile: ProfileFactory) -> None:
    with pytest.raises(InvalidInput, match="batch dimension"):
        prepare(nn.Identity(), torch.tensor(1.0), fast_profile())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only machine")
def test_cuda_profile_is_unavailable_without_cuda(tiny_net: nn.Module) -> None:
    with pytest.raises(InvalidInput, match="cuda-0"):
        measure_latency(tiny_net, torch.randn(1, 1, 28, 28), get_profile("cuda-0"))


@needs_cuda
@pytest.mark.parametrize("runtime", ["cuda_graph", "torch_eager", "torchscript"])
def test_cuda_runtimes_measure_a_conv_net(
    runtime: str, fast_profile: ProfileFactory, tiny_net: nn.Module, example_input: torch.Tensor
) -> None:
    result = measure_latency(tiny_net, example_input, fast_profile("cuda-0", runtime=runtime))
    assert_sane(result)
    assert (result.runtime, result.threads, result.torch_device) == (runtime, None, "cuda:0")
    assert next(tiny_net.parameters()).device.type == "cpu"


@needs_cuda
def test_cuda_graph_replay_computes_the_model(
    fast_profile: ProfileFactory, tiny_net: nn.Module, example_input: torch.Tensor
) -> None:
    replay = prepare(tiny_net, example_input, fast_profile("cuda-0", batch_size=2))
    replay()
    torch.cuda.synchronize()
    static_input, static_output = replay.buffers  # type: ignore[attr-defined]
    expected = tiny_net.eval().cuda()(static_input)
    torch.testing.assert_close(static_output, expected, rtol=1e-3, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_graph_in_half_precision(
    dtype: str, fast_profile: ProfileFactory, tiny_net: nn.Module, example_input: torch.Tensor
) -> None:
    assert_sane(measure_latency(tiny_net, example_input, fast_profile("cuda-0", dtype=dtype)))


@needs_cuda
def test_onnxruntime_on_cuda(
    fast_profile: ProfileFactory, tiny_net: nn.Module, example_input: torch.Tensor
) -> None:
    profile = fast_profile("cuda-0", runtime="onnxruntime")
    if not is_available(profile):
        pytest.skip("onnxruntime has no CUDAExecutionProvider here")
    assert_sane(measure_latency(tiny_net, example_input, profile))
