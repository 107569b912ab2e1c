"""The job runner: turns a stored job into an ask/tell search loop over real measurements.

The same ``JobRunner.run`` is called by the embedded executor and by the Celery task. Every
evaluation is committed as it completes and a fresh strategy is rebuilt from the stored
evaluations on each (re)start, so a crash costs at most the evaluation in flight.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.errors import HwnasError
from core.settings import Settings
from hardware_profiles import get_profile
from models.registry import get_supernet
from search import Bound, SearchSpace, create_strategy
from store import jobs as q
from store.db import transaction
from store.tables import Evaluation, JobStatus

from .evaluator import Measurement, SubnetEvaluator
from .front import summarise_front

log = logging.getLogger(__name__)


@dataclass
class JobPlan:
    """Everything the loop needs, built from a job's stored spec."""

    budget: int
    objectives: dict[str, str]
    constraints: dict[str, Bound]
    evaluator: SubnetEvaluator
    strategy: Any


def build_plan(spec: dict[str, Any]) -> JobPlan:
    supernet = get_supernet(spec["supernet"])
    profile = get_profile(spec["device"])
    constraints = {name: Bound(min=b.get("min"), max=b.get("max"))
                   for name, b in spec.get("constraints", {}).items()}
    space = SearchSpace(supernet.space(), canonical=supernet.canonical, encode=supernet.encode)
    budget = spec["budget"]["evaluations"]
    strategy = create_strategy(spec["strategy"], space=space, objectives=spec["objectives"],
                               constraints=constraints, seed=spec["seed"], budget=budget)
    return JobPlan(budget, spec["objectives"], constraints, SubnetEvaluator(supernet, profile),
                   strategy)


class JobRunner:
    """Runs jobs for one worker identity. Thread-safe: each ``run`` uses its own sessions."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, worker_id: str,
                 stop: threading.Event | None = None) -> None:
        self.factory = factory
        self.settings = settings
        self.worker_id = worker_id
        self.stop = stop or threading.Event()

    def run(self, job_id: str, *, takeover: bool = False) -> JobStatus | None:
        """Run (or resume) ``job_id``; returns its final status, None if not ours to run."""
        stale = 0.0 if takeover else self.settings.stale_after_s
        with transaction(self.factory) as session:
            job = q.claim_job(session, job_id, self.worker_id, stale_after_s=stale)
            if job is None:
                return None
            spec = dict(job.spec)
        started = time.perf_counter()
        try:
            return self._loop(job_id, spec)
        except Exception as exc:  # the job fails visibly; the worker lives on
            log.exception("job %s failed", job_id)
            reason = str(exc) if isinstance(exc, HwnasError) else _short_traceback(exc)
            with transaction(self.factory) as session:
                q.finish_job(session, job_id, JobStatus.failed, error=reason,
                             message=f"failed: {reason.splitlines()[-1] if reason else exc}")
            return JobStatus.failed
        finally:
            with transaction(self.factory) as session:
                q.get_job(session, job_id).run_seconds += time.perf_counter() - started

    def _loop(self, job_id: str, spec: dict[str, Any]) -> JobStatus | None:
        plan = build_plan(spec)
        done = self._replay(job_id, plan)
        while done < plan.budget:
            if self.stop.is_set():
                return self._requeue(job_id)
            with transaction(self.factory) as session:
                alive = q.heartbeat(session, job_id, self.worker_id)
                job = q.get_job(session, job_id)
            if not alive:
                return self._cancelled_or_lost(job_id, job.cancel_requested)
            proposals = plan.strategy.ask(1)
            if not proposals:
                break  # the whole space has been measured
            arch = proposals[0]
            measurement = plan.evaluator.measure(arch)
            if not self._record(job_id, plan, arch, measurement):
                return None
            plan.strategy.tell(arch, measurement.metrics)
            done += 1
        return self._finish(job_id, plan)

    def _replay(self, job_id: str, plan: JobPlan) -> int:
        with transaction(self.factory) as session:
            evaluations, _ = q.list_evaluations(session, job_id)
        for evaluation in evaluations:
            plan.strategy.tell(evaluation.arch, evaluation.metrics)
        if evaluations:
            log.info("job %s: resumed from %d stored evaluations", job_id, len(evaluations))
        return len(evaluations)

    def _record(self, job_id: str, plan: JobPlan, arch: dict[str, Any],
                measurement: Measurement) -> bool:
        """Commit one evaluation; False when another worker took the job over meanwhile."""
        evaluator = plan.evaluator
        with transaction(self.factory) as session:
            job = q.get_job(session, job_id, lock=True)
            if job.worker_id != self.worker_id or job.status != JobStatus.running:
                log.warning("job %s: lease lost; dropping the evaluation in flight", job_id)
                return False
            canonical = evaluator.supernet.canonical(arch)
            q.add_evaluation(
                session, job, subnet_id=evaluator.supernet.encode(canonical), arch=canonical,
                metrics=measurement.metrics, details=measurement.details,
                feasible=_feasible(measurement.metrics, plan.constraints),
                seconds=measurement.seconds)
            stored, _ = q.list_evaluations(session, job_id)
            summary = summarise_front(stored, plan.objectives, plan.constraints)
            job.front_size, job.hypervolume = len(summary.front), summary.hypervolume
        return True

    def _finish(self, job_id: str, plan: JobPlan) -> JobStatus:
        with transaction(self.factory) as session:
            evaluations, _ = q.list_evaluations(session, job_id)
            summary = summarise_front(evaluations, plan.objectives, plan.constraints)
            q.set_front(session, job_id, [e.id for e in summary.front])
            job = q.finish_job(session, job_id, JobStatus.succeeded, message=summary.message)
            job.front_size, job.hypervolume = len(summary.front), summary.hypervolume
        return JobStatus.succeeded

    def _requeue(self, job_id: str) -> None:
        with transaction(self.factory) as session:
            job = q.get_job(session, job_id, lock=True)
            if job.worker_id == self.worker_id and job.status == JobStatus.running:
                q.requeue(job, "interrupted by a worker shutdown; resumes when a worker restarts")
        return None

    def _cancelled_or_lost(self, job_id: str, cancel_requested: bool) -> JobStatus | None:
        if not cancel_requested:
            log.warning("job %s: lease lost to another worker", job_id)
            return None
        with transaction(self.factory) as session:
            job = q.get_job(session, job_id)
            q.finish_job(session, job_id, JobStatus.cancelled,
                         message=f"cancelled after {job.evaluations_done} evaluations")
        return JobStatus.cancelled


def _feasible(metrics: dict[str, float], constraints: dict[str, Bound]) -> bool:
    from search import is_feasible

    return bool(is_feasible(metrics, constraints))


def _short_traceback(exc: BaseException) -> str:
    lines = traceback.format_exception(exc)
    return "".join(lines[-6:]).strip()


__all__ = ["Evaluation", "JobPlan", "JobRunner", "build_plan"]
