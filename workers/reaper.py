"""The reaper: re-publishes jobs that lost their worker or their broker message, and
announces the worker's devices (``workers.presence``) at every pass.

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

import redis
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from core.errors import HwnasError
from core.settings import Settings
from hardware_profiles.configured import device_profile
from store import jobs as q
from store.db import transaction
from store.tables import JobStatus, utcnow

from . import presence

log = logging.getLogger(__name__)
_stop = threading.Event()
_thread: threading.Thread | None = None
_presence: tuple[redis.Redis, str] | None = None  # the key to withdraw at the stop
SERVED_DEVICES: list[str] = []


def reap_once(
    app: Celery,
    factory: sessionmaker[Session],
    settings: Settings,
    devices: list[str],
    broker: redis.Redis | None = None,
) -> list[str]:
    """One pass; returns the ids of jobs re-published.

    ``broker``: the broker's Redis, to look at the device queues. A queued job waiting its
    turn is re-published only while its device's queue is empty: the queue then holds no
    message for it (lost with a Redis restart, or never sent). Otherwise every pass would
    add one more message per waiting job, and a backlog's queue would grow by its size
    every ``stale_after_s`` (each extra message a no-op claim for the worker)."""
    from .celery_dispatch import publish

    republished = []
    waiting: dict[str, bool] = {}  # device -> its queue holds messages
    with transaction(factory) as session:
        stale = q.stale_jobs(session, stale_after_s=settings.stale_after_s, devices=devices)
        for job in stale:
            if q.fail_exhausted(session, job, settings.max_attempts):
                continue
            if job.status == JobStatus.running:
                q.requeue(job, "re-queued: its worker stopped heartbeating")
            else:
                if job.device not in waiting:
                    waiting[job.device] = _queue_holds_messages(broker, job.device)
                if waiting[job.device]:
                    continue  # its message is probably there: the worker gets to it
                job.heartbeat_at = utcnow()  # re-published now
            republished.append((job.id, job.device))
    for job_id, device in republished:
        publish(app, job_id, device)
        log.info("reaper: re-published job %s", job_id)
    return [job_id for job_id, _ in republished]


def _queue_holds_messages(broker: redis.Redis | None, device: str) -> bool:
    if broker is None:  # another kind of broker: re-publish, duplicates are harmless
        return False
    return bool(broker.llen(device_profile(device).queue))


def start_reaper(
    app: Celery, factory: sessionmaker[Session], settings: Settings, identity: str
) -> None:
    """Start the thread: announce the devices now, then every ``heartbeat_s`` announce
    them again and reap."""
    global _thread, _presence
    if _thread is not None or not SERVED_DEVICES:
        return
    _stop.clear()
    client = presence.redis_of(settings.broker_url)
    _presence = None if client is None else (client, identity)
    ttl_s = presence.ttl_of(settings.heartbeat_s)

    def announce() -> None:
        if client is not None:
            try:
                presence.announce(client, identity, SERVED_DEVICES, ttl_s)
            except redis.RedisError as exc:  # broker away: the API sees the key expire
                log.warning("announcing this worker's devices failed: %s", exc)

    def loop() -> None:
        announce()
        while not _stop.wait(settings.heartbeat_s):
            announce()
            try:
                reap_once(app, factory, settings, SERVED_DEVICES, client)
            except HwnasError as exc:  # database briefly away: try again next period
                log.warning("reaper: %s", exc)
            except Exception:
                log.exception("reaper pass failed")

    _thread = threading.Thread(target=loop, name="hwnas-reaper", daemon=True)
    _thread.start()


def stop_reaper() -> None:
    """Stop the thread and withdraw the announcement (the API stops listing the devices)."""
    global _thread, _presence
    _stop.set()
    if _thread is not None:
        _thread.join(timeout=5)
    _thread = None
    if _presence is not None:
        client, identity = _presence
        _presence = None
        try:
            presence.withdraw(client, identity)
        except redis.RedisError as exc:  # the key expires on its own
            log.warning("withdrawing this worker's devices failed: %s", exc)
