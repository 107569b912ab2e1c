"""The FastAPI application factory and its start-up / shut-down order."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.redact import hidden
from core.settings import Settings, get_settings
from models.registry import get_supernet, list_supernets
from store import jobs as q
from store.db import (
    check_migrated,
    make_engine,
    make_loop_reads,
    make_session_factory,
    migrate_at_start,
    reading,
    schema_revisions,
    sqlite_database,
)
from workers.dispatch import Dispatcher, EmbeddedDispatcher

from .auth import document_api_keys, require_api_keys, server_keys
from .bodies import document_json_bodies
from .docs_pages import add_docs_pages
from .errors import document_error_answers, install_error_handlers
from .hot_routes import HotRoutes
from .retention import RetentionSweeper
from .routes import calibrations, catalog, health, jobs
from .slash_redirects import redirect_slashes_to
from .submissions import JobSubmitter

log = logging.getLogger(__name__)

# polls of a job and job submissions: most requests (api.hot_routes)
HOT_ENDPOINTS = (jobs.read_job, jobs.create_job)


def make_dispatcher(app_settings: Settings, factory) -> Dispatcher:  # type: ignore[no-untyped-def]
    """Embedded thread pool by default; Celery when a broker URL is configured."""
    if app_settings.is_embedded:
        return EmbeddedDispatcher(factory, app_settings)
    from workers.celery_dispatch import CeleryDispatcher

    return CeleryDispatcher(factory, app_settings)


def _preload_supernets() -> None:
    """Build every registered supernet's shared instance now (0.5 s here, most of it the
    NAS-Bench-201 table), not in the first request that names it: a job submission's
    validation runs on the event loop, which held every other request for 0.7 s the first
    time (measured by benchmarks/worker_scaling.py's first POST). A supernet that cannot be
    built is left to fail its own requests, with their usual error."""
    for name in list_supernets():
        try:
            get_supernet(name)
        except Exception as exc:
            log.warning("supernet %s not preloaded: %s", name, exc)


def _freeze_startup_objects() -> None:
    """Move what start-up allocated (torch, models, SQLAlchemy, routes: ~270k objects) out of
    the garbage collector's reach. A full collection walks every tracked object: 200 ms with
    them, during which no request is served; they live as long as the app anyway (and are
    handed back to the collector when it stops: a process may start several apps)."""
    gc.collect()
    gc.freeze()


def _warn_of_unscoped_searches(factory: sessionmaker[Session]) -> None:
    """Searches submitted before ``HWNAS_JOB_VISIBILITY=own`` and not ended: said, as each
    warm-starts from every key's jobs when it runs (security test 34 L2)."""
    with reading(factory) as connection:
        count = q.unscoped_searches(connection)
    if count:
        log.warning(
            "%d searches queued or running were submitted before HWNAS_JOB_VISIBILITY=own: "
            "each warm-starts from every API key's jobs (cancel them if that matters)",
            count,
        )


def started_line(settings: Settings) -> str:
    """What an operator checks first in the log: the mode, the database and the broker
    (passwords hidden; a SQLite file by its absolute path), the data directory, whether
    API keys are required and the retention (a misspelt variable gave the embedded mode
    without a word; a relative path said nothing of the folder it was taken from, and
    nothing said whether keys were on: ops audit 29)."""
    database = hidden(_absolute_sqlite(settings.database_url))
    keys = server_keys(settings)
    days = settings.retention_days
    whose = f", each sees its own jobs ({len(keys.admins)} admin)" if keys.own_jobs_only else ""
    rest = (
        f"data {Path(settings.data_dir).resolve()}, "
        + (
            f"API keys required ({len(keys.keys)}){whose}"
            if keys.keys
            else "no API keys (anyone who reaches it may use it)"
        )
        + (
            f", jobs deleted {days:g} days after they end"
            if days
            else ", nothing deleted on its own"
        )
    )
    if settings.is_embedded:
        workers = settings.embedded_workers
        mode = f"embedded mode ({workers} in-process worker{'s' * (workers > 1)})"
        return f"hwnas: {mode}, database {database}, {rest}"
    broker = hidden(settings.broker_url)
    return f"hwnas: distributed mode, database {database}, broker {broker}, {rest}"


def _absolute_sqlite(url: str) -> str:
    """``url``, a SQLite file's relative path made absolute (as SQLite opens it: from the
    working directory), whatever the driver's name in it (``sqlite+pysqlite:///``)."""
    database = sqlite_database(url)
    if database is None or database.is_absolute() or str(database).startswith("file:"):
        return url
    resolved = make_url(url).set(database=str(database.resolve()))
    return resolved.render_as_string(hide_password=False)


def operation_id(route: APIRoute) -> str:
    return route.name


def create_app(settings: Settings | None = None, *, hot_routes: bool = True) -> FastAPI:
    """The app; ``hot_routes=False`` leaves every request to FastAPI's routing (the tests
    compare the two ways, see ``api.hot_routes``)."""
    app_settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Handlers run on this many threads; each holds one connection while it runs, the
        # embedded workers hold one each plus one for their heartbeat.
        anyio.to_thread.current_default_thread_limiter().total_tokens = app_settings.api_threads
        connections = app_settings.api_threads + 2 * app_settings.embedded_workers + 2
        async with AsyncExitStack() as stack:  # shut down in reverse order, each step sure
            engine = make_engine(app_settings.database_url, connections)
            stack.callback(engine.dispose)
            if app_settings.auto_migrate:
                migrate_at_start(app_settings.database_url, wait_s=app_settings.migration_wait_s)
            app.state.schema_head = check_migrated(engine)
            app.state.schema_known = schema_revisions(app_settings.database_url)
            factory = make_session_factory(engine)
            app.state.settings, app.state.session_factory = app_settings, factory
            app.state.loop_reads = reads = make_loop_reads(app_settings.database_url)
            stack.push_async_callback(reads.aclose)
            if app.state.own_jobs_only:
                _warn_of_unscoped_searches(factory)
            app.state.dispatcher = dispatcher = make_dispatcher(app_settings, factory)
            dispatcher.start()
            stack.callback(dispatcher.stop)
            if app_settings.retention_days > 0:
                sweeper = RetentionSweeper(
                    factory, Path(app_settings.data_dir), app_settings.retention_days
                )
                sweeper.start()
                stack.callback(sweeper.stop)
            app.state.submitter = submitter = JobSubmitter(
                factory, dispatcher, limit=app_settings.max_active_jobs_per_key
            )
            # What was accepted is stored and dispatched before the dispatcher stops.
            stack.push_async_callback(submitter.aclose)
            log.info("%s", started_line(app_settings))
            _preload_supernets()
            _freeze_startup_objects()
            stack.callback(gc.unfreeze)
            yield

    app = FastAPI(
        title="hwnas",
        version="0.1.0",
        lifespan=lifespan,
        description="Hardware-aware neural architecture search as a service.",
        docs_url=None,  # add_docs_pages: with their scripts served here, not from a CDN
        redoc_url=None,
        # operationIds as the routes are named (read_job, create_job, ...), which a
        # generated client's methods take: FastAPI's own add the path and method
        # (read_job_v1_jobs__job_id__get: audit 34)
        generate_unique_id_function=operation_id,
    )
    install_error_handlers(app)
    document_json_bodies(app)
    document_error_answers(app)
    # Jobs first: routes are matched in order, and job polls are most of the traffic.
    app.include_router(jobs.router, prefix="/v1")
    app.include_router(health.router)
    app.include_router(catalog.router, prefix="/v1")
    app.include_router(calibrations.router, prefix="/v1")
    add_docs_pages(app)
    redirect_slashes_to(app, app_settings.public_url)
    if hot_routes:
        app.add_middleware(HotRoutes, api=app, endpoints=HOT_ENDPOINTS)
    keys = server_keys(app_settings)
    if keys.keys:
        require_api_keys(app, keys)  # added last: the outermost, so it runs first
    document_api_keys(app, required=bool(keys.keys))
    app.state.own_jobs_only = keys.own_jobs_only  # api.deps.owner_of
    return app
