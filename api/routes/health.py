from __future__ import annotations

from fastapi import APIRouter, Request

from api.auth import ANONYMOUS
from api.deps import DispatcherDep, FactoryDep
from api.disk_space import low_space
from api.errors import error_answers
from api.schemas import HealthPublic
from core.errors import ServiceUnavailable, StorageError
from store.db import reading, schema_revision

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=None,
    responses={200: {"model": HealthPublic, "description": "ok or degraded"}, **error_answers(503)},
)
def healthz(factory: FactoryDep, dispatcher: DispatcherDep, request: Request) -> dict[str, object]:
    """Liveness and readiness: ``ok``, or ``degraded`` with the ``problems`` that keep jobs
    from reaching workers (an unreachable broker: jobs are still accepted and stored, and
    dispatched once it clears), and the devices served; 503 when the database does not
    answer, or its schema is older than this server's; ``degraded`` too when the disk its
    data directory or SQLite file is on has under 256 MiB free (on a disk under 5 GiB: 5 %
    of it). With API keys set, a caller without one gets the status alone.
    \f
    A server whose database answers ``SELECT 1`` is not ready unless the schema is the
    one it started on: a SQLite file replaced under it answered from a new, empty file
    while every other request failed. A schema a newer version migrated is a problem, not
    a 503, so that a rolling upgrade does not take every old server out at once. A caller
    without a key gets no problems: they name the broker's and the database's address
    (``api.auth.ANONYMOUS``)."""
    if not getattr(request.state, ANONYMOUS, False):
        return _health(factory, dispatcher, request)
    try:
        return {"status": _health(factory, dispatcher, request)["status"]}
    except (ServiceUnavailable, StorageError) as exc:
        raise ServiceUnavailable("not ready (send an API key for the reason)") from exc


def _health(factory: FactoryDep, dispatcher: DispatcherDep, request: Request) -> dict[str, object]:
    with reading(factory) as connection:
        revision = schema_revision(connection)
    head, known = request.app.state.schema_head, request.app.state.schema_known
    served = sorted(dispatcher.served_devices())  # first: it asks the broker, problems() tells
    problems = dispatcher.problems()
    distributed = not request.app.state.settings.is_embedded  # its workers are all there is
    if distributed and not served and not problems:  # a broker away says why already
        problems.append(  # "ok" with no worker at all: a pipeline's gate passed (audit 30)
            "no live worker serves any device: jobs are accepted and wait queued until one "
            "does (hwnas worker --devices ...)"
        )
    if revision != head and (revision is None or revision in known):
        raise ServiceUnavailable(
            f"the database's schema is at revision {revision or '(none)'}, this server runs "
            f"on {head}: was it replaced or downgraded? Check HWNAS_DATABASE_URL"
        )
    if revision != head:  # a newer version migrated it (a rolling upgrade): still serving
        problems.append(
            f"the database's schema is at revision {revision}, newer than this server's "
            f"{head}: replace this server with the version that migrated it"
        )
    problems.extend(low_space(request.app.state.settings))
    return {
        "status": "degraded" if problems else "ok",
        "devices_served": served,
        "problems": problems,
    }


# HEAD as load balancers ask it: the same checks and status, no body (undocumented: the
# OpenAPI schema would list the operation twice).
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
