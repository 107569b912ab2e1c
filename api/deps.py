"""Typed dependencies: settings, the session factory, the dispatcher.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency on the thread
pool, one hop each. Handlers that touch the database are plain ``def`` functions that open
their own ``transaction(factory)``, so a request costs one thread-pool hop and its session
opens and closes on the same thread (a generator dependency would close it on another).

The two hot routes, polling a job and submitting one, are ``async`` and reach the app's
parts through the plain accessors at the end (``loop_reads``, ``submitter``,
``dispatcher_of``), not ``Depends``: FastAPI solves each dependency on every request,
~100 us apiece measured in-process, a quarter of a whole job poll.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from api.auth import ADMIN, KEY_LABEL
from core.settings import Settings
from store.db import LoopReads
from workers.dispatch import Dispatcher

if TYPE_CHECKING:
    from api.submissions import JobSubmitter


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


async def get_dispatcher(request: Request) -> Dispatcher:
    return dispatcher_of(request)


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
FactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def loop_reads(request: Request) -> LoopReads:
    """Reads on the event loop (``store.db.LoopReads``)."""
    reads: LoopReads = request.app.state.loop_reads
    return reads


def submitter(request: Request) -> JobSubmitter:
    """The group-commit writer of new jobs (``api.submissions``)."""
    job_submitter: JobSubmitter = request.app.state.submitter
    return job_submitter


def dispatcher_of(request: Request) -> Dispatcher:
    """The dispatcher (``DispatcherDep`` is the same, as a dependency)."""
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


def owner_of(request: Request) -> str | None:
    """The submitter (``Job.submitted_by``) whose jobs alone the request may see and
    change: its key's label where ``HWNAS_JOB_VISIBILITY=own`` and the key is no admin's
    (``api.auth``); None where it may see every job."""
    if not getattr(request.app.state, "own_jobs_only", False):
        return None
    if getattr(request.state, ADMIN, False):
        return None
    label: str = getattr(request.state, KEY_LABEL, "")
    return label
