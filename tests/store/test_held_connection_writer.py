"""``HeldConnectionWriter`` (the API submitter's writes) and the batch write it runs,
``store.jobs.NewJobs.insert``: one connection kept on PostgreSQL, a write run once more
after the connection dropped, stored once whatever happened to the first try."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, func, select

from core.errors import StorageError
from store import jobs as q
from store.db import HeldConnectionWriter

from .backends import end_other_sessions, migrated_database

SPEC: dict[str, Any] = {
    "supernet": "fmnist-ofa-cnn",
    "device": "cpu-1t",
    "strategy": "random",
    "seed": 3,
    "budget": {"evaluations": 7},
    "objectives": {"accuracy": "max", "latency_ms": "min"},
    "constraints": {},
}


def _batch(*seeds: int) -> q.NewJobs:
    return q.NewJobs([(dict(SPEC, seed=seed), None) for seed in seeds])


def _stored(connection: Connection) -> list[int]:
    return sorted(connection.execute(select(q.JOBS.c.seed)).scalars())


class CountedInsert:
    """A batch's write, counting its tries."""

    def __init__(self, batch: q.NewJobs) -> None:
        self.batch = batch
        self.tries = 0

    def __call__(self, connection: Connection) -> list[q.JobRow]:
        self.tries += 1
        return self.batch.insert(connection)


def test_writes_share_one_connection_and_a_dropped_one_is_written_again(tmp_path: Path) -> None:
    with migrated_database("postgresql", tmp_path) as (url, engine, factory):
        checkouts: list[object] = []
        event.listen(engine.pool, "checkout", lambda *args: checkouts.append(args[0]))
        writer = HeldConnectionWriter(factory)
        first = [writer.write(_batch(seed).insert) for seed in (1, 2, 3)]
        assert [rows[0].seed for rows in first] == [1, 2, 3]
        assert len(checkouts) == 1  # held: no checkout (and no pre-ping) per write

        end_other_sessions(url)
        again = CountedInsert(_batch(4, 5))
        rows = writer.write(again)
        assert again.tries == 2 and [row.seed for row in rows] == [4, 5]
        assert len(checkouts) == 2
        writer.close()
        with engine.connect() as connection:
            assert _stored(connection) == [1, 2, 3, 4, 5]


def test_a_batch_written_again_after_it_was_committed_is_stored_once(tmp_path: Path) -> None:
    """The case a retry cannot tell apart: the first try committed, then the connection
    dropped before the answer came back."""
    with migrated_database("postgresql", tmp_path) as (_url, engine, _factory):
        batch = _batch(1, 2)
        autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        with autocommit.connect() as connection:
            first = batch.insert(connection)
        with autocommit.connect() as connection:
            second = batch.insert(connection)
            assert _stored(connection) == [1, 2]
        assert first == second  # same ids and times: the rows the database holds
        with engine.connect() as connection:
            read = [q.read_job(connection, row.id) for row in first]
        assert read == first


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_failing_write_is_not_tried_again_and_the_next_one_goes(
    backend: str, tmp_path: Path
) -> None:
    with migrated_database(backend, tmp_path) as (_url, engine, factory):
        writer = HeldConnectionWriter(factory)
        broken = CountedInsert(q.NewJobs([(dict(SPEC, supernet=None), None)]))  # NOT NULL
        with pytest.raises(StorageError, match="supernet"):
            writer.write(broken)
        assert broken.tries == 1
        assert [row.seed for row in writer.write(_batch(6).insert)] == [6]
        writer.close()
        with engine.connect() as connection:
            assert connection.execute(select(func.count()).select_from(q.JOBS)).scalar() == 1
