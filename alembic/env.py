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
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from alembic import context
from core.settings import get_settings
from store.db import ensure_sqlite_dir
from store.tables import Base

log = logging.getLogger("alembic.env")
config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url

#: The advisory lock's key on PostgreSQL: any fixed 64-bit number of hwnas's own.
MIGRATION_LOCK = 0x68776E61735F6D67  # "hwnas_mg"


@contextmanager
def _sqlite_lock() -> Iterator[None]:
    """An exclusive lock on ``<database>.migrate-lock`` while migrating (none in memory).
    Made readable and writable by all where this process owns it, opened for writing where
    it may be (NFS grants an exclusive flock only then), else read-only (review 24b: a 0644
    file opened for appending locked other users out of migrating, and so out of starting
    a server). A file system that refuses the lock is warned of, and the migration runs
    unlocked, as it did before."""
    database = make_url(url).database
    if not database or database == ":memory:":
        yield
        return
    path = Path(database).resolve()
    lock = path.with_name(path.name + ".migrate-lock")
    try:
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except PermissionError:
        handle = os.open(lock, os.O_RDONLY)
    try:
        with suppress(PermissionError):  # not this process's file: its owner's mode stands
            os.fchmod(handle, 0o666)  # a umask of 077 would lock the others out
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as exc:
            log.warning("migrating %s without a lock: %s cannot be locked: %s", path, lock, exc)
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
