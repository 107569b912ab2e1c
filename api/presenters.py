"""Turn stored rows into response schemas, and schemas into responses."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request, Response
from pydantic import BaseModel

from api.schemas import (
    CalibrationOfJob,
    CalibrationPublic,
    EvaluationPublic,
    FailedEvaluation,
    FailedSample,
    JobPublic,
    ParetoPoint,
    Progress,
    Timing,
)
from hardware_profiles.latency_predictor import MIN_MEASUREMENTS, trusted_as_prior
from store.job_keys import FAILED, MEASURED_WITH, failures_allowed, failures_counted
from store.jobs import LABELS_KEY, JobRow, with_notes, worker_lost_at
from store.predictors import MEASURED_CODE
from store.tables import Evaluation, Job, JobKind, JobStatus, LatencyPredictorRecord, utcnow
from workers.dispatch import Dispatcher

from .client import WAITING


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """Serialise an already-validated schema once, in pydantic's Rust core.

    Returning a model from a route would make FastAPI validate it again against the route's
    ``response_model`` before dumping it (the routes keep ``response_model`` for the docs).
    """
    return Response(model.model_dump_json(), status_code, media_type="application/json")


def api_base(request: Request) -> str:
    """The API's base URL: ``HWNAS_PUBLIC_URL`` where the operator set it, else as the client
    reached it (proxy root path included, no final /): its Host header, which a client may
    set to any host.

    Job URLs are built on it directly: ``request.url_for`` walks the routers on every call,
    which costs as much as the database read of a GET. It is remembered per way of reaching
    the API (scheme, server, root path, Host header), since building it parses a URL.
    """
    settings = getattr(request.app.state, "settings", None)
    if settings is not None and settings.public_url:
        return str(settings.public_url)
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    server = scope.get("server")
    key = (scope["scheme"], tuple(server) if server else None, scope.get("root_path", ""), host)
    base = _BASE_URLS.get(key)
    if base is None:
        if len(_BASE_URLS) >= _BASE_URLS_MAX:  # Host headers are the client's: stay bounded
            _BASE_URLS.clear()
        base = _BASE_URLS[key] = str(request.base_url).rstrip("/")
    return base


_BASE_URLS: dict[tuple[object, ...], str] = {}
_BASE_URLS_MAX = 256


def job_public(job: Job | JobRow, base: str, note: str | None = None) -> JobPublic:
    """The job's public form; ``base`` is ``api_base(request)``; ``note`` (``stall_note``)
    comes first in its message."""
    spec = job.spec
    failed = spec.get(FAILED, [])
    calibration = None
    if job.kind == JobKind.calibration:
        calibration = CalibrationOfJob(
            predictor_kind=spec["predictor_kind"],
            n_samples=job.budget,
            predictors_url=f"{base}{predictors_path(job)}",
        )
    return JobPublic(
        id=job.id,
        url=f"{base}/v1/jobs/{job.id}",
        kind=JobKind(job.kind),
        status=JobStatus(job.status),
        cancel_requested=bool(job.cancel_requested),
        supernet=job.supernet,
        device=job.device,
        strategy=job.strategy,
        seed=job.seed,
        labels=spec.get(LABELS_KEY, {}),
        warm_start=spec.get("warm_start", True),
        latency_prior=spec.get("latency_prior", True),
        objectives=spec["objectives"],
        constraints=spec.get("constraints", {}),
        validation_data=spec.get("validation_data"),
        measured_with=spec.get(MEASURED_WITH),
        progress=Progress(
            evaluations_done=job.evaluations_done,
            evaluations_reused=job.evaluations_reused,
            evaluations_failed=failures_counted(spec),
            failures_allowed=failures_allowed(
                spec["budget"], fit_needs=MIN_MEASUREMENTS if calibration else 0
            ),
            budget=job.budget,
            fraction=_fraction(job, len(failed) if calibration else 0),
            front_size=job.front_size,
            hypervolume=job.hypervolume,
        ),
        failed_evaluations=[FailedEvaluation(**entry) for entry in failed],
        calibration=calibration,
        message=job_message(job, note),
        error=job.error,
        attempts=job.attempts,
        worker=job.worker_id,
        submitted_by=job.submitted_by or None,
        heartbeat_at=job.heartbeat_at if job.status == JobStatus.running else None,
        timing=Timing(
            run_seconds=round(job.run_seconds, 3), eval_seconds=round(job.eval_seconds, 3)
        ),
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )


def job_message(job: Job | JobRow, note: str | None) -> str | None:
    """The job's message with ``note`` (``stall_note``) first, or in place of a queued
    job's stored reason to wait, which the note brings up to date."""
    if note is not None and job.status == JobStatus.queued and is_waiting(job.message):
        return note or None
    return with_notes(note, job.message)


def is_waiting(message: str | None) -> bool:
    """Whether ``message`` is a reason to wait, as stored with a queued job."""
    return (message or "").startswith(WAITING)


def _fraction(job: Job | JobRow, failed: int) -> float:
    """How far the job has gone: 1 once it succeeded (a search whose space ran out before
    its budget did too), else its measurements of the budget; ``failed``: failed ones that
    take their place (a calibration's sample: each is measured or failed)."""
    if job.status == JobStatus.succeeded:
        return 1.0
    return round(min(1.0, (job.evaluations_done + failed) / job.budget), 4)


def stall_note(job: Job | JobRow, stale_after_s: float, dispatcher: Dispatcher) -> str | None:
    """For a running job whose worker stopped heartbeating: since when, and what happens
    next (it would otherwise say nothing until a reaper of its device re-queues it). For a
    queued job that no live worker serves now, or that waits behind others in this
    process's pool (``Dispatcher.queue_reason``), why it waits, unless its message says so
    already (it was stored at submission: a job re-queued by a shutdown said it "resumes",
    and went on saying so after a restart that no longer serves its device); where its
    message is a reason it waited when stored (``waiting: ...``) that is not today's, the
    note replaces it (``job_message``; "" where it waits for nothing now). None for every
    other job."""
    if job.status == JobStatus.queued:
        reason = dispatcher.waiting_reason(job.device) or dispatcher.queue_reason(job.id)
        now = None if reason is None else f"waiting: {reason}"
        if is_waiting(job.message):  # why it waited when it was stored: may be stale now
            # (a restart that serves its device said both: upgrade audit 31); "" drops it
            return None if now == job.message else now or ""
        return None if reason is None or reason in (job.message or "") else now
    beat = worker_lost_at(job, utcnow(), stale_after_s)
    if beat is None:
        return None
    lost = f"waiting: its worker stopped heartbeating at {beat:%Y-%m-%d %H:%M:%S} UTC"
    if job.cancel_requested:  # asked while its worker was alive, which died before it ended
        return f"{lost}; cancel it again to end it now"
    next_step = dispatcher.waiting_reason(job.device) or (
        f"a worker of device {job.device!r} picks it up again"
    )
    return f"{lost}; {next_step}; it resumes where it stopped"


def predictors_path(job: Job | JobRow) -> str:
    """Where the latency predictor a calibration job stored is listed (relative to the API)."""
    return f"/v1/devices/{job.device}/calibrations?job_id={job.id}"


def evaluation_public(evaluation: Evaluation, on_front: bool | None = None) -> EvaluationPublic:
    """``on_front``: where the stored flag is not the answer (a job that has not succeeded)."""
    return EvaluationPublic(
        subnet_id=evaluation.subnet_id,
        seq=evaluation.seq,
        arch=evaluation.arch,
        metrics=evaluation.metrics,
        details=evaluation.details,
        feasible=evaluation.feasible,
        on_front=evaluation.on_front if on_front is None else on_front,
        seconds=evaluation.seconds,
    )


def pareto_point(evaluation: Evaluation, request: Request, exportable: bool) -> ParetoPoint:
    m = evaluation.metrics
    subnet = quote(evaluation.subnet_id, safe="")  # the export route's path, on api_base
    url = f"{api_base(request)}/v1/jobs/{evaluation.job_id}/subnets/{subnet}/export"
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


def calibration_public(record: LatencyPredictorRecord, *, code_alike: bool) -> CalibrationPublic:
    """``code_alike``: it timed the supernet's code as it is now (``measured_code``)."""
    subnets = record.measurements.get("subnets", [])
    source = subnets[0].get("provenance", "measured") if subnets else "measured"
    return CalibrationPublic(
        id=record.id,
        supernet=record.supernet,
        device=record.device,
        version=record.version,
        kind=record.kind,
        job_id=record.job_id,
        seed=record.seed,
        n_measurements=record.n_measurements,
        failed_samples=[FailedSample(**e) for e in record.measurements.get("failed", [])],
        latency_source=source,
        metrics=record.metrics,
        measured_code=record.measurements.get(MEASURED_CODE),
        steers_searches=code_alike and trusted_as_prior(record.metrics),
        seconds=round(record.seconds, 3),
        created_at=record.created_at,
    )
