"""What can be searched (supernets) and where (hardware profiles)."""

from __future__ import annotations

from collections import Counter

from fastapi import APIRouter

from api.deps import DispatcherDep, FactoryDep
from api.schemas import DevicePublic, SupernetPublic, usable_supernet
from core.errors import HwnasError
from hardware_profiles.configured import device_profiles, measures
from models.base import Supernet
from models.metrics import metrics_of
from models.registry import create_supernet, list_supernets
from store import jobs as q
from store.db import reading
from store.tables import JobStatus

router = APIRouter(tags=["catalog"])


@router.get("/supernets", response_model=list[SupernetPublic])
def read_supernets() -> list[SupernetPublic]:
    """Every registered supernet: its genes and their choices, the space's size, the
    metrics it reports, whether it has validation data of its own, and a note (random
    weights, or why it is not usable as configured: its jobs are then refused).
    \f
    One that cannot be built as configured (its weights file does not load) is listed as
    its class describes it, with a note saying why: the others stay listed."""
    return [_listed(name) for name in list_supernets()]


def _listed(name: str) -> SupernetPublic:
    try:
        supernet, problem = usable_supernet(name), None
    except HwnasError as exc:
        problem = f"not usable as configured: {exc}"
        try:  # described as its class is, without the weights that failed
            supernet = create_supernet(name)
            return _public(name, supernet, problem)
        except Exception:  # not even that: named, with the reason
            return SupernetPublic(
                id=name, genes=0, raw_space_size=0, space_size=None, space={}, metrics=[],
                has_validation_data=False, note=problem,
            )  # fmt: skip
    return _public(name, supernet, None)


def _public(name: str, supernet: Supernet, problem: str | None) -> SupernetPublic:
    info = supernet.describe()
    return SupernetPublic(
        id=name,
        genes=info["genes"],
        raw_space_size=info["raw_space_size"],
        space_size=info.get("space_size"),
        space=info["space"],
        metrics=sorted(metrics_of(supernet)),
        has_validation_data=supernet.has_validation_data(),
        note=problem or info.get("note"),
    )


def _searchable() -> dict[str, Supernet]:
    """The registered supernets a job can search as configured (their shared instances);
    one that cannot (a weights file that does not load, a plugin that raises when built, a
    space() that is no search space: its jobs are refused) is left out, and the supernets'
    listing says why (a device named it among its supernets before: audit 28)."""
    usable = {}
    for name in list_supernets():
        try:
            usable[name] = usable_supernet(name)
        except Exception:  # its own listing names the reason
            continue
    return usable


@router.get("/devices", response_model=list[DevicePublic])
def read_devices(dispatcher: DispatcherDep, factory: FactoryDep) -> list[DevicePublic]:
    """The hardware profiles a job can name: kind, runtime, threads, batch size, whether
    a live worker serves each now (``served``: a job for one that is not waits), and how
    many of its jobs are queued and running."""
    served = dispatcher.served_devices()
    with reading(factory) as connection:
        counts = q.unfinished_by_device(connection)
    usable = _searchable()
    none: Counter[JobStatus] = Counter()
    return [
        DevicePublic(
            id=pid,
            name=p.name,
            kind=p.kind,
            runtime=p.runtime,
            threads=p.threads,
            batch_size=p.batch_size,
            served=pid in served,
            supernets=[name for name, supernet in usable.items() if measures(p, supernet)],
            queued=counts.get(pid, none)[JobStatus.queued],
            running=counts.get(pid, none)[JobStatus.running],
        )
        for pid, p in sorted(device_profiles().items())
    ]
