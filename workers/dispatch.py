"""Dispatchers: how a stored job reaches a worker. The runner is the same behind each.

Call order: ``start()`` once when the service starts (resumes unfinished jobs where the
dispatcher owns the workers), ``waiting_message(device)`` while a new job row is written
(it says why the job will wait, if it will; ``waiting_reason`` is the why alone),
``dispatch(job_id, device)`` after the row is committed, ``stop()`` at shutdown.
``served_devices()`` lists devices a live worker serves now. ``dispatch`` touches the
database only when publishing fails, so a submission costs one transaction.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from hardware_profiles.configured import device_profiles, named_devices, servable
from hardware_profiles.registry import unavailable_because
from store import jobs as q
from store.db import transaction
from store.tables import JobStatus, utcnow

from .runner import JobRunner

log = logging.getLogger(__name__)


class Dispatcher(ABC):
    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def dispatch(self, job_id: str, device: str) -> None: ...

    def dispatch_many(self, jobs: Sequence[tuple[str, str]]) -> None:
        """``dispatch`` each (job id, device) in order; a failure is logged and the rest go
        on (the job stays queued; a reaper or the next start picks it up). Implementations
        may send them together."""
        for job_id, device in jobs:
            try:
                self.dispatch(job_id, device)
            except Exception:
                log.exception("job %s is stored and queued but its dispatch failed", job_id)

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def served_devices(self) -> set[str]: ...

    @abstractmethod
    def waiting_reason(self, device: str) -> str | None:
        """Why a job for ``device`` would wait now (nobody serves it), else None."""

    def queue_reason(self, job_id: str) -> str | None:
        """Why a queued job of a served device has not started, where the dispatcher knows
        (the jobs ahead of it in this process's pool), else None."""
        del job_id
        return None

    def waiting_message(self, device: str) -> str | None:
        """A new job's message: ``waiting: <reason>``, or None where it will not wait."""
        reason = self.waiting_reason(device)
        return None if reason is None else f"waiting: {reason}"

    def problems(self) -> list[str]:
        """What keeps jobs from reaching workers now (e.g. the broker is unreachable)."""
        return []


def shown_devices(ids: Collection[str], *, most: int = 5) -> str:
    """Device ids for a message, sorted; more than ``most`` of one family (the part before
    the first '-') as one pattern: "nb201-* (27)"."""
    families: dict[str, list[str]] = {}
    for device in sorted(ids):
        families.setdefault(device.split("-", 1)[0], []).append(device)
    shown = [
        name
        for family, members in families.items()
        for name in ([f"{family}-* ({len(members)})"] if len(members) > most else members)
    ]
    return ", ".join(shown) or "none"


NO_DEVICES = "none"  # HWNAS_EMBEDDED_DEVICES=none: an embedded server that runs no jobs
EMBEDDED = "embedded"  # first part of an embedded server's worker id: embedded:host:pid:tag


def local_devices(settings: Settings) -> set[str]:
    """Profiles this process can measure on, or those of them ``HWNAS_EMBEDDED_DEVICES``
    names (ids or patterns such as ``nb201-*``). A name that is no profile stops the start
    (a typo would leave every job queued); a profile this machine cannot run (a GPU one
    without a GPU) is left out with a warning."""
    usable = {pid for pid, profile in device_profiles().items() if servable(profile)}
    if settings.embedded_devices.strip() == NO_DEVICES:
        return set()
    wanted = set(named_devices(settings.embedded_devices, field="HWNAS_EMBEDDED_DEVICES"))
    if not wanted:
        return usable
    if wanted - usable:
        log.warning(
            "HWNAS_EMBEDDED_DEVICES: not served, this machine cannot run them: %s",
            ", ".join(sorted(wanted - usable)),
        )
    return wanted & usable


class EmbeddedDispatcher(Dispatcher):
    """Runs jobs on a thread pool inside this process (the default, single-process mode).

    At start, and every ``stale_after_s`` after, it queues here every unfinished job of a
    served device that no live process runs: queued jobs, and running ones whose worker is
    gone (an embedded server of this host whose process has ended, or any worker that has
    not heartbeated for ``stale_after_s``). A running job another live server holds (a
    second server on the same database, e.g. ``hwnas run`` beside ``hwnas serve``) is left
    to it, and taken over only if that server dies.
    """

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self.factory = factory
        self.settings = settings
        self.devices = local_devices(settings)
        self._stop = threading.Event()
        worker_id = f"{EMBEDDED}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.runner = JobRunner(factory, settings, worker_id, stop=self._stop)
        self._pool = ThreadPoolExecutor(max(1, settings.embedded_workers), "hwnas-job")
        self._futures: set[Future[JobStatus | None]] = set()
        self._mine: set[str] = set()  # jobs submitted to the pool and not ended yet
        # Of those, the ones not started, by their number in the order they were submitted;
        # how many were submitted, and how many of them left the wait (started or cancelled).
        self._waiting: dict[str, int] = {}
        self._submitted = self._left = 0
        self._submitting = threading.Lock()
        self._numbering = threading.Lock()  # taken before _submitting, never after it
        self._watcher = threading.Thread(target=self._watch, name="hwnas-orphans", daemon=True)

    def served_devices(self) -> set[str]:
        return set(self.devices)

    def start(self) -> None:
        """Resume the orphaned jobs (see the class), except one left ``running`` that has
        been claimed ``max_attempts`` times: it is failed, so a job that crashes the server
        is not retried at every start. A job a shutdown put back in the queue is resumed
        whatever its count. Then look again every ``stale_after_s``."""
        if not self.devices:  # serves nothing: other servers' jobs are not ours to touch
            return
        self._resume_orphans()
        self._watcher.start()

    def _watch(self) -> None:
        """Look again every ``stale_after_s`` (or ``heartbeat_s`` if longer); every
        ``heartbeat_s`` while a worker of its pool has no job: a job queued on another
        server of the database, busy with an earlier one, waited up to a minute while this
        one idled (ops audit 29). A busy server's look stays rare: it reads every
        unfinished job while this process may be timing a sub-network on the CPU."""
        interval = max(self.settings.stale_after_s, self.settings.heartbeat_s)
        looked = time.monotonic()
        workers = max(1, self.settings.embedded_workers)
        while not self._stop.wait(self.settings.heartbeat_s):
            with self._submitting:
                idle = len(self._mine) < workers  # a worker of the pool waits for a job
            if not idle and time.monotonic() - looked < interval:
                continue
            looked = time.monotonic()
            try:
                self._resume_orphans()
            except Exception as exc:  # the database may be away for a while: next time
                log.warning("looking for orphaned jobs failed: %s", exc)

    def _resume_orphans(self) -> None:
        now, max_attempts = utcnow(), self.settings.max_attempts
        # (job id, the gone worker to take from, whether it ran before)
        orphans: list[tuple[str, str | None, bool]] = []
        with transaction(self.factory) as session:
            for job in q.unfinished_jobs(session, sorted(self.devices)):
                if job.id in self._mine:
                    continue
                running = job.status == JobStatus.running
                ended = running and self._ended_here(job.worker_id)
                silent = running and not q.lease_alive(job, now, self.settings.stale_after_s)
                if running and not (ended or silent):
                    continue  # another live server runs it
                if q.fail_exhausted(session, job, max_attempts):
                    continue
                orphans.append((job.id, job.worker_id if ended else None, running))
        for job_id, gone, ran in orphans:
            log.info("%s job %s", "resuming" if ran else "taking queued", job_id)
            # A silent worker's lease is checked again when the job is claimed (later, if
            # the pool is busy): it is taken only if that worker is still silent then.
            self._submit(job_id, takeover_from=gone)

    @staticmethod
    def _ended_here(worker_id: str | None) -> bool:
        """Whether ``worker_id`` is an embedded server of this host whose process has ended
        (a host name shared by separate process namespaces, e.g. containers, would fool it;
        such set-ups run the distributed mode)."""
        kind, _, rest = (worker_id or "").partition(":")
        host, _, rest = rest.partition(":")
        pid = rest.partition(":")[0]
        if kind != EMBEDDED or host != socket.gethostname() or not pid.isdigit():
            return False
        try:
            os.kill(int(pid), 0)  # signal 0: is there such a process? (PermissionError: yes)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False

    def waiting_reason(self, device: str) -> str | None:
        if device in self.devices:
            return None
        profile = device_profiles().get(device)
        why = None if profile is None or servable(profile) else unavailable_because(profile)
        if why is not None:
            return (
                f"no live worker serves device {device!r}: this server cannot measure on it "
                f"({why}); a worker on a machine that can (hwnas worker --devices {device}, "
                f"the distributed mode: HWNAS_BROKER_URL) would take it"
            )
        return (
            f"no live worker serves device {device!r} "
            f"(this server serves: {shown_devices(self.devices)}; HWNAS_EMBEDDED_DEVICES "
            "chooses them)"
        )

    def dispatch(self, job_id: str, device: str) -> None:
        if device in self.devices:
            self._submit(job_id)

    def _submit(self, job_id: str, *, takeover_from: str | None = None) -> None:
        """Queue the job on the pool, once: the watcher may find a job the submitter is
        about to dispatch."""

        def run() -> JobStatus | None:
            self._left_waiting(job_id)
            return self.runner.run(job_id, takeover_from=takeover_from)

        # Numbered and queued under a lock of their own (the pool's order is the order of
        # the numbers), not ``_submitting``: a shutdown cancels futures under the pool's
        # lock, and their callbacks (``ended``) take ``_submitting``.
        with self._numbering:
            with self._submitting:
                if job_id in self._mine:
                    return
                self._mine.add(job_id)
                self._waiting[job_id] = self._submitted
                self._submitted += 1
            future = self._pool.submit(run)
        self._futures.add(future)

        def ended(done: Future[JobStatus | None]) -> None:
            self._futures.discard(done)
            self._left_waiting(job_id)  # cancelled before it started (a shutdown)
            with self._submitting:
                self._mine.discard(job_id)

        future.add_done_callback(ended)

    def _left_waiting(self, job_id: str) -> None:
        with self._submitting:
            if self._waiting.pop(job_id, None) is not None:
                self._left += 1

    def queue_reason(self, job_id: str) -> str | None:
        """O(1) (every poll of a queued job asks): the pool starts jobs in the order they
        were numbered, so those numbered before this one and not started are its number
        less the count that left the wait."""
        with self._submitting:
            number = self._waiting.get(job_id)
            if number is None:
                return None
            ahead = len(self._mine) - len(self._waiting) + number - self._left
        workers = max(1, self.settings.embedded_workers)
        if ahead < workers:  # a thread is free: it starts now
            return None
        return (
            f"{q.counted(ahead, 'job')} of this server "
            f"{'runs or waits' if ahead == 1 else 'run or wait'} before it "
            f"(it runs {workers} at a time: HWNAS_EMBEDDED_WORKERS)"
        )

    def stop(self) -> None:
        """Ask running jobs to stop between evaluations (they go back to queued), then wait."""
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)
