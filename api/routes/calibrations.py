"""Latency-predictor calibrations of a device: queue one, list the stored versions.

A calibration is a job (kind ``calibration``) on the device's queue, so the process that
measures is a worker of that device, in the embedded and the distributed mode alike: it
measures ``n_samples`` sampled sub-networks with the device's protocol, fits the predictor
and stores the next version (``workers.calibration``). The POST answers 202 with the job at
once, as ``POST /v1/jobs`` does; the job is polled, cancelled and resumed like a search, and
the version it stored is listed here with its ``job_id``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from api.bodies import json_body
from api.deps import FactoryDep
from api.errors import error_answers
from api.presenters import calibration_public
from api.routes.jobs import Limit, Offset, accept_job, submission_doc
from api.schemas import CalibrationCreate, CalibrationsPublic, JobPublic
from core.errors import HwnasError, NotFound, UnknownName
from hardware_profiles import HardwareProfile
from hardware_profiles.configured import check_measures, device_profile
from hardware_profiles.latency_sample import sample_archs
from models.base import accepted_code_versions
from models.registry import get_supernet, list_supernets, supernet_class
from store import predictors as q
from store.db import transaction
from store.tables import JobKind

router = APIRouter(prefix="/devices", tags=["calibrations"])
SAMPLING = "uniform"  # a calibration job's strategy: every gene drawn uniformly


@router.post(
    "/{device_id}/calibrations",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobPublic,
    responses=error_answers(404, 409, 413, 429),
    openapi_extra=submission_doc(CalibrationCreate),
)
async def create_calibration(device_id: str, request: Request) -> Response:
    """Queue a calibration job: a worker of the device measures sampled sub-networks, fits
    a latency predictor and stores it as the pair's next version. Answers 202 with the job;
    poll ``GET /v1/jobs/{id}``, then find the version by ``?job_id=`` below."""
    _profile(device_id)
    body = await json_body(request, CalibrationCreate)  # read as POST /v1/jobs reads its body
    # Off the event loop: the first use of a supernet loads it.
    spec = await run_in_threadpool(calibration_spec, device_id, body)
    return await accept_job(request, spec, body, {"route": "calibrations", "device": device_id})


@router.get(
    "/{device_id}/calibrations", response_model=CalibrationsPublic, responses=error_answers(404)
)
def read_calibrations(
    device_id: str,
    factory: FactoryDep,
    supernet: Annotated[str | None, Query(description="only this supernet")] = None,
    job_id: Annotated[str | None, Query(description="only the version this job fitted")] = None,
    offset: Offset = 0,
    limit: Limit = 50,
) -> CalibrationsPublic:
    """A page of the device's stored predictor versions, newest first per supernet;
    ``count`` counts them all."""
    _profile(device_id)
    if supernet is not None and supernet not in list_supernets():
        raise UnknownName("supernet", supernet, list_supernets())  # 422, naming the known
    with transaction(factory) as session:
        rows, total = q.list_predictors(
            session, device_id, supernet, job_id, offset=offset, limit=limit
        )
    codes = {name: _codes_alike(name) for name in {row.supernet for row in rows}}
    data = [
        calibration_public(
            row, code_alike=row.measurements.get(q.MEASURED_CODE) in codes[row.supernet]
        )
        for row in rows
    ]
    return CalibrationsPublic(data=data, count=total, offset=offset, limit=limit)


def _codes_alike(supernet: str) -> set[str | None]:
    """The code fingerprints a calibration of ``supernet`` may have recorded to steer its
    searches now (``workers.calibration.latency_predictor_for``): none, or its code's."""
    try:
        cls = supernet_class(supernet)
    except HwnasError:  # not registered now, or not buildable: nothing steers its searches
        return {None}
    return {None, *accepted_code_versions(cls)}


def calibration_spec(device_id: str, body: CalibrationCreate) -> dict[str, Any]:
    """The calibration job's stored spec, checked: shaped like a search's where the two
    share a meaning (``budget.evaluations``: the measurements; no objectives or constraints;
    never warm-started), plus the predictor kind to fit."""
    supernet = get_supernet(body.supernet)
    check_measures(device_id, supernet, field="supernet")
    sample_archs(supernet, body.n_samples, body.seed)  # a space too small for it fails now
    return {
        "kind": JobKind.calibration.value,
        "supernet": body.supernet,
        "device": device_id,
        "strategy": SAMPLING,
        "seed": body.seed,
        "budget": {"evaluations": body.n_samples},
        "objectives": {},
        "constraints": {},
        "warm_start": False,
        "latency_prior": False,
        "predictor_kind": body.kind,
        "labels": body.labels,
    }


def _profile(device_id: str) -> HardwareProfile:
    try:
        return device_profile(device_id)
    except UnknownName as exc:
        raise NotFound(str(exc)) from None
