"""hardware_profiles.isolated: TorchScript timings in a child process (torch never frees
what it keeps of a traced network: 13 MB per cpu-ts timing of fmnist-ofa-cnn)."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

import hardware_profiles.isolated as isolated
from hardware_profiles import HardwareProfile, measure_latency

ProfileFactory = Callable[..., HardwareProfile]


class Failing(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise ValueError("my forward is broken")


@pytest.fixture(autouse=True)
def fresh_children() -> Iterator[None]:
    isolated.close_children()
    yield
    isolated.close_children()


def _ts(fast_profile: ProfileFactory) -> HardwareProfile:
    return fast_profile("cpu-1t", runtime="torchscript")


def test_torchscript_is_traced_and_timed_in_a_child_not_here(
    fast_profile: ProfileFactory,
    tiny_net: nn.Module,
    example_input: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_tracing_here(*args: object, **kwargs: object) -> None:
        raise AssertionError("traced in the parent: its JIT registry keeps every network")

    monkeypatch.setattr(torch.jit, "trace", no_tracing_here)
    first = measure_latency(tiny_net, example_input, _ts(fast_profile))
    second = measure_latency(tiny_net, example_input, _ts(fast_profile))
    assert first.median_ms > 0 and second.runtime == "torchscript"
    [child] = isolated._CHILDREN.values()
    assert child.timings == 2 and child.process.pid != os.getpid()  # one child, reused


def test_a_worn_or_dead_child_is_replaced(
    fast_profile: ProfileFactory,
    tiny_net: nn.Module,
    example_input: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(isolated, "RECYCLE_AFTER", 2)
    pids = []
    for _ in range(3):
        measure_latency(tiny_net, example_input, _ts(fast_profile))
        pids.append(isolated._CHILDREN["cpu"].process.pid)
    assert pids[0] == pids[1] != pids[2]  # replaced after two timings
    os.kill(pids[2], signal.SIGKILL)
    isolated._CHILDREN["cpu"].process.wait()
    measure_latency(tiny_net, example_input, _ts(fast_profile))
    assert isolated._CHILDREN["cpu"].process.pid != pids[2]


def test_a_child_killed_during_a_timing_is_an_error_then_replaced(
    fast_profile: ProfileFactory, tiny_net: nn.Module, example_input: torch.Tensor
) -> None:
    measure_latency(tiny_net, example_input, _ts(fast_profile))
    child = isolated._CHILDREN["cpu"]
    os.kill(child.process.pid, signal.SIGKILL)
    with pytest.raises(
        RuntimeError, match=r"the timing process \(pid \d+\) ended during the timing"
    ):
        child.run(tiny_net, example_input, _ts(fast_profile))
    assert measure_latency(tiny_net, example_input, _ts(fast_profile)).median_ms > 0


def test_an_error_in_the_child_is_raised_here_as_it_was(
    fast_profile: ProfileFactory, example_input: torch.Tensor
) -> None:
    with pytest.raises(ValueError, match="my forward is broken"):
        measure_latency(Failing(), example_input, _ts(fast_profile))


def test_a_network_that_cannot_be_sent_is_timed_here_with_a_warning(
    fast_profile: ProfileFactory,
    tiny_net: nn.Module,
    example_input: torch.Tensor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Local(nn.Module):  # defined in a function: pickle cannot name its class
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)

    with caplog.at_level(logging.WARNING, logger="hardware_profiles.isolated"):
        assert measure_latency(Local(), example_input, _ts(fast_profile)).median_ms > 0
    assert "cannot be sent to a timing process" in caplog.text
    assert not isolated._CHILDREN
