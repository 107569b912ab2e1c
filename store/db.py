"""Engines, sessions, the one transaction helper, and the migration check."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urlsplit

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    create_engine,
    delete,
    event,
    make_url,
    select,
    text,
)
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker

from alembic import command
from core.errors import HwnasError, InvalidInput, ServiceUnavailable, StorageError, first_line
from core.redact import hidden

from . import clock

log = logging.getLogger(__name__)
ALEMBIC_DIR = Path(__file__).resolve().parents[1] / "alembic"
T = TypeVar("T")


def make_engine(url: str, connections: int = 10) -> Engine:
    """An engine keeping ``connections`` open; SQLite gets WAL, foreign keys, a busy timeout.

    Give it at least as many connections as threads that hold a session at once (the API
    passes its thread-pool size plus the embedded workers' threads). Fewer make threads
    queue for a connection; connections beyond the kept ones (the overflow) are opened and
    closed per checkout, which costs more than the query on SQLite.
    """
    pool = {"pool_size": connections, "max_overflow": connections, "pool_timeout": 30}
    if url.startswith("sqlite"):
        ensure_sqlite_dir(url)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        _SQLiteWriterQueue(timeout_s=30.0).attach(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


#: An execution option: the statement (a ``with_for_update`` read) takes SQLite's write slot
#: (``_SQLiteWriterQueue``) as PostgreSQL takes the row's lock; no effect on PostgreSQL.
LOCKING_READ = "hwnas_locking_read"


class _SQLiteWriterQueue:
    """One writing transaction at a time per engine, queued on a Python lock.

    SQLite allows one writer per file. A second writer in the same process would get
    SQLITE_BUSY and sleep in SQLite's busy handler (1, 2, 5, 10 ... ms steps) whatever the
    lock's holder does; with many API threads inserting jobs that turns most of a request's
    time into sleep. Here a writer waits on a lock that is handed over as soon as the
    holder's connection is back in the pool (its COMMIT or ROLLBACK done: SQLAlchemy's
    commit event fires before the COMMIT runs, so it cannot be the signal). pysqlite opens
    its transaction at the first statement that changes data (reads run outside one), which
    is where the lock is taken; or at a read marked ``LOCKING_READ`` (``SELECT ... FOR
    UPDATE`` on PostgreSQL, which SQLite lacks), which also begins SQLite's write transaction
    (``BEGIN IMMEDIATE``): a read-change-write step then reads the row as no other thread,
    nor another process on the same file (``hwnas run`` beside ``hwnas serve``), can change
    it before its commit. Other processes' writers wait in SQLite's own busy timeout.
    """

    HELD = "hwnas_writer_lock"

    def __init__(self, timeout_s: float) -> None:
        self._lock = threading.Lock()
        self._timeout_s = timeout_s

    def attach(self, engine: Engine) -> None:
        event.listen(engine, "before_cursor_execute", self._before_execute)
        event.listen(engine.pool, "checkin", self._release)  # after the pool's reset
        event.listen(engine.pool, "invalidate", self._release)  # connection discarded

    def _before_execute(self, conn, _cursor, statement, _parameters, context, _many) -> None:  # type: ignore[no-untyped-def]
        if conn.info.get(self.HELD):
            return
        locking = context is not None and context.execution_options.get(LOCKING_READ, False)
        if statement.lstrip()[:6].upper() in ("SELECT", "PRAGMA") and not locking:
            return
        if not self._lock.acquire(timeout=self._timeout_s):
            raise StorageError(
                f"database is locked: no write slot within {self._timeout_s:.0f} s",
                unreachable=True,
            )
        conn.info[self.HELD] = True
        driver = conn.connection.driver_connection
        if locking and not driver.in_transaction:  # and the file's write lock, which holds
            driver.execute("BEGIN IMMEDIATE")  # other processes too (hwnas run beside serve)

    def _release(self, _dbapi_connection, record, *_args) -> None:  # type: ignore[no-untyped-def]
        if record is not None and record.info.pop(self.HELD, False):
            self._lock.release()


def sqlite_database(url: str) -> Path | None:
    """The file a SQLite URL names, as named (a relative path is taken from the working
    directory, as SQLite opens it), also in SQLite's URI form (``sqlite:///file:x.db?
    mode=rwc&uri=true``: it was taken for a file named ``file:x.db``, review 29b); None for
    another database, an in-memory one, or a URL that is none (refused where it is used)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return None
    if str(parsed.query.get("uri", "")).lower() == "true" and database.startswith("file:"):
        if parsed.query.get("mode") == "memory":
            return None
        database = unquote(urlsplit(database).path)  # file:x.db, file:/x.db, file:///x.db
    return Path(database) if database not in ("", ":memory:") else None  # file::memory:


def ensure_sqlite_dir(url: str) -> None:
    """Make the folder of a SQLite database file (``./var`` on a fresh checkout)."""
    path = sqlite_database(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)


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
    """A session that commits on success, rolls back on error; DB errors -> StorageError.
    It measures this host's clock against the database's first, when that is due
    (``store.clock``)."""
    session = factory()
    try:
        clock.follow(session)
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
def one_statement_writing(factory: sessionmaker[Session]) -> Iterator[Session | Connection]:
    """Where a store write that is one statement on PostgreSQL runs (the docstrings of
    ``store.jobs`` and ``store.evaluations`` say which): there, a bare connection in
    autocommit, so the statement commits as it runs, with no BEGIN and COMMIT round trips;
    elsewhere (where it takes several statements) a
    ``transaction``. The body must issue that one write, nothing else."""
    engine: Engine = factory.kw["bind"]
    if engine.dialect.name != "postgresql":
        with transaction(factory) as session:
            yield session
        return
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            yield connection
    except SQLAlchemyError as exc:
        raise _storage_error(exc) from exc


class HeldConnectionWriter:
    """``one_statement_writing`` for one thread that writes often: on PostgreSQL the
    connection is kept between writes, so a write is its one round trip. (A checkout from
    the pool costs a second: the pre-ping.) Under the API's load each round trip waits for
    the GIL as well.

    A write that meets a dropped connection (the database restarted, or ended the session)
    runs once more on a new connection, checked out (and pinged) from the pool. So ``write``
    must be idempotent: the first try may have committed before the connection dropped.
    After any error the connection is let go; database errors are ``StorageError``.
    Elsewhere each write is a ``writing`` transaction. Not thread-safe: one thread writes,
    and the same thread (or one after it) closes.
    """

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self._factory = factory
        self._engine: Engine = factory.kw["bind"]
        self._held = self._engine.dialect.name == "postgresql"
        self._connection: Connection | None = None

    def write(self, write: Callable[[Connection], T]) -> T:
        if not self._held:
            with writing(self._factory) as connection:
                return write(connection)
        try:
            return self._write_held(write)
        except SQLAlchemyError as exc:
            if not (isinstance(exc, DBAPIError) and exc.connection_invalidated):
                raise _storage_error(exc) from exc
            log.warning("database connection dropped (%s); writing again on a new one", exc.orig)
        try:
            return self._write_held(write)
        except SQLAlchemyError as exc:
            raise _storage_error(exc) from exc

    def _write_held(self, write: Callable[[Connection], T]) -> T:
        try:
            if self._connection is None:
                self._connection = self._engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                )
            result = write(self._connection)
            self._connection.commit()  # ends SQLAlchemy's block; in autocommit no round trip
            return result
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(SQLAlchemyError):
                connection.close()


@contextmanager
def _core(factory: sessionmaker[Session], *, begin: bool) -> Iterator[Connection]:
    engine: Engine = factory.kw["bind"]
    try:
        with engine.begin() if begin else engine.connect() as connection:
            yield connection
    except SQLAlchemyError as exc:
        raise _storage_error(exc) from exc


def _storage_error(exc: Exception) -> HwnasError:
    """What a request is told of a database error: its class and the driver's first line.
    (SQLAlchemy's text adds the statement and its parameters: for the log, which keeps the
    chained exception, not for a client.) A NUL byte in a text value, which PostgreSQL
    cannot store and psycopg refuses before sending, is the request's error: ids come from
    URLs, and ``%00`` is a valid escape there."""
    reason = _first_line(exc)
    if "NUL (0x00)" in reason:
        return InvalidInput("text values cannot contain NUL (0x00) characters")
    away = isinstance(exc, OperationalError | InterfaceError | DisconnectionError) or bool(
        getattr(exc, "connection_invalidated", False)
    )
    return StorageError(f"database error: {exc.__class__.__name__}: {reason}", unreachable=away)


def _first_line(exc: BaseException) -> str:
    """The first line of the driver's message (SQLAlchemy's ``orig``), else of ``exc``'s;
    the class name of an error without text."""
    cause = getattr(exc, "orig", None) or exc
    return first_line(cause) or type(cause).__name__


class LoopReads(ABC):
    """Reads for ``async`` request handlers, without a hop to a worker thread.

    ``await reads(fn, *args)`` runs ``fn(connection, *args)`` (a sync query function on a
    Core ``Connection``, the same ones the thread-pool paths call) and returns its result,
    outside any transaction afterwards. A thread-pool hop costs more CPU than a short query
    (measured: a no-op ``def`` handler serves 40 % of the requests an ``async`` one does), so
    the API's polling reads take this path; one implementation per database dialect. Only
    short reads belong here (a job by its key): on SQLite the loop waits for the query.

    Contract: awaited from one event loop (the API's), whose lifespan creates it and ends
    it with ``aclose``; ``fn`` only reads, and keeps nothing of the connection.
    """

    dialect: ClassVar[str]

    @abstractmethod
    async def __call__(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def cached(self, fn: Callable[..., T], job_id: str, *args: Any) -> T:
        """``fn(connection, job_id, *args)``, where ``fn`` reads job ``job_id``'s row and
        nothing else; an implementation may answer from a result it read before if it
        knows that row has not changed since. The caller must not change the result, and
        ``args`` must be hashable."""
        return await self(fn, job_id, *args)

    def forget(self, job_id: str) -> None:
        """This process has just changed job ``job_id``: drop what ``cached`` holds of it
        (callable from any thread). Implementations whose memo learns of every commit by
        itself need nothing here."""
        del job_id

    @abstractmethod
    async def aclose(self) -> None: ...


class _InlineSQLiteReads(LoopReads):
    """SQLite: the query runs on the event loop itself, on a connection of its own.

    A primary-key read on a local file takes tens of microseconds, and in WAL mode a reader
    never waits for a writer, so blocking the loop for it costs less than leaving it. The
    connection's busy timeout is short (a reader meets SQLITE_BUSY only while another
    connection recovers the WAL): the loop is never held for SQLite's usual 30 s.

    ``cached`` answers a repeated read from memory while ``PRAGMA data_version`` says no
    other connection has committed since (SQLite changes that number on every commit by
    another connection or process, and this connection never writes). A job polled many
    times a second between two of its evaluations is read once. Any commit anywhere clears
    the whole memo.
    """

    dialect = "sqlite"
    CACHE_MAX = 1024

    def __init__(self, url: str, busy_timeout_s: float = 1.0) -> None:
        self._engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": busy_timeout_s},
            pool_size=1,
            max_overflow=0,
        )
        event.listen(self._engine, "connect", _sqlite_pragmas)
        self._connection: Connection | None = None
        # Handlers of one loop never overlap here; the lock guards apps served on two loops
        # (test clients), and costs nothing uncontended.
        self._lock = threading.Lock()
        self._memo: dict[tuple[Any, ...], Any] = {}
        self._memo_version: int | None = None

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return self._read(fn, args, memo=False)

    async def cached(self, fn: Callable[..., T], job_id: str, *args: Any) -> T:
        with self._lock:
            return self._read(fn, (job_id, *args), memo=True)

    def _read(self, fn: Callable[..., T], args: tuple[Any, ...], *, memo: bool) -> T:
        try:
            if self._connection is None:
                self._connection = self._engine.connect()
            if memo:
                self._check_version(self._connection)
                if (fn, *args) in self._memo:
                    result: T = self._memo[(fn, *args)]
                    return result
            try:
                result = fn(self._connection, *args)
            finally:
                # End the read transaction: a kept snapshot would go stale and pin the WAL.
                self._connection.rollback()
        except (SQLAlchemyError, sqlite3.Error) as exc:  # the PRAGMA runs on the raw driver
            self._discard()
            raise _storage_error(exc) from exc
        if memo:
            if len(self._memo) >= self.CACHE_MAX:
                self._memo.clear()
            self._memo[(fn, *args)] = result
        return result

    def _check_version(self, connection: Connection) -> None:
        """Forget the memo if another connection committed since it was filled."""
        raw = connection.connection.driver_connection
        version = raw.execute("PRAGMA data_version").fetchone()[0]  # type: ignore[union-attr]
        if version != self._memo_version:
            self._memo.clear()
            self._memo_version = version

    def _discard(self) -> None:
        self._memo.clear()
        self._memo_version = None
        if self._connection is not None:
            self._connection.invalidate()
            self._connection.close()
            self._connection = None

    async def aclose(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
        self._engine.dispose()


class _AsyncDriverReads(LoopReads):
    """PostgreSQL: SQLAlchemy's asyncio engine on psycopg's async connection; the sync query
    function runs through ``AsyncConnection.run_sync`` (the loop waits on the socket).

    Not fast: one caller alone waits 1.4 ms per read here against 0.8 ms for the sync
    engine (SQLAlchemy's greenlet bridge, psycopg's async waits), so ``cached`` keeps a
    memo of each job's read, dropped when PostgreSQL says that job changed: a trigger
    (migration 0004) sends ``NOTIFY hwnas_job_changed, '<job id>'`` for every updated or
    deleted jobs row, delivered when its transaction commits, and a listener task on its
    own connection pops that job's entries. The memo is used only while the listener is
    connected (after a reconnect it starts empty: what changed in the gap was not heard);
    a listener that hears nothing for ``CHECK_S`` asks its connection for an answer, so one
    that died without a word (a vanished peer, a frozen server) turns the memo off.
    A read that a notification of its job overtook is not kept (``_version``, one per job:
    running jobs' commits do not stop other jobs' reads from being kept), so a result read
    before a commit never outlives that commit's notification. Between a commit and the
    notification's arrival (a socket hop on the same host) a poller may get the previous
    body; this process's own writes call ``forget`` at once. While listening, callers that
    miss the memo for the same read at the same time share one read (``_read_once``).
    """

    dialect = "postgresql"
    CACHE_MAX = 4096  # reads memoised, all jobs together
    PER_JOB_MAX = 16  # reads of one job (one per base URL the job's pollers use)
    JOIN_S = 0.25  # a read older than this is not joined (a read takes ~2 ms)
    CHANGES_MAX = 65536  # jobs whose changes are counted (then all start again)
    RECONNECT_S = (0.5, 5.0)  # first and longest wait before listening again
    CHECK_S = 10.0  # without a notification this long, the listener's connection is checked
    LISTENER_NAME = "hwnas-job-listener"  # its application_name in pg_stat_activity

    def __init__(self, url: str, connections: int = 10) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self._engine = create_async_engine(
            url, pool_pre_ping=True, pool_size=connections, max_overflow=connections
        )
        self._conninfo = make_url(url).set(drivername="postgresql").render_as_string(False)
        self._memo: dict[str, dict[tuple[Any, ...], Any]] = {}  # job id -> (fn, *args) -> result
        self._entries = 0  # results in _memo
        # A job's version: (epoch, changes). The epoch moves when the whole memo goes (a
        # lost listener); a job's count of changes with each notification or forget of it,
        # so one job's commits do not stop the reads of the others from being memoised.
        self._epoch = 0
        self._changes: dict[str, int] = {}
        # reads in flight: (job id, fn, *args) -> (job version and time they began at, read)
        self._flights: dict[
            tuple[Any, ...], tuple[tuple[int, int], float, asyncio.Future[Any]]
        ] = {}
        self._listening = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Task[None] | None = None

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            async with self._engine.connect() as connection:
                return await connection.run_sync(fn, *args)
        except SQLAlchemyError as exc:
            raise _storage_error(exc) from exc

    async def cached(self, fn: Callable[..., T], job_id: str, *args: Any) -> T:
        if self._listener is None:
            self._loop = asyncio.get_running_loop()
            self._listener = self._loop.create_task(self._listen())
        key = (fn, *args)
        held = self._memo.get(job_id)
        if self._listening and held is not None and key in held:
            hit: T = held[key]
            return hit
        if not self._listening:  # no memo, and no joining a read that a commit overtook
            return await self(fn, job_id, *args)
        version, now = self._version(job_id), time.monotonic()
        flight_key = (job_id, *key)
        flight = self._flights.get(flight_key)
        if (  # none; begun before this job changed; too old to wait on (stuck?); over
            flight is None
            or flight[0] != version
            or now - flight[1] > self.JOIN_S
            or flight[2].done()
        ):
            read = asyncio.ensure_future(self._read_once(fn, job_id, args, version))
            read.add_done_callback(_retrieved)  # all its callers may have gone
            flight = self._flights[flight_key] = (version, now, read)
        result: T = await asyncio.shield(flight[2])
        return result

    async def _read_once(
        self, fn: Callable[..., T], job_id: str, args: tuple[Any, ...], version: tuple[int, int]
    ) -> T:
        """One read that every caller missing the memo for the same job, function and
        arguments meanwhile waits for: when 100 pollers of a job miss at once (the memo is
        empty after a start, a notification or a reconnect), the database is read once,
        not 100 times through a pool of 20, the last of them waiting ~100 ms. A caller
        that arrives after a notification does not join a read begun before it."""
        flight = (job_id, fn, *args)
        current = False  # still the read callers join (a newer one replaces a stuck one)
        try:
            result = await self(fn, job_id, *args)
        finally:
            if self._flights.get(flight, (None, None, None))[2] is asyncio.current_task():
                del self._flights[flight]
                current = True
        if current and self._listening and version == self._version(job_id):  # unchanged
            self._keep(job_id, (fn, *args), result)
        return result

    def _keep(self, job_id: str, key: tuple[Any, ...], result: Any) -> None:
        """Memoise; at most ``CACHE_MAX`` reads in all and ``PER_JOB_MAX`` of one job (one
        per base URL its pollers use, which the client's Host header chooses)."""
        held = self._memo.setdefault(job_id, {})
        if key not in held:
            if self._entries >= self.CACHE_MAX:
                self._memo.clear()
                self._entries = 0
                held = self._memo.setdefault(job_id, {})
            elif len(held) >= self.PER_JOB_MAX:
                self._entries -= len(held)
                held.clear()
            self._entries += 1
        held[key] = result

    def forget(self, job_id: str) -> None:
        """Scheduled on the loop, which alone touches the memo: a request that arrives after
        the caller's response went out is served after it."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to forget
                self._loop.call_soon_threadsafe(self._forget_now, job_id)

    def _version(self, job_id: str) -> tuple[int, int]:
        return self._epoch, self._changes.get(job_id, 0)

    def _forget_now(self, job_id: str) -> None:
        if len(self._changes) >= self.CHANGES_MAX and job_id not in self._changes:
            self._changes.clear()  # bounded: every job's version moves on with the epoch
            self._epoch += 1
        self._changes[job_id] = self._changes.get(job_id, 0) + 1
        self._entries -= len(self._memo.pop(job_id, {}))

    def _drop_all(self) -> None:
        self._listening = False
        self._epoch += 1
        self._memo.clear()
        self._entries = 0

    async def _listen(self) -> None:
        """Keep a LISTEN connection; while it is up, each notification forgets its job."""
        import psycopg

        wait = self.RECONNECT_S[0]
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    application_name=self.LISTENER_NAME,
                    **_KEEPALIVES,
                ) as connection:
                    await connection.execute("LISTEN hwnas_job_changed")
                    self._drop_all()  # nothing heard before this point is trusted
                    self._listening, wait = True, self.RECONNECT_S[0]
                    while True:
                        async for notification in connection.notifies(timeout=self.CHECK_S):
                            self._forget_now(notification.payload)
                        # Quiet for a while: a connection that died without a word (a
                        # peer gone, a frozen server) would leave the memo on for good.
                        # (psycopg >= 3.2.4 keeps what arrives meanwhile for the next
                        # notifies().)
                        await asyncio.wait_for(connection.execute("SELECT 1"), self.CHECK_S)
            except Exception as exc:  # any failure: memo off, listen again; only cancel ends it
                log.warning("job-change listener lost (%s); memo off, retry in %.1f s", exc, wait)
            finally:
                self._drop_all()
            await asyncio.sleep(wait)
            wait = min(2 * wait, self.RECONNECT_S[1])

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._engine.dispose()


# libpq's TCP keepalives for the listener: a peer that is gone is noticed in ~30 s
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 15,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def _retrieved(read: asyncio.Future[Any]) -> None:
    """Take a finished read's exception, so that none is logged as never retrieved."""
    if not read.cancelled():
        read.exception()


_LOOP_READS: dict[str, Callable[[str], LoopReads]] = {
    cls.dialect: cls for cls in (_InlineSQLiteReads, _AsyncDriverReads)
}


def make_loop_reads(url: str) -> LoopReads:
    """The event-loop read path for the database at ``url`` (by its dialect)."""
    dialect = url.split(":", 1)[0].split("+", 1)[0]
    if dialect not in _LOOP_READS:
        raise ServiceUnavailable(f"no event-loop read path for database dialect {dialect!r}")
    return _LOOP_READS[dialect](url)


#: The advisory lock's key on PostgreSQL under which migrations run one at a time
#: (alembic/env.py): any fixed 64-bit number of hwnas's own.
MIGRATION_LOCK = 0x68776E61735F6D67  # "hwnas_mg"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


#: The key under which ``alembic/env.py`` leaves the revision it found, read under the
#: migration lock (``upgrade``'s answer).
MIGRATED_FROM = "hwnas_migrated_from"


def upgrade(url: str, *, wait_s: float | None = None) -> str | None:
    """``alembic upgrade head`` on ``url`` (a SQLite file's folder is made first, as
    ``make_engine`` does); the revision the database was at, as read under the migration
    lock (None: a fresh database). A database it cannot reach or migrate (no server, no
    driver, a revision this code does not know, a folder it cannot make, another process's
    migration still running after ``wait_s`` seconds: by default
    ``HWNAS_MIGRATION_WAIT_S``) is ``ServiceUnavailable``."""
    try:
        if url.startswith("sqlite"):
            ensure_sqlite_dir(url)
        config = alembic_config(url)
        config.attributes["migration_wait_s"] = wait_s
        command.upgrade(config, "head")
    except CommandError as exc:  # e.g. a revision it does not know: a newer version's
        engine = make_engine(url)
        try:
            current = current_revision(engine)
        except ServiceUnavailable:
            current = None
        finally:
            engine.dispose()
        if current is not None and current not in schema_revisions(url):
            raise ServiceUnavailable(_newer_schema(make_url(url), current, url)) from exc
        raise _database_problem("cannot migrate", url, exc) from exc
    except (SQLAlchemyError, ImportError, OSError) as exc:
        raise _database_problem("cannot migrate", url, exc) from exc
    found: str | None = config.attributes.get(MIGRATED_FROM)
    return found


def migrate_at_start(url: str, *, wait_s: float | None = None) -> None:
    """``upgrade`` as a server runs it when it starts (``HWNAS_AUTO_MIGRATE``: ``hwnas
    serve``, ``hwnas run``; a worker migrates nothing),
    saying in its log when it migrated: only alembic's own lines said so, and nothing that
    no backup was taken (upgrade audit 31)."""
    before = upgrade(url, wait_s=wait_s)
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    if before is not None and before != head:
        log.warning(
            "migrated the database %s from schema revision %s to %s at start "
            "(HWNAS_AUTO_MIGRATE); no backup was taken: an older version cannot serve it now "
            "(README, Upgrading)",
            hidden(url),
            before,
            head,
        )


def ready_database(url: str, *, migrate: bool, wait_s: float | None = None) -> None:
    """What a process that serves ``url`` checks first: migrated when ``migrate``
    (``migrate_at_start``), then at this code's head revision and writable
    (``check_migrated``); ``ServiceUnavailable`` otherwise."""
    if migrate:
        migrate_at_start(url, wait_s=wait_s)
    engine = make_engine(url)
    try:
        check_migrated(engine)
    finally:
        engine.dispose()


def _shown(url: URL) -> str:
    """A database URL as error messages show it: every password hidden (``core.redact``)."""
    return hidden(url.render_as_string(hide_password=False))


def _database_problem(action: str, url: str | URL, exc: BaseException) -> ServiceUnavailable:
    """One line: what failed, on which database (password hidden), and the first line of
    why (the driver's own message where there is one)."""
    try:
        where = _shown(make_url(url))
    except ArgumentError:
        where = "of HWNAS_DATABASE_URL (not a database URL)"
    return ServiceUnavailable(f"{action} the database {where}: {_first_line(exc)}")


def current_revision(engine: Engine) -> str | None:
    """The schema revision of ``engine``'s database (None: none, a new database)."""
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise _database_problem("cannot reach", engine.url, exc) from exc


def check_migrated(engine: Engine) -> str:
    """Refuse to run against a database whose schema is not at Alembic's head, or that
    this process cannot write to (``check_writable``); that head revision otherwise."""
    head = ScriptDirectory.from_config(alembic_config(str(engine.url))).get_current_head()
    current = current_revision(engine)
    if current is not None and current != head and current not in schema_revisions(str(engine.url)):
        raise ServiceUnavailable(_newer_schema(engine.url, current, str(engine.url)))
    if current != head:
        where = _shown(engine.url)
        raise ServiceUnavailable(
            f"database schema of {where} is at revision {current or '(none)'}, code needs "
            f"{head}: run `hwnas db-upgrade` (alembic upgrade head) first, or check "
            "HWNAS_DATABASE_URL"
        )
    assert head is not None  # the scripts have a head: the check above passed
    check_writable(engine)
    return head


def _newer_schema(url: URL, current: str, raw_url: str) -> str:
    """Why this version cannot serve (nor migrate) a database at revision ``current``, which
    its migrations do not know: `hwnas db-upgrade` was the advice, which failed in turn
    (upgrade audit 31)."""
    head = ScriptDirectory.from_config(alembic_config(raw_url)).get_current_head()
    return (
        f"database schema of {_shown(url)} is at revision {current}, newer than this "
        f"version's {head}: a newer hwnas migrated it, and this version can neither serve nor "
        "migrate it; run that newer version, or restore the backup taken before the upgrade "
        "(README, Upgrading)"
    )


def check_writable(engine: Engine) -> None:
    """Refuse a database this process can read but not write (a read-only SQLite file or
    folder, a PostgreSQL standby or a user without write rights): a server started on one
    answered every submission 503, a temporary error to its clients, with /healthz ok
    (ops audit 29). A write of no row to the jobs table, rolled back: the table the server
    writes (a role without rights on ``alembic_version``, the migrations' owner's, may
    serve: review 29)."""
    try:
        with engine.connect() as connection, connection.begin() as step:
            connection.execute(text("UPDATE jobs SET id = id WHERE 1 = 0"))
            step.rollback()
    except SQLAlchemyError as exc:
        raise _database_problem("cannot write to", engine.url, exc) from exc


def schema_revisions(url: str) -> frozenset[str]:
    """Every revision this code's migrations know (a database at another one was migrated
    by a newer version)."""
    script = ScriptDirectory.from_config(alembic_config(url))
    return frozenset(revision.revision for revision in script.walk_revisions())


def database_id(factory: sessionmaker[Session]) -> str | None:
    """The database's identity (``store.tables.DatabaseIdentity``, revision 0008; None if
    its row is missing); a ``StorageError`` where the database is away or its schema is
    older."""
    from .tables import DatabaseIdentity

    with transaction(factory) as session:
        return session.scalars(select(DatabaseIdentity.id)).first()


def renew_database_id(factory: sessionmaker[Session]) -> str:
    """Give the database a new random identity (a restored or cloned copy keeps its
    source's, so workers of the two would count as one database's); returns it."""
    from .tables import DatabaseIdentity

    new = uuid.uuid4().hex
    with transaction(factory) as session:
        session.execute(delete(DatabaseIdentity))
        session.add(DatabaseIdentity(id=new))
    return new


def schema_revision(connection: Connection) -> str | None:
    """The revision the connected database's schema is at; None where it has none (no
    ``alembic_version`` table, say a SQLite file replaced under a running server)."""
    try:
        revision: str | None = connection.execute(
            text("SELECT version_num FROM alembic_version")
        ).scalar()
    except DBAPIError as exc:  # the driver's own text: no such table, or another failure
        if "alembic_version" in str(exc.orig):
            return None
        raise
    return revision


__all__ = [
    "HwnasError",
    "LoopReads",
    "alembic_config",
    "check_migrated",
    "LOCKING_READ",
    "ensure_sqlite_dir",
    "schema_revision",
    "schema_revisions",
    "migrate_at_start",
    "ready_database",
    "make_engine",
    "make_loop_reads",
    "make_session_factory",
    "renew_database_id",
    "transaction",
    "upgrade",
]
