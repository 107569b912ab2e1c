"""Search jobs: submit, poll, list, cancel, read evaluations and the front, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import FileResponse

from api.deps import DispatcherDep, SessionDep, SettingsDep
from api.presenters import evaluation_public, job_public, pareto_point
from api.schemas import EvaluationsPublic, JobCreate, JobPublic, JobsPublic, ParetoPublic
from core.errors import InvalidInput
from models.export import export_subnet, list_formats, suffix_of
from models.registry import get_supernet
from store import jobs as q
from store.db import transaction
from store.tables import JobStatus
from workers.front import constraints_of, summarise_front

router = APIRouter(prefix="/jobs", tags=["jobs"])
Offset = Annotated[int, Query(ge=0)]
Limit = Annotated[int, Query(ge=1, le=500)]


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic)
def create_job(body: JobCreate, request: Request, dispatcher: DispatcherDep) -> JobPublic:
    """Store the job, then hand it to a worker of its device. Answers 202 at once."""
    spec: dict[str, Any] = body.model_dump(mode="json")
    with transaction(request.app.state.session_factory) as session:
        job = q.create_job(session, spec)
    # Committed before dispatch, so a worker always finds the row it is told about.
    dispatcher.dispatch(job.id, job.device)
    with transaction(request.app.state.session_factory) as session:
        return job_public(q.get_job(session, job.id), request)


@router.get("", response_model=JobsPublic)
def read_jobs(
    session: SessionDep,
    request: Request,
    offset: Offset = 0,
    limit: Limit = 50,
    status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
) -> JobsPublic:
    rows, total = q.list_jobs(session, offset=offset, limit=limit, status=status_filter)
    return JobsPublic(
        data=[job_public(j, request) for j in rows], count=total, offset=offset, limit=limit
    )


@router.get("/{job_id}", response_model=JobPublic)
def read_job(job_id: str, session: SessionDep, request: Request) -> JobPublic:
    return job_public(q.get_job(session, job_id), request)


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel_job(job_id: str, session: SessionDep, request: Request) -> JobPublic:
    """Cancel a queued job at once; a running one stops after its evaluation in flight."""
    return job_public(q.request_cancel(session, job_id), request)


@router.get("/{job_id}/evaluations", response_model=EvaluationsPublic)
def read_evaluations(
    job_id: str, session: SessionDep, offset: Offset = 0, limit: Limit = 100
) -> EvaluationsPublic:
    q.get_job(session, job_id)
    rows, total = q.list_evaluations(session, job_id, offset=offset, limit=limit)
    return EvaluationsPublic(
        data=[evaluation_public(e) for e in rows], count=total, offset=offset, limit=limit
    )


@router.get("/{job_id}/pareto", response_model=ParetoPublic)
def read_pareto(job_id: str, session: SessionDep, request: Request) -> ParetoPublic:
    """Non-dominated measured points that satisfy the constraints (final once succeeded)."""
    job = q.get_job(session, job_id)
    exportable = not get_supernet(job.supernet).recorded
    rows, _ = q.list_evaluations(session, job_id, front_only=True)
    if job.status != JobStatus.succeeded:
        rows = _current_front(session, job)
    return ParetoPublic(
        job_id=job.id,
        status=job.status.value,
        objectives=job.spec["objectives"],
        data=[pareto_point(e, request, exportable) for e in rows],
        message=job.message,
    )


def _current_front(session: Any, job: Any) -> list[Any]:
    evaluations, _ = q.list_evaluations(session, job.id)
    return summarise_front(evaluations, job.spec["objectives"], constraints_of(job.spec)).front


@router.get("/{job_id}/subnets/{subnet_id}/export", name="export_subnet")
def export(
    job_id: str, subnet_id: str, session: SessionDep, settings: SettingsDep, format: str = "onnx"
) -> FileResponse:
    """The measured sub-network as ONNX, TorchScript or a state_dict zip (+ architecture)."""
    if format not in list_formats():
        raise InvalidInput(
            f"format must be one of {', '.join(list_formats())}, got {format!r}", field="format"
        )
    job = q.get_job(session, job_id)
    evaluation = q.get_evaluation(session, job_id, subnet_id)
    path = Path(settings.data_dir) / "exports" / job_id / f"{subnet_id}{suffix_of(format)}"
    if not path.exists():
        card = {
            "job_id": job_id,
            "device": job.device,
            "metrics": evaluation.metrics,
            "latency": evaluation.details.get("latency", {}),
        }
        export_subnet(get_supernet(job.supernet), evaluation.arch, format, path, extra=card)
    return FileResponse(
        path,
        filename=f"{job.supernet}_{subnet_id}{suffix_of(format)}",
        media_type="application/octet-stream",
    )
