"""Alembic environment: the URL comes from the caller's config or from Settings."""

from __future__ import annotations

from sqlalchemy import create_engine

from alembic import context
from core.settings import get_settings
from store.db import ensure_sqlite_dir
from store.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_migrations() -> None:
    if url.startswith("sqlite"):  # plain `alembic upgrade head` on a fresh checkout: ./var
        ensure_sqlite_dir(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=url.startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations()
