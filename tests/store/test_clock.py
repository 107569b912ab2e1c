"""A process whose clock is off the database's keeps leases by the database's clock."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from store import clock
from store import jobs as q
from store.db import transaction
from store.tables import utcnow

from .backends import migrated_database

SPEC = {
    "supernet": "fmnist-ofa-cnn", "device": "cpu-1t", "strategy": "random", "seed": 0,
    "budget": {"evaluations": 4}, "objectives": {"accuracy": "max"}, "constraints": {},
}  # fmt: skip
AHEAD = timedelta(seconds=120)


@pytest.fixture
def fresh_clock() -> Iterator[None]:
    clock.forget()
    yield
    clock.forget()


def _ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's clock set 120 s ahead of the database's (and of the other's)."""
    monkeypatch.setattr(clock, "_local_now", lambda: datetime.now(UTC) + AHEAD)


def test_a_host_ahead_of_the_database_reads_the_database_s_time(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_clock: None,
) -> None:
    """Chaos drill 32: a worker 120 s ahead saw the other's fresh heartbeats as stale,
    re-queued its job at each pass and failed it as "its worker kept dying" in 8 s."""
    with migrated_database("postgresql", tmp_path) as (_url, _engine, factory):
        with transaction(factory) as session:  # another worker, on time, claims a job
            job = q.create_job(session, SPEC)
        with transaction(factory) as session:
            assert q.claim_job(session, job.id, "on-time", stale_after_s=60) is not None
        _ahead(monkeypatch)
        clock.forget()  # as a process of its own
        logged = caplog.at_level(logging.WARNING, logger="store.clock")
        with logged, transaction(factory) as session:
            database = session.execute(text("SELECT clock_timestamp()")).scalar_one()
            assert abs(utcnow() - database) < clock.TOLERANCE
            assert q.stale_jobs(session, stale_after_s=60) == []  # fresh, as it is
        assert "this host's clock is +120" in caplog.text


def test_a_small_difference_and_sqlite_are_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_clock: None
) -> None:
    with migrated_database("postgresql", tmp_path) as (_url, _engine, factory):
        with transaction(factory):
            pass
        assert clock.offset() == timedelta(0)  # the same host's clock
    clock.forget()
    _ahead(monkeypatch)
    with migrated_database("sqlite", tmp_path / "lite") as (_url, _engine, factory):
        with transaction(factory) as session:
            assert utcnow() > datetime.now(UTC) + AHEAD / 2  # this host's own clock
        session.close()
    assert clock.offset() == timedelta(0)  # a file on this host: its clock is the host's


def test_a_difference_is_followed_by_jumps_over_the_tolerance_and_back(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fresh_clock: None,
) -> None:
    """Review 32b L1: a clock hovering about a second off warned every minute, once with
    "-0.0 s off ... set NTP" after it was set right."""
    monkeypatch.setattr(clock, "FOLLOW_EVERY_S", 0.0)  # each transaction measures
    ahead = [0.0]
    monkeypatch.setattr(
        clock, "_local_now", lambda: datetime.now(UTC) + timedelta(seconds=ahead[0])
    )
    offsets = []
    with (
        caplog.at_level(logging.INFO, logger="store.clock"),
        migrated_database("postgresql", tmp_path) as (_url, _engine, factory),
    ):
        for seconds in (0.5, 1.8, 1.2, 2.4, 0.2):
            ahead[0] = seconds
            with transaction(factory):
                pass
            offsets.append(round(-clock.offset().total_seconds(), 0))
    assert offsets == [0, 2, 2, 2, 0]  # within a second of what it follows: unchanged
    said = [r.getMessage().split(":")[0] for r in caplog.records if r.name == "store.clock"]
    assert said == [
        "this host's clock is +1.8 s off the database's",
        "this host's clock agrees with the database's again",
    ]


def test_a_wait_for_a_connection_is_not_taken_for_a_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_clock: None
) -> None:
    """Review 32b M1: 4 s waiting for the pool gave an offset of 2 s and a warning to set
    the host's clock."""
    real = Session.connection

    def slow(self: Session, *args: object, **kwargs: object) -> object:
        time.sleep(3.0)  # the pool empty, the database restarting
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    with migrated_database("postgresql", tmp_path) as (_url, _engine, factory):
        monkeypatch.setattr(Session, "connection", slow)
        with transaction(factory):
            pass
    assert clock.offset() == timedelta(0)
