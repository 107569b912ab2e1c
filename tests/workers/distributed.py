"""Helpers for distributed-mode tests: real PostgreSQL, real Redis, real worker processes."""

from __future__ import annotations

import atexit
import ctypes
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
# Each command restarts one service; the Redis one waits for the old server to be gone
# before starting the new one.
RESTARTS = {
    "redis": "redis-cli -h 127.0.0.1 shutdown nosave || true; "
    "for i in $(seq 50); do redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 || break; "
    "sleep 0.2; done; bash scripts/start_services.sh",
    "postgres": "pg_ctlcluster --skip-systemctl-redirect "
    "$(ls /etc/postgresql | head -n1) main restart",
}


def require_redis() -> None:
    try:
        redis.Redis(REDIS_HOST, REDIS_PORT, socket_timeout=2).ping()
    except redis.RedisError:
        if os.environ.get("CI"):
            pytest.fail("Redis is required in CI and not reachable at 127.0.0.1:6379")
        pytest.skip("Redis not reachable (run scripts/start_services.sh)")


def restart(service: str) -> None:
    """Restart the local ``service`` ("redis" or "postgres") and wait until it is back."""
    subprocess.run(["bash", "-c", RESTARTS[service]], check=True, capture_output=True, timeout=120)


def fresh_broker_url() -> str:
    """A Redis database of its own for one test (emptied first)."""
    require_redis()
    db = random.randint(1, 15)
    redis.Redis(REDIS_HOST, REDIS_PORT, db=db).flushdb()
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def service_env(database_url: str, broker_url: str, data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HWNAS_DATABASE_URL": database_url,
        "HWNAS_BROKER_URL": broker_url,
        "HWNAS_DATA_DIR": str(data_dir),
        "HWNAS_AUTO_MIGRATE": "false",
        "HWNAS_HEARTBEAT_S": "1",
        "HWNAS_API_KEYS": "",  # its clients send no key (keys cost ~1 us a request)
        "HWNAS_STALE_AFTER_S": "6",
        "PYTHONUNBUFFERED": "1",
    }


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
PR_SET_PDEATHSIG = 1


def _stopped_with(parent: int) -> Callable[[], None]:
    """For the child before it runs: SIGTERM it when the test process dies, even by SIGKILL
    (a worker left running kept announcing on its Redis database, which a later test drew
    and found a stranger's key in; session 22). The signal follows the thread that forked:
    workers are started from the main thread only."""

    def arm() -> None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the tests died before the signal was armed
            os._exit(1)

    return arm


class WorkerProcess:
    """``hwnas worker --devices ...`` as a child process, with its log kept in a file.
    Stopped by ``stop``, at the latest when the test process exits (``atexit``), or, if
    that process is killed, by the kernel (``PR_SET_PDEATHSIG``)."""

    live: set[WorkerProcess] = set()

    def __init__(self, env: dict[str, str], devices: str, log_path: Path) -> None:
        assert threading.current_thread() is threading.main_thread(), "see _stopped_with"
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "api.cli",
                "worker",
                "--devices",
                devices,
                "--loglevel",
                "info",
                "--name",
                f"test-{log_path.stem}@%h",
            ],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_stopped_with(os.getpid()),
        )
        WorkerProcess.live.add(self)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while b"ready." not in self.log_path.read_bytes():
            assert self.process.poll() is None, f"worker exited: {self.log()}"
            assert time.monotonic() < deadline, f"worker not ready: {self.log()}"
            time.sleep(0.2)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def kill(self) -> None:
        """SIGKILL: no clean-up, no ack, no requeue by the worker itself."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()
        WorkerProcess.live.discard(self)


@atexit.register
def stop_all() -> None:
    """Every worker still running: a failed test's (one that started its own and stopped
    short), at the end of a test and when the tests exit."""
    for worker in list(WorkerProcess.live):
        worker.stop()


@contextmanager
def workers(
    env: dict[str, str], tmp_path: Path, count: int = 1, devices: str = "cpu-1t"
) -> Iterator[list[WorkerProcess]]:
    started = [WorkerProcess(env, devices, tmp_path / f"worker{i}.log") for i in range(count)]
    try:
        for worker in started:
            worker.wait_ready()
        yield started
    finally:
        for worker in started:
            worker.stop()
