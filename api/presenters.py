"""Turn stored rows into response schemas."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request

from api.schemas import EvaluationPublic, JobPublic, ParetoPoint, Progress, Timing
from store.tables import Evaluation, Job


def job_public(job: Job, request: Request) -> JobPublic:
    spec = job.spec
    return JobPublic(
        id=job.id,
        url=str(request.url_for("read_job", job_id=job.id)),
        status=job.status.value,
        supernet=job.supernet,
        device=job.device,
        strategy=job.strategy,
        seed=job.seed,
        objectives=spec["objectives"],
        constraints=spec.get("constraints", {}),
        progress=Progress(
            evaluations_done=job.evaluations_done,
            budget=job.budget,
            fraction=round(job.evaluations_done / job.budget, 4),
            front_size=job.front_size,
            hypervolume=job.hypervolume,
        ),
        message=job.message,
        error=job.error,
        attempts=job.attempts,
        timing=Timing(
            run_seconds=round(job.run_seconds, 3), eval_seconds=round(job.eval_seconds, 3)
        ),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def evaluation_public(evaluation: Evaluation) -> EvaluationPublic:
    return EvaluationPublic(
        subnet_id=evaluation.subnet_id,
        seq=evaluation.seq,
        arch=evaluation.arch,
        metrics=evaluation.metrics,
        details=evaluation.details,
        feasible=evaluation.feasible,
        on_front=evaluation.on_front,
        seconds=evaluation.seconds,
    )


def pareto_point(evaluation: Evaluation, request: Request, exportable: bool) -> ParetoPoint:
    m = evaluation.metrics
    url = request.url_for(
        "export_subnet", job_id=evaluation.job_id, subnet_id=quote(evaluation.subnet_id, safe="")
    )
    return ParetoPoint(
        subnet_id=evaluation.subnet_id,
        arch=evaluation.arch,
        accuracy=m.get("accuracy"),
        latency_ms=m.get("latency_ms"),
        macs=int(m["macs"]) if "macs" in m else None,
        params=int(m["params"]) if "params" in m else None,
        metrics=m,
        latency=evaluation.details.get("latency", {}),
        export_url=f"{url}?format=onnx" if exportable else None,
    )
