"""Typed dependencies: settings, the session factory, the dispatcher.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency on the thread
pool, one hop each. Handlers that touch the database are plain ``def`` functions that open
their own ``transaction(factory)``, so a request costs one thread-pool hop and its session
opens and closes on the same thread (a generator dependency would close it on another).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from workers.dispatch import Dispatcher


async def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_session_factory(request: Request) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = request.app.state.session_factory
    return factory


async def get_dispatcher(request: Request) -> Dispatcher:
    dispatcher: Dispatcher = request.app.state.dispatcher
    return dispatcher


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
FactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]
