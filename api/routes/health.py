from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import DispatcherDep, FactoryDep
from store.db import reading

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(factory: FactoryDep, dispatcher: DispatcherDep) -> dict[str, object]:
    """Liveness and readiness: the database answers and which devices are served."""
    with reading(factory) as connection:
        connection.execute(text("SELECT 1"))
    return {"status": "ok", "devices_served": sorted(dispatcher.served_devices())}
