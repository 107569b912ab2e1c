"""Latency timings in a child process, for runtimes whose preparation leaks in torch.

``torch.jit.trace`` / ``freeze`` register every traced module's types, and the graphs that
hold its frozen weights, in torch's process-wide JIT registry, which nothing frees (13 MB a
timing of an ``fmnist-ofa-cnn`` sub-network, ``benchmarks/cpu_ts_memory.py``): a worker
timing on ``cpu-ts`` grew without bound (soak probe, session 20; torch's own, reproduced
without hwnas). Clearing that registry
while a traced module lives crashes the process. So such timings run in one long-lived
child process per device, running ``hardware_profiles.timing_child`` (not a fork of a
threaded server, which could deadlock, nor multiprocessing's spawn, which runs the
caller's main script again), replaced once it has grown by ``RECYCLE_GROWTH_MB`` or timed
``RECYCLE_AFTER`` networks: the leak lives and dies with it.

The module, input and profile go to the child by pickle (the module's class must be
importable there, as a plugin's is: the child gets this process's ``sys.path``); one that
cannot be pickled is timed in this process instead, with a warning. The child imports a
plugin's modules afresh: where one changed on disk since this process loaded it
(``core.loaded_code``), it refuses the request (a ``Conflict``) rather than time or
export the new code's network under the old code's fingerprint. The caller holds the
device's lock meanwhile (``device_lock``), so nothing else in this process runs on that
device during the timing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from core import loaded_code
from core.errors import Conflict

log = logging.getLogger(__name__)

#: A child is replaced after it grew by this much since its first timing, or ...
RECYCLE_GROWTH_MB = 512.0
#: ... after this many timings, whichever comes first.
RECYCLE_AFTER = 200

Measure = Callable[..., Any]
#: The child's program: its standard output kept for the answers and pointed at its standard
#: error before anything is imported (a print at import would corrupt the answers); then
#: this process's module search path (its ``sys.path``, not the working directory's packages
#: ``-m`` would put first), and ``timing_child``.
_CHILD = (
    "import os, sys; answers = os.dup(1); os.dup2(2, 1); "
    "import json; sys.path[:] = json.loads(sys.argv[1]); "
    "from hardware_profiles.timing_child import main; main(sys.argv[2], answers)"
)
#: How long a timing may take, preparation included, before its child is killed.
TIMEOUT_S = 600.0
#: The exception attribute holding the frames an error had in the child (for the job's
#: ``error``: ``workers.runner``'s traceback shows a plugin's line from them).
CHILD_FRAMES = "hwnas_child_frames"


class ChildDied(RuntimeError):
    """The child ended before it answered (killed, e.g. by the kernel's OOM killer, of
    which a timing child, a cpu-ts worker's largest process, is the likeliest pick; or
    crashed in torch). ``killed``: by a signal (worth another try), not an exit of its own
    (it could not start: it would not again)."""

    def __init__(self, message: str, *, killed: bool) -> None:
        super().__init__(message)
        self.killed = killed


class Unloadable(Exception):
    """The child could not unpickle a request (its class is in ``__main__``, or in a module
    the child cannot import): the caller times it in this process instead."""


class TimingChild:
    """A child process that answers ``measure(*args)`` requests, ``measure`` named by its
    ``module:function`` path (imported there). In its own session: a Ctrl+C or a service
    manager's SIGTERM to the worker's process group does not end it mid-timing (it ends at
    the end of its input, when this process closes it or exits)."""

    def __init__(self, measure: str, task: str = "timing") -> None:
        self.task = task  # what it does, for messages: "timing", "export"
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(sys.path), measure],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._to = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self._from = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.timings = 0
        self.first_rss_mb: float | None = None
        self.rss_mb = 0.0
        self.broken = False

    @property
    def alive(self) -> bool:
        return not self.broken and self.process.poll() is None

    def run(self, request: bytes, timeout_s: float = TIMEOUT_S) -> Any:
        """The answer to the pickled ``request``. Anything that leaves the request unanswered
        here (its death, a timeout, an interruption, an answer that does not unpickle) ends
        the child: a later request must never read this one's answer."""
        try:
            self._to.send_bytes(request)
            if not self._from.poll(timeout_s):
                raise TimeoutError(f"no answer from the {self.task} process in {timeout_s:g} s")
            status, answer, rss_mb = pickle.loads(self._from.recv_bytes())
        except (EOFError, BrokenPipeError):  # it died (killed, or crashed in torch)
            self._end()
            raise ChildDied(
                f"the {self.task} process (pid {self.process.pid}) ended during the "
                f"{self.task}, exit code {self.process.returncode}",
                killed=self.process.returncode < 0,
            ) from None
        except BaseException:
            self._end()
            raise
        self.timings += 1
        self.rss_mb = rss_mb
        self.first_rss_mb = rss_mb if self.first_rss_mb is None else self.first_rss_mb
        if status == "ok":
            return answer
        if status == "unloadable":
            raise Unloadable(answer)
        raise answer

    @property
    def worn(self) -> bool:
        grown = self.rss_mb - (self.rss_mb if self.first_rss_mb is None else self.first_rss_mb)
        return self.timings >= RECYCLE_AFTER or grown > RECYCLE_GROWTH_MB

    def close(self) -> None:
        self._to.close()  # its loop ends at end of input
        self._from.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self._end()

    def _end(self) -> None:
        self.broken = True
        self.process.kill()
        self.process.wait()


_CHILDREN: dict[str, TimingChild] = {}
_GUARD = threading.Lock()


def run_isolated(measure: Measure, key: str, *args: Any) -> Any:
    """``measure(*args)`` in the child process kept under ``key`` (a device: started on
    first use, replaced when worn or dead), or here, with a warning, when ``args`` cannot
    be sent to it (pickled here and unpickled there). A child killed during the call (by a
    signal: the OOM killer's SIGKILL) is replaced and the call made again, once
    (:func:`_again_after`)."""
    request = _request(args)
    if isinstance(request, Unloadable):
        return _here(measure, args, str(request))
    for attempt in (1, 2):
        with _GUARD:
            child = _CHILDREN.get(key)
            if child is None or child.worn or not child.alive:
                if child is not None:
                    child.close()
                _CHILDREN[key] = child = TimingChild(_path(measure))
        try:
            return child.run(request)
        except Unloadable as exc:
            return _here(measure, args, str(exc))
        except ChildDied as exc:
            _again_after(exc, attempt)
    raise AssertionError("unreachable")  # pragma: no cover


def run_once(function: Measure, *args: Any, task: str = "export") -> Any:
    """``function(*args)`` in a child process of its own, which ends after it: for a rare
    call (a TorchScript export), where a lasting child would hold a torch import's memory
    (about 250 MB) between calls; each call pays the start instead (about 3 s), and holds
    that memory while it runs. Here, with a warning, when ``args`` cannot be sent to it.
    A child killed during the call is replaced once, as in :func:`run_isolated`; ``task``
    names the call in messages."""
    request = _request(args)
    if isinstance(request, Unloadable):
        return _here(function, args, str(request))
    for attempt in (1, 2):
        child = TimingChild(_path(function), task)
        try:
            return child.run(request)
        except Unloadable as exc:
            return _here(function, args, str(exc))
        except ChildDied as exc:
            _again_after(exc, attempt)
        finally:
            child.close()
    raise AssertionError("unreachable")  # pragma: no cover


def _again_after(died: ChildDied, attempt: int) -> None:
    """Returns when the call is worth making again in a new child: this one was killed (by
    a signal), on the first attempt. One that exited by itself (it could not start: a broken
    environment) would again; a second death is the call's own doing."""
    if not died.killed:
        raise died
    if attempt == 2:
        raise ChildDied(f"{died}, twice in a row", killed=True) from None
    log.warning("%s: running it again in a new one", died)


def _request(args: tuple[Any, ...]) -> bytes | Unloadable:
    """``args`` pickled, with the source digests of the plugin modules this process loaded
    (``core.loaded_code``): the child checks that it loaded the same."""
    try:
        return pickle.dumps((loaded_code.as_loaded(), args), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # a class defined in a function, a lambda attribute, ...
        return Unloadable(f"{type(exc).__name__}: {exc}")


def _path(function: Measure) -> str:
    return f"{function.__module__}:{function.__qualname__}"


def _here(function: Measure, args: tuple[Any, ...], why: str) -> Any:
    log.warning(
        "the network cannot be sent to a child process (%s): %s runs in this one, whose "
        "memory grows by what torch keeps of each network it traces", why, _path(function),
    )  # fmt: skip
    return function(*args)


def close_children() -> None:
    """End every timing child (for tests: a timing in flight in another thread fails; an
    exiting process's children end at the end of their input)."""
    with _GUARD:
        for child in _CHILDREN.values():
            child.close()
        _CHILDREN.clear()


def _forget_children() -> None:
    """In a forked child: its parent's timing children are not its to talk to."""
    _CHILDREN.clear()


os.register_at_fork(after_in_child=_forget_children)


def serve(measure: Measure, requests: Connection, answers: Connection) -> None:
    """The child's loop: one request, one answer: ("ok", result), ("error", the exception,
    its frames here in ``CHILD_FRAMES``) or ("unloadable", why), and its RSS."""
    while True:
        try:
            request = requests.recv_bytes()
        except EOFError:  # the parent closed its end, or exited
            return
        answer: tuple[str, Any]
        try:
            expected, args = pickle.loads(request)
        except Exception as exc:
            answer = ("unloadable", f"{type(exc).__name__}: {exc}")
        else:
            answer = _answer(measure, expected, args)
        try:
            answers.send_bytes(_payload(answer))
        except OSError:  # the parent is gone (killed): nobody to answer
            return


def _answer(measure: Measure, expected: dict[str, str], args: tuple[Any, ...]) -> tuple[str, Any]:
    """("ok", ``measure(*args)``), or ("error", what it raised, its frames here in
    ``CHILD_FRAMES``); a ``Conflict`` where a plugin module this child loaded is not the
    code the parent loaded (``expected``: edited on disk since)."""
    try:
        if edited := loaded_code.changed(expected):
            raise Conflict(
                f"{', '.join(edited)} changed on disk since the service loaded it: a child "
                "process, which loads it afresh, would run the new code, not the code the "
                "service measures with; restart the service (and its workers) to load it, and "
                "submit the job again (docs/plugins.md)"
            )
        return ("ok", measure(*args))
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        with contextlib.suppress(AttributeError, TypeError):  # one without a __dict__
            setattr(exc, CHILD_FRAMES, [(f.filename, f.lineno, f.name, f.line) for f in frames])
        return ("error", exc)


def _payload(answer: tuple[str, Any]) -> bytes:
    """``answer`` and this process's RSS, pickled; an error that does not come back out of
    pickle whole (one whose class takes other arguments) as a RuntimeError with its text."""
    status, value = answer
    if status == "error":
        try:
            payload = pickle.dumps((status, value, rss_mb()), protocol=pickle.HIGHEST_PROTOCOL)
            pickle.loads(payload)
            return payload
        except Exception:
            said = RuntimeError(f"{type(value).__name__}: {value}")
            setattr(said, CHILD_FRAMES, getattr(value, CHILD_FRAMES, []))
            value = said
    return pickle.dumps((status, value, rss_mb()), protocol=pickle.HIGHEST_PROTOCOL)


def rss_mb() -> float:
    """This process's resident memory in MB (0 where /proc cannot tell)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
