"""Stored latency predictors: versions per (supernet, device), latest reused, on every backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect

from alembic import command
from core.errors import NotFound, StorageError
from store import jobs
from store import predictors as q
from store.db import alembic_config, make_engine, transaction, upgrade
from store.tables import LatencyPredictorRecord

from .backends import database_url, migrated_database

BACKENDS = ["sqlite", "postgresql"]


def payload(kind: str = "lut", n: int = 10, within: float = 0.9) -> dict[str, Any]:
    metrics = {"n": n, "within_10pct": within, "spearman": 0.97, "mape": 0.04}
    return {"format": 1, "kind": kind, "params": {"coef": [0.1, 0.2]}, "features": {},
            "n_measurements": n, "metrics": metrics}  # fmt: skip


def store(factory: Any, supernet: str, device: str, **kw: Any) -> LatencyPredictorRecord:
    with transaction(factory) as session:
        return q.add_predictor(
            session, supernet=supernet, device=device, payload=payload(**kw),
            measurements={"subnets": []}, seed=0, seconds=1.5,
        )  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_versions_count_up_per_pair_and_the_latest_is_reused(backend: str, tmp_path: Path) -> None:
    with migrated_database(backend, tmp_path) as (url, engine, factory):
        first = store(factory, "fmnist-ofa-cnn", "cpu-1t", n=10)
        second = store(factory, "fmnist-ofa-cnn", "cpu-1t", kind="ridge", n=50)
        other = store(factory, "fmnist-ofa-cnn", "cpu-ort")
        assert (first.version, second.version, other.version) == (1, 2, 1)
        with transaction(factory) as session:
            versions_of = q.predictor_versions(session, "fmnist-ofa-cnn", "cpu-1t")
            listed = [(v, m["n"], m["spearman"]) for v, m in versions_of]
            assert listed == [(2, 50, 0.97), (1, 10, 0.97)]
            latest = q.get_predictor(session, "fmnist-ofa-cnn", "cpu-1t", 2)
            assert latest.kind == "ridge" and latest.payload["metrics"]["n"] == 50
            assert q.predictor_versions(session, "nb201-cifar10", "cpu-1t") == []
            versions = [r.version for r in q.list_predictors(session, "cpu-1t")[0]]
            assert versions == [2, 1]
            assert q.list_predictors(session, "cpu-1t", "nb201-cifar10")[0] == []
            assert q.get_predictor(session, "fmnist-ofa-cnn", "cpu-ort", 1).id == other.id
            with pytest.raises(NotFound, match="version 3"):
                q.get_predictor(session, "fmnist-ofa-cnn", "cpu-ort", 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_version_number_is_never_stored_twice(backend: str, tmp_path: Path) -> None:
    with migrated_database(backend, tmp_path) as (url, engine, factory):
        store(factory, "fmnist-ofa-cnn", "cpu-1t")
        with pytest.raises(StorageError), transaction(factory) as session:
            session.add(
                LatencyPredictorRecord(
                    supernet="fmnist-ofa-cnn",
                    device="cpu-1t",
                    version=1,
                    kind="lut",
                    seed=0,
                    n_measurements=10,
                    metrics={},
                    payload={},
                    measurements={},
                    seconds=0.0,
                )  # fmt: skip
            )


@pytest.mark.parametrize("backend", BACKENDS)
def test_migration_0002_adds_and_removes_the_table(backend: str, tmp_path: Path) -> None:
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        assert "latency_predictors" in inspect(engine).get_table_names()
        command.downgrade(alembic_config(url), "0001")
        tables = set(inspect(engine).get_table_names())
        assert "latency_predictors" not in tables and {"jobs", "evaluations"} <= tables
        engine.dispose()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_calibration_job_stores_at_most_one_version(backend: str, tmp_path: Path) -> None:
    with migrated_database(backend, tmp_path) as (url, engine, factory):
        with transaction(factory) as session:
            (job,) = jobs.create_jobs(session, [(calibration_job_spec(), None)])

        def by_job() -> LatencyPredictorRecord:
            with transaction(factory) as session:
                return q.add_predictor(
                    session, supernet="nb201-cifar10", device="nb201-pixel3",
                    payload=payload(), measurements={"subnets": []}, seed=0, seconds=1.0,
                    job_id=job.id,
                )  # fmt: skip

        assert by_job().job_id == job.id
        with pytest.raises(StorageError):
            by_job()
        store(factory, "nb201-cifar10", "nb201-pixel3")  # no job: any number of them
        store(factory, "nb201-cifar10", "nb201-pixel3")
        with transaction(factory) as session:
            assert len(q.list_predictors(session, "nb201-pixel3")[0]) == 3
            assert len(q.list_predictors(session, "nb201-pixel3", job_id=job.id)[0]) == 1


def calibration_job_spec() -> dict[str, Any]:
    return {"kind": "calibration", "supernet": "nb201-cifar10", "device": "nb201-pixel3",
            "strategy": "uniform", "seed": 0, "budget": {"evaluations": 10},
            "objectives": {}, "constraints": {}, "warm_start": False,
            "predictor_kind": "lut"}  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_versions_are_taken_by_the_code_they_timed(backend: str, tmp_path: Path) -> None:
    """A plugin's calibration timed its code as it was: a version fitted before the code
    changed kept steering the new code's searches (review 29b)."""
    with migrated_database(backend, tmp_path) as (_url, _engine, factory):
        for measurements in ({"subnets": []}, {q.MEASURED_CODE: None}, {q.MEASURED_CODE: "v1"},
                             {q.MEASURED_CODE: "v2"}):  # fmt: skip
            with transaction(factory) as session:
                q.add_predictor(session, supernet="p", device="cpu-1t", payload=payload(),
                                measurements=measurements, seed=0, seconds=1.0)  # fmt: skip
        with transaction(factory) as session:
            versions = {
                codes: [v for v, _ in q.predictor_versions(session, "p", "cpu-1t", codes)]
                for codes in [("v2",), ("v1", "v3"), (None,), ()]
            }
            assert [v for v, _ in q.predictor_versions(session, "p", "cpu-1t")] == [4, 3, 2, 1]
    assert versions == {("v2",): [4, 2, 1], ("v1", "v3"): [3, 2, 1], (None,): [2, 1], (): [2, 1]}
