from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import DispatcherDep, SessionDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(session: SessionDep, dispatcher: DispatcherDep) -> dict[str, object]:
    """Liveness and readiness: the database answers and which devices are served."""
    session.execute(text("SELECT 1"))
    return {"status": "ok", "devices_served": sorted(dispatcher.served_devices())}
