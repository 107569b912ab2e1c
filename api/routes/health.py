from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import DispatcherDep, FactoryDep
from core.errors import ServiceUnavailable
from store.db import reading, schema_revision

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz(factory: FactoryDep, dispatcher: DispatcherDep, request: Request) -> dict[str, object]:
    """Liveness and readiness: the database answers with the schema this server started on
    (else 503: a SQLite file replaced under it answered ``SELECT 1`` from a new, empty file
    while every other request failed), which devices are served, and what keeps jobs from
    reaching workers (``problems``; the status is then "degraded": jobs are still accepted
    and stored, and dispatched once it clears)."""
    with reading(factory) as connection:
        revision = schema_revision(connection)
    head = request.app.state.schema_head
    if revision != head:
        raise ServiceUnavailable(
            f"the database's schema is at revision {revision or '(none)'}, this server runs "
            f"on {head}: was it replaced or downgraded? Check HWNAS_DATABASE_URL"
        )
    problems = dispatcher.problems()
    return {
        "status": "degraded" if problems else "ok",
        "devices_served": sorted(dispatcher.served_devices()),
        "problems": problems,
    }


# HEAD as load balancers ask it: the same checks and status, no body (undocumented: the
# OpenAPI schema would list the operation twice).
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
