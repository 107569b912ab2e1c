"""Dispatch through Celery: one queue per hardware profile."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from celery import Celery
from kombu import Producer
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from store import jobs as q
from store.db import transaction

from .devices import device_profile
from .dispatch import Dispatcher

log = logging.getLogger(__name__)


def publish(app: Celery, job_id: str, device: str, producer: Producer | None = None) -> None:
    # argsrepr given: Celery's own (saferepr of the arguments, for logs and Flower) costs
    # about a fifth of a publish, measured; this is the same text. declare=[]: device queues
    # are direct, so Celery publishes to the anonymous exchange with the queue's name as
    # routing key, which lands in that queue (a Redis list) whether or not it was declared;
    # the declaration Celery would repeat per message (kombu copies and binds the queue
    # entity to check its cache) was a third of a publish's cost, measured.
    app.send_task(
        "hwnas.run_job",
        args=[job_id],
        queue=device_profile(device).queue,
        argsrepr=repr([job_id]),
        kwargsrepr="{}",
        producer=producer,
        declare=[],
    )


class CeleryDispatcher(Dispatcher):
    """Publishes jobs to their device's queue; workers started by ``hwnas worker`` run them."""

    def __init__(
        self, factory: sessionmaker[Session], settings: Settings, cache_s: float = 5.0
    ) -> None:
        from .celery_app import make_celery

        self.factory = factory
        self.app = make_celery(settings.broker_url)
        self._cache_s = cache_s
        self._served: set[str] = set()
        self._stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="hwnas-served", daemon=True)

    def start(self) -> None:
        # Workers resume jobs themselves (reaper). Asking workers which queues they consume
        # takes a broadcast round-trip, so it runs here in the background, off the requests.
        self._served = self._ask_workers()
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher.is_alive():
            self._watcher.join(timeout=5)
        self.app.close()

    def _watch(self) -> None:
        while not self._stop.wait(self._cache_s):
            self._served = self._ask_workers()

    def waiting_message(self, device: str) -> str | None:
        if device in self.served_devices():
            return None
        return (
            f"waiting: no live worker serves device {device!r}; start one "
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
            with self.app.producer_or_acquire() as producer, producer.batch():
                for job_id, device in jobs:
                    publish(self.app, job_id, device, producer)
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
                publish(self.app, job_id, device)
                return
            except Exception as exc:  # kombu and redis raise several unrelated types
                # No pool reset: redis-py reconnects a dropped connection on its next
                # command (kombu's force_close_all() would close the pool for good).
                log.warning("publishing job %s failed (attempt %d): %s", job_id, attempt, exc)
        with transaction(self.factory) as session:
            q.get_job(session, job_id).message = (
                "queued; the broker was unreachable, so the job will be re-published by a "
                "worker's reaper"
            )

    def served_devices(self) -> set[str]:
        """Devices whose queue a live worker consumes (refreshed every few seconds)."""
        return set(self._served)

    def _ask_workers(self) -> set[str]:
        try:
            replies = self.app.control.inspect(timeout=1.0).active_queues() or {}
        except Exception as exc:  # broker away: report nobody, try again next time
            log.warning("asking workers for their queues failed: %s", exc)
            replies = {}
        return {
            queue["name"].removeprefix("hwnas.") for queues in replies.values() for queue in queues
        }
