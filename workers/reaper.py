"""The reaper: re-publishes jobs that lost their worker or their broker message.

Runs as a thread inside every Celery worker, for the devices that worker serves. A job is
re-published when it is ``queued`` (its message may have been lost: Redis here keeps no
data across a restart) or ``running`` with a heartbeat older than ``stale_after_s`` (its
worker died). Duplicate messages are harmless: ``claim_job`` lets one worker at a time in.
A job left ``running`` by a dead worker after ``max_attempts`` claims is failed with the
reason (a job that kills whoever runs it stops there); one a shutdown put back in the queue
is re-published whatever its count, as the embedded server resumes it.
"""

from __future__ import annotations

import logging
import threading

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from core.errors import HwnasError
from core.settings import Settings
from store import jobs as q
from store.db import transaction
from store.tables import JobStatus, utcnow

log = logging.getLogger(__name__)
_stop = threading.Event()
_thread: threading.Thread | None = None
SERVED_DEVICES: list[str] = []


def reap_once(
    app: Celery, factory: sessionmaker[Session], settings: Settings, devices: list[str]
) -> list[str]:
    """One pass; returns the ids of jobs re-published."""
    from .celery_dispatch import publish

    republished = []
    with transaction(factory) as session:
        stale = q.stale_jobs(session, stale_after_s=settings.stale_after_s, devices=devices)
        for job in stale:
            if q.fail_exhausted(session, job, settings.max_attempts):
                continue
            if job.status == JobStatus.running:
                q.requeue(job, "re-queued: its worker stopped heartbeating")
            else:
                job.heartbeat_at = utcnow()  # re-published now
            republished.append((job.id, job.device))
    for job_id, device in republished:
        publish(app, job_id, device)
        log.info("reaper: re-published job %s", job_id)
    return [job_id for job_id, _ in republished]


def start_reaper(app: Celery, factory: sessionmaker[Session], settings: Settings) -> None:
    global _thread
    if _thread is not None or not SERVED_DEVICES:
        return
    _stop.clear()

    def loop() -> None:
        while not _stop.wait(settings.heartbeat_s):
            try:
                reap_once(app, factory, settings, SERVED_DEVICES)
            except HwnasError as exc:  # database briefly away: try again next period
                log.warning("reaper: %s", exc)
            except Exception:
                log.exception("reaper pass failed")

    _thread = threading.Thread(target=loop, name="hwnas-reaper", daemon=True)
    _thread.start()


def stop_reaper() -> None:
    global _thread
    _stop.set()
    _thread = None
