"""Jobs that ended long ago, and their exported files, removed: by ``hwnas prune`` at an
operator's command, or by the API itself every ``SWEEP_S`` with ``HWNAS_RETENTION_DAYS``.

Both delete what ``DELETE /v1/jobs/{id}`` deletes (evaluations, labels, files), a
``DELETE_CHUNK`` of jobs per transaction (a long one would hold SQLite's one write slot),
and the export folders of jobs deleted before. ``hwnas prune`` also removes the folders of
export cache versions other than this version's; the API's sweep does not (in a rolling
upgrade, servers of two versions sharing a data directory would remove each other's). A
job still queued or running is never touched, whatever its age.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from api.export_cache import (
    job_folders,
    remove_exports,
    remove_old_versions,
    stale_version_folders,
)
from core.errors import InvalidInput
from store import jobs as q
from store.db import transaction
from store.tables import utcnow

log = logging.getLogger(__name__)

#: How often the API sweeps with ``HWNAS_RETENTION_DAYS`` set (and once at its start).
SWEEP_S = 3600.0


@dataclass(frozen=True)
class Pruned:
    """What a prune removed (or would: ``dry_run``): the jobs' ids, oldest first, and the
    folders of old export cache versions."""

    job_ids: list[str]
    old_cache_versions: int


def prune(
    factory: sessionmaker[Session],
    data_dir: Path,
    days: float,
    *,
    dry_run: bool = False,
    old_versions: bool = True,
    stop: threading.Event | None = None,
) -> Pruned:
    """Delete every job that ended more than ``days`` ago, its exported files and the
    export folders of jobs deleted before (``dry_run``: nothing); ``old_versions``: the
    folders of other export cache versions too. ``stop`` set: no further chunk."""
    try:
        cutoff = utcnow() - timedelta(days=days)
    except OverflowError:
        raise InvalidInput(f"{days:g} days: too many", field="older_than") from None
    folders = job_folders(data_dir)  # before the jobs are read: a new job may write its own
    with transaction(factory) as session:
        ids = q.ended_before(session, cutoff)
    if dry_run:  # the old versions' folders too: the first thing asked after an upgrade
        return Pruned(ids, len(stale_version_folders(data_dir)) if old_versions else 0)
    deleted: list[str] = []
    for start in range(0, len(ids), q.DELETE_CHUNK):
        if stop is not None and stop.is_set():
            break
        chunk = ids[start : start + q.DELETE_CHUNK]
        with transaction(factory) as session:
            q.delete_ended(session, chunk)
        remove_exports(data_dir, chunk)
        deleted += chunk
    with transaction(factory) as session:  # those of jobs deleted before (a copy of their
        known = q.existing_jobs(session, folders)  # sub-network, exported after, was there)
    remove_exports(data_dir, [name for name in folders if name not in known])
    return Pruned(deleted, remove_old_versions(data_dir) if old_versions else 0)


class RetentionSweeper:
    """The API's own prune, on a thread of its own: at start, then every ``every_s``."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        data_dir: Path,
        days: float,
        *,
        every_s: float = SWEEP_S,
    ) -> None:
        self._factory, self._data_dir, self._days, self._every_s = factory, data_dir, days, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hwnas-retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop after the chunk in progress (one transaction of ``DELETE_CHUNK`` jobs)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def sweep(self) -> Pruned | None:
        """One prune; None if it failed (logged: the next sweep tries again)."""
        try:
            pruned = prune(
                self._factory, self._data_dir, self._days, old_versions=False, stop=self._stop
            )
        except Exception:
            log.exception("retention: the sweep failed; trying again in %.0f s", self._every_s)
            return None
        if pruned.job_ids:
            log.info(
                "retention: deleted %d jobs that ended over %g days ago (HWNAS_RETENTION_DAYS)",
                len(pruned.job_ids),
                self._days,
            )
        return pruned

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sweep()
            self._stop.wait(self._every_s)
