"""A consistent copy of the embedded mode's SQLite database, taken while servers run.

SQLite in WAL mode keeps recent commits in ``<file>-wal`` until a checkpoint folds them
into the file: a plain ``cp`` of the file while a server runs copied a database missing
them (ops audit 29: a copy taken minutes after a start held no job at all, and passed
SQLite's integrity check). SQLite's online backup copies what a reader sees, WAL included,
in one read transaction: in WAL mode a reader does not hold writers up, so servers go on
writing meanwhile (copied in steps, a write between two steps would start it over).
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url

from core.errors import InvalidInput
from store.db import sqlite_database


@dataclass(frozen=True)
class Backup:
    """What ``backup_sqlite`` wrote: the file, and what it holds (to see at once that a
    backup is not empty)."""

    path: Path
    jobs: int
    evaluations: int
    revision: str | None


def sqlite_file(url: str) -> Path:
    """The database file a ``sqlite:///`` URL names; ``InvalidInput`` for any other URL
    (PostgreSQL has its own tools: ``pg_dump``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        raise InvalidInput(
            f"HWNAS_DATABASE_URL is a {parsed.get_backend_name()} database: back it up with "
            "its own tools (PostgreSQL: pg_dump --format=custom, restored with pg_restore)",
            field="HWNAS_DATABASE_URL",
        )
    database = sqlite_database(url)
    if database is None:
        raise InvalidInput("HWNAS_DATABASE_URL names no database file", field="HWNAS_DATABASE_URL")
    return database.resolve()


def backup_sqlite(url: str, destination: Path) -> Backup:
    """Copy the SQLite database of ``url`` to ``destination`` (a file that does not exist
    yet, or a folder: the file is named ``hwnas-<UTC time>.db`` there), consistently while
    servers write to it. Written beside its name and moved there once whole and checked
    (``PRAGMA quick_check``): an interrupted backup leaves no file that looks like one."""
    source = sqlite_file(url)
    if not source.is_file():
        raise InvalidInput(f"no database file at {source}", field="HWNAS_DATABASE_URL")
    if destination.is_dir():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        destination = destination / f"hwnas-{stamp}.db"
    destination = destination.resolve()
    if destination.exists():
        raise InvalidInput(f"{destination} exists: name a new file", field="path")
    if destination == source:
        raise InvalidInput("the backup cannot be the database itself", field="path")
    partial = destination.with_name(f".{destination.name}.partial")
    try:
        # Read-only: the backup takes no write lock; a missing file is not created.
        reader = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True, timeout=30)
        writer = sqlite3.connect(partial)
        try:
            reader.backup(writer)
            # One file on its own: the copy keeps no WAL beside it.
            writer.execute("PRAGMA journal_mode=DELETE")
            held = _contents(writer)
        finally:
            writer.close()
            reader.close()
        os.replace(partial, destination)
    except sqlite3.Error as exc:
        raise InvalidInput(f"backup of {source} failed: {exc}", field="path") from None
    finally:
        partial.unlink(missing_ok=True)
    return Backup(destination, *held)


def _contents(connection: sqlite3.Connection) -> tuple[int, int, str | None]:
    """(jobs, evaluations, schema revision) of a copy, after SQLite's quick check."""
    (check,) = connection.execute("PRAGMA quick_check").fetchone()
    if check != "ok":
        raise sqlite3.DatabaseError(f"the copy failed SQLite's quick check: {check}")
    tables = {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
    if not {"jobs", "evaluations", "alembic_version"} <= tables:
        raise sqlite3.DatabaseError("the file holds no hwnas database (no jobs table)")
    (jobs,) = connection.execute("SELECT count(*) FROM jobs").fetchone()
    (evaluations,) = connection.execute("SELECT count(*) FROM evaluations").fetchone()
    revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    return jobs, evaluations, revision[0] if revision else None
