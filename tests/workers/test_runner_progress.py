"""The progress a job shows while it runs (front size, hypervolume) is the summary of its
stored evaluations after every commit: cold, after a warm start, and when no evaluation
meets the constraints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from api.schemas import JobCreate
from store import evaluations as eq
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.front import constraints_of, summarise_front
from store.tables import Job, JobStatus, storable_text
from workers.runner import JobRunner, _add_message

from ..conftest import embedded_settings

SPEC: dict[str, Any] = {
    "supernet": "nb201-cifar10",
    "device": "nb201-pixel3",
    "objectives": {"accuracy": "max", "latency_ms": "min"},
    "budget": {"evaluations": 12},
    "strategy": "random",
    "seed": 5,
}


@pytest.mark.parametrize(
    "constraints", [{}, {"latency_ms": {"max": 1e-6}}], ids=["free", "nothing-feasible"]
)
def test_progress_is_the_summary_of_the_stored_evaluations(
    tmp_path: Path, constraints: dict[str, Any]
) -> None:
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    runner = JobRunner(factory, settings, "worker-1")

    def run_checking(seed: int) -> Any:
        """Run a job; after each of its commits, its progress must match its evaluations."""
        spec = JobCreate(**{**SPEC, "seed": seed, "constraints": constraints}).model_dump(
            mode="json"
        )
        with transaction(factory) as session:
            (row,) = q.create_jobs(session, [(spec, None)])
        checked: list[int] = []

        def after_commit(_session: Session) -> None:  # what a poller sees after each commit
            with Session(engine) as reader:
                job = q.get_job(reader, row.id)
                evaluations, total = eq.list_evaluations(reader, row.id)
                summary = summarise_front(evaluations, spec["objectives"], constraints_of(spec))
                assert (job.front_size, job.hypervolume) == (
                    len(summary.front),
                    summary.hypervolume,
                )
                if job.status is JobStatus.running and total:
                    checked.append(total)

        event.listen(factory, "after_commit", after_commit)
        try:
            assert runner.run(row.id) is JobStatus.succeeded
        finally:
            event.remove(factory, "after_commit", after_commit)
        with Session(engine) as reader:
            job = q.get_job(reader, row.id)
            reused = job.evaluations_reused
            # after the warm start's copy (if any), then after every evaluation
            assert sorted(set(checked)) == [reused] * bool(reused) + list(
                range(reused + 1, reused + 13)
            )
            return job.front_size, job.hypervolume, reused

    cold = run_checking(seed=5)
    warm = run_checking(seed=6)  # a second job on the pair starts from the first's 12
    assert (cold[2], warm[2]) == (0, 12)
    for front_size, hypervolume, _ in (cold, warm):
        if constraints:
            assert (front_size, hypervolume) == (0, 0.0)
        else:
            assert front_size >= 1 and 0.0 < hypervolume <= 1.0
    engine.dispose()


@pytest.mark.parametrize("note", ["warm start: 3 earlier measurements", "data bad\udcff.npz x\x00"])
def test_a_note_is_added_to_the_message_once(note: str) -> None:
    """A resumed run says its notes again; the message keeps one of each, also for a note
    the message can only hold escaped (a lone surrogate or a NUL)."""
    job = Job(message="waiting: interrupted")
    job.message = None  # a claim clears the queue's message
    for _ in range(3):
        _add_message(job, note)
        _add_message(job, "resumed")
    assert job.message == f"{storable_text(note)}; resumed"
