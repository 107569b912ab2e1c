"""A run's wall time is booked in the transaction that ends the run: no reader ever sees a
finished job whose ``run_seconds`` lacks it (a poller used to catch ``run_seconds == 0``
between the commit marking the job succeeded and the one adding the time)."""

from __future__ import annotations

import dataclasses
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from api.schemas import JobCreate
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.tables import Job, JobStatus
from workers.evaluator import SubnetEvaluator
from workers.runner import JobRunner

from ..conftest import embedded_settings

SPEC: dict[str, Any] = {
    "supernet": "nb201-cifar10",
    "device": "nb201-pixel3",
    "objectives": {"accuracy": "max", "latency_ms": "min"},
    "budget": {"evaluations": 6},
    "strategy": "random",
    "seed": 3,
}


def _run_watching_commits(
    tmp_path: Path, spec: dict[str, Any], clock: list[float] | None = None, **settings_: Any
) -> tuple[JobStatus | None, list[tuple[JobStatus, float, float]]]:
    """Run one job; (its final status, (status, run_seconds, eval_seconds) after each commit).
    ``clock``: gets the wall time of the run itself appended."""
    settings = embedded_settings(tmp_path, **settings_)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    with transaction(factory) as session:
        (row,) = q.create_jobs(session, [(JobCreate(**spec).model_dump(mode="json"), None)])
    seen: list[tuple[JobStatus, float, float]] = []
    columns = select(Job.status, Job.run_seconds, Job.eval_seconds).where(Job.id == row.id)

    def after_commit(_session: Session) -> None:  # read as another connection would
        with engine.connect() as reader:
            status, run_s, eval_s = reader.execute(columns).one()
            seen.append((JobStatus(status), run_s, eval_s))

    event.listen(factory, "after_commit", after_commit)
    try:
        started = time.perf_counter()
        status = JobRunner(factory, settings, "worker-1").run(row.id)
        if clock is not None:
            clock.append(time.perf_counter() - started)
    finally:
        event.remove(factory, "after_commit", after_commit)
        engine.dispose()
    return status, seen


def test_the_commit_that_finishes_a_job_carries_its_run_time(tmp_path: Path) -> None:
    status, seen = _run_watching_commits(tmp_path, SPEC)
    assert status is JobStatus.succeeded
    finished = [s for s in seen if s[0].finished]
    assert finished, seen
    for _, run_s, eval_s in finished:  # from the very first commit that shows it finished
        assert run_s > 0.0 and run_s >= eval_s
    assert seen[-1][0] is JobStatus.succeeded  # nothing changes the row after that commit
    assert seen[-1][1] == finished[0][1]


def test_a_failed_job_carries_its_run_time_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("the evaluator blew up")

    monkeypatch.setattr("workers.runner.SubnetEvaluator.measure", broken)
    status, seen = _run_watching_commits(tmp_path, SPEC)
    assert status is JobStatus.failed
    finished = [s for s in seen if s[0].finished]
    assert finished and all(s[0] is JobStatus.failed and s[1] > 0.0 for s in finished)


def test_a_running_jobs_time_grows_with_its_heartbeats_and_is_booked_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pollers see run_seconds grow while the job runs (a killed run loses at most one
    heartbeat's worth); the heartbeat thread and the run's end never book the same time."""
    measure = SubnetEvaluator.measure

    def slow(self: SubnetEvaluator, arch: Any, known: Any = None) -> Any:
        time.sleep(0.3)
        return measure(self, arch, known)

    monkeypatch.setattr(SubnetEvaluator, "measure", slow)
    clock: list[float] = []
    status, seen = _run_watching_commits(tmp_path, SPEC, clock, heartbeat_s=0.2)
    assert status is JobStatus.succeeded
    running = [run_s for state, run_s, _ in seen if state is JobStatus.running]
    assert running and max(running) > 0.6, running  # booked by heartbeats mid-run
    assert running == sorted(running)
    final, (wall,) = seen[-1][1], clock
    # Booked once: what the run took, less only its set-up before its clock starts (~0.03
    # s here); a heartbeat's 0.2 s booked twice, or lost, would show.
    assert 6 * 0.3 < final <= wall and wall - final < 0.15, (final, wall)


def test_each_evaluation_books_the_run_time_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run killed between two heartbeats lost the time since the last one, while the
    evaluations committed meanwhile kept theirs: ``run_seconds`` could end below
    ``eval_seconds`` (and ``hwnas run`` showed negative time outside measurement). Each
    evaluation's commit now books the run's time so far, heartbeat or not."""
    measure = SubnetEvaluator.measure

    def slow(self: SubnetEvaluator, arch: Any, known: Any = None) -> Any:
        measured = measure(self, arch, known)
        time.sleep(0.05)
        return dataclasses.replace(measured, seconds=0.05)  # all of it was the measurement

    monkeypatch.setattr(SubnetEvaluator, "measure", slow)
    status, seen = _run_watching_commits(  # no heartbeat
        tmp_path, SPEC, heartbeat_s=3600.0, stale_after_s=7200.0
    )
    assert status is JobStatus.succeeded
    running = [(run_s, eval_s) for state, run_s, eval_s in seen if state is JobStatus.running]
    measured = [(run_s, eval_s) for run_s, eval_s in running if eval_s > 0]
    assert len(measured) >= 6, seen
    assert all(run_s >= eval_s for run_s, eval_s in measured), measured


@pytest.mark.parametrize(
    "site",
    [
        "/venv/lib/python3.11/site-packages",  # a virtual environment's
        sysconfig.get_paths()["stdlib"] + "/site-packages",  # a system Python's (Docker image)
    ],
)
def test_a_failed_jobs_traceback_keeps_a_pip_installed_plugins_frames(site: str) -> None:
    """Frames were left out by "site-packages" in their path: a plugin installed with pip
    (as docs/plugins.md says) lost its own, and torch's were all that was left."""
    import torch

    from workers.job_errors import short_traceback

    source = "def forward():\n    return torch.nn.Conv2d(1, 1, 3)(torch.zeros(1, 784))\n"
    namespace: dict[str, object] = {"torch": torch}
    exec(compile(source, f"{site}/my_plugin/net.py", "exec"), namespace)
    try:
        namespace["forward"]()  # type: ignore[operator]
    except RuntimeError as exc:
        error = short_traceback(exc)
    assert f"{site}/my_plugin/net.py" in error and "in forward" in error
    assert "/torch/nn/modules/conv.py" in error  # where it was raised


def test_a_failed_jobs_error_keeps_the_head_of_a_long_exception_text() -> None:
    """torch's tracer check puts both graphs in its message: a job's error was 100 KB."""
    from workers.job_errors import ERROR_CHARS, ERROR_LINES, short_traceback

    graphs = "\n".join(f"  %{i} : Tensor = aten::conv2d(%x, %w{i})" for i in range(3000))
    try:
        raise RuntimeError(f"Tracing failed sanity checks!\nGraphs differed:\n{graphs}")
    except RuntimeError as exc:
        error = short_traceback(exc)
    said = error.split("RuntimeError: ", 1)[1]
    assert said.startswith("Tracing failed sanity checks!\nGraphs differed:\n  %0 : Tensor")
    assert len(said.splitlines()) <= ERROR_LINES + 1 and len(said) < ERROR_CHARS + 100
    assert said.endswith("more characters: see the worker's log)")
    for short in ("short\ntwo lines", "carriage\r\nreturns"):
        try:
            raise RuntimeError(short)
        except RuntimeError as exc:
            assert short_traceback(exc).endswith(f"RuntimeError: {short}")


def test_a_job_stopped_before_its_budget_says_whether_the_space_is_known_measured() -> None:
    """A space over ENUMERATION_LIMIT is not enumerated: 64 misses in a row do not prove
    every sub-network was measured, and the job does not claim it."""
    from types import SimpleNamespace

    from search.base import ENUMERATION_LIMIT
    from workers.runner import _exhausted

    def plan(
        size: int,
        failed: int = 0,
        counted: int = 0,
        earlier: int = 0,
        again: int = 0,
        screened: int = 0,
    ) -> object:
        strategy = SimpleNamespace(
            space=SimpleNamespace(size=size), n_failed=failed, n_screened=screened
        )
        failures = SimpleNamespace(  # anchors are the failures not these
            counted=counted, from_earlier_jobs=earlier, failed_again=again
        )
        return SimpleNamespace(budget=10, strategy=strategy, failures=failures)

    small, large = _exhausted("net", plan(2), 2), _exhausted("net", plan(ENUMERATION_LIMIT + 1), 7)
    assert small == (
        "search space exhausted: every distinct sub-network of net was measured "
        "(2 new measurements of a budget of 10)"
    )
    assert large.startswith("search stopped early: 64 random draws in a row found no")
    assert large.endswith("(7 new measurements of a budget of 10)")
    assert _exhausted("net", plan(3, failed=1, counted=1), 2) == (
        "search space exhausted: every distinct sub-network of net was measured or failed "
        "(2 new measurements of a budget of 10, 1 failed)"
    )
    assert _exhausted("net", plan(5, failed=3, counted=1), 2).endswith(
        "(2 new measurements of a budget of 10, 3 failed (2 anchors))"
    )
    assert _exhausted("net", plan(9, failed=7, counted=1, earlier=4), 2).endswith(
        "(2 new measurements of a budget of 10, 7 failed (2 anchors, 4 in earlier jobs))"
    )
    assert _exhausted("net", plan(9, failed=7, counted=1, earlier=3, again=1), 2).endswith(
        "7 failed (2 anchors, 3 in earlier jobs, 1 in earlier jobs and again here))"
    )
    # the screen's (session 33): sub-networks passed over unmeasured
    assert _exhausted("net", plan(6, screened=4), 2) == (
        "search space exhausted: every distinct sub-network of net was measured or passed "
        "over (2 new measurements of a budget of 10, 4 passed over (their counted metrics "
        "break the constraints))"
    )
    assert _exhausted("net", plan(7, failed=1, counted=1, screened=4), 2).startswith(
        "search space exhausted: every distinct sub-network of net was measured, failed or "
        "passed over (2 new measurements of a budget of 10, 1 failed, 4 passed over"
    )


def test_a_job_says_when_its_latencies_were_measured_on_a_busy_device() -> None:
    """Medians of 10-23 ms were stored for 2 ms networks on a loaded host, ranked and put
    on the front, with nothing said."""
    from hardware_profiles.configured import device_profile
    from store.tables import Evaluation
    from workers.busy_device import noisy_latency_note

    def measured(rel_ci: float, p10_ms: float = 1.9, **more: object) -> Evaluation:
        latency = {"provenance": "measured", "rel_ci": rel_ci, "median_ms": 2.0, "p10_ms": p10_ms}
        return Evaluation(details={"latency": latency, **more})

    profile = device_profile("cpu-1t")  # target +-2 %
    quiet = [measured(0.011), measured(0.02), measured(0.031)]
    assert noisy_latency_note(quiet, profile) is None
    busy = [*quiet, measured(0.63), measured(4.1), measured(9.0, reused_from="other-job")]
    note = noisy_latency_note(busy, profile)
    assert note is not None and note.startswith("busy device: 2 of 5 latencies were measured")
    assert "up to +-410% against a target of +-2%" in note
    # Steady contention: a narrow interval around a median 5-7 times the fastest calls
    # (medians of 10-15 ms for 2 ms networks, user probe of session 21) was taken as quiet.
    skewed = [*quiet, measured(0.016, p10_ms=0.38), measured(0.02, p10_ms=1.9)]
    note = noisy_latency_note(skewed, profile)
    assert note is not None and note.startswith("busy device: 1 of 5 latencies")
    assert "; up to 5.3 times p10: details" in note and "against a target" not in note
    recorded = device_profile("nb201-pixel3")
    table = [Evaluation(details={"latency": {"provenance": "recorded", "median_ms": 1.0}})]
    assert noisy_latency_note(table, recorded) is None
