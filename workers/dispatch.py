"""Dispatchers: how a stored job reaches a worker. The runner is the same behind each.

Call order: ``start()`` once when the service starts (resumes unfinished jobs where the
dispatcher owns the workers), ``waiting_message(device)`` while a new job row is written (it
says why the job will wait, if it will), ``dispatch(job_id, device)`` after the row is
committed, ``stop()`` at shutdown. ``served_devices()`` lists devices a live worker serves now.
``dispatch`` touches the database only when publishing fails, so a submission costs one
transaction.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from hardware_profiles.configured import device_profiles, named_devices, servable
from store import jobs as q
from store.db import transaction
from store.tables import JobStatus

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
    def waiting_message(self, device: str) -> str | None:
        """Why a new job for ``device`` will stay queued (nobody serves it), else None."""

    def problems(self) -> list[str]:
        """What keeps jobs from reaching workers now (e.g. the broker is unreachable)."""
        return []


NO_DEVICES = "none"  # HWNAS_EMBEDDED_DEVICES=none: an embedded server that runs no jobs


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

    One process owns the SQLite file, so at start every unfinished job of a served device is
    resumed at once (a job left ``running`` belonged to a process that died).
    """

    def __init__(self, factory: sessionmaker[Session], settings: Settings) -> None:
        self.factory = factory
        self.settings = settings
        self.devices = local_devices(settings)
        self._stop = threading.Event()
        worker_id = f"embedded-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.runner = JobRunner(factory, settings, worker_id, stop=self._stop)
        self._pool = ThreadPoolExecutor(max(1, settings.embedded_workers), "hwnas-job")
        self._futures: set[Future[JobStatus | None]] = set()

    def served_devices(self) -> set[str]:
        return set(self.devices)

    def start(self) -> None:
        """Resume every unfinished job of a served device, except one left ``running`` (its
        process died mid-job) that has been claimed ``max_attempts`` times: it is failed,
        so a job that crashes the server is not retried at every start. A job a shutdown
        put back in the queue is resumed whatever its count."""
        if not self.devices:  # serves nothing: other servers' jobs are not ours to touch
            return
        with transaction(self.factory) as session:
            stale = q.stale_jobs(session, stale_after_s=0.0, devices=sorted(self.devices))
            max_attempts = self.settings.max_attempts
            pending = [job for job in stale if not q.fail_exhausted(session, job, max_attempts)]
        for job in pending:
            log.info("resuming job %s (%s)", job.id, job.status.value)
            self._submit(job.id, takeover=True)

    def waiting_message(self, device: str) -> str | None:
        if device in self.devices:
            return None
        return (
            f"waiting: no live worker serves device {device!r} "
            f"(this server serves: {', '.join(sorted(self.devices)) or 'none'})"
        )

    def dispatch(self, job_id: str, device: str) -> None:
        if device in self.devices:
            self._submit(job_id, takeover=False)

    def _submit(self, job_id: str, *, takeover: bool) -> None:
        future = self._pool.submit(self.runner.run, job_id, takeover=takeover)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)

    def stop(self) -> None:
        """Ask running jobs to stop between evaluations (they go back to queued), then wait."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
