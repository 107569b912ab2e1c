"""The current front of jobs whose stored front is not final yet (running, or ended other
than succeeded), kept per job and brought up to date from the evaluations stored since.

A job's evaluations are only ever added while it exists (``seq`` counts them; nothing
rewrites a row's metrics), and the non-dominated points of (front so far + new points) are
those of all the points, dominance being transitive: so a poll after one more evaluation
reads that one row and compares it with the front, where it read, decoded and compared all
of them (1 s a poll at 50,000 evaluations: scale audit 33 L1).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from search import feasible_front, validate_objectives

from .evaluations import evaluation_metrics
from .front import constraints_of

#: What a job's stored evaluations were when its front was last brought up to date.
_Seen = tuple[str, int, int]


@dataclass(frozen=True)
class _Front:
    seen: _Seen
    last_seq: int  # of the last evaluation compared (-1: none yet)
    #: (evaluation id, its metrics that the objectives and constraints name), in seq order
    members: tuple[tuple[int, dict[str, Any]], ...]

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(id_ for id_, _ in self.members)


class CurrentFronts:
    """The ids of each job's current front, for up to ``size`` jobs and ``points`` front
    members in all (the least recently asked job is dropped first: a front of thousands in
    many objectives is a few MB, review 34a); thread-safe. Computing a job's front holds no
    lock: two requests for one job may both read its new rows, and the one that saw more
    is kept."""

    def __init__(self, size: int = 256, points: int = 200_000) -> None:
        self._size, self._points = size, points
        self._fronts: OrderedDict[str, _Front] = OrderedDict()
        self._held = 0  # front members of all jobs
        self._lock = threading.Lock()

    def ids(self, session: Session, job: Any) -> frozenset[int]:
        """Evaluation ids on the front of ``job`` (a row of ``jobs``: id, status, counts,
        spec) as its evaluations in ``session`` stand."""
        seen: _Seen = (job.status.value, job.evaluations_done, job.evaluations_reused)
        with self._lock:
            known = self._fronts.get(job.id)
            if known is not None:
                self._fronts.move_to_end(job.id)
                if known.seen == seen:
                    return known.ids
        after = -1 if known is None else known.last_seq
        new = evaluation_metrics(session, job.id, after_seq=after)
        objectives, constraints = (
            validate_objectives(job.spec["objectives"]),
            constraints_of(job.spec),
        )
        named = {*objectives, *constraints}
        members = [
            *(() if known is None else known.members),
            *((i, {n: v for n, v in m.items() if n in named}) for i, _, m in new),
        ]
        kept = feasible_front([metrics for _, metrics in members], objectives, constraints)
        front = _Front(seen, new[-1][1] if new else after, tuple(members[k] for k in kept))
        with self._lock:
            current = self._fronts.get(job.id)
            if current is None or current.last_seq <= front.last_seq:
                self._drop(job.id)
                self._fronts[job.id] = front
                self._held += len(front.members)
            while len(self._fronts) > self._size or (
                self._held > self._points and len(self._fronts) > 1
            ):
                self._drop(next(iter(self._fronts)))
        return front.ids

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._drop(job_id)

    def _drop(self, job_id: str) -> None:
        dropped = self._fronts.pop(job_id, None)
        self._held -= 0 if dropped is None else len(dropped.members)
