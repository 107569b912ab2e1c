"""The current front of a job still changing, brought up to date from its new evaluations
only (scale audit 33 L1: each poll of a running 50,000-evaluation job compared them all)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from search import feasible_front
from store import current_front
from store import evaluations as eq
from store import jobs as q
from store.current_front import CurrentFronts
from store.front import constraints_of
from store.tables import Evaluation, JobStatus, utcnow

from .backends import migrated_database

SPEC: dict[str, Any] = {
    "supernet": "fmnist-ofa-cnn",
    "device": "cpu-1t",
    "strategy": "random",
    "seed": 3,
    "budget": {"evaluations": 500},
    "objectives": {"accuracy": "max", "latency_ms": "min", "params": "min"},
    "constraints": {"latency_ms": {"max": 8.0}},
}


def _add(session: Session, job_id: str, metrics: list[dict[str, float]]) -> None:
    job = q.get_job(session, job_id)
    for values in metrics:
        session.add(
            Evaluation(
                job_id=job.id,
                seq=job.evaluations_done + job.evaluations_reused,
                subnet_id=f"s{job.evaluations_done}",
                arch={},
                metrics=values,
                details={},
                feasible=True,
                on_front=False,
                seconds=0.0,
                created_at=utcnow(),
            )  # fmt: skip
        )
        job.evaluations_done += 1
        session.flush()


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many rows each read of the evaluations since a front's last brought back."""
    counts: list[int] = []

    def counted(session: Session, job_id: str, after_seq: int = -1) -> Any:
        rows = eq.evaluation_metrics(session, job_id, after_seq=after_seq)
        counts.append(len(rows))
        return rows

    monkeypatch.setattr(current_front, "evaluation_metrics", counted)
    return counts


def _points(rng: random.Random, count: int) -> list[dict[str, float]]:
    # few distinct values: ties and equal points, which stay on a front together
    return [
        {
            "accuracy": rng.randint(0, 6) / 6,
            "latency_ms": rng.randint(1, 10),
            "params": rng.randint(1, 5),
        }  # fmt: skip
        for _ in range(count)
    ]


def _full(session: Session, job_id: str) -> frozenset[int]:
    """The front computed from every evaluation, as before."""
    job = q.get_job(session, job_id)
    rows = eq.evaluation_metrics(session, job_id)
    kept = feasible_front([m for _, _, m in rows], job.spec["objectives"], constraints_of(job.spec))
    return frozenset(rows[k][0] for k in kept)


def test_the_front_brought_up_to_date_is_the_front_of_all(tmp_path: Path, reads: list[int]) -> None:
    rng, fronts = random.Random(5), CurrentFronts()
    with migrated_database("sqlite", tmp_path) as (_, _, factory), factory.begin() as session:
        job = q.create_job(session, SPEC)
        assert fronts.ids(session, q.get_job(session, job.id)) == frozenset()
        added = 0
        for batch in [1, 1, 3, 20, 1, 0, 7, 60, 1, 2]:
            _add(session, job.id, _points(rng, batch))
            added, before = added + batch, len(reads)
            got = fronts.ids(session, q.get_job(session, job.id))
            assert got == _full(session, job.id)
            # only the evaluations stored since were read; none when none was stored
            assert reads[before:] == ([batch] if batch else [])
        assert 1 < len(got) < added

        # asked again with nothing new: no read at all; a status change reads none
        before = len(reads)
        assert fronts.ids(session, q.get_job(session, job.id)) == got
        assert len(reads) == before
        q.get_job(session, job.id).status = JobStatus.cancelled
        assert fronts.ids(session, q.get_job(session, job.id)) == got and reads[-1] == 0


def test_an_infeasible_job_has_no_front_and_jobs_are_kept_apart(tmp_path: Path) -> None:
    fronts = CurrentFronts(size=1)
    with migrated_database("sqlite", tmp_path) as (_, _, factory), factory.begin() as session:
        one, two = q.create_job(session, SPEC), q.create_job(session, SPEC)
        _add(session, one.id, [{"accuracy": 0.9, "latency_ms": 9.0, "params": 1.0}])
        _add(session, two.id, [{"accuracy": 0.5, "latency_ms": 2.0, "params": 1.0}])
        assert fronts.ids(session, q.get_job(session, one.id)) == frozenset()
        second = fronts.ids(session, q.get_job(session, two.id))
        assert len(second) == 1  # the first job's was dropped (size 1), not mixed in
        _add(session, one.id, [{"accuracy": 0.4, "latency_ms": 3.0, "params": 1.0}])
        assert fronts.ids(session, q.get_job(session, one.id)) == _full(session, one.id)
        assert len(_full(session, one.id)) == 1


def test_fronts_past_the_points_held_are_dropped_oldest_first(
    tmp_path: Path, reads: list[int]
) -> None:
    """Review 34a L5: fronts of thousands kept per job could hold hundreds of MB."""
    fronts = CurrentFronts(points=3)
    with migrated_database("sqlite", tmp_path) as (_, _, factory), factory.begin() as session:
        one, two = q.create_job(session, SPEC), q.create_job(session, SPEC)
        tied = [{"accuracy": 0.5, "latency_ms": 2.0, "params": 1.0, "other": 7.0}] * 2
        _add(session, one.id, tied)  # two equal points: a front of two
        _add(session, two.id, tied)
        assert len(fronts.ids(session, q.get_job(session, one.id))) == 2
        assert len(fronts.ids(session, q.get_job(session, two.id))) == 2  # 4 held: one dropped
        reads.clear()
        assert len(fronts.ids(session, q.get_job(session, two.id))) == 2 and reads == []
        assert len(fronts.ids(session, q.get_job(session, one.id))) == 2 and reads == [2]
