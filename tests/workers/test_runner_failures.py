"""A sub-network whose measurement fails (out of the device's memory, say) is skipped,
recorded in the job's spec and never measured again, a resumed run included, up to the
job's ``budget.failures``; hwnas's own errors, and the database's, still fail the job."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest

from api.schemas import JobCreate
from core.errors import PluginError
from models import registry
from models.fmnist_cnn import FmnistOFACNN
from search.random_search import RandomStrategy
from store import evaluations as eq
from store import job_keys
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.tables import JobStatus
from workers import failures
from workers.runner import JobRunner

from ..conftest import embedded_settings
from .resume import as_if_died_after_its_first

SPEC: dict[str, Any] = {
    "device": "cpu-1t",
    "objectives": {"latency_ms": "min", "macs": "min"},  # timed only: no accuracy to compute
    "budget": {"evaluations": 10, "failures": 6},
    "strategy": "random",
    "seed": 1,
    "constraints": {},
}


class _NoRoomForWideInputs(FmnistOFACNN):
    """A device without the memory for the largest resolution: measuring such a network
    fails. Counts the attempts at each sub-network."""

    name = "test-no-room-for-wide-inputs"
    attempts: ClassVar[Counter[str]] = Counter()
    error: ClassVar[tuple[type[Exception], str]] = (MemoryError, "out of device memory")
    fails: ClassVar[Callable[[dict[str, Any]], bool]] = staticmethod(lambda arch: arch["r"] == 28)
    before_failing: ClassVar[Callable[[], None]] = staticmethod(lambda: None)

    def timing_module(self, arch: dict[str, Any]) -> Any:
        type(self).attempts[self.encode(self.canonical(arch))] += 1
        if type(self).fails(arch):
            type(self).before_failing()
            kind, text = type(self).error
            raise kind(text)  # a new one each time, as a real failure is
        return super().timing_module(arch)


@pytest.fixture
def job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A runner and a way to submit a job of ``_NoRoomForWideInputs``."""
    monkeypatch.setitem(registry._FACTORIES, _NoRoomForWideInputs.name, _NoRoomForWideInputs)
    for name in ("error", "fails", "before_failing"):  # restored after the test
        monkeypatch.setattr(_NoRoomForWideInputs, name, getattr(_NoRoomForWideInputs, name))
    _NoRoomForWideInputs.attempts.clear()
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))

    def submit(**changes: Any) -> str:
        spec = {**SPEC, "supernet": _NoRoomForWideInputs.name, **changes}
        with transaction(factory) as session:
            body = JobCreate(**spec).model_dump(mode="json")
            return q.create_jobs(session, [(body, None)])[0].id

    submit.factory = factory  # type: ignore[attr-defined]
    submit.runner = JobRunner(factory, settings, "worker-1")  # type: ignore[attr-defined]
    yield submit
    registry._INSTANCES.pop(_NoRoomForWideInputs.name, None)


def _stored(factory: Any, job_id: str) -> tuple[list[str], Any]:
    with transaction(factory) as session:
        keys = [e.subnet_id for e in eq.list_evaluations(session, job_id)[0]]
        job = q.get_job(session, job_id)
        session.expunge(job)
        return keys, job


def test_failed_measurements_are_skipped_recorded_and_never_measured_again(job: Any) -> None:
    job_id = job()
    assert job.runner.run(job_id) == JobStatus.succeeded
    keys, stored = _stored(job.factory, job_id)
    failed = stored.spec[job_keys.FAILED]
    assert len(keys) == len(set(keys)) == 10  # the budget: failures did not spend it
    assert failed[0]["anchor"] and failed[0]["subnet_id"].startswith("r28-")  # the largest
    assert sum(not f["anchor"] for f in failed) >= 1  # seed 1 draws one or more at r = 28
    assert all(f["error"] == "MemoryError: out of device memory (while extracting "
               f"(timing_module) sub-network {f['subnet_id']} of {_NoRoomForWideInputs.name})"
               for f in failed)  # fmt: skip
    assert not {f["subnet_id"] for f in failed} & set(keys)
    assert not any(job_keys.QUALITY_STEP in f for f in failed)  # timed: any job may take them
    assert all(n == 1 for n in _NoRoomForWideInputs.attempts.values())  # none measured twice
    assert "failed measurements are skipped, at most 6 (budget.failures" in (stored.message or "")

    # resumed as if its worker had died after its first evaluation: what failed stays failed
    as_if_died_after_its_first(job.factory, job_id)
    assert job.runner.run(job_id) == JobStatus.succeeded
    again, resumed = _stored(job.factory, job_id)
    assert again == keys  # the same proposals: the failures told to the strategy again
    assert resumed.spec[job_keys.FAILED] == failed  # none failed again: none was measured again
    said = resumed.message or ""  # said again: the claim cleared the message
    assert "failed measurements are skipped, at most 6" in said
    assert f"anchor {failed[0]['subnet_id']} skipped: MemoryError" in said
    assert all(_NoRoomForWideInputs.attempts[f["subnet_id"]] == 1 for f in failed)


def test_the_failure_after_the_budget_of_failures_fails_the_job(job: Any) -> None:
    job_id = job(budget={"evaluations": 10, "failures": 1}, seed=4)
    _NoRoomForWideInputs.error = (RuntimeError, "no memory left")
    status = job.runner.run(job_id)
    keys, stored = _stored(job.factory, job_id)
    failed = stored.spec[job_keys.FAILED]
    assert status == JobStatus.failed
    assert [f["anchor"] for f in failed] == [True, False]
    assert stored.message.startswith("failed: RuntimeError: no memory left")
    assert "1 failed measurement skipped before it: budget.failures allows 1" in stored.message
    assert len(keys) == len(set(keys)) >= 1  # the measured ones are kept


def test_hwnas_own_errors_fail_the_job_at_the_first(job: Any) -> None:
    """A plugin breaking its contract would fail every measurement alike."""
    job_id = job(budget={"evaluations": 10, "failures": 6}, seed=4)
    _NoRoomForWideInputs.error = (PluginError, "test: timing_module broke its contract")
    status = job.runner.run(job_id)
    _, stored = _stored(job.factory, job_id)
    assert status == JobStatus.failed
    assert [f["anchor"] for f in stored.spec[job_keys.FAILED]] == [True]  # an anchor is skipped
    assert "timing_module broke its contract" in stored.message


def test_a_job_whose_every_measurement_fails_fails_at_the_fifth(job: Any) -> None:
    """A plugin or device at fault: not half the budget's worth of failures first (by
    default: a budget.failures the user gave is theirs)."""
    job_id = job(budget={"evaluations": 20})  # budget.failures left to its default, 10
    _NoRoomForWideInputs.fails = staticmethod(lambda arch: True)
    assert job.runner.run(job_id) == JobStatus.failed
    keys, stored = _stored(job.factory, job_id)
    assert (
        keys == []
        and [f["anchor"] for f in stored.spec[job_keys.FAILED]] == [True] * 2 + [False] * 4
    )
    assert sum(_NoRoomForWideInputs.attempts.values()) == 2 + 5  # two anchors, then five
    assert "4 failed measurements skipped before it, and none succeeded" in stored.message

    _NoRoomForWideInputs.attempts.clear()
    given = job(budget={"evaluations": 20, "failures": 8}, seed=7, warm_start=False)
    assert job.runner.run(given) == JobStatus.failed
    _, stored = _stored(job.factory, given)
    assert sum(_NoRoomForWideInputs.attempts.values()) == 2 + 9
    assert "8 failed measurements skipped before it: budget.failures allows 8" in stored.message


def test_a_warm_started_job_has_results_before_its_first_failure(job: Any) -> None:
    """Its anchors come back reused, so none of its own measurements may succeed before
    it fails five times: it failed then, saying "none succeeded" (review 24b, M1)."""
    assert job.runner.run(job(budget={"evaluations": 10})) == JobStatus.succeeded
    _NoRoomForWideInputs.fails = staticmethod(lambda arch: True)
    again = job(budget={"evaluations": 10}, seed=9)  # the same pair: a warm start
    assert job.runner.run(again) == JobStatus.failed
    keys, stored = _stored(job.factory, again)
    assert keys and stored.evaluations_done == 0  # every result reused
    assert job_keys.failures_counted(stored.spec) == 5  # the 6th ends the job
    assert "5 failed measurements skipped before it: budget.failures allows 5" in stored.message


def test_a_cancel_asked_while_a_measurement_fails_stops_the_job(job: Any) -> None:
    """The loop went on with the lease it had read before: it measured on, after a cancel
    (or a takeover), until the failures ran out (review 24, H1)."""
    job_id = job(seed=2)

    def cancel() -> None:
        with transaction(job.factory) as session:
            q.request_cancel(session, job_id)

    _NoRoomForWideInputs.fails = staticmethod(lambda arch: arch["r"] == 28 and arch["d1"] < 3)
    _NoRoomForWideInputs.before_failing = staticmethod(cancel)
    assert job.runner.run(job_id) == JobStatus.cancelled
    keys, stored = _stored(job.factory, job_id)
    [failed] = stored.spec[job_keys.FAILED]  # not the largest anchor: its d1 is 3
    attempts = _NoRoomForWideInputs.attempts
    assert sum(attempts.values()) == len(keys) + 1  # nothing measured after the failure
    assert list(attempts)[-1] == failed["subnet_id"]


def _breaks_after(measurements: int) -> Callable[[dict[str, Any]], bool]:
    """A device that measures this many sub-networks (anchors included), then fails every
    one: it broke."""
    left = [measurements]

    def fails(arch: dict[str, Any]) -> bool:
        left[0] -= 1
        return left[0] < 0

    return fails


def test_a_job_whose_device_breaks_fails_at_its_tenth_failure_in_a_row(job: Any) -> None:
    """It has results, so "none succeeded" never holds; its allowance is 20: by default the
    tenth failure in a row ends it, not the twenty-first (a warm-started job on a device
    broken since has results from the start)."""
    job_id = job(budget={"evaluations": 40})
    _NoRoomForWideInputs.fails = staticmethod(_breaks_after(3))
    assert job.runner.run(job_id) == JobStatus.failed
    keys, stored = _stored(job.factory, job_id)
    assert len(keys) == 3 and sum(_NoRoomForWideInputs.attempts.values()) == 3 + 10
    failed = stored.spec[job_keys.FAILED]
    assert len(failed) == 9 and {f["after"] for f in failed} == {3}
    assert "the last 10 measurements all failed, 10 in all: the device" in stored.message

    _NoRoomForWideInputs.attempts.clear()  # a budget.failures the user gave is the only rule
    given = job(budget={"evaluations": 40, "failures": 12}, seed=3)
    _NoRoomForWideInputs.fails = staticmethod(_breaks_after(3))
    assert job.runner.run(given) == JobStatus.failed
    assert sum(_NoRoomForWideInputs.attempts.values()) == 3 + 13
    _, stored = _stored(job.factory, given)  # its warm start took none of the broken run's
    assert not any(f.get(job_keys.REUSED_FROM) for f in stored.spec[job_keys.FAILED])


def test_failures_in_a_row_are_counted_across_a_resume(job: Any) -> None:
    """A shutdown interrupts the job at its fifth failure in a row (not recorded: it may be
    the shutdown's); the resumed run goes on from the four recorded, and fails at its sixth."""
    job_id = job(budget={"evaluations": 40})
    _NoRoomForWideInputs.fails = staticmethod(_breaks_after(3))
    failing = [0]

    def shutdown_at_the_fifth() -> None:
        failing[0] += 1
        if failing[0] == 5:
            job.runner.stop.set()

    _NoRoomForWideInputs.before_failing = staticmethod(shutdown_at_the_fifth)
    assert job.runner.run(job_id) == JobStatus.queued
    _, stored = _stored(job.factory, job_id)
    assert len(stored.spec[job_keys.FAILED]) == 4
    job.runner.stop.clear()
    assert job.runner.run(job_id) == JobStatus.failed
    keys, stored = _stored(job.factory, job_id)
    assert len(keys) == 3 and failing[0] == 5 + 6
    assert len(stored.spec[job_keys.FAILED]) == 4 + 5
    assert "the last 10 measurements all failed, 10 in all" in stored.message


def test_a_takeover_while_a_measurement_fails_ends_this_run(job: Any) -> None:
    """Another worker took the job (this one was thought dead): this run writes nothing
    more, the failure included, and measures nothing more."""
    job_id = job(seed=2)

    def taken() -> None:
        with transaction(job.factory) as session:
            q.get_job(session, job_id).worker_id = "worker-2"

    _NoRoomForWideInputs.fails = staticmethod(lambda arch: arch["r"] == 28 and arch["d1"] < 3)
    _NoRoomForWideInputs.before_failing = staticmethod(taken)
    assert job.runner.run(job_id) is None
    keys, stored = _stored(job.factory, job_id)
    attempts = _NoRoomForWideInputs.attempts
    assert job_keys.FAILED not in stored.spec or not stored.spec[job_keys.FAILED]
    assert sum(attempts.values()) == len(keys) + 1  # nothing measured after the failure
    assert stored.worker_id == "worker-2" and stored.status == JobStatus.running


def test_a_warm_start_takes_the_failures_of_earlier_jobs_without_counting_them(
    job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second job on the pair measured the sub-networks that had failed in the first
    again, each failing again and counted against its allowance."""
    monkeypatch.setattr(failures, "retried", lambda job_id, subnet_id: False)  # below
    first = job()
    assert job.runner.run(first) == JobStatus.succeeded
    _, earlier = _stored(job.factory, first)
    failed = earlier.spec[job_keys.FAILED]
    failed_before = [f["subnet_id"] for f in reversed(failed) if not f["anchor"]]  # newest first
    [anchor] = [f["subnet_id"] for f in failed if f["anchor"]]  # skipped whatever it raised

    second = job(seed=5, budget={"evaluations": 12})
    assert job.runner.run(second) == JobStatus.succeeded
    keys, stored = _stored(job.factory, second)
    failed = stored.spec[job_keys.FAILED]
    taken = [f for f in failed if f.get(job_keys.REUSED_FROM)]
    assert [f["subnet_id"] for f in taken] == failed_before
    assert {f[job_keys.REUSED_FROM] for f in taken} == {first} and not any(
        f["anchor"] for f in taken
    )
    assert all(_NoRoomForWideInputs.attempts[k] == 1 for k in failed_before)  # not again
    assert _NoRoomForWideInputs.attempts[anchor] == 2  # anchors' failures are not taken:
    assert [f["subnet_id"] for f in failed if f["anchor"]] == [anchor]  # measured again
    assert job_keys.failures_counted(stored.spec) == len(failed) - len(taken) - 1  # nor the anchor
    assert not set(failed_before) & set(keys)
    said = f"warm start: {q.counted(len(taken), 'sub-network')} whose measurement failed in"
    assert said in (stored.message or "")

    third = job(seed=6, warm_start=False, budget={"evaluations": 10, "failures": 20})
    assert job.runner.run(third) == JobStatus.succeeded  # measures what it proposes
    _, alone = _stored(job.factory, third)
    assert not any(f.get(job_keys.REUSED_FROM) for f in alone.spec[job_keys.FAILED])
    assert "failed in earlier jobs" not in (alone.message or "")

    # a job of the pair resumed: its failures as they were, none taken twice
    as_if_died_after_its_first(job.factory, second)
    assert job.runner.run(second) == JobStatus.succeeded
    _, resumed = _stored(job.factory, second)
    assert resumed.spec[job_keys.FAILED][: len(taken)] == taken
    assert said in (resumed.message or "")


def _proposed_first(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    """The random search proposes sub-network ``key`` first, if it may (not told yet)."""
    propose = RandomStrategy._propose

    def first(self: RandomStrategy, n: int) -> list[dict[str, Any]]:
        if n == 1 and not self._is_seen(key):
            return [
                self.space.normalize(registry.get_supernet(_NoRoomForWideInputs.name).decode(key))
            ]
        return propose(self, n)

    monkeypatch.setattr(RandomStrategy, "_propose", first)


def test_a_warm_start_leaves_one_in_ten_failures_to_measure_again(
    job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One in ``RETRY_ONE_IN`` of the failures a warm start finds is not taken: the job
    measures it if its search proposes it. Failing again, it is listed with
    ``retried_from`` and not counted; measured, it is a result, and shared no more."""
    first = job(budget={"evaluations": 20, "failures": 15})
    assert job.runner.run(first) == JobStatus.succeeded
    _, earlier = _stored(job.factory, first)
    failed_before = [f["subnet_id"] for f in earlier.spec[job_keys.FAILED] if not f["anchor"]]
    assert len(failed_before) >= 2
    again, *_ = failed_before
    monkeypatch.setattr(failures, "retried", lambda job_id, subnet_id: subnet_id == again)
    _proposed_first(monkeypatch, again)
    supernet = registry.get_supernet(_NoRoomForWideInputs.name)  # those alone fail now
    _NoRoomForWideInputs.fails = staticmethod(  # type: ignore[method-assign]
        lambda arch: supernet.encode(supernet.canonical(arch)) in failed_before
    )

    second = job(seed=5, budget={"evaluations": 6, "failures": 0})  # none may count
    assert job.runner.run(second) == JobStatus.succeeded
    keys, stored = _stored(job.factory, second)
    assert stored.spec[job_keys.RETRYING] == {again: first}
    taken = [f["subnet_id"] for f in stored.spec[job_keys.FAILED] if f.get(job_keys.REUSED_FROM)]
    assert sorted(taken) == sorted(set(failed_before) - {again})
    [retried] = [f for f in stored.spec[job_keys.FAILED] if f.get(job_keys.RETRIED_FROM)]
    assert retried["subnet_id"] == again and retried[job_keys.RETRIED_FROM] == first
    assert _NoRoomForWideInputs.attempts[again] == 2  # measured again, failed again
    assert job_keys.failures_counted(stored.spec) == 0  # "failures": 0 did not end the job
    said = stored.message or ""
    assert (
        f"{len(taken)} sub-networks whose measurement failed in earlier jobs not measured" in said
    )
    assert "1 other measured again if the search proposes it (one in 10" in said
    assert f"sub-network {again} failed again, as in job {first} (not counted)" in said

    # resumed as if its worker had died after its first result: what it decided stands
    as_if_died_after_its_first(job.factory, second)
    assert job.runner.run(second) == JobStatus.succeeded
    _, resumed = _stored(job.factory, second)
    assert resumed.spec[job_keys.RETRYING] == {again: first}
    assert [f for f in resumed.spec[job_keys.FAILED] if f.get(job_keys.RETRIED_FROM)] == [retried]
    assert _NoRoomForWideInputs.attempts[again] == 2  # not measured a third time
    assert job_keys.failures_counted(resumed.spec) == 0
    said = resumed.message or ""  # said again: the claim cleared the message
    assert "1 other measured again if the search proposes it (one in 10" in said
    assert f"sub-network {again} failed again, as in job {first} (not counted)" in said

    # the device has room now: a third job measures it, and later jobs take it no more
    _NoRoomForWideInputs.fails = staticmethod(lambda arch: False)  # type: ignore[method-assign]
    monkeypatch.setattr(failures, "retried", lambda job_id, subnet_id: subnet_id == again)
    third = job(seed=6, budget={"evaluations": 6})
    assert job.runner.run(third) == JobStatus.succeeded
    keys, stored = _stored(job.factory, third)
    assert again in keys and stored.spec[job_keys.RETRYING] == {again: second}  # the newest failure
    monkeypatch.setattr(failures, "retried", lambda job_id, subnet_id: False)
    fourth = job(seed=7, budget={"evaluations": 2})
    assert job.runner.run(fourth) == JobStatus.succeeded
    _, stored = _stored(job.factory, fourth)
    taken = {f["subnet_id"] for f in stored.spec[job_keys.FAILED] if f.get(job_keys.REUSED_FROM)}
    assert taken == set(failed_before) - {again}


def test_a_warm_start_measures_again_the_failures_of_jobs_long_before(
    job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure after which ``SHARED_JOBS`` of the pair's jobs measured something and
    ended is left to measure again, not taken: a passing state of the device (here it
    healed) is shared for that many jobs, not for good."""
    monkeypatch.setattr(failures, "SHARED_JOBS", 2)
    monkeypatch.setattr(failures, "retried", lambda job_id, subnet_id: False)  # none by hash
    first = job(budget={"evaluations": 20, "failures": 15})
    assert job.runner.run(first) == JobStatus.succeeded
    _, earlier = _stored(job.factory, first)
    failed_before = sorted(f["subnet_id"] for f in earlier.spec[job_keys.FAILED] if not f["anchor"])
    assert len(failed_before) >= 2

    def taken_and_retrying(job_id: str) -> tuple[list[str], dict[str, str]]:
        _, stored = _stored(job.factory, job_id)
        taken = sorted(
            f["subnet_id"] for f in stored.spec[job_keys.FAILED] if f.get(job_keys.REUSED_FROM)
        )
        return taken, stored.spec.get(job_keys.RETRYING, {})

    _NoRoomForWideInputs.fails = staticmethod(lambda arch: False)  # type: ignore[method-assign]
    second = job(seed=5, budget={"evaluations": 3})
    assert job.runner.run(second) == JobStatus.succeeded
    assert taken_and_retrying(second) == (failed_before, {})  # 0 jobs since: taken
    third = job(seed=6, budget={"evaluations": 3})
    assert job.runner.run(third) == JobStatus.succeeded
    assert taken_and_retrying(third) == (failed_before, {})  # 1 job since
    fourth = job(seed=7, budget={"evaluations": 3})
    assert job.runner.run(fourth) == JobStatus.succeeded
    assert taken_and_retrying(fourth) == ([], dict.fromkeys(failed_before, first))  # 2 since
    measured, stored = _stored(job.factory, fourth)
    assert "and those 2 or more jobs old" in (stored.message or "")
    left = [key for key in failed_before if key not in measured]  # its search chose none

    _proposed_first(monkeypatch, left[0])  # proposed: measured, the device healed
    fifth = job(seed=8, budget={"evaluations": 3})
    assert job.runner.run(fifth) == JobStatus.succeeded
    keys, stored = _stored(job.factory, fifth)
    assert left[0] in keys and not stored.spec[job_keys.FAILED]
    assert set(stored.spec[job_keys.RETRYING]) == set(left)


class _NoRoomToEvaluate(_NoRoomForWideInputs):
    """A device whose memory holds the largest networks' timing, but not their evaluation
    on the validation data."""

    name = "test-no-room-to-evaluate"

    def timing_module(self, arch: dict[str, Any]) -> Any:
        return FmnistOFACNN.timing_module(self, arch)  # never fails

    def evaluate(self, arch: dict[str, Any], module: Any = None) -> dict[str, float]:
        if type(self).fails(arch):
            raise MemoryError("out of memory with the validation batch")
        return {"accuracy": 0.5}


def test_a_job_measuring_latency_only_takes_no_failure_of_the_evaluation(
    job: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure while evaluating accuracy (a step a job measuring latency only never runs)
    is not shared with such a job; a job measuring accuracy takes it."""
    monkeypatch.setitem(registry._FACTORIES, _NoRoomToEvaluate.name, _NoRoomToEvaluate)
    monkeypatch.setattr(failures, "retried", lambda job_id, subnet_id: False)
    name, budget = _NoRoomToEvaluate.name, {"evaluations": 10, "failures": 20}
    accuracy = {"objectives": {"accuracy": "max", "latency_ms": "min"}, "budget": budget}
    first = job(supernet=name, **accuracy)
    try:
        assert job.runner.run(first) == JobStatus.succeeded
        _, earlier = _stored(job.factory, first)
        own = [f for f in earlier.spec[job_keys.FAILED] if not f["anchor"]]
        assert own and all(f[job_keys.QUALITY_STEP] for f in own)
        assert all("while evaluating on the validation data" in f["error"] for f in own)

        latency_only = job(supernet=name, seed=5)
        assert job.runner.run(latency_only) == JobStatus.succeeded
        _, stored = _stored(job.factory, latency_only)
        assert not any(f.get(job_keys.REUSED_FROM) for f in stored.spec.get(job_keys.FAILED, []))

        again = job(supernet=name, seed=6, **accuracy)
        assert job.runner.run(again) == JobStatus.succeeded
        _, stored = _stored(job.factory, again)
        taken = {
            f["subnet_id"] for f in stored.spec[job_keys.FAILED] if f.get(job_keys.REUSED_FROM)
        }
        assert taken == {f["subnet_id"] for f in own}  # timed since, not evaluated: all
    finally:
        registry._INSTANCES.pop(name, None)
