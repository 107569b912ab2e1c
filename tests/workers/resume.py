"""A job put back in the queue as if its worker had died after its first evaluation, for
the tests of what a resumed run does (each test owns its job; this is the shared rewind)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from store import evaluations as eq
from store import jobs as q
from store.db import transaction
from store.tables import JobStatus


def as_if_died_after_its_first(
    factory: sessionmaker[Session], job_id: str, **spec: Any
) -> list[str]:
    """The ids of the job's evaluations, in order; then all but the first are deleted and
    the job is queued again (a claim clears its message). ``spec``: keys to set in its
    stored spec (``None``: removed), as if a version that wrote them otherwise began it."""
    with transaction(factory) as session:
        job = q.get_job(session, job_id)
        evaluations, _ = eq.list_evaluations(session, job_id)
        for evaluation in evaluations[1:]:
            session.delete(evaluation)
        job.status, job.evaluations_done, job.worker_id = JobStatus.queued, 1, None
        changed = {**job.spec, **spec}
        job.spec = {key: value for key, value in changed.items() if value is not None}
        return [e.subnet_id for e in evaluations]
