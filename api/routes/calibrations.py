"""Latency-predictor calibrations of a device: run one, list the stored versions.

A calibration runs synchronously inside the POST request, on this process's own device:
it measures ``n_samples`` sub-networks (for the built-in supernet mostly ``extract``'s
BatchNorm recalibration: 3 s each seen on the 2-core CPU at load average 6, 15-35 s at load
10; a table lookup on a recorded device), fits, stores and returns the new version: clients
must allow a long request. Why not a queued job: the result is one
small row that the caller wants at once, the run is bounded (``n_samples`` <= 200), and the
measurements already serialise with running jobs on the device lock. A live device can only
be calibrated by the process that measures it, i.e. in the embedded mode for a device this
server serves; in the distributed mode live devices answer 409 (recorded devices, being
table lookups, can be calibrated anywhere).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import DispatcherDep, FactoryDep, SettingsDep
from api.presenters import calibration_public
from api.schemas import CalibrationCreate, CalibrationPublic, CalibrationsPublic
from core.errors import Conflict, NotFound, UnknownName
from hardware_profiles import HardwareProfile
from hardware_profiles.configured import device_profile
from store import predictors as q
from store.db import transaction
from workers.calibration import calibrate

router = APIRouter(prefix="/devices", tags=["calibrations"])


@router.post(
    "/{device_id}/calibrations",
    status_code=status.HTTP_201_CREATED,
    response_model=CalibrationPublic,
)
def create_calibration(
    device_id: str,
    body: CalibrationCreate,
    factory: FactoryDep,
    settings: SettingsDep,
    dispatcher: DispatcherDep,
) -> CalibrationPublic:
    """Measure sampled sub-networks on the device, fit a predictor, store the next version."""
    profile = _profile(device_id)
    here = settings.is_embedded and device_id in dispatcher.served_devices()
    if profile.kind != "recorded" and not here:
        raise Conflict(
            f"device {device_id!r} is not measured by this server (it serves: "
            f"{', '.join(sorted(dispatcher.served_devices())) or 'none'}"
            f"{'' if settings.is_embedded else ', through remote workers'}); a live device "
            "is calibrated by the embedded server that measures it"
        )
    record = calibrate(
        factory, body.supernet, device_id, n_samples=body.n_samples, seed=body.seed, kind=body.kind
    )
    return calibration_public(record)


@router.get("/{device_id}/calibrations", response_model=CalibrationsPublic)
def read_calibrations(
    device_id: str,
    factory: FactoryDep,
    supernet: Annotated[str | None, Query(description="only this supernet")] = None,
) -> CalibrationsPublic:
    """Stored predictor versions of the device, newest first per supernet."""
    _profile(device_id)
    with transaction(factory) as session:
        rows = q.list_predictors(session, device_id, supernet)
    data = [calibration_public(r) for r in rows]
    return CalibrationsPublic(data=data, count=len(data))


def _profile(device_id: str) -> HardwareProfile:
    try:
        return device_profile(device_id)
    except UnknownName as exc:
        raise NotFound(str(exc)) from None
