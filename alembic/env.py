"""Alembic environment: the URL comes from the caller's config or from Settings.

Migrations on one database run one at a time: two processes started together on a fresh
database (two ``hwnas serve``, a server and ``hwnas db-upgrade``) both saw no schema and
both created it; the second failed with "table jobs already exists". PostgreSQL: a
transaction-scoped advisory lock taken before Alembic reads the current revision (its DDL
is transactional, so the second waits, then finds the schema at head). SQLite, whose DDL
Alembic runs outside a transaction: an exclusive lock on a file beside the database.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from alembic import context
from core.settings import get_settings
from store.db import ensure_sqlite_dir
from store.tables import Base

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url

#: The advisory lock's key on PostgreSQL: any fixed 64-bit number of hwnas's own.
MIGRATION_LOCK = 0x68776E61735F6D67  # "hwnas_mg"


@contextmanager
def _sqlite_lock() -> Iterator[None]:
    """An exclusive lock on ``<database>.migrate-lock`` while migrating (none in memory).
    Opened read-only, made readable by all: whoever may migrate the database may lock it,
    whoever made the file first (review 24b: a 0644 file opened for appending locked
    every other user out of migrating, and so out of starting a server)."""
    database = make_url(url).database
    if not database or database == ":memory:":
        yield
        return
    path = Path(database).resolve()
    handle = os.open(path.with_name(path.name + ".migrate-lock"), os.O_RDONLY | os.O_CREAT, 0o666)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # lets the lock go


def run_migrations() -> None:
    sqlite = url.startswith("sqlite")
    if sqlite:  # plain `alembic upgrade head` on a fresh checkout: ./var
        ensure_sqlite_dir(url)
    engine = create_engine(url)
    with _sqlite_lock() if sqlite else nullcontext(), engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            context.run_migrations()
    engine.dispose()


run_migrations()
