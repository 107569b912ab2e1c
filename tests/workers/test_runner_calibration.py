"""A calibration job run by the job runner: stopped part-way it goes back to the queue,
and resumed by another worker it measures only what is missing of the same sample, then
stores one predictor version naming the job."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from api.presenters import calibration_public, job_public
from api.routes.calibrations import calibration_spec
from api.schemas import CalibrationCreate
from hardware_profiles.latency_sample import sample_archs
from models.registry import get_supernet
from store import evaluations as eq
from store import job_keys
from store import jobs as q
from store import predictors as p
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.tables import JobKind, JobStatus
from workers import runner as runner_module
from workers.calibration import fit_predictor
from workers.evaluator import Measurement, SubnetEvaluator
from workers.runner import JobRunner

from ..conftest import embedded_settings

DEVICE, N = "nb201-pixel3", 12


def test_a_stopped_calibration_resumes_without_measuring_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    body = CalibrationCreate(supernet="nb201-cifar10", n_samples=N, seed=4)
    spec = calibration_spec(DEVICE, body)
    with transaction(factory) as session:
        (row,) = q.create_jobs(session, [(spec, None)])
    assert row.kind == JobKind.calibration

    measured: list[str] = []
    stop = threading.Event()
    original = SubnetEvaluator.measure

    def counting(self: SubnetEvaluator, arch: dict[str, object]) -> Measurement:
        measured.append(self.supernet.encode(arch))
        if len(measured) == 5:
            stop.set()  # the first worker shuts down after its 5th measurement
        return original(self, arch)

    monkeypatch.setattr(SubnetEvaluator, "measure", counting)
    assert JobRunner(factory, settings, "worker-1", stop=stop).run(row.id) == JobStatus.queued
    with transaction(factory) as session:
        job = q.get_job(session, row.id)
        assert (job.status, job.evaluations_done) == (JobStatus.queued, 5)
        assert p.list_predictors(session, DEVICE)[0] == []

    assert JobRunner(factory, settings, "worker-2").run(row.id) == JobStatus.succeeded
    supernet = get_supernet("nb201-cifar10")
    sample = [supernet.encode(a) for a in sample_archs(supernet, N, 4)]
    assert measured == sample  # the seeded sample, in order, each sub-network once
    with transaction(factory) as session:
        evaluations, total = eq.list_evaluations(session, row.id)
        assert total == N and [e.subnet_id for e in evaluations] == sample
        assert [e.details["worker"] for e in evaluations] == ["worker-1"] * 5 + ["worker-2"] * 7
        (record,) = p.list_predictors(session, DEVICE)[0]
        assert (record.job_id, record.version, record.n_measurements) == (row.id, 1, N)
        assert [s["subnet_id"] for s in record.measurements["subnets"]] == sample
        job = q.get_job(session, row.id)
        assert (
            job.status == JobStatus.succeeded and job.attempts == 1
        )  # the run handed back is none
        assert job.message.startswith("latency predictor v1 (scaled-lut) of nb201-cifar10")
        assert job.message.endswith("; resumed after 5 measurements")  # as a search says it


def test_a_calibration_whose_fit_fails_fails_with_the_reason(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    # Fewer measurements than the predictor's cross-validation needs: refused at the fit.
    spec = {**calibration_spec(DEVICE, CalibrationCreate(supernet="nb201-cifar10")),
            "budget": {"evaluations": 2}}  # fmt: skip
    with transaction(factory) as session:
        (row,) = q.create_jobs(session, [(spec, None)])
    assert JobRunner(factory, settings, "worker-1").run(row.id) == JobStatus.failed
    with transaction(factory) as session:
        job = q.get_job(session, row.id)
        assert job.evaluations_done == 2 and "need >=" in (job.error or "")
        assert p.list_predictors(session, DEVICE)[0] == []


def _queued_calibration(tmp_path: Path) -> tuple[Any, Any, str]:
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = calibration_spec(DEVICE, CalibrationCreate(supernet="nb201-cifar10", n_samples=8))
    with transaction(factory) as session:
        (row,) = q.create_jobs(session, [(spec, None)])
    return settings, factory, row.id


def test_a_cancel_asked_while_fitting_stores_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, factory, job_id = _queued_calibration(tmp_path)

    def cancel_then_fit(spec: dict[str, Any], measured: Any) -> Any:
        with transaction(factory) as session:
            q.request_cancel(session, job_id)
        return fit_predictor(spec, measured)

    monkeypatch.setattr(runner_module, "fit_predictor", cancel_then_fit)
    assert JobRunner(factory, settings, "worker-1").run(job_id) == JobStatus.cancelled
    with transaction(factory) as session:
        assert q.get_job(session, job_id).evaluations_done == 8
        assert p.list_predictors(session, DEVICE)[0] == []


def test_a_fit_that_fails_after_a_takeover_leaves_the_new_runners_job_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, factory, job_id = _queued_calibration(tmp_path)

    def taken_over_then_broken(spec: dict[str, Any], measured: Any) -> Any:
        with transaction(factory) as session:  # worker-2 takes the job (worker-1 seemed dead)
            assert q.claim_job(session, job_id, "worker-2", stale_after_s=0.0) is not None
        raise RuntimeError("the fit broke")

    monkeypatch.setattr(runner_module, "fit_predictor", taken_over_then_broken)
    assert JobRunner(factory, settings, "worker-1").run(job_id) is None
    with transaction(factory) as session:
        job = q.get_job(session, job_id)
        assert (job.status, job.worker_id, job.error) == (JobStatus.running, "worker-2", None)


def _calibration_with_failures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n_samples: int
) -> tuple[Any, Any, dict[str, Any], list[str], set[str]]:
    """A migrated database (settings, session factory), a calibration spec of ``n_samples``,
    its sample's ids in measurement order, and the set of ids whose measurement raises
    MemoryError (empty: the test fills it)."""
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    body = CalibrationCreate(supernet="nb201-cifar10", n_samples=n_samples)
    spec = calibration_spec(DEVICE, body)
    supernet = get_supernet("nb201-cifar10")
    sample = [supernet.encode(a) for a in sample_archs(supernet, n_samples, spec["seed"])]
    failing: set[str] = set()
    original = SubnetEvaluator.measure

    def measure(self: SubnetEvaluator, arch: dict[str, object]) -> Measurement:
        if self.supernet.encode(arch) in failing:
            raise MemoryError("out of device memory")
        return original(self, arch)

    monkeypatch.setattr(SubnetEvaluator, "measure", measure)
    return settings, factory, spec, sample, failing


def test_a_calibration_skips_the_samples_that_cannot_be_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sample's largest networks out of a small device's memory failed the whole
    calibration; they are skipped now, as a search skips them, and the fit takes the rest."""
    settings, factory, spec, sample, failing = _calibration_with_failures(tmp_path, monkeypatch, N)
    failing.update({sample[1], sample[4]})
    with transaction(factory) as session:
        (row,) = q.create_jobs(session, [(spec, None)])
    assert JobRunner(factory, settings, "worker-1").run(row.id) == JobStatus.succeeded
    with transaction(factory) as session:
        job = q.get_job(session, row.id)
        [predictor] = p.list_predictors(session, DEVICE)[0]
        assert [f["subnet_id"] for f in job.spec[job_keys.FAILED]] == [sample[1], sample[4]]
        assert job.evaluations_done == N - 2
        assert {s["subnet_id"] for s in predictor.measurements["subnets"]} == set(sample) - failing
        assert [(f["subnet_id"], f["error"]) for f in predictor.measurements["failed"]] == [
            (sample[1], "MemoryError: out of device memory"),
            (sample[4], "MemoryError: out of device memory"),
        ]  # what the fit left out, with the predictor
        assert "failed measurements are skipped, at most 6" in (job.message or "")
        shown = job_public(job, "http://x")
        assert shown.progress.fraction == 1.0  # its sample done: 10 measured, 2 failed
        assert [
            f.subnet_id for f in calibration_public(predictor, code_alike=True).failed_samples
        ] == [
            sample[1],
            sample[4],
        ]

    failing.update(sample)  # every one fails: the fifth ends the job
    with transaction(factory) as session:
        (again,) = q.create_jobs(session, [(spec, None)])
    assert JobRunner(factory, settings, "worker-1").run(again.id) == JobStatus.failed
    with transaction(factory) as session:
        job = q.get_job(session, again.id)
        assert len(job.spec[job_keys.FAILED]) == 4 and job.evaluations_done == 0
        assert "and none succeeded: every measurement fails" in (job.message or "")
        assert job_public(job, "http://x").progress.fraction == round(4 / N, 4)


def test_a_small_calibration_fails_at_the_failure_that_leaves_too_few_to_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 6-sample calibration allowed 3 failures, then measured the rest and failed its fit
    ("need >= 5 measurements"); it allows 1 now and says why at the second (review 24c)."""
    settings, factory, spec, sample, failing = _calibration_with_failures(tmp_path, monkeypatch, 6)
    failing.update(sample[:2])
    with transaction(factory) as session:
        (row,) = q.create_jobs(session, [(spec, None)])
    assert JobRunner(factory, settings, "worker-1").run(row.id) == JobStatus.failed
    with transaction(factory) as session:
        job = q.get_job(session, row.id)
        assert [f["subnet_id"] for f in job.spec[job_keys.FAILED]] == sample[:1]
        assert job.evaluations_done == 0  # ended at the second sample, not after all six
        said = "1 failed measurement skipped before it: a sample of 6, whose fit needs 5 allows 1"
        assert said in (job.message or "")
