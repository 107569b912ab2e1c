"""A run that lost its job to another worker (its lease went stale, the reaper or an
embedded restart handed it on) neither ends the job nor writes in its message."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

import workers.runner
from api.schemas import JobCreate
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.tables import JobStatus
from workers.runner import JobPlan, JobRunner, _RunClock, summarise_front

from ..conftest import embedded_settings

SPEC = {"supernet": "nb201-cifar10", "device": "nb201-pixel3", "strategy": "random",
        "objectives": {"accuracy": "max", "latency_ms": "min"},
        "budget": {"evaluations": 5}, "seed": 2}  # fmt: skip


def _queued(tmp_path: Path) -> tuple[Any, Any, str]:
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = JobCreate(**SPEC).model_dump(mode="json")
    with transaction(factory) as session:
        (row,) = q.create_jobs(session, [(spec, None)])
    return settings, factory, row.id


def _take_over(factory: Any, job_id: str) -> None:
    with transaction(factory) as session:
        assert q.claim_job(session, job_id, "worker-2", stale_after_s=0.0) is not None


def test_a_search_taken_over_before_it_finishes_is_left_to_the_new_run(tmp_path: Path) -> None:
    settings, factory, job_id = _queued(tmp_path)

    class TakenOver(JobRunner):
        def _finish(self, job_id: str, plan: JobPlan, clock: _RunClock) -> JobStatus | None:
            _take_over(self.factory, job_id)  # worker-1 stalled; worker-2 has the job now
            return super()._finish(job_id, plan, clock)

    assert TakenOver(factory, settings, "worker-1").run(job_id) is None
    with transaction(factory) as session:
        job = q.get_job(session, job_id)
        assert (job.status, job.worker_id, job.finished_at) == (JobStatus.running, "worker-2", None)


def test_a_run_that_lost_its_job_writes_no_note(tmp_path: Path) -> None:
    settings, factory, job_id = _queued(tmp_path)
    with transaction(factory) as session:
        q.claim_job(session, job_id, "worker-1", stale_after_s=0.0)
    runner = JobRunner(factory, settings, "worker-1")
    runner._note(job_id, "first note")
    _take_over(factory, job_id)
    runner._note(job_id, "a stale run's note")
    with transaction(factory) as session:
        assert q.get_job(session, job_id).message is None  # the claim cleared the first
        q.get_job(session, job_id).message = "worker-2's note"
    runner._note(job_id, "a stale run's note")
    with transaction(factory) as session:
        assert q.get_job(session, job_id).message == "worker-2's note"


def test_a_run_the_database_left_for_too_long_hands_its_job_back_uncounted(
    tmp_path: Path,
) -> None:
    """Past HWNAS_DB_RETRY_S the run gave up and left the job running for the reaper: the
    next claim counted an attempt, and a few outages failed a healthy job as "its worker
    kept dying or losing its lease"."""
    from core.errors import StorageError

    settings, factory, job_id = _queued(tmp_path)
    tries: list[str] = []

    away = "database error: OperationalError: connection refused"

    class Outage(JobRunner):
        def _loop(self, job_id: str, spec: dict, clock: _RunClock) -> JobStatus | None:
            raise StorageError(away, unreachable=True)

        def _requeue(self, *args: Any, **kwargs: Any) -> JobStatus | None:
            tries.append("hand back")
            if len(tries) == 1:  # still away at the first try
                raise StorageError(away, unreachable=True)
            return super()._requeue(*args, **kwargs)

    assert Outage(factory, settings, "worker-1").run(job_id) == JobStatus.queued
    assert tries == ["hand back", "hand back"]
    with transaction(factory) as session:
        job = q.get_job(session, job_id)
        assert (job.status, job.worker_id, job.attempts) == (JobStatus.queued, None, 0)
        assert job.message == (  # and why: a full disk is not "unreachable" (ops audit 29)
            "interrupted: the database was unavailable for over 60 s (database error: "
            "OperationalError: connection refused); resumes when a worker takes it again"
        )


def test_a_database_that_refuses_what_a_run_writes_fails_the_job_with_its_reason(
    tmp_path: Path,
) -> None:
    """Not an outage: asking again will not mend it (handing the job back uncounted looped
    for good, and a plugin's metric the database could not store was retried for 60 s a
    time, three times, then failed as "its worker kept dying"). The job fails at once
    with the database's reason; only a failure that cannot be written either is left to
    the reaper, which counts the attempt."""
    import pytest

    from core.errors import StorageError

    settings, factory, job_id = _queued(tmp_path)
    tries: list[str] = []

    class Refused(JobRunner):
        def _loop(self, job_id: str, spec: dict, clock: _RunClock) -> JobStatus | None:
            def write(session: object) -> None:
                tries.append("write")
                raise StorageError(
                    "database error: StatementError: Object of type Tensor is not JSON serializable"
                )

            return self._db(write)

    assert Refused(factory, settings, "worker-1").run(job_id) == JobStatus.failed
    assert tries == ["write"]  # not retried for db_retry_s (60 s)
    with transaction(factory) as session:
        job = q.get_job(session, job_id)
        assert job.status == JobStatus.failed and job.attempts == 1
        assert "Object of type Tensor is not JSON serializable" in job.error

    (tmp_path / "second").mkdir()
    settings, factory, job_id = _queued(tmp_path / "second")

    class Unwritable(Refused):
        def _end(self, job_id: str, clock: _RunClock, step: object) -> object:
            raise StorageError("database error: IntegrityError: NOT NULL constraint failed")

    with pytest.raises(StorageError, match="IntegrityError"):
        Unwritable(factory, settings, "worker-1").run(job_id)
    with transaction(factory) as session:
        job = q.get_job(session, job_id)
        assert (job.status, job.worker_id, job.attempts) == (JobStatus.running, "worker-1", 1)


def test_the_job_goes_on_beating_while_its_front_is_summed_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A front of many objectives takes seconds (85 s for 4 x 1,500 points): summed up
    under the run clock's lock, the heartbeat stopped and the job was taken over as dead.
    Here the summary takes 6 heartbeats; the job's heartbeat moves meanwhile."""
    settings, factory, job_id = _queued(tmp_path)
    settings = settings.model_copy(update={"heartbeat_s": 0.1})
    beats: list[Any] = []

    def slow(*args: Any, **kwargs: Any) -> Any:
        for _ in range(2):
            with transaction(factory) as session:
                beats.append(q.get_job(session, job_id).heartbeat_at)
            time.sleep(0.3)
        return summarise_front(*args, **kwargs)

    monkeypatch.setattr(workers.runner, "summarise_front", slow)
    assert JobRunner(factory, settings, "worker-1").run(job_id) is JobStatus.succeeded
    assert beats[1] > beats[0]


def test_a_wait_for_the_database_names_the_job_that_waits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The runner's "database unavailable; retrying" lines named no job (ops audit 29)."""
    from core.errors import StorageError

    settings, factory, job_id = _queued(tmp_path)
    calls: list[int] = []

    class Flaky(JobRunner):
        def _loop(self, job_id: str, spec: dict, clock: _RunClock) -> JobStatus | None:
            def step(_session: Any) -> None:
                calls.append(1)
                if len(calls) == 1:
                    raise StorageError("database error: disk I/O error", unreachable=True)

            self._db(step)
            return None  # as a run whose lease was lost: nothing more to do here

    with caplog.at_level(logging.WARNING, logger="workers.runner"):
        assert Flaky(factory, settings, "worker-1").run(job_id) is None
    assert len(calls) == 2
    assert f"job {job_id}: database unavailable (database error: disk I/O error)" in caplog.text


def test_a_message_for_a_job_not_ours_to_run_says_why_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Chaos drill 32: a message delivered again (for a job running elsewhere, or ended)
    was dropped without a word naming the job."""
    settings, factory, job_id = _queued(tmp_path)
    with transaction(factory) as session:  # a live lease of another worker
        assert q.claim_job(session, job_id, "worker-2", stale_after_s=60) is not None
    with caplog.at_level(logging.INFO, logger="workers.runner"):
        assert JobRunner(factory, settings, "worker-1").run(job_id) is None
        assert JobRunner(factory, settings, "worker-2").run(job_id) == JobStatus.succeeded
        assert JobRunner(factory, settings, "worker-1").run(job_id) is None
    said = [r.getMessage() for r in caplog.records if "not run here" in r.getMessage()]
    assert said == [
        f"job {job_id}: not run here: worker worker-2 runs it (its lease is alive)",
        f"job {job_id}: not run here: it ended (succeeded)",
    ]
