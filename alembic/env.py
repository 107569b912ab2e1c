"""Alembic environment: the URL comes from the caller's config or from Settings.

Migrations on one database run one at a time: two processes started together on a fresh
database (two ``hwnas serve``, a server and ``hwnas db-upgrade``) both saw no schema and
both created it; the second failed with "table jobs already exists". PostgreSQL: a
transaction-scoped advisory lock taken before Alembic reads the current revision (its DDL
is transactional, so the second waits, then finds the schema at head). SQLite, whose DDL
Alembic runs outside a transaction: an exclusive lock on a file beside the database. A
process that finds the lock held says so in its log and waits at most
``HWNAS_MIGRATION_WAIT_S`` (``upgrade(wait_s=)``), then fails naming the lock: a migration
that hung held the others, servers included, without a word.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress

from sqlalchemy import create_engine, make_url, text

from alembic import context
from core.settings import get_settings
from store.db import MIGRATED_FROM, MIGRATION_LOCK, ensure_sqlite_dir, sqlite_database
from store.tables import Base

log = logging.getLogger("alembic.env")
config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url

#: How often a process waiting for another's migration tries the lock again.
POLL_S = 0.2


def _wait_s() -> float:
    """How long to wait for another process's migration: ``upgrade(wait_s=)``, else the
    settings' ``migration_wait_s``."""
    given = config.attributes.get("migration_wait_s")
    return float(given) if given is not None else get_settings().migration_wait_s


def _taken(try_lock: Callable[[], bool], what: str) -> None:
    """Take a migration lock with ``try_lock`` (True once taken), waiting for another
    process's migration at most ``_wait_s`` seconds (said in the log); ``TimeoutError``
    (the caller's "cannot migrate" line) after that."""
    if try_lock():
        return
    wait_s = _wait_s()
    log.warning("%s: another process is migrating it; waiting up to %g s", what, wait_s)
    started = time.monotonic()
    while not try_lock():
        if time.monotonic() - started >= wait_s:
            raise TimeoutError(
                f"another process held the migration lock of {what} for over {wait_s:g} s "
                "(HWNAS_MIGRATION_WAIT_S): a migration hung or is still running"
            )
        time.sleep(POLL_S)
    log.warning("%s: the other migration ended after %.1f s", what, time.monotonic() - started)


@contextmanager
def _sqlite_lock() -> Iterator[None]:
    """An exclusive lock on ``<database>.migrate-lock`` while migrating (none in memory).
    Made readable and writable by all where this process owns it, opened for writing where
    it may be (NFS grants an exclusive flock only then), else read-only (review 24b: a 0644
    file opened for appending locked other users out of migrating, and so out of starting
    a server). A file system that refuses the lock is warned of, and the migration runs
    unlocked, as it did before."""
    database = sqlite_database(url)
    if database is None:  # in memory
        yield
        return
    path = database.resolve()
    lock = path.with_name(path.name + ".migrate-lock")
    # Not through a link, and a mode changed only on a file of one name (security audit 31:
    # a link put there made the migration give any file of its user mode 0666)
    flags = os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        handle = os.open(lock, os.O_RDWR | os.O_CREAT | flags, 0o666)
    except PermissionError as refused:
        try:
            handle = os.open(lock, os.O_RDONLY | flags)
        except FileNotFoundError:  # a folder it may not write in: say that, not "no file"
            raise refused from None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise OSError(
            exc.errno,
            "the migration's lock file is a symbolic link, which hwnas does not follow: remove it",
            str(lock),
        ) from None
    try:
        found = os.fstat(handle)
        if found.st_nlink == 1 and stat.S_ISREG(found.st_mode):
            with suppress(PermissionError):  # not this process's file: its owner's mode stands
                os.fchmod(handle, 0o666)  # a umask of 077 would lock the others out
        try:
            _taken(lambda: _flocked(handle), f"{path} (lock file {lock})")
        except TimeoutError:
            raise
        except OSError as exc:
            log.warning("migrating %s without a lock: %s cannot be locked: %s", path, lock, exc)
        yield
    finally:
        os.close(handle)  # lets the lock go


def _flocked(handle: int) -> bool:
    """Whether an exclusive lock on ``handle`` was taken (False: another process holds it)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


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
                lock = text("SELECT pg_try_advisory_xact_lock(:key)")
                _taken(
                    lambda: bool(connection.execute(lock, {"key": MIGRATION_LOCK}).scalar()),
                    make_url(url).render_as_string(hide_password=True),
                )
            # read under the lock: another migration that held it has committed by now (two
            # db-upgrade runs both said they migrated from none: audit 30)
            context.config.attributes[MIGRATED_FROM] = context.get_context().get_current_revision()
            context.run_migrations()
    engine.dispose()


run_migrations()
