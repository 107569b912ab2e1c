"""``workers.warm_start.copy_earlier`` on its own: what a warm start run again keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from hardware_profiles.configured import device_profile
from store import job_keys
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from workers import failures
from workers.warm_start import copy_earlier

SPEC = {
    "supernet": "fmnist-ofa-cnn",
    "device": "cpu-1t",
    "strategy": "random",
    "seed": 0,
    "budget": {"evaluations": 5},
    "objectives": {"accuracy": "max", "latency_ms": "min"},
    "constraints": {},
}


def test_a_warm_start_run_again_keeps_what_it_left_to_measure_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sub-network an earlier run of the job left to measure again (``RETRYING``) is not
    taken as failed by the next run, whatever that run's own choice would be (the job's
    search may have measured it meanwhile: taken, it would be both)."""
    url = f"sqlite:///{tmp_path / 'hwnas.db'}"
    upgrade(url)
    factory = make_session_factory(make_engine(url))
    entry = {"error": "MemoryError: out", "anchor": False, "after": 0}
    with transaction(factory) as session:
        earlier = q.create_job(session, {**SPEC, job_keys.FAILED: [
            {**entry, "subnet_id": key} for key in ("kept", "left")
        ]}).id  # fmt: skip
        q.get_job(session, earlier).evaluations_done = 1
        job_id = q.create_job(session, {**SPEC, job_keys.RETRYING: {"left": earlier}}).id
    monkeypatch.setattr(failures, "retried", lambda job_id, subnet_id: False)  # none now
    with transaction(factory) as session:
        job = q.get_job(session, job_id, lock=True)
        started = copy_earlier(
            session, job, dict(job.spec), 100, device_profile("cpu-1t"), quality=True,
            quality_metrics=["accuracy"],
        )  # fmt: skip
    taken = [e["subnet_id"] for e in started.spec[job_keys.FAILED]]
    assert taken == ["kept"] and started.spec[job_keys.RETRYING] == {"left": earlier}
