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
cannot be pickled is timed in this process instead, with a warning. The caller holds the
device's lock meanwhile (``device_lock``), so nothing else in this process runs on that
device during the timing.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

#: A child is replaced after it grew by this much since its first timing, or ...
RECYCLE_GROWTH_MB = 512.0
#: ... after this many timings, whichever comes first.
RECYCLE_AFTER = 200

Measure = Callable[..., Any]
#: The child's program: this process's module search path (its ``sys.path``, not the
#: working directory's packages ``-m`` would put first), then ``timing_child``.
_CHILD = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from hardware_profiles.timing_child import main; main(sys.argv[2])"
)


class TimingChild:
    """A child process that answers ``measure(*args)`` requests, ``measure`` named by its
    ``module:function`` path (imported there)."""

    def __init__(self, measure: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(sys.path), measure],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self._to = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self._from = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.timings = 0
        self.first_rss_mb: float | None = None
        self.rss_mb = 0.0

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, *args: Any) -> Any:
        try:
            self._to.send_bytes(pickle.dumps(args))
            ok, answer, rss_mb = pickle.loads(self._from.recv_bytes())
        except (EOFError, BrokenPipeError):  # it died (killed, or crashed in torch)
            raise RuntimeError(
                f"the timing process (pid {self.process.pid}) ended during the timing, "
                f"exit code {self.process.wait(5)}"
            ) from None
        self.timings += 1
        self.rss_mb = rss_mb
        self.first_rss_mb = rss_mb if self.first_rss_mb is None else self.first_rss_mb
        if not ok:
            raise answer
        return answer

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
            self.process.kill()
            self.process.wait()


_CHILDREN: dict[str, TimingChild] = {}
_GUARD = threading.Lock()


def run_isolated(measure: Measure, key: str, *args: Any) -> Any:
    """``measure(*args)`` in the child process kept under ``key`` (a device: started on
    first use, replaced when worn or dead), or here when ``args`` cannot be pickled."""
    try:
        pickle.dumps(args)
    except Exception as exc:  # a class defined in a function, a lambda attribute, ...
        log.warning(
            "the network cannot be sent to a timing process (%s: %s): timed in this one, "
            "whose memory grows by what torch keeps of each network it traces",
            type(exc).__name__, exc,
        )  # fmt: skip
        return measure(*args)
    with _GUARD:
        child = _CHILDREN.get(key)
        if child is None or child.worn or not child.alive:
            if child is not None:
                child.close()
            _CHILDREN[key] = child = TimingChild(f"{measure.__module__}:{measure.__qualname__}")
    return child.run(*args)


def close_children() -> None:
    """End every timing child (tests; an exiting process's children end at end of input)."""
    with _GUARD:
        for child in _CHILDREN.values():
            child.close()
        _CHILDREN.clear()


def serve(measure: Measure, requests: Connection, answers: Connection) -> None:
    """The child's loop: one request, one answer (the result or the error, and its RSS)."""
    while True:
        try:
            request = requests.recv_bytes()
        except EOFError:  # the parent closed its end, or exited
            return
        try:
            answer: tuple[bool, Any] = (True, measure(*pickle.loads(request)))
        except Exception as exc:
            answer = (False, exc)
        try:
            payload = pickle.dumps((*answer, _rss_mb()))
        except Exception:  # an error that does not pickle: its text
            said = RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}")
            payload = pickle.dumps((False, said, _rss_mb()))
        answers.send_bytes(payload)


def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
