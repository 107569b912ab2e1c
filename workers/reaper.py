"""The reaper: re-publishes jobs that lost their worker or their broker message. Started
with the worker's announcement of its devices (``workers.presence``), stopped with it.

Runs as a thread inside every Celery worker, for the devices that worker serves. A job is
re-published when it is ``queued`` and its device's queue is missing messages (lost: Redis
here keeps no data across a restart), or ``running`` with a heartbeat older than
``stale_after_s`` (its worker died). Duplicate messages are harmless: ``claim_job`` lets
one worker at a time in. A job left ``running`` by a dead worker after ``max_attempts``
claims is failed with the reason (a job that kills whoever runs it stops there); a run
that handed its job back at a shutdown is not counted.
"""

from __future__ import annotations

import logging
import threading
from functools import partial

import redis
from celery import Celery
from kombu.exceptions import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import HwnasError, first_line
from core.settings import Settings
from hardware_profiles.configured import device_profile
from store import jobs as q
from store.db import database_id, transaction
from store.tables import JobStatus, utcnow

from . import presence

log = logging.getLogger(__name__)
_stop = threading.Event()
_thread: threading.Thread | None = None
_announcer: presence.Announcer | None = None
SERVED_DEVICES: list[str] = []
#: Jobs this process is running now (``run_job_task``): stale while the run waits out an
#: unreachable database, but not abandoned; the run hands its job back itself once the
#: database answers, uncounted (re-queued here, its next claim counted an attempt).
RUNNING_HERE: set[str] = set()


def reap_once(
    app: Celery,
    factory: sessionmaker[Session],
    settings: Settings,
    devices: list[str],
    broker: redis.Redis | None = None,
) -> list[str]:
    """One pass; returns the ids of jobs re-published.

    ``broker``: the broker's Redis, to look at the device queues. Queued jobs waiting their
    turn are re-published only when their device's queue holds fewer messages than the
    device has queued jobs, i.e. some message is missing (lost with a Redis restart, or
    never sent). Re-publishing at every pass instead grew a backlog's queue by its size
    every ``stale_after_s`` (each extra message a no-op claim for the worker); waiting for
    an empty queue instead could leave a lost job behind a device that never runs dry."""
    from .celery_app import database_or_none
    from .celery_dispatch import publish

    republished = []
    covered: dict[str, bool] = {}  # device -> its queue holds a message per queued job
    with transaction(factory) as session:
        stale = q.stale_jobs(session, stale_after_s=settings.stale_after_s, devices=devices)
        for job in stale:
            if job.id in RUNNING_HERE:
                continue
            if q.fail_exhausted(session, job, settings.max_attempts):
                continue
            if job.status == JobStatus.running:
                q.requeue(job, "re-queued: its worker stopped heartbeating")
            else:
                if job.device not in covered:
                    covered[job.device] = _messages_cover(session, broker, job.device)
                if covered[job.device]:
                    continue  # its message is there: the worker gets to it
                job.heartbeat_at = utcnow()  # re-published now
            republished.append((job.id, job.device))
    database = database_or_none(factory) if republished else None
    for job_id, device in republished:
        publish(app, job_id, device, database=database)
        log.info("reaper: re-published job %s", job_id)
    return [job_id for job_id, _ in republished]


def _messages_cover(session: Session, broker: redis.Redis | None, device: str) -> bool:
    """Whether ``device``'s queue holds at least one message per queued job of the device.
    Unknown (another kind of broker, Redis away) counts as no: duplicates are harmless."""
    if broker is None:
        return False
    try:
        messages = int(broker.llen(device_profile(device).queue))
    except redis.RedisError as exc:
        log.warning("reaper: cannot read the queue of %s: %s", device, exc)
        return False
    return messages >= q.count_queued(session, device)


def reap_logged(
    app: Celery, factory: sessionmaker[Session], settings: Settings, client: redis.Redis | None
) -> None:
    """One pass of the reaper's thread: what fails is logged, and the next pass tries again."""
    try:
        reap_once(app, factory, settings, SERVED_DEVICES, client)
    except HwnasError as exc:  # database briefly away
        log.warning("reaper: %s", exc)
    except (OperationalError, redis.RedisError, OSError) as exc:  # the broker away: one
        # line, not a traceback of 60 at each pass (chaos drill 32)
        log.warning(
            "reaper: the broker cannot be reached (%s): a later pass re-publishes the "
            "jobs once it is back (each once HWNAS_STALE_AFTER_S passed since it was last "
            "published)",
            first_line(exc),
        )
    except Exception:
        log.exception("reaper pass failed")


def start_reaper(
    app: Celery, factory: sessionmaker[Session], settings: Settings, identity: str
) -> None:
    """Start the reaper's thread (a pass every ``heartbeat_s``) and, on a Redis broker, the
    announcement of the worker's devices (``workers.presence.Announcer``)."""
    global _thread, _announcer
    if _thread is not None or not SERVED_DEVICES:
        return
    _stop.clear()
    client = presence.redis_of(settings.broker_url)
    if client is not None:
        _announcer = presence.Announcer(
            client, identity, SERVED_DEVICES, settings.heartbeat_s, partial(database_id, factory)
        )
        _announcer.start()

    def loop() -> None:
        while not _stop.wait(settings.heartbeat_s):
            reap_logged(app, factory, settings, client)

    _thread = threading.Thread(target=loop, name="hwnas-reaper", daemon=True)
    _thread.start()


def withdraw_soon() -> None:
    """Stop announcing the worker's devices (its shutdown began; from the signal handler)."""
    if _announcer is not None:
        _announcer.stop_soon()


def stop_reaper() -> None:
    """Stop the thread and withdraw the announcement (the API stops listing the devices)."""
    global _thread, _announcer
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=5)
    _thread = None
    if _announcer is not None:
        _announcer.stop()
        _announcer = None
