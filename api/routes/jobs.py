"""Jobs: submit a search, poll, list, cancel, read evaluations and the front, export.

Calibration jobs (``api.routes.calibrations``) are polled, listed and cancelled here too."""

from __future__ import annotations

import hashlib
import json
import re
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse
from pydantic import BaseModel
from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.auth import KEY_LABEL
from api.bodies import json_body, json_body_doc
from api.deps import FactoryDep, SettingsDep, dispatcher_of, loop_reads, owner_of, submitter
from api.disk_space import full_disk, low_space, no_room
from api.errors import error_answers
from api.export_cache import export_file, folder_lock, remove_exports
from api.presenters import (
    api_base,
    evaluation_public,
    job_message,
    job_public,
    json_response,
    pareto_point,
    predictors_path,
    stall_note,
)
from api.schemas import (
    MAX_LABELS,
    EvaluationsPublic,
    JobCreate,
    JobPatch,
    JobPublic,
    JobsPublic,
    ParetoPublic,
    check_label,
)
from core.errors import Conflict, HwnasError, InvalidInput, NotFound, ServiceUnavailable
from hardware_profiles import device_lock
from hardware_profiles.isolated import ChildDied, run_once
from models.base import Supernet
from models.export import export_subnet, list_formats, suffix_of
from models.registry import get_supernet, supernet_class
from search import is_feasible
from store import evaluations as eq
from store import job_keys
from store import jobs as q
from store.current_front import CurrentFronts
from store.db import reading, transaction
from store.front import constraints_of
from store.tables import Job, JobKind, JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"])
#: A submission's optional header: its retries (same key, same body) answer with the job
#: the first one created, marked ``REPLAYED``, instead of storing another.
IDEMPOTENCY_KEY = "Idempotency-Key"
IDEMPOTENCY_KEY_FORM = re.compile(r"[!-~]{1,255}")
REPLAYED = "Idempotent-Replayed"
IDEMPOTENCY_DOC = {
    "name": IDEMPOTENCY_KEY,
    "in": "header",
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": 255,
        "pattern": f"^{IDEMPOTENCY_KEY_FORM.pattern}$",
    },
    "description": "1-255 printable ASCII characters, no spaces, unique to this submission "
    "(such as a UUID, or a pipeline's "
    "run id): a retry of it with the same key and body answers with the job the first "
    f"request created (header {REPLAYED}: true) instead of creating another; the same key "
    "with another body is 409. A key is free again once its job is deleted",
}


def submission_doc(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route that creates a job from a ``model`` body: the body, the
    ``Idempotency-Key`` header and the 202's headers (docs audit 32: undeclared)."""
    doc = json_body_doc(model)
    text = {"type": "string"}
    created = {
        "202": {
            "description": "Accepted",
            "headers": {
                "Location": {"description": "the job's URL", "schema": text},
                REPLAYED: {
                    "description": f"true where the {IDEMPOTENCY_KEY} had created the job "
                    "before: this is that job (absent otherwise)",
                    "schema": {**text, "enum": ["true"]},
                },
            },
        }
    }
    return {**doc, "parameters": [IDEMPOTENCY_DOC], "responses": {**doc["responses"], **created}}


Offset = Annotated[int, Query(ge=0, le=2**63 - 1)]  # the databases' largest OFFSET
Limit = Annotated[int, Query(ge=1, le=500)]
LABEL_SAID = (
    "name=value: only jobs carrying that label (JobCreate.labels); a name alone: that label "
    "with any value; repeated: every one of them"
)
SUBMITTED_SAID = (
    "only jobs submitted with the API key of this label (a job's submitted_by: the first 8 "
    "hex digits of the key's SHA-256); empty: those of a server without keys"
)
STATUS_SAID = "only jobs in this status; repeated (status=queued&status=running): in any of them"
AFTER_SAID = (
    "next_after of the previous page: this page starts after its last job (offset counts "
    "from there); unlike a deep offset, it reads no row before it (the count still counts "
    "every job that matches), and jobs submitted meanwhile do not move the pages"
)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses=error_answers(409, 413, 429),
    openapi_extra=submission_doc(JobCreate),
)
async def create_job(request: Request) -> Response:
    """Submit a search job: answers 202 at once with the job, queued (its URL also in
    ``Location``); a worker of its device runs it. Poll ``GET /v1/jobs/{id}``; the
    message says why it waits, if it does.
    \f
    Stored and dispatched by ``api.submissions.JobSubmitter`` (batched commits, committed
    before dispatch, so a worker always finds the row it is told about)."""
    body = await json_body(request, JobCreate)  # not a parameter: see api.bodies
    asked = {"route": "jobs"}
    return await accept_job(request, body.model_dump(mode="json"), body, asked)


async def accept_job(
    request: Request, spec: dict[str, Any], body: BaseModel, asked: dict[str, Any]
) -> Response:
    """Store a job of any kind (``spec``: JSON data naming its device), dispatch it, and
    answer 202 with it; the job says why it will wait if nobody serves its device. With an
    ``Idempotency-Key``, the job that key's first request created, if there is one: the
    request (``asked``, and the ``body`` as given, not the defaults filled in) is compared,
    its digest made only then (not on the batched path, the hot one)."""
    key = request.headers.get(IDEMPOTENCY_KEY)
    submitted_by = getattr(request.state, KEY_LABEL, "")
    if request.app.state.own_jobs_only:  # each key's jobs its own: their measurements too
        spec = {**spec, job_keys.REUSES_OF: submitted_by}
    new = q.Submission(spec, dispatcher_of(request).waiting_message(spec["device"]), submitted_by)
    if key is None:  # the batched path (api.submissions)
        job, replayed = await submitter(request).submit(new), False
    else:
        given = body.model_dump(mode="json", exclude_unset=True)
        request_of = {**asked, "body": given}
        digests = q.request_digest(request_of), q.request_digest(request_of, objectives_order=False)
        job, replayed = await run_in_threadpool(_accept_keyed, request, new, key, digests)
    public = job_public(job, api_base(request), _stall_note(request, job) if replayed else None)
    answer = json_response(public, status.HTTP_202_ACCEPTED)
    answer.headers["location"] = public.url  # where to poll it, for tools that follow it
    if replayed:
        answer.headers[REPLAYED] = "true"
    return answer


def _accept_keyed(
    request: Request, new: q.Submission, key: str, digests: tuple[str, str]
) -> tuple[q.JobRow, bool]:
    """A keyed submission, stored on its own (``store.jobs.create_job_once``) and
    dispatched if it created the job; the job, and whether it was there before."""
    if not IDEMPOTENCY_KEY_FORM.fullmatch(key):
        raise InvalidInput(
            f"{IDEMPOTENCY_KEY} must be 1-255 printable ASCII characters, no spaces",
            field=IDEMPOTENCY_KEY,
        )
    limit = request.app.state.settings.max_active_jobs_per_key
    with submitter(request).counting(), transaction(request.app.state.session_factory) as session:
        job, created = q.create_job_once(
            session, new.spec, key, digests[0], message=new.message,
            submitted_by=new.submitted_by, limit=limit, earlier_digest=digests[1],
        )  # fmt: skip
    if created:
        submitter(request).dispatch_later([job])
    return job, not created


@router.get("", response_model=JobsPublic)
def read_jobs(
    factory: FactoryDep,
    request: Request,
    offset: Offset = 0,
    limit: Limit = 50,
    status_filter: Annotated[
        list[JobStatus] | None, Query(alias="status", description=STATUS_SAID)
    ] = None,
    kind: Annotated[JobKind | None, Query(description="search or calibration")] = None,
    after: Annotated[str | None, Query(max_length=200, description=AFTER_SAID)] = None,
    label: Annotated[list[str] | None, Query(max_length=MAX_LABELS, description=LABEL_SAID)] = None,
    submitted_by: Annotated[str | None, Query(max_length=16, description=SUBMITTED_SAID)] = None,
) -> Response:
    """A page of jobs, newest first, of the statuses, kind and labels asked for; ``count``
    counts every job that matches, ``next_after`` leads to the next page.
    \f
    On the thread pool: counting and sorting a large table takes long enough (~0.1 s for
    20,000 jobs) that it must not hold the event loop."""
    labels = _label_filters(label or [])
    owner = owner_of(request)
    rows: list[q.JobRow] = []
    total = 0
    if owner is None or submitted_by in (None, owner):  # another key's jobs: none seen
        with reading(factory) as connection:  # one row more: whether another page follows
            rows, total = q.list_jobs(
                connection, offset=offset, limit=limit + 1, status=status_filter, kind=kind,
                after=after, labels=labels, submitted_by=submitted_by if owner is None else owner,
            )  # fmt: skip
    rows, more = rows[:limit], len(rows) > limit
    base = api_base(request)
    data = [job_public(j, base, _stall_note(request, j)) for j in rows]
    following = q.listing_cursor(rows[-1]) if more else None
    page = JobsPublic(
        data=data, count=total, status=[s.value for s in status_filter or []], offset=offset,
        limit=limit, next_after=following,
    )  # fmt: skip
    return json_response(page)


def _label_filters(given: list[str]) -> list[tuple[str, str | None]]:
    """``label`` parameters (at most ``MAX_LABELS``: the query's own check) as (name,
    value), or (name, None) for a name alone."""
    filters = []
    for item in given:
        name, equals, value = item.partition("=")
        try:
            check_label(name, value if equals else None)
        except ValueError as exc:
            raise InvalidInput(str(exc), field="label") from None
        filters.append((name, value if equals else None))
    return filters


@router.get("/{job_id}", response_model=JobPublic, responses=error_answers(404))
async def read_job(job_id: str, request: Request) -> Response:
    """The job: status, progress, timing, what it was asked, its message (why it waits,
    what its run noted) and error.
    \f
    What pollers ask for: read on the event loop, see ``store.db.LoopReads``. Memoised
    unless the base URL is long: bodies hold it, and the client's Host chooses it (the
    operator's ``HWNAS_PUBLIC_URL``, one for all, is memoised however long)."""
    base, reads = api_base(request), loop_reads(request)
    fixed = base == request.app.state.settings.public_url
    read = reads.cached if fixed or len(base) <= MEMO_BASE_MAX else reads
    body, job = await read(_job_json, job_id, base)
    q.check_owner(job, owner_of(request))  # after the memo: it holds every key's
    note = _stall_note(request, job)  # depends on the time: never memoised
    if note is not None:
        body = _job_json_of(job, base, note)
    return Response(body, media_type="application/json")


MEMO_BASE_MAX = 256  # characters


def _job_json(connection: Connection, job_id: str, base: str) -> tuple[bytes, q.JobRow]:
    """The job's JSON body, as ``json_response(job_public(...))`` writes it, and its row."""
    job = q.read_job(connection, job_id)
    return _job_json_of(job, base, None), job


def _job_json_of(job: q.JobRow, base: str, note: str | None) -> bytes:
    return job_public(job, base, note).model_dump_json().encode()


def _check_owner(session: Session, job_id: str, request: Request) -> None:
    """``NotFound`` for another key's job where keys see their own only (``owner_of``);
    nothing read where they see every job."""
    owner = owner_of(request)
    if owner is not None:
        q.read_job(session, job_id, owner=owner)


def _stall_note(request: Request, job: Job | q.JobRow) -> str | None:
    """``stall_note`` with this app's settings and dispatcher."""
    if job.status.finished:  # most polls: nothing more to look at
        return None
    stale_after_s = request.app.state.settings.stale_after_s
    return stall_note(job, stale_after_s, dispatcher_of(request))


@router.patch(
    "/{job_id}",
    response_model=JobPublic,
    responses=error_answers(404, 413),
    openapi_extra=json_body_doc(JobPatch, ("application/json", "application/merge-patch+json")),
)
async def patch_job(job_id: str, request: Request) -> Response:
    """Change a job's labels, in any status (a finished job can be marked as the one
    deployed): ``{"labels": {"name": "value", "other": null}}`` sets ``name`` and removes
    ``other``, keeping the rest. Answers with the job as changed."""
    body = await json_body(request, JobPatch)
    factory = request.app.state.session_factory

    def change() -> Job:
        with transaction(factory) as session:
            _check_owner(session, job_id, request)
            return q.change_labels(session, job_id, body.labels, limit=MAX_LABELS)

    job = await run_in_threadpool(change)
    loop_reads(request).forget(job_id)
    return json_response(job_public(job, api_base(request), _stall_note(request, job)))


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=error_answers(404, 409))
def cancel_job(job_id: str, factory: FactoryDep, request: Request) -> Response:
    """Cancel a queued job at once; a running one stops after its evaluation in flight, or
    at once when its worker has stopped heartbeating (HWNAS_STALE_AFTER_S). A job cancelled
    already answers as it is; one that succeeded or failed is 409."""
    stale_after_s = request.app.state.settings.stale_after_s  # a dead worker's: ended now
    with transaction(factory) as session:
        _check_owner(session, job_id, request)
        job = q.request_cancel(session, job_id, stale_after_s=stale_after_s)
    loop_reads(request).forget(job_id)
    return json_response(job_public(job, api_base(request), _stall_note(request, job)))


@router.delete("/{job_id}", status_code=204, responses=error_answers(404, 409))
def delete_job(job_id: str, factory: FactoryDep, request: Request) -> Response:
    """Delete a job that has ended, its evaluations and its exported files (a queued or
    running one is 409: cancel it first). Jobs that reused its measurements keep their
    copies, and their downloads are built again when asked for."""
    with transaction(factory) as session:
        _check_owner(session, job_id, request)
        q.delete_job(session, job_id)
    loop_reads(request).forget(job_id)
    _FRONTS.forget(job_id)
    remove_exports(Path(request.app.state.settings.data_dir), [job_id])
    return Response(status_code=204)


@router.get("/{job_id}/evaluations", response_model=EvaluationsPublic, responses=error_answers(404))
def read_evaluations(
    job_id: str, factory: FactoryDep, request: Request, offset: Offset = 0, limit: Limit = 100
) -> Response:
    """The job's evaluations in the order measured; ``on_front`` as ``/pareto`` says: the
    stored front once the job succeeded, the current one before or when it ended
    otherwise.
    \f
    It was false for every point of a running, cancelled or failed job."""
    with transaction(factory) as session:
        job = q.read_job(session, job_id, owner=owner_of(request))
        rows, total = eq.list_evaluations(session, job_id, offset=offset, limit=limit)
        front: frozenset[int] | None = None
        if job.kind == JobKind.search and job.status != JobStatus.succeeded and rows:
            front = _front_ids(session, job)
    data = [evaluation_public(e, None if front is None else e.id in front) for e in rows]
    return json_response(EvaluationsPublic(data=data, count=total, offset=offset, limit=limit))


@router.get("/{job_id}/pareto", response_model=ParetoPublic, responses=error_answers(404, 409))
def read_pareto(job_id: str, factory: FactoryDep, request: Request) -> Response:
    """Non-dominated measured points that satisfy the constraints (final once succeeded)."""
    with transaction(factory) as session:
        job = q.read_job(session, job_id, owner=owner_of(request))
        if job.kind == JobKind.calibration:
            raise Conflict(
                f"job {job_id!r} is a calibration: it has no Pareto front; the predictor it "
                f"fitted is listed at {predictors_path(job)}"
            )
        if job.status == JobStatus.succeeded:
            rows, _ = eq.list_evaluations(session, job_id, front_only=True)
        else:
            rows = _current_front(session, job)
    try:
        exportable = not get_supernet(job.supernet).recorded
    except HwnasError:  # its supernet cannot be built now: the stored front still reads
        exportable = False
    front = ParetoPublic(
        job_id=job.id,
        status=job.status.value,
        objectives=job.spec["objectives"],
        constraints=job.spec.get("constraints", {}),
        data=[pareto_point(e, request, exportable) for e in rows],
        message=job_message(job, _stall_note(request, job)),
    )
    return json_response(front)


#: The current front of jobs that have not succeeded (``store.current_front``).
_FRONTS = CurrentFronts()


def _front_ids(session: Any, job: q.JobRow) -> frozenset[int]:
    return _FRONTS.ids(session, job)


def _current_front(session: Any, job: q.JobRow) -> list[Any]:
    """The front of a job that has not succeeded, as its evaluations stand (in seq order)."""
    return eq.list_evaluations(session, job.id, ids=_front_ids(session, job))[0]


@router.get(
    "/{job_id}/subnets/{subnet_id}/export",
    name="export_subnet",
    response_class=FileResponse,
    responses={
        200: {
            "description": "the file (Content-Disposition names it)",
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        },
        **error_answers(404, 409),
    },
)
async def export(
    job_id: str,
    subnet_id: str,
    factory: FactoryDep,
    settings: SettingsDep,
    request: Request,
    format: Annotated[str, Query(json_schema_extra={"enum": list_formats()})] = "onnx",
) -> FileResponse:
    """The measured sub-network as ONNX, TorchScript or a state_dict zip (with
    ``architecture.json``); every file carries the card: architecture, input and output,
    the measured metrics, the job that measured it and the data it measured on. A file
    asked for the first time is built then (seconds); later asks get it at once.
    \f
    A file not exported before is written on a thread of its own (one at a time: exports
    keep process-wide state, see ``models.export``): waiting exports wait here, not on the
    API's threads, which a burst of them held while other requests queued behind."""
    if format not in list_formats():
        raise InvalidInput(
            f"format must be one of {', '.join(list_formats())}, got {format!r}", field="format"
        )

    owner = owner_of(request)

    def read() -> tuple[q.JobRow, Any, q.JobRow]:
        with transaction(factory) as session:
            job, evaluation = (
                q.read_job(session, job_id, owner=owner),
                eq.get_evaluation(session, job_id, subnet_id),
            )
            # A warm start's copy is the file of the job that measured it (exporting the
            # copies of one cheap job wrote each, up to ~100 MB, again under its id), while
            # that job exists: a deleted one's folder would be left for nobody to remove.
            origin = evaluation.details.get(job_keys.REUSED_FROM)
            if isinstance(origin, str) and session.get(Job, origin) is not None:
                return job, evaluation, q.read_job(session, origin)
            return job, evaluation, job

    job, evaluation, measurer = await run_in_threadpool(read)
    measured_in = measurer.id
    if _is_recorded(job.supernet):
        raise Conflict(
            f"job {job_id!r} searched {job.supernet!r}, a recorded table: it has no weights, "
            "so its sub-networks cannot be exported"
        )
    # The card says the bounds of the job downloaded from, and whether the sub-network kept
    # them (vision audit L9); the measuring job's file serves the jobs with its bounds, a
    # copy under other bounds has a file of its own, in its job's folder, deleted with it
    # (upgrade audit 32: a front point of a job without bounds was called infeasible by the
    # bounds of the job it was copied from; review 32c).
    # The objectives too (multi-objective audit 33: a consumer could not tell what trade-off
    # the file was chosen from).
    chosen = _aims(job.spec)
    constraints = chosen["constraints"]
    variant = "" if chosen == _aims(measurer.spec) else _variant(chosen)
    folder = job_id if variant else measured_in
    name = f"{subnet_id}{variant}{suffix_of(format)}"
    path = export_file(Path(settings.data_dir), folder, name)

    def write() -> None:
        card = {  # of the job that measured it, but the bounds: the downloading job's
            "job_id": measured_in,
            "device": job.device,
            "metrics": evaluation.metrics,
            "latency": evaluation.details.get("latency", {}),
            "validation_data": measurer.spec.get("validation_data"),
            "measured_with": measurer.spec.get(job_keys.MEASURED_WITH),
            "objectives": job.spec.get("objectives", {}),
            "constraints": constraints,
            "feasible": is_feasible(evaluation.metrics, constraints_of(job.spec)),
        }
        if job_keys.QUALITY_FROM in evaluation.details:  # its accuracy measured by that job
            card[job_keys.QUALITY_FROM] = evaluation.details[job_keys.QUALITY_FROM]
        supernet = get_supernet(job.supernet, validation_data=job.spec.get("validation_data"))
        _check_measured_with(job, supernet)
        if unchecked := _unchecked_metrics(measurer, evaluation.metrics, supernet):
            card["warning"] = "; ".join(filter(None, [supernet.quality_warning(), unchecked]))
        # Not while this process times a sub-network on the CPU (the embedded mode's worker
        # runs here): building the file (BatchNorm recalibration, tracing) would load the
        # cores being timed. It waits for the measurement in flight, at most its time cap.
        # A TorchScript file is traced in a child process: what torch keeps of each traced
        # network (11 MB a file) would stay in this one's memory for good.
        # The folder's lock: a DELETE of the job waits for the file, then removes it.
        with device_lock("cpu"), folder_lock(folder):
            if path.exists():  # written while this one waited
                return
            try:
                export_subnet(supernet, evaluation.arch, format, path, extra=card, isolate=run_once)
                if folder == measured_in == job_id:  # a copy whose measuring job is gone
                    _remove_variants(path.parent, subnet_id)
            except ChildDied as exc:  # killed twice (out of memory?): worth asking again
                if not exc.killed:  # it could not start: a fault here, which would recur
                    raise
                # torch aborts on a full disk: not a memory problem, as the child's death
                # alone would say (the data directory's disk, whatever its size)
                if low_space(settings, _ROOM_FOR_A_FILE, only="HWNAS_DATA_DIR", share=1.0):
                    raise full_disk(Path(settings.data_dir)) from exc
                raise ServiceUnavailable(f"the file could not be written: {exc}") from exc

    if not path.exists():
        still_there = partial(
            _still_there, factory, Path(settings.data_dir), job_id, path, measured_in
        )
        try:
            await anyio.to_thread.run_sync(write, limiter=_export_limiter(request))
        except (OSError, RuntimeError) as exc:  # its folder removed under it by another
            # process's DELETE (torch's writers say "Parent directory ... does not exist")?
            await run_in_threadpool(still_there)
            if full := no_room(exc, Path(settings.data_dir)):  # a full disk: said as such
                raise full from exc
            raise  # no: the error is this one's
        await run_in_threadpool(still_there)
    return FileResponse(
        path,
        filename=f"{job.supernet}_{subnet_id}{suffix_of(format)}",
        media_type="application/octet-stream",
    )


def _aims(spec: dict[str, Any]) -> dict[str, Any]:
    """What a job's export card says of its aims: its constraints, and its objectives as
    (name, direction) pairs in order (the first is the one ``hwnas run`` picks by)."""
    return {
        "constraints": spec.get("constraints", {}),
        "objectives": list(spec.get("objectives", {}).items()),
    }


def _variant(aims: dict[str, Any]) -> str:
    """What an export's file name adds for objectives or bounds (``_aims``) other than its
    measuring job's."""
    text = json.dumps(aims, sort_keys=True, separators=(",", ":"))
    return ".c" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _remove_variants(folder: Path, subnet_id: str) -> None:
    """Remove the files of ``subnet_id`` in ``folder`` written under other bounds
    (``_variant``: any format's, and their cards) while another job measured it: that job is
    gone, and this job's own files serve it now (review 32d: they stayed, unused, until this
    job was deleted)."""
    written = re.compile(re.escape(subnet_id) + r"\.c[0-9a-f]{12}\.\w+")
    for old in folder.iterdir():
        if written.fullmatch(old.name):
            old.unlink(missing_ok=True)


#: Free bytes under which a TorchScript child's death is put down to a full disk.
_ROOM_FOR_A_FILE = 64 * 2**20


def _is_recorded(name: str) -> bool:
    """Whether the supernet ``name`` is a recorded table, known from its class: a file
    exported before is served without loading the weights (a weights file gone since
    refused it 422: audit 29); one that cannot be built says why."""
    try:
        cls = supernet_class(name)
    except Exception:  # not even its class: as building it says
        return get_supernet(name).recorded
    return bool(cls.recorded)


def _still_there(
    factory: sessionmaker[Session], data_dir: Path, job_id: str, path: Path, measured_in: str
) -> None:
    """After writing ``path``: NotFound if its job was deleted meanwhile (the file, written
    after the DELETE removed the folder, is removed too); ServiceUnavailable if only the
    job that measured the sub-network (a warm start's copy) was, its file removed (its
    card names that job; review 32d: a copy's file under other bounds, in the downloading
    job's folder, was served so)."""
    folder = path.parent.name
    with folder_lock(folder), transaction(factory) as session:
        named = dict.fromkeys((job_id, folder, measured_in))
        gone = [i for i in named if session.get(Job, i) is None]
    if not gone:
        return
    if folder in gone:
        remove_exports(data_dir, [folder])
    if job_id in gone:
        raise NotFound(f"job {job_id!r} was deleted while its file was written")
    with folder_lock(folder):
        path.unlink(missing_ok=True)
    raise ServiceUnavailable(
        f"job {measured_in!r}, which measured this sub-network, was deleted while its file "
        "was written; ask again"
    )


def _export_limiter(request: Request) -> anyio.CapacityLimiter:
    """The app's one thread for writing exports (made on the event loop, on first use)."""
    state = request.app.state
    if getattr(state, "export_limiter", None) is None:
        state.export_limiter = anyio.CapacityLimiter(1)
    limiter: anyio.CapacityLimiter = state.export_limiter
    return limiter


def _unchecked_metrics(
    measurer: q.JobRow, metrics: dict[str, Any], supernet: Supernet
) -> str | None:
    """What an export's card says where the job that measured its quality metrics recorded
    no fingerprint of the weights and data (begun before 2026-12-06): exported after a
    checkpoint changed, the card gave the old weights' accuracy for the new weights' file,
    unsaid (upgrade audit 31). None where it recorded one, or there is nothing to check."""
    if measurer.spec.get(job_keys.MEASURED_WITH) is not None or supernet.fingerprint() is None:
        return None
    if not set(metrics) & set(supernet.metrics):  # latency alone: the weights' no matter
        return None
    return (
        f"job {measurer.id} was measured by an hwnas that recorded no fingerprint of the "
        "weights and validation data: its metrics hold for this file only if they are the "
        "ones configured now"
    )


def _check_measured_with(job: q.JobRow, supernet: Supernet) -> None:
    """An export is the network the job measured only with the same weights and data
    (``workers.runner``'s ``measured_with``): 409 where they changed or cannot be read."""
    data = job.spec.get("validation_data")
    try:
        now = supernet.fingerprint()
    except InvalidInput as exc:
        raise Conflict(
            f"job {job.id!r} measured on validation data {data!r}, which cannot be read now: {exc}"
        ) from None
    change = job_keys.measuring_change(job.spec, now, supernet.code_fingerprints())
    if change == "code":
        raise Conflict(
            f"job {job.id!r} measured with other code of {job.supernet} than it has now (its "
            "version, or the text of its source, changed: docs/plugins.md): an export built "
            "now may not be the network that was measured; files exported before the change "
            "are still served"
        )
    if change is not None:
        raise Conflict(
            f"job {job.id!r} measured with other weights or validation data than "
            f"{job.supernet} has now (another checkpoint, or {data or 'its data'} changed on "
            "disk): an export built now may not be the network that was measured (weights, "
            "and BatchNorm statistics from calibration images, may differ); files exported "
            "before the change are still served"
        )
