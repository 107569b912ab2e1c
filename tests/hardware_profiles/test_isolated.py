"""hardware_profiles.isolated: TorchScript timings in a child process (torch never frees
what it keeps of a traced network: 13 MB per cpu-ts timing of fmnist-ofa-cnn)."""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import hardware_profiles.isolated as isolated
from core import loaded_code
from core.errors import Conflict
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


class Sleepy(nn.Module):
    """A forward that takes a second: traced, then timed, in the child."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(1.0)
        return x


def _killing(monkeypatch: pytest.MonkeyPatch, times: int) -> list[int]:
    """The next ``times`` requests' children are killed 0.3 s into the request."""
    killed: list[int] = []
    run = isolated.TimingChild.run

    def killed_during(self: isolated.TimingChild, request: bytes, timeout_s: float = 60) -> Any:
        if len(killed) < times:
            killed.append(self.process.pid)
            threading.Timer(0.3, os.kill, (self.process.pid, signal.SIGKILL)).start()
        return run(self, request, timeout_s)

    monkeypatch.setattr(isolated.TimingChild, "run", killed_during)
    return killed


def test_a_child_killed_during_a_timing_is_replaced_and_the_timing_made_again(
    fast_profile: ProfileFactory,
    example_input: torch.Tensor,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cpu-ts worker's largest process is its timing child, the OOM killer's likeliest
    pick: one death failed the user's job for good (soak probe, session 21)."""
    killed = _killing(monkeypatch, times=1)
    with caplog.at_level(logging.WARNING, logger="hardware_profiles.isolated"):
        assert measure_latency(Sleepy(), example_input, _ts(fast_profile)).median_ms > 0
    assert f"the timing process (pid {killed[0]}) ended during the timing" in caplog.text
    assert "running it again in a new one" in caplog.text
    assert isolated._CHILDREN["cpu"].process.pid != killed[0]


def test_a_child_that_dies_twice_on_one_network_fails_the_timing(
    fast_profile: ProfileFactory,
    tiny_net: nn.Module,
    example_input: torch.Tensor,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A network that crashes torch would kill every child it is sent to."""
    killed = _killing(monkeypatch, times=2)
    with pytest.raises(
        isolated.ChildDied, match=r"ended during the timing, exit code -9, twice in a row"
    ):
        measure_latency(Sleepy(), example_input, _ts(fast_profile))
    assert len(set(killed)) == 2
    assert measure_latency(tiny_net, example_input, _ts(fast_profile)).median_ms > 0


def test_a_child_that_cannot_start_is_not_started_again(
    fast_profile: ProfileFactory,
    example_input: torch.Tensor,
    tiny_net: nn.Module,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One that exits by itself (a broken environment) would again: not retried, and its
    exit code says it was not killed (review, session 21)."""
    started: list[int] = []
    monkeypatch.setattr(isolated, "_CHILD", "import sys; sys.exit(3)")
    init = isolated.TimingChild.__init__

    def counting(self: isolated.TimingChild, measure: str) -> None:
        init(self, measure)
        started.append(self.process.pid)

    monkeypatch.setattr(isolated.TimingChild, "__init__", counting)
    with pytest.raises(isolated.ChildDied, match=r"ended during the timing, exit code 3$"):
        measure_latency(tiny_net, example_input, _ts(fast_profile))
    assert len(started) == 1


def test_a_request_left_unanswered_ends_its_child_so_no_answer_goes_astray(
    fast_profile: ProfileFactory, tiny_net: nn.Module, example_input: torch.Tensor
) -> None:
    """A child asked and never read gave its answer to the next request, and every later
    one was off by one (review, session 20): a timeout, an interruption, anything that
    leaves a request unanswered now ends the child."""
    profile = _ts(fast_profile)
    measure_latency(tiny_net, example_input, profile)
    child = isolated._CHILDREN["cpu"]
    request = isolated._request((Failing(), example_input, profile))
    slow = isolated._request((Sleepy(), example_input, profile))
    assert isinstance(request, bytes) and isinstance(slow, bytes)
    with pytest.raises(TimeoutError):
        child.run(slow, timeout_s=0.2)
    assert not child.alive
    assert measure_latency(tiny_net, example_input, profile).runtime == "torchscript"
    assert isolated._CHILDREN["cpu"] is not child
    with pytest.raises(ValueError, match="my forward is broken"):
        isolated._CHILDREN["cpu"].run(request)


def test_the_child_has_a_session_of_its_own(
    fast_profile: ProfileFactory, tiny_net: nn.Module, example_input: torch.Tensor
) -> None:
    """A Ctrl+C in the worker's terminal (or a service manager's signal to its process
    group) ended the child mid-timing, where a warm shutdown finishes the evaluation."""
    measure_latency(tiny_net, example_input, _ts(fast_profile))
    assert os.getsid(isolated._CHILDREN["cpu"].process.pid) != os.getsid(0)


def test_an_error_in_the_child_is_raised_here_with_its_frames_there(
    fast_profile: ProfileFactory, example_input: torch.Tensor
) -> None:
    """The job's error keeps a plugin's own line (workers.job_errors.short_traceback): the
    frames came back empty from the child."""
    from workers.job_errors import short_traceback

    with pytest.raises(ValueError, match="my forward is broken") as caught:
        measure_latency(Failing(), example_input, _ts(fast_profile))
    frames = getattr(caught.value, isolated.CHILD_FRAMES)
    assert any(
        name == "forward" and file.endswith("test_isolated.py") for file, _, name, _ in frames
    )
    assert 'test_isolated.py", line' in short_traceback(caught.value)


class NeedsArgs(Exception):
    def __init__(self, layer: str, why: str) -> None:
        super().__init__(f"{layer}: {why}")


class RaisesNeedsArgs(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NeedsArgs("conv3", "bad stride")


def test_an_error_that_does_not_unpickle_comes_back_as_its_text(
    fast_profile: ProfileFactory, example_input: torch.Tensor
) -> None:
    """It came back as "TypeError: __init__() missing 1 required positional argument"."""
    with pytest.raises(RuntimeError, match=r"^NeedsArgs: conv3: bad stride$"):
        measure_latency(RaisesNeedsArgs(), example_input, _ts(fast_profile))


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
    assert "cannot be sent to a child process" in caplog.text
    assert not isolated._CHILDREN


def test_a_network_the_child_cannot_load_is_timed_here_with_a_warning(
    fast_profile: ProfileFactory,
    example_input: torch.Tensor,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its class pickles here but lives in a module the child cannot import (a script's
    ``__main__``, a module made at run time): it failed with an AttributeError there."""
    made = types.ModuleType("hwnas_test_made_at_run_time")
    exec("import torch\nclass Made(torch.nn.Identity): pass\n", made.__dict__)
    monkeypatch.setitem(sys.modules, made.__name__, made)
    made.Made.__module__ = made.__name__
    with caplog.at_level(logging.WARNING, logger="hardware_profiles.isolated"):
        assert measure_latency(made.Made(), example_input, _ts(fast_profile)).median_ms > 0
    assert "cannot be sent to a child process (ModuleNotFoundError" in caplog.text
    assert isolated._CHILDREN["cpu"].alive  # the child answered, and serves on


def _pid_and(value: int) -> tuple[int, int]:
    return os.getpid(), value


def test_run_once_calls_in_a_child_that_ends_after_it() -> None:
    """For a TorchScript export: a child of its own, not one of the timing children."""
    children_before = _children_of(os.getpid())
    pid, value = isolated.run_once(_pid_and, 7)
    assert value == 7 and pid != os.getpid()
    assert not isolated._CHILDREN
    assert _children_of(os.getpid()) == children_before  # it ended


def _slow_pid_and(value: int) -> tuple[int, int]:
    time.sleep(1.0)
    return os.getpid(), value


def test_run_once_replaces_a_child_killed_during_the_call(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export's child is killed (out of memory) as a timing's is: the export answered
    500 (session 22)."""
    killed = _killing(monkeypatch, times=1)
    with caplog.at_level(logging.WARNING, logger="hardware_profiles.isolated"):
        pid, value = isolated.run_once(_slow_pid_and, 7)
    assert value == 7 and pid not in (os.getpid(), killed[0])
    assert f"the export process (pid {killed[0]}) ended during the export" in caplog.text
    assert "running it again in a new one" in caplog.text


def test_run_once_gives_up_when_the_second_child_dies_too(monkeypatch: pytest.MonkeyPatch) -> None:
    killed = _killing(monkeypatch, times=2)
    with pytest.raises(
        isolated.ChildDied, match=r"ended during the export, exit code -9, twice in a row"
    ):
        isolated.run_once(_slow_pid_and, 7)
    assert len(set(killed)) == 2


def test_run_once_with_arguments_that_cannot_be_sent_calls_here_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="hardware_profiles.isolated"):
        pid, value = isolated.run_once(_pid_and, lambda: 7)  # a lambda does not pickle
    assert pid == os.getpid() and callable(value)
    assert "cannot be sent to a child process (" in caplog.text


def _children_of(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return {int(child) for child in children.read().split()}


@pytest.fixture
def edited_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    """A plugin module, ``iso_edited``, imported and remembered as a plugin's registration
    remembers it (``core.loaded_code``); forgotten after the test."""
    (tmp_path / "iso_edited.py").write_text(
        "import torch\n\n\nclass Net(torch.nn.Module):\n"
        "    def forward(self, x):\n        return x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(loaded_code, "_AS_LOADED", {})
    module = importlib.import_module("iso_edited")
    loaded_code.remember([module])
    yield module
    sys.modules.pop("iso_edited", None)


def test_a_child_refuses_a_plugin_edited_since_the_service_loaded_it(
    edited_plugin: types.ModuleType,
    fast_profile: ProfileFactory,
    example_input: torch.Tensor,
) -> None:
    """A child imports the plugin afresh: edited while the service ran, it exported or
    timed the new code's network under the old code's fingerprint (review 29c)."""
    pid, _ = isolated.run_once(_pid_and, edited_plugin.Net())
    assert pid != os.getpid()  # the same code: sent and run there
    path = Path(edited_plugin.__file__ or "")
    path.write_text(path.read_text().replace("return x", "return x * 2"))
    with pytest.raises(Conflict, match=r"iso_edited\.py changed on disk since the service"):
        isolated.run_once(_pid_and, edited_plugin.Net())
    with pytest.raises(Conflict, match="restart the service"):  # a timing child's too
        measure_latency(edited_plugin.Net(), example_input, _ts(fast_profile))
    assert isolated._CHILDREN["cpu"].alive  # it answered, and serves on
