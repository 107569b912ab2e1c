"""A job measures its supernet's anchors (``Supernet.anchors``: the smallest and the largest
sub-network) before anything else, unless they would take over a fifth of its budget or
one of its constraints rules them out; a resumed run keeps the first run's choice."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from api.schemas import JobCreate
from models import registry
from models.base import Complexity
from models.fmnist_cnn import FmnistOFACNN, largest_arch, smallest_arch
from models.registry import get_supernet
from store import evaluations as eq
from store import job_keys
from store import jobs as q
from store.db import make_engine, make_session_factory, transaction, upgrade
from store.tables import JobStatus
from workers.anchors import ANCHORS_SAID
from workers.calibration import PredictedLatency
from workers.evaluator import KnownQuality
from workers.runner import JobRunner, build_plan

from ..conftest import embedded_settings
from .resume import as_if_died_after_its_first

SPEC: dict[str, Any] = {
    "supernet": "fmnist-ofa-cnn",
    "device": "cpu-1t",
    "objectives": {"accuracy": "max", "macs": "min"},
    "budget": {"evaluations": 10},
    "strategy": "random",
    "seed": 3,
}
SMALL, LARGE = (get_supernet("fmnist-ofa-cnn").encode(a) for a in (smallest_arch(), largest_arch()))


def _first(plan: Any) -> list[str]:
    return [plan.strategy.space.key(a) for a in plan.strategy.initial_left]


def _anchored(prior: PredictedLatency | None = None, **changes: Any) -> list[str]:
    return _first(build_plan({**SPEC, **changes}, 0, prior))


def _estimate(small_ms: float, large_ms: float) -> PredictedLatency:
    """A stand-in for the pair's stored latency predictor."""
    return cast(PredictedLatency, lambda archs: [small_ms if a == smallest_arch() else large_ms
                                                 for a in archs])  # fmt: skip


def test_a_plan_proposes_the_smallest_and_the_largest_network_first() -> None:
    for strategy in ("random", "nsga2", "tpe", "linas"):
        assert _anchored(strategy=strategy) == [SMALL, LARGE]
    assert _anchored(budget={"evaluations": 9}) == []  # two would be over a fifth of it
    assert _anchored(supernet="nb201-cifar10", device="nb201-pixel3") == []  # no ends


def test_anchors_a_constraint_rules_out_are_left_out() -> None:
    supernet = get_supernet("fmnist-ofa-cnn")
    small, large = (supernet.complexity(a) for a in (smallest_arch(), largest_arch()))
    # counted before measuring: checked
    assert _anchored(constraints={"macs": {"max": (small.macs + large.macs) / 2}}) == [SMALL]
    assert _anchored(constraints={"params": {"min": large.params + 1}}) == []
    # latency: by the stored predictor's estimate, where the job has one ...
    latency = {"latency_ms": {"max": 4.0}}
    assert _anchored(_estimate(1.0, 9.0), constraints=latency) == [SMALL]
    assert _anchored(_estimate(1.0, 3.0), constraints=latency) == [SMALL, LARGE]
    assert _anchored(_estimate(5.0, 9.0), constraints=latency) == []
    # ... else not known before measuring: an upper bound rules out the costliest, a floor
    # the cheapest (a floor on accuracy: the smallest network is the least accurate)
    assert _anchored(constraints=latency) == [SMALL]
    assert _anchored(constraints={"latency_ms": {"min": 0.5}}) == [LARGE]
    assert _anchored(constraints={"accuracy": {"min": 0.9}}) == [LARGE]
    assert _anchored(constraints={"accuracy": {"min": 0.9}, **latency}) == []
    # the ends are those of all the anchors, whatever the counted metrics left
    half_macs = {"macs": {"max": (small.macs + large.macs) / 2}}
    assert _anchored(constraints={**half_macs, **latency}) == [SMALL]
    half_params = {"params": {"min": (small.params + large.params) / 2}}
    assert _anchored(constraints={**half_params, "accuracy": {"min": 0.5}}) == [LARGE]


def test_an_anchor_whose_quality_another_device_measured_is_checked_on_it() -> None:
    """A floor on accuracy dropped the smallest network even when its accuracy, measured by
    a job on another device, was known to meet it (review 23b, L5)."""
    floor = {"accuracy": {"min": 0.7}}

    def anchored(**accuracy: float) -> list[str]:
        known = {SMALL if name == "small" else LARGE: KnownQuality({"accuracy": value}, "j")
                 for name, value in accuracy.items()}  # fmt: skip
        return _first(build_plan({**SPEC, "constraints": floor}, known=known))

    assert anchored() == [LARGE]  # not known: at risk from its own end
    assert anchored(small=0.75) == [SMALL, LARGE]
    assert anchored(small=0.65) == [LARGE]  # known to break it
    assert anchored(small=0.75, large=0.65) == [SMALL]


def test_a_job_screens_its_anchors_with_the_accuracy_other_devices_measured(
    tmp_path: Path,
) -> None:
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    runner = JobRunner(factory, settings, "worker-1")

    def run(spec: dict[str, Any]) -> Any:
        with transaction(factory) as session:
            body = JobCreate(**spec).model_dump(mode="json")
            job_id = q.create_jobs(session, [(body, None)])[0].id
        assert runner.run(job_id) == JobStatus.succeeded
        with transaction(factory) as session:
            job = q.get_job(session, job_id)
            evaluations = {e.subnet_id: e.metrics for e in eq.list_evaluations(session, job_id)[0]}
            return job.spec, evaluations

    _, first = run(SPEC)  # measures both ends' accuracy on cpu-1t
    accuracy = first[SMALL]["accuracy"]
    on_another = {**SPEC, "device": "cpu-all", "objectives": {"latency_ms": "min"}}
    meets = {**on_another, "constraints": {"accuracy": {"min": accuracy}}}
    spec, measured = run(meets)
    assert spec[job_keys.ANCHORS][0] == SMALL  # known to meet the floor (it was left out)
    assert measured[SMALL]["accuracy"] == accuracy  # taken, not evaluated again
    breaks = {**on_another, "constraints": {"accuracy": {"min": accuracy + 1e-6}}}
    with transaction(factory) as session:
        body = JobCreate(**breaks).model_dump(mode="json")
        job_id = q.create_jobs(session, [(body, None)])[0].id
    supernet = get_supernet("fmnist-ofa-cnn")
    _, known = runner._from_other_devices(job_id, body, supernet)
    assert SMALL not in _first(build_plan(body, known=known))  # known to break it


def test_the_prior_screens_the_uniform_proposals_after_the_anchors() -> None:
    spec = {**SPEC, "strategy": "linas", "budget": {"evaluations": 100}}
    spec["constraints"] = {"latency_ms": {"max": 4.0}}
    plan = build_plan(spec, 0, _estimate(1.0, 3.0))
    assert _first(plan) == [SMALL, LARGE]
    assert plan.strategy.prior_proposals_left() == 20 - 2  # linas's n_initial, less the anchors


class _Plugin(FmnistOFACNN):
    """The built-in supernet with a plugin's faults: its ``anchors`` or ``complexity``."""

    def __init__(self, anchors: Any = None, counting_fails: bool = False) -> None:
        super().__init__()
        self._anchors, self._counting_fails = anchors, counting_fails

    def anchors(self) -> list[dict[str, Any]]:
        if isinstance(self._anchors, Exception):
            raise self._anchors
        return super().anchors() if self._anchors is None else list(self._anchors)

    def complexity(self, arch: dict[str, Any]) -> Complexity:
        if self._counting_fails and arch == largest_arch():
            raise MemoryError("counting the largest")
        return super().complexity(arch)


@pytest.mark.parametrize(
    ("plugin", "said"),
    [
        (_Plugin(RuntimeError("no ends here")), "no ends here"),
        (_Plugin([{"r": 99}]), "gene 'r'"),
        (_Plugin([smallest_arch(), "small"]), "small"),
        (_Plugin(counting_fails=True), "counting the largest"),
    ],
    ids=["raises", "not-in-the-space", "not-an-architecture", "complexity-raises"],
)
def test_a_plugin_whose_anchors_fail_is_searched_without_them(
    plugin: _Plugin, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    plan = build_plan(SPEC, supernet=plugin)
    assert plan.strategy.initial_left == []
    assert "anchors not used, searching without them" in caplog.text and said in caplog.text


def test_a_plan_from_a_spec_that_records_anchors_takes_them_from_there() -> None:
    """A resumed run's: whatever a stored predictor or the plugin's code would choose by
    then; a job begun by a version without anchors records none."""
    assert _first(build_plan({**SPEC, job_keys.ANCHORS: [LARGE]}, 0, _estimate(1.0, 9.0))) == [
        LARGE
    ]
    assert _first(build_plan({**SPEC, job_keys.ANCHORS: []})) == []
    # one that no longer decodes (the plugin changed since) is skipped, not the job
    assert _first(build_plan({**SPEC, job_keys.ANCHORS: ["r99-bogus", SMALL]})) == [SMALL]


def test_a_resumed_run_measures_the_anchors_its_first_run_chose(tmp_path: Path) -> None:
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    runner = JobRunner(factory, settings, "worker-1")
    with transaction(factory) as session:
        job_id = q.create_jobs(session, [(JobCreate(**SPEC).model_dump(mode="json"), None)])[0].id

    def resumed_after_one(forget_anchors: bool) -> tuple[list[str], str]:
        """Run the job again as if its worker had died after its first evaluation (and, with
        ``forget_anchors``, as if a version without anchors had begun it)."""
        as_if_died_after_its_first(
            factory, job_id, **({job_keys.ANCHORS: None} if forget_anchors else {})
        )
        assert runner.run(job_id) == JobStatus.succeeded
        with transaction(factory) as session:
            keys = [e.subnet_id for e in eq.list_evaluations(session, job_id)[0]]
            return keys, q.get_job(session, job_id).message or ""

    assert runner.run(job_id) == JobStatus.succeeded
    with transaction(factory) as session:
        whole = [e.subnet_id for e in eq.list_evaluations(session, job_id)[0]]
        job = q.get_job(session, job_id)
    assert f"2 anchors of fmnist-ofa-cnn {ANCHORS_SAID}" in (job.message or "")
    assert job.spec[job_keys.ANCHORS] == [SMALL, LARGE]  # recorded at the first run
    assert whole[:2] == [SMALL, LARGE] and len(set(whole)) == len(whole) == 10
    keys, message = resumed_after_one(forget_anchors=False)
    assert keys == whole  # the same proposals, the second anchor included
    assert f"1 anchor of fmnist-ofa-cnn {ANCHORS_SAID}" in message  # said again
    keys, message = resumed_after_one(forget_anchors=True)
    assert LARGE not in keys and ANCHORS_SAID not in message


class _NoRoomForTheLargest(FmnistOFACNN):
    """A device without the memory for the largest network: measuring it fails."""

    name = "test-no-room-for-the-largest"

    def _refuse_the_largest(self, arch: dict[str, Any]) -> None:
        if self.encode(self.canonical(arch)) == LARGE:
            raise MemoryError("out of device memory")

    def extract(self, arch: dict[str, Any]) -> Any:
        self._refuse_the_largest(arch)
        return super().extract(arch)

    def timing_module(self, arch: dict[str, Any]) -> Any:
        self._refuse_the_largest(arch)
        return super().timing_module(arch)


def test_an_anchor_that_cannot_be_measured_is_skipped_not_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry._FACTORIES, _NoRoomForTheLargest.name, _NoRoomForTheLargest)
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    spec = JobCreate(**{**SPEC, "supernet": _NoRoomForTheLargest.name}).model_dump(mode="json")
    try:
        with transaction(factory) as session:
            job_id = q.create_jobs(session, [(spec, None)])[0].id
        assert JobRunner(factory, settings, "worker-1").run(job_id) == JobStatus.succeeded
    finally:
        registry._INSTANCES.pop(_NoRoomForTheLargest.name, None)
    with transaction(factory) as session:
        keys = [e.subnet_id for e in eq.list_evaluations(session, job_id)[0]]
        message = q.get_job(session, job_id).message or ""
    assert f"anchor {LARGE} skipped: MemoryError: out of device memory" in message
    assert keys[0] == SMALL and LARGE not in keys and len(set(keys)) == len(keys) == 10


def test_a_job_whose_anchors_all_break_a_constraint_says_likely_none_meets_it(
    tmp_path: Path,
) -> None:
    """The cheapest sub-network missed the latency limit and the job spent the rest of its
    budget on larger ones, saying nothing until it ended (audit 30)."""
    settings = embedded_settings(tmp_path)
    upgrade(settings.database_url)
    factory = make_session_factory(make_engine(settings.database_url))
    specs = [
        {**SPEC, "constraints": {"latency_ms": {"max": 1e-6}}, "budget": {"evaluations": 5}},
        {**SPEC, "constraints": {"latency_ms": {"max": 1e6}}},  # met by every one
    ]
    with transaction(factory) as session:
        rows = q.create_jobs(
            session, [(JobCreate(**spec).model_dump(mode="json"), None) for spec in specs]
        )
    for row in rows:
        assert JobRunner(factory, settings, "worker-1").run(row.id) == JobStatus.succeeded
    with transaction(factory) as session:
        unreachable, reachable = (q.get_job(session, row.id).message or "" for row in rows)
    assert "none of its anchors meets latency_ms <= 1e-06 (the nearest: " in unreachable
    assert "likely no sub-network does; the search went on after them" in unreachable
    assert "none of its anchors" not in reachable
