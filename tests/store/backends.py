"""Database backends the store tests run against: SQLite always, PostgreSQL for real.

PostgreSQL tests use a fresh schema-less database per test, created in the local server
(127.0.0.1:5432, trust auth). In CI (CI=true) a missing server is a failure, not a skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from store.db import make_engine, make_session_factory, upgrade

PG_ADMIN_URL = os.environ.get(
    "HWNAS_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def postgres_available() -> bool:
    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


def require_postgres() -> None:
    if postgres_available():
        return
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI and not reachable at {PG_ADMIN_URL}")
    pytest.skip("PostgreSQL not reachable (run scripts/start_services.sh)")


@contextmanager
def temporary_postgres() -> Iterator[str]:
    """A new empty database; dropped afterwards."""
    require_postgres()
    name = f"hwnas_test_{uuid.uuid4().hex[:12]}"
    # pre-ping: a test may restart the server while this engine holds a connection
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
    else:
        with temporary_postgres() as url:
            yield url


@contextmanager
def migrated_database(
    backend: str, tmp_path: Path
) -> Iterator[tuple[str, Engine, sessionmaker[Session]]]:
    """A fresh database of ``backend`` at the schema's head: its URL, an engine (disposed
    afterwards) and a session factory on it."""
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            yield url, engine, make_session_factory(engine)
        finally:
            engine.dispose()


def set_timezone(url: str, zone: str) -> None:
    """Make ``zone`` the ``TimeZone`` of new sessions on the PostgreSQL database at ``url``
    (where it answers timestamps): a zone other than the usual UTC shows which one a row
    carries."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        name = connection.execute(text("SELECT current_database()")).scalar_one()
        connection.execute(text(f"ALTER DATABASE \"{name}\" SET timezone TO '{zone}'"))
    engine.dispose()


def end_other_sessions(url: str) -> None:
    """End every other session on the PostgreSQL database at ``url``, as a restart of the
    server would: held connections find theirs dropped at their next statement."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        ended = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    engine.dispose()
    assert ended >= 1, "no other session to end"
