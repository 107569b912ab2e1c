"""The FastAPI application factory and its start-up / shut-down order."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from core.settings import Settings, get_settings
from store.db import check_migrated, make_engine, make_session_factory, upgrade
from workers.dispatch import Dispatcher, EmbeddedDispatcher

from .errors import install_error_handlers
from .routes import calibrations, catalog, health, jobs

log = logging.getLogger(__name__)


def make_dispatcher(app_settings: Settings, factory) -> Dispatcher:  # type: ignore[no-untyped-def]
    """Embedded thread pool by default; Celery when a broker URL is configured."""
    if app_settings.is_embedded:
        return EmbeddedDispatcher(factory, app_settings)
    from workers.celery_dispatch import CeleryDispatcher

    return CeleryDispatcher(factory, app_settings)


def create_app(settings: Settings | None = None) -> FastAPI:
    app_settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Handlers run on this many threads; each holds one connection while it runs, the
        # embedded workers hold one each plus one for their heartbeat.
        anyio.to_thread.current_default_thread_limiter().total_tokens = app_settings.api_threads
        connections = app_settings.api_threads + 2 * app_settings.embedded_workers + 2
        engine = make_engine(app_settings.database_url, connections)
        if app_settings.auto_migrate:
            upgrade(app_settings.database_url)
        check_migrated(engine)
        factory = make_session_factory(engine)
        dispatcher = make_dispatcher(app_settings, factory)
        app.state.settings, app.state.session_factory = app_settings, factory
        app.state.dispatcher = dispatcher
        dispatcher.start()
        try:
            yield
        finally:
            dispatcher.stop()
            engine.dispose()

    app = FastAPI(
        title="hwnas",
        version="0.1.0",
        lifespan=lifespan,
        description="Hardware-aware neural architecture search as a service.",
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router, prefix="/v1")
    app.include_router(catalog.router, prefix="/v1")
    app.include_router(calibrations.router, prefix="/v1")
    return app
