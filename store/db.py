"""Engines, sessions, the one transaction helper, and the migration check."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from alembic import command
from core.errors import HwnasError, ServiceUnavailable, StorageError

ALEMBIC_DIR = Path(__file__).resolve().parents[1] / "alembic"


# More connections than the API's thread pool has threads (anyio's default: 40). A request's
# session is closed by its dependency on another pool thread; with fewer connections than
# threads, 100 concurrent requests could fill every thread with handlers waiting for a
# connection while the connections wait for a thread to be released: a deadlock.
POOL = {"pool_size": 10, "max_overflow": 50, "pool_timeout": 30}


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL, foreign keys and a busy timeout for threads."""
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **POOL
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **POOL)


def _ensure_sqlite_dir(url: str) -> None:
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL never corrupts and survives a process crash (what the resume path
    # guards against); only a power cut can drop the last commits. It saves an fsync per
    # commit, which is most of an evaluation's bookkeeping on SQLite.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success, rolls back on error; DB errors -> StorageError."""
    session = factory()
    try:
        yield session
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        raise StorageError(f"database error: {exc.__class__.__name__}: {exc}") from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """``alembic upgrade head`` on ``url``."""
    command.upgrade(alembic_config(url), "head")


def check_migrated(engine: Engine) -> None:
    """Refuse to run against a database whose schema is not at Alembic's head."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise ServiceUnavailable(f"cannot reach the database: {exc}") from exc
    if current != head:
        raise ServiceUnavailable(
            f"database schema is at revision {current or '(none)'}, code needs {head}: "
            "run `hwnas db-upgrade` (alembic upgrade head) first"
        )


__all__ = [
    "HwnasError",
    "alembic_config",
    "check_migrated",
    "make_engine",
    "make_session_factory",
    "transaction",
    "upgrade",
]
