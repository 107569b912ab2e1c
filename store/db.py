"""Engines, sessions, the one transaction helper, and the migration check."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from alembic import command
from core.errors import HwnasError, ServiceUnavailable, StorageError

ALEMBIC_DIR = Path(__file__).resolve().parents[1] / "alembic"


def make_engine(url: str, connections: int = 10) -> Engine:
    """An engine keeping ``connections`` open; SQLite gets WAL, foreign keys, a busy timeout.

    Give it at least as many connections as threads that hold a session at once (the API
    passes its thread-pool size plus the embedded workers' threads). Fewer make threads
    queue for a connection; connections beyond the kept ones (the overflow) are opened and
    closed per checkout, which costs more than the query on SQLite.
    """
    pool = {"pool_size": connections, "max_overflow": connections, "pool_timeout": 30}
    if url.startswith("sqlite"):
        _ensure_sqlite_dir(url)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        _SQLiteWriterQueue(timeout_s=30.0).attach(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


class _SQLiteWriterQueue:
    """One writing transaction at a time per engine, queued on a Python lock.

    SQLite allows one writer per file. A second writer in the same process would get
    SQLITE_BUSY and sleep in SQLite's busy handler (1, 2, 5, 10 ... ms steps) whatever the
    lock's holder does; with many API threads inserting jobs that turns most of a request's
    time into sleep. Here a writer waits on a lock that is handed over as soon as the
    holder's connection is back in the pool (its COMMIT or ROLLBACK done: SQLAlchemy's
    commit event fires before the COMMIT runs, so it cannot be the signal). pysqlite opens
    its transaction at the first statement that changes data (reads run outside one), which
    is where the lock is taken. Other processes on the same file (not the embedded design)
    still meet SQLite's own busy timeout.
    """

    HELD = "hwnas_writer_lock"

    def __init__(self, timeout_s: float) -> None:
        self._lock = threading.Lock()
        self._timeout_s = timeout_s

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before_execute)
        event.listen(engine.pool, "checkin", self._release)  # after the pool's reset
        event.listen(engine.pool, "invalidate", self._release)  # connection discarded

    def _before_execute(self, conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if conn.info.get(self.HELD) or statement.lstrip()[:6].upper() in ("SELECT", "PRAGMA"):
            return
        if not self._lock.acquire(timeout=self._timeout_s):
            raise StorageError(f"database is locked: no write slot within {self._timeout_s:.0f} s")
        conn.info[self.HELD] = True

    def _release(self, _dbapi_connection, record, *_args) -> None:  # type: ignore[no-untyped-def]
        if record is not None and record.info.pop(self.HELD, False):
            self._lock.release()


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
        raise _storage_error(exc) from exc
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """A bare connection for statements on Core rows (no ORM objects): none of a session's
    bookkeeping (its transaction object, identity map, snapshot), which costs more than a
    short query. Nothing is committed."""
    with _core(factory, begin=False) as connection:
        yield connection


@contextmanager
def writing(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """Like ``reading``, in a transaction committed at the end (rolled back on error)."""
    with _core(factory, begin=True) as connection:
        yield connection


@contextmanager
def _core(factory: sessionmaker[Session], *, begin: bool) -> Iterator[Connection]:
    engine: Engine = factory.kw["bind"]
    try:
        with engine.begin() if begin else engine.connect() as connection:
            yield connection
    except SQLAlchemyError as exc:
        raise _storage_error(exc) from exc


def _storage_error(exc: SQLAlchemyError) -> StorageError:
    return StorageError(f"database error: {exc.__class__.__name__}: {exc}")


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
