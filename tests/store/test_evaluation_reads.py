"""Reads of evaluations that must stay cheap as the table grows (scale audit 33): a page by
``seq``, a front written where it changes, a warm start read a few jobs at a time, and the
partial indexes the planners must be able to use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.orm import Session

from store import evaluations as eq
from store import jobs as q
from store import prior as pq
from store.tables import Evaluation, utcnow

from .backends import migrated_database

SPEC: dict[str, Any] = {
    "supernet": "fmnist-ofa-cnn",
    "device": "cpu-1t",
    "strategy": "random",
    "seed": 3,
    "budget": {"evaluations": 7},
}


def _measure(session: Session, job_id: str, *subnets: str) -> None:
    job = q.get_job(session, job_id)
    for subnet in subnets:
        session.add(
            Evaluation(
                job_id=job.id,
                seq=job.evaluations_done + job.evaluations_reused,
                subnet_id=subnet,
                arch={"k": subnet},
                metrics={"accuracy": 0.5},
                details={"job": job.id},
                feasible=True,
                on_front=False,
                seconds=0.0,
                created_at=utcnow(),
            )  # fmt: skip
        )
        job.evaluations_done += 1
        session.flush()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_page_read_by_seq_is_the_page_offset_gives(backend: str, tmp_path: Path) -> None:
    with migrated_database(backend, tmp_path) as (_, _, factory):
        with factory.begin() as session:
            source, job = q.create_job(session, SPEC), q.create_job(session, SPEC)
            _measure(session, source.id, "a", "b")
            _measure(session, job.id, "c", "d", "e")
            copies = eq.list_evaluations(session, source.id)[0]
            eq.add_reused_evaluations(session, q.get_job(session, job.id), copies, {})
            _measure(session, job.id, "f", "g")
        with factory.begin() as session:
            everything, total = eq.list_evaluations(session, job.id)
            order = [e.subnet_id for e in everything]
            assert order == ["c", "d", "e", "a", "b", "f", "g"] and total == 7
            for offset in range(9):
                for limit in (1, 3, None):
                    page, count = eq.list_evaluations(session, job.id, offset=offset, limit=limit)
                    end = None if limit is None else offset + limit
                    assert [e.subnet_id for e in page] == order[offset:end] and count == 7


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_front_is_written_where_it_changes_only(backend: str, tmp_path: Path) -> None:
    """Every row of a finished job was rewritten (4.6 s and 151 MB of WAL at 50,000)."""
    with migrated_database(backend, tmp_path) as (_, _, factory), factory.begin() as session:
        job = q.create_job(session, SPEC)
        _measure(session, job.id, "a", "b", "c", "d")
        ids = [e.id for e in eq.list_evaluations(session, job.id)[0]]
        assert eq.set_front(session, job.id, ids[:2]) == 2
        assert eq.set_front(session, job.id, ids[:2]) == 0
        assert eq.set_front(session, job.id, ids[1:3]) == 2  # a off, c on
        front = eq.list_evaluations(session, job.id, front_only=True)[0]
        assert [e.subnet_id for e in front] == ["b", "c"]
        assert eq.set_front(session, job.id, []) == 2
        assert eq.list_evaluations(session, job.id, front_only=True)[1] == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_warm_start_reads_jobs_newest_first_a_few_at_a_time(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs are read newest first, ``JOBS_A_READ`` at a time, each sub-network from the
    first of those reads that has it (there its latest row), whatever the order rows were
    written in across them; the reading stops at ``limit``."""
    monkeypatch.setattr(pq, "JOBS_A_READ", 2)
    with migrated_database(backend, tmp_path) as (_, _, factory):
        with factory.begin() as session:
            made = [q.create_job(session, dict(SPEC, seed=i)).id for i in range(5)]
        with factory.begin() as session:  # the newest job measures first, the oldest last
            for k, job_id in enumerate(reversed(made)):
                _measure(session, job_id, f"own{k}", "shared")

        def taken(limit: int) -> dict[str, str]:
            with factory.begin() as session:
                found = pq.prior_evaluations(
                    session, supernet=SPEC["supernet"], device=SPEC["device"],
                    validation_data=None, exclude_job="none", limit=limit,
                )  # fmt: skip
                return {e.subnet_id: e.job_id for e in found}

        everything = taken(100)
        # the newest two jobs' latest row: the second newest's, not the oldest's (written last)
        assert everything["shared"] == made[-2]
        assert len(everything) == 6
        assert len(taken(3)) == 3


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_partial_indexes_serve_their_queries(backend: str, tmp_path: Path) -> None:
    """The predicates of ``ix_evaluations_subnet_original`` and ``ix_evaluations_job_front``
    are the text SQLAlchemy gives the queries' ``is_(False)`` and ``is_(True)`` on each
    database: a predicate the planner cannot match is an index nobody uses."""
    failures = select(Evaluation.subnet_id).where(
        Evaluation.reused.is_(False), Evaluation.subnet_id.in_(["a", "b"])
    )
    front = (
        select(Evaluation.id)
        .where(Evaluation.job_id == "j", Evaluation.on_front.is_(True))
        .order_by(Evaluation.seq)
    )
    explain = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
    with migrated_database(backend, tmp_path) as (_, engine, _), engine.connect() as connection:
        if backend == "postgresql":  # an empty table: make the plan show what it can use
            connection.execute(text("SET enable_seqscan = off"))
        for query, index in [
            (failures, "ix_evaluations_subnet_original"),
            (front, "ix_evaluations_job_front"),
        ]:
            compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
            plan = connection.execute(text(explain + str(compiled))).all()
            assert index in " ".join(str(row) for row in plan), plan


def test_a_warm_start_s_streamed_read_is_planned_for_every_row(tmp_path: Path) -> None:
    """Verify 33: streamed through a server-side cursor, PostgreSQL planned the read for its
    first tenth of rows (a backward walk of the whole primary key: 1.3-1.6 s for an old
    pair at 3.7 M rows, 0.12-0.15 s planned for every row): the setting comes before the
    read, and lasts for this transaction only."""
    with migrated_database("postgresql", tmp_path) as (_, engine, factory):
        with factory.begin() as session:
            job = q.create_job(session, SPEC)
            _measure(session, job.id, "a")
        sent: list[str] = []

        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            sent.append(" ".join(statement.split()))

        event.listen(engine, "before_cursor_execute", record)
        with factory.begin() as session:
            found = pq.prior_evaluations(
                session, supernet=SPEC["supernet"], device=SPEC["device"],
                validation_data=None, exclude_job="none", limit=10,
            )  # fmt: skip
            assert [e.subnet_id for e in found] == ["a"]
            assert session.execute(text("SHOW cursor_tuple_fraction")).scalar() == "1"
        event.remove(engine, "before_cursor_execute", record)
        setting = sent.index("SET LOCAL cursor_tuple_fraction = 1.0")
        read = next(k for k, s in enumerate(sent) if s.startswith("SELECT evaluations.id"))
        assert setting < read, sent
        with factory.begin() as session:
            assert session.execute(text("SHOW cursor_tuple_fraction")).scalar() == "0.1"
