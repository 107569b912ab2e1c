"""Dispatch through Celery: one queue per hardware profile."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu import Producer
from kombu.utils.uuid import uuid
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from hardware_profiles.configured import device_profile
from store import jobs as q
from store.db import database_id, transaction
from store.tables import JobStatus

from . import presence
from .celery_app import DATABASE_HEADER, TASK_RUN_JOB, make_celery
from .dispatch import Dispatcher

log = logging.getLogger(__name__)

#: Why a job waits when its message could not be published (stored with the job, and what a
#: poll says while the broker is away).
BROKER_AWAY = (
    "the broker could not be reached; the job is stored and a worker's reaper publishes it "
    "once the broker is back"
)
PERSISTENT = 2  # AMQP delivery mode, Celery's default for task messages


def publish(
    app: Celery,
    job_id: str,
    device: str,
    producer: Producer | None = None,
    *,
    queue: str = "",
    database: str | None = None,
) -> None:
    """Publish ``hwnas.run_job(job_id)`` to the device's queue as Celery's own message.

    Not through ``send_task``: its option merging, routing, signals and result object were
    more than half of a publish's cost (measured: 175 -> 81 us per job in batches of 50).
    The message is the one ``send_task`` builds (Celery's ``create_task_message``, protocol
    2; the worker cannot tell them apart) and goes out the way ``send_task`` would send it
    to a direct queue: the anonymous exchange, the queue's name as routing key, persistent.
    No declaration (a device queue is a Redis list that exists once anything is pushed to
    it; the declaration Celery repeats per message, kombu copying and binding the queue to
    check its cache, was a third of a publish), and no before/after-publish signals or
    task-sent events (hwnas connects none; workers report their own events to Flower).
    ``queue``: the device's queue when the caller knows it already (a profile lookup costs
    ~15 us). Inside ``producer.batch()`` the message is only buffered, so no retry there;
    alone, it is sent with Celery's publish retry policy. ``database``: the identity of the
    job's database, sent as the header ``DATABASE_HEADER``.
    """
    headers, properties, body, _ = app.amqp.create_task_message(
        uuid(),
        TASK_RUN_JOB,
        [job_id],
        {},
        reply_to=app.thread_oid,
        ignore_result=True,  # task_ignore_result: results live in the database
        argsrepr=repr([job_id]),  # the text Celery's saferepr would make, for logs and Flower
        kwargsrepr="{}",
    )
    if database is not None:
        headers[DATABASE_HEADER] = database
    options: dict[str, Any] = dict(
        exchange="",
        routing_key=queue or device_profile(device).queue,
        serializer="json",
        headers=headers,
        delivery_mode=PERSISTENT,
        declare=[],
        **properties,
    )
    if producer is not None:  # buffered in the batch: the pipeline's flush sends it
        producer.publish(body, retry=False, **options)
        return
    conf = app.conf
    with app.producer_or_acquire() as sender:
        sender.publish(
            body,
            retry=conf.task_publish_retry,
            retry_policy=conf.task_publish_retry_policy,
            **options,
        )


class CeleryDispatcher(Dispatcher):
    """Publishes jobs to their device's queue; workers started by ``hwnas worker`` run them."""

    def __init__(
        self, factory: sessionmaker[Session], settings: Settings, cache_s: float = 5.0
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.app = make_celery(settings.broker_url)
        self._presence = presence.redis_of(settings.broker_url)
        self._broker_error: str | None = None  # from the last time workers were asked
        self._cache_s = cache_s
        self._served: set[str] = set()
        self._database: str | None = None  # this database's id (store.db.database_id)
        self._elsewhere: dict[str, list[str]] = {}  # live workers of other databases
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="hwnas-served", daemon=True)

    def start(self) -> None:
        # Workers resume jobs themselves (reaper). Asking workers which queues they consume
        # takes a broadcast round-trip, so it runs here in the background, off the requests.
        self._database = database_id(self.factory)
        self._served = self._ask_workers()
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=5)
        if self._presence is not None:
            self._presence.close()
        self.app.close()

    def _watch(self) -> None:
        while not self._stop.wait(self._cache_s):
            self._served = self._ask_workers()
            self._end_abandoned_cancels()

    def _end_abandoned_cancels(self) -> None:
        """A cancel asked of a running job whose worker then died ends the job once the
        worker is stale: with no worker of its device left, it stayed running (and ``hwnas
        wait`` with it) until cancelled again. Each API process looks; the row lock lets
        one end it."""
        try:
            with transaction(self.factory) as session:
                ended = q.cancel_abandoned(session, stale_after_s=self.settings.stale_after_s)
        except Exception as exc:  # the database is away: the next pass tries again
            log.warning("looking for abandoned cancels failed: %s", exc)
            return
        for job_id in ended:
            log.info("job %s cancelled: its worker died after the cancel was asked", job_id)

    def waiting_reason(self, device: str) -> str | None:
        if self._broker_error is not None:
            return BROKER_AWAY
        if device in self.served_devices():
            return None
        return (
            f"no live worker serves device {device!r}; start one "
            f"with `hwnas worker --devices {device}`"
        )

    def dispatch(self, job_id: str, device: str) -> None:
        # The row says it was published at creation (heartbeat_at); the reaper re-sends only
        # queued jobs whose stamp is stale, so a lost publish is repaired, not repeated.
        self._publish(job_id, device)

    def dispatch_many(self, jobs: Sequence[tuple[str, str]]) -> None:
        """Publish the jobs together: one Redis pipeline for all (kombu's ``Producer.batch``;
        a third of the cost per job of publishing one at a time, measured). If the batch
        fails, each job is published again on its own, with ``_publish``'s retry: a job of a
        batch that reached the broker before the failure may then be published twice, which
        the runner's lease makes harmless (a second delivery of a running or finished job
        does nothing)."""
        try:
            queues = {device: device_profile(device).queue for _, device in jobs}
            db = self._database
            with self.app.producer_or_acquire() as producer, producer.batch():
                for job_id, device in jobs:
                    publish(self.app, job_id, device, producer, queue=queues[device], database=db)
            return
        except Exception as exc:  # kombu and redis raise several unrelated types
            log.warning("publishing %d jobs together failed (%s); one by one now", len(jobs), exc)
        super().dispatch_many(jobs)

    def _publish(self, job_id: str, device: str) -> None:
        """Publish, retrying once (the broker may have restarted; redis-py reconnects).

        The job row is already committed, so a broker that stays unreachable loses nothing:
        the job stays queued and a worker's reaper publishes it again later.
        """
        for attempt in (1, 2):
            try:
                publish(self.app, job_id, device, database=self._database)
                return
            except Exception as exc:  # kombu and redis raise several unrelated types
                # No pool reset: redis-py reconnects a dropped connection on its next
                # command (kombu's force_close_all() would close the pool for good).
                log.warning("publishing job %s failed (attempt %d): %s", job_id, attempt, exc)
        with transaction(self.factory) as session:
            job = q.get_job(session, job_id, lock=True)
            if job.status == JobStatus.queued:  # a worker may have it already (a batch's part)
                job.message = f"waiting: {BROKER_AWAY}"  # as a poll says meanwhile: once

    def served_devices(self) -> set[str]:
        """Devices whose queue a live worker consumes (refreshed every few seconds)."""
        return set(self._served)

    def problems(self) -> list[str]:
        error = self._broker_error
        problems = [] if error is None else [f"broker unreachable: {error}"]
        if self._elsewhere:
            devices = sorted({d for served in self._elsewhere.values() for d in served})
            problems.append(
                f"{len(self._elsewhere)} live worker(s) on this broker serve another database "
                f"(their HWNAS_DATABASE_URL is not this API's, or another deployment shares "
                f"the broker): they drop this API's jobs as unknown; their devices "
                f"({', '.join(devices)}) are not counted as served"
            )
        return problems

    def _ask_workers(self) -> set[str]:
        """What live workers announce in Redis (``workers.presence``: also while they run a
        job); on another broker, the queues workers that are free to answer consume."""
        try:
            if self._presence is not None:
                served = presence.served_devices(self._presence, self._database)
                self._broker_error = None
                self._elsewhere = served.elsewhere
                return served.devices
            replies = self.app.control.inspect(timeout=1.0).active_queues() or {}
        except Exception as exc:  # broker away: report nobody, try again next time
            log.warning("asking workers for their devices failed: %s", exc)
            self._broker_error = str(exc) or type(exc).__name__
            return set()
        self._broker_error = None
        return {
            queue["name"].removeprefix("hwnas.") for queues in replies.values() for queue in queues
        }
