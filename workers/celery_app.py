"""The Celery application: one queue per hardware profile, thin tasks, late acks.

A task only names a job; the job's truth lives in the database. Delivery guarantees come
from there too: ``claim_job``'s row lock and heartbeat lease make a second delivery of the
same job a no-op while the first worker is alive, and the reaper (``workers.reaper``)
re-publishes jobs whose worker died or whose message the broker lost.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from functools import lru_cache

from celery import Celery
from celery.concurrency import solo
from celery.signals import (
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from sqlalchemy.orm import Session, sessionmaker

from core.errors import HwnasError, NotFound
from core.redact import hidden
from core.settings import get_settings
from store import jobs as q
from store.db import check_migrated, database_id, make_engine, make_session_factory, transaction
from store.tables import JobStatus

from .runner import JobRunner

log = logging.getLogger(__name__)
TASK_RUN_JOB = "hwnas.run_job"
#: The message header naming the database whose API (or worker's reaper) published the job
#: (``store.db.database_id``): a worker that does not find the job tells a job deleted since
#: it was queued from a message of another database (MLOps audit L7: both read as a
#: possible misconfiguration). Workers of older versions ignore it.
DATABASE_HEADER = "hwnas_database"


def make_celery(broker_url: str) -> Celery:
    app = Celery("hwnas", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,  # a job's message is acked only after the job returns ...
        task_reject_on_worker_lost=True,  # ... and redelivered if the worker process dies
        worker_prefetch_multiplier=1,  # one job at a time: measurements must not overlap
        worker_pool=f"{__name__}:SoloPool",  # ... on the main thread (Celery's solo pool)
        worker_concurrency=1,
        task_ignore_result=True,  # results live in the database
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": 3600},
        task_default_queue="hwnas.default",
        worker_hijack_root_logger=False,
    )
    app.task(name=TASK_RUN_JOB, bind=False)(run_job_task)
    return app


@lru_cache(maxsize=1)
def _session_factory() -> sessionmaker[Session]:
    """Per-process database access, opened once at worker start-up."""
    engine = make_engine(get_settings().database_url)
    check_migrated(engine)
    return make_session_factory(engine)


@lru_cache(maxsize=1)
def worker_identity() -> str:
    return f"celery-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class SoloPool(solo.TaskPool):
    """Celery's solo pool (one job at a time, on the worker's main thread) without the cold
    shutdown's attempt to kill the running task: the solo pool cannot kill it, so a second
    Ctrl+C raised NotImplementedError at a random point inside the job. The runner sees the
    shutdown (``CeleryShutdown``) and hands the job back after the evaluation in flight."""

    def terminate_job(self, pid: object, signal: object = None) -> None:
        log.warning("cold shutdown: the job goes back to the queue after its evaluation")


class CeleryShutdown:
    """The runner's stop signal in a Celery worker: set once Celery's signal handlers began
    a warm (``should_stop``) or cold (``should_terminate``) shutdown. The solo pool runs the
    job on the main thread, where those handlers run too, so the job sees it after the
    evaluation in flight and goes back to the queue instead of holding the worker up."""

    def is_set(self) -> bool:
        from celery.worker import state

        flags = (state.should_stop, state.should_terminate)  # exit codes; 0 means set too
        return any(flag is not None and flag is not False for flag in flags)


def run_job_task(job_id: str) -> str | None:
    """Thin task: run the job with the same runner the embedded executor uses. A job a
    shutdown interrupted is published again at once, for another worker of its device (or
    this one, restarted), so it does not wait for a reaper."""
    from .reaper import RUNNING_HERE

    factory = _session_factory()
    runner = JobRunner(factory, get_settings(), worker_identity(), stop=CeleryShutdown())
    RUNNING_HERE.add(job_id)
    try:
        status = runner.run(job_id)
    except NotFound:  # deleted since it was queued, or a message of another database
        level, said = _unknown_job(job_id, factory)
        log.log(level, "%s", said)
        return None
    finally:
        RUNNING_HERE.discard(job_id)
    if status == JobStatus.queued:
        from .celery_dispatch import publish

        with transaction(factory) as session:
            device = q.get_job(session, job_id).device
        publish(celery_app, job_id, device, database=database_or_none(factory))
        log.info("job %s: handed back (a shutdown, or a database outage); published again", job_id)
    return status.value if status else None


def _unknown_job(job_id: str, factory: sessionmaker[Session]) -> tuple[int, str]:
    """The log level and line for a message naming a job this worker's database lacks,
    told apart by the database the message says it was published for (``DATABASE_HEADER``;
    a message of an older API says none)."""
    sent_for = _sent_for()
    here = database_or_none(factory)
    where = hidden(get_settings().database_url)
    if sent_for is not None and sent_for == here:
        return logging.INFO, f"job {job_id} was deleted since it was queued (message dropped)"
    if sent_for is not None and here is not None:
        return logging.WARNING, (
            f"job {job_id} was queued on another database (id {sent_for}) than this "
            f"worker's, {where} (id {here}): this worker's HWNAS_DATABASE_URL is not the "
            "API's, or another deployment shares the broker (message dropped)"
        )
    return logging.WARNING, (
        f"job {job_id} is not in {where}: deleted since it was queued, or this worker's "
        "HWNAS_DATABASE_URL is not the API's (message dropped)"
    )


def _sent_for() -> str | None:
    """The running task's message's ``DATABASE_HEADER``: a worker puts a message's headers
    in the task's request, ``Task.apply`` (tests) its ``headers`` argument under
    ``headers``."""
    from celery import current_task

    request = getattr(current_task, "request", None)
    if request is None:
        return None
    value = request.get(DATABASE_HEADER) or (request.get("headers") or {}).get(DATABASE_HEADER)
    return value if isinstance(value, str) else None


def database_or_none(factory: sessionmaker[Session]) -> str | None:
    """The database's identity for a message's header; None where it cannot be read now
    (the message then says none, as an older API's)."""
    try:
        return database_id(factory)
    except HwnasError as exc:
        log.warning("reading the database's identity failed: %s", exc)
        return None


celery_app = make_celery(get_settings().broker_url or "redis://127.0.0.1:6379/0")


@worker_process_init.connect
def _reset_process_state(**_kwargs: object) -> None:
    _session_factory.cache_clear()
    worker_identity.cache_clear()


@worker_ready.connect
def _start_reaper(sender: object = None, **_kwargs: object) -> None:
    from models.registry import get_supernet, list_supernets

    from .reaper import start_reaper

    for name in list_supernets():  # per-process resources: weights and tables, loaded once
        try:
            get_supernet(name)
        except Exception as exc:  # its own jobs fail with this; the reaper must start
            log.warning("supernet %s not preloaded: %s", name, exc)

    start_reaper(celery_app, _session_factory(), get_settings(), worker_identity())


@worker_shutting_down.connect
def _withdraw_devices(**_kwargs: object) -> None:
    """Sent by Celery's handler of a warm or cold shutdown signal, before the job in flight
    ends (a cold shutdown never reaches ``worker_shutdown``)."""
    from .reaper import withdraw_soon

    withdraw_soon()


@worker_shutdown.connect
def _stop_reaper(**_kwargs: object) -> None:
    from .reaper import stop_reaper

    stop_reaper()
