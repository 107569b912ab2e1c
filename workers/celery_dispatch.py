"""Dispatch through Celery: one queue per hardware profile."""

from __future__ import annotations

import logging
import time

from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from store import jobs as q
from store.db import transaction
from store.tables import utcnow

from .devices import device_profile
from .dispatch import Dispatcher


log = logging.getLogger(__name__)


def publish(app: Celery, job_id: str, device: str) -> None:
    app.send_task("hwnas.run_job", args=[job_id], queue=device_profile(device).queue)


class CeleryDispatcher(Dispatcher):
    """Publishes jobs to their device's queue; workers started by ``hwnas worker`` run them."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings,
                 cache_s: float = 5.0) -> None:
        from .celery_app import make_celery

        self.factory = factory
        self.app = make_celery(settings.broker_url)
        self._cache_s = cache_s
        self._served: tuple[float, set[str]] = (0.0, set())

    def start(self) -> None:
        pass  # workers resume jobs themselves (reaper)

    def stop(self) -> None:
        self.app.close()

    def dispatch(self, job_id: str, device: str) -> None:
        with transaction(self.factory) as session:
            job = q.get_job(session, job_id)
            job.heartbeat_at = utcnow()  # published now; the reaper re-sends only stale ones
            if device not in self.served_devices():
                job.message = (f"waiting: no live worker serves device {device!r}; start one "
                               f"with `hwnas worker --devices {device}`")
        self._publish(job_id, device)

    def _publish(self, job_id: str, device: str) -> None:
        """Publish, retrying once on a fresh connection (the broker may have restarted).

        The job row is already committed, so a broker that stays unreachable loses nothing:
        the job stays queued and a worker's reaper publishes it again later.
        """
        for attempt in (1, 2):
            try:
                publish(self.app, job_id, device)
                return
            except Exception as exc:  # kombu and redis raise several unrelated types
                log.warning("publishing job %s failed (attempt %d): %s", job_id, attempt, exc)
                self.app.pool.force_close_all()
        with transaction(self.factory) as session:
            q.get_job(session, job_id).message = (
                "queued; the broker was unreachable, so the job will be re-published by a "
                "worker's reaper")

    def served_devices(self) -> set[str]:
        """Devices whose queue a live worker consumes (asked of the workers, cached briefly)."""
        when, served = self._served
        if time.monotonic() - when < self._cache_s:
            return served
        try:
            replies = self.app.control.inspect(timeout=1.0).active_queues() or {}
        except Exception as exc:  # broker away: report nobody, try again next time
            log.warning("asking workers for their queues failed: %s", exc)
            self.app.pool.force_close_all()
            replies = {}
        served = {queue["name"].removeprefix("hwnas.")
                  for queues in replies.values() for queue in queues}
        self._served = (time.monotonic(), served)
        return served
