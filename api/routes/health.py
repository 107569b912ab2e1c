from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from api.deps import DispatcherDep, FactoryDep
from store.db import reading

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(factory: FactoryDep, dispatcher: DispatcherDep) -> dict[str, object]:
    """Liveness and readiness: the database answers (else 503), which devices are served,
    and what keeps jobs from reaching workers (``problems``; the status is then
    "degraded": jobs are still accepted and stored, and dispatched once it clears)."""
    with reading(factory) as connection:
        connection.execute(text("SELECT 1"))
    problems = dispatcher.problems()
    return {
        "status": "degraded" if problems else "ok",
        "devices_served": sorted(dispatcher.served_devices()),
        "problems": problems,
    }


# HEAD as load balancers ask it: the same checks and status, no body (undocumented: the
# OpenAPI schema would list the operation twice).
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
