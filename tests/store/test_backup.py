"""``store.backup`` and ``hwnas db-backup``: a consistent copy of the SQLite database."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from api.cli import main
from core.errors import InvalidInput
from core.settings import get_settings
from store import jobs as q
from store.backup import backup_sqlite
from store.db import (
    check_migrated,
    make_engine,
    make_session_factory,
    sqlite_database,
    transaction,
    upgrade,
)

from .backends import migrated_database

SPEC: dict[str, Any] = {
    "supernet": "fmnist-ofa-cnn",
    "device": "cpu-1t",
    "strategy": "random",
    "seed": 1,
    "budget": {"evaluations": 3},
    "objectives": {"accuracy": "max", "latency_ms": "min"},
    "constraints": {},
}


def _jobs(path: Path) -> int:
    connection = sqlite3.connect(path)
    try:
        (count,) = connection.execute("SELECT count(*) FROM jobs").fetchone()
    finally:
        connection.close()
    return int(count)


def test_a_backup_taken_while_a_server_writes_holds_what_sits_in_the_wal(tmp_path: Path) -> None:
    """A ``cp`` of the file missed every commit still in ``-wal`` (ops audit 29: a copy
    with no job at all, which passed SQLite's integrity check)."""
    with migrated_database("sqlite", tmp_path) as (url, engine, factory):
        engine.dispose()  # the migration's commits folded into the file
        with transaction(factory) as session:  # a server's: its connection stays open
            q.create_jobs(session, [(dict(SPEC, seed=i), None) for i in range(5)])
        database = Path(url.split("///", 1)[1])
        shutil.copy(database, tmp_path / "copied.db")
        assert _jobs(tmp_path / "copied.db") == 0  # why a cp is no backup
        (tmp_path / "backups").mkdir()
        made = backup_sqlite(url, tmp_path / "backups")
        with transaction(factory) as session:  # the server goes on writing
            q.create_jobs(session, [(SPEC, None)])
    assert made.path.parent == tmp_path / "backups" and made.path.name.startswith("hwnas-")
    assert (made.jobs, made.evaluations) == (5, 0) and _jobs(made.path) == 5
    assert list((tmp_path / "backups").iterdir()) == [made.path]  # no part file, no WAL
    copy = make_engine(f"sqlite:///{made.path}")
    try:
        assert check_migrated(copy) == made.revision  # a database hwnas runs on as it is
        with transaction(make_session_factory(copy)) as session:
            assert q.list_jobs(session, offset=0, limit=10)[1] == 5
    finally:
        copy.dispose()


def test_a_backup_is_refused_where_it_would_not_be_one(tmp_path: Path) -> None:
    with migrated_database("sqlite", tmp_path) as (url, _engine, _factory):
        database = Path(url.split("///", 1)[1])
        (tmp_path / "taken").write_text("x")
        for path, message in [
            (tmp_path / "taken", "exists: name a new file"),
            (database, "exists: name a new file"),
            (tmp_path / "no-folder" / "b.db", "backup of .* failed"),
        ]:
            with pytest.raises(InvalidInput, match=message):
                backup_sqlite(url, path)
        assert not (tmp_path / "no-folder").exists()
    with pytest.raises(InvalidInput, match="no database file at"):
        backup_sqlite(f"sqlite:///{tmp_path / 'none.db'}", tmp_path / "b.db")
    assert not (tmp_path / "none.db").exists()  # not made by looking
    with pytest.raises(InvalidInput, match="pg_dump"):
        backup_sqlite("postgresql+psycopg://u@h/db", tmp_path / "b.db")


def test_hwnas_db_backup_prints_the_file_and_what_it_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with migrated_database("sqlite", tmp_path) as (url, _engine, factory):
        with transaction(factory) as session:
            q.create_jobs(session, [(SPEC, None)])
        monkeypatch.setenv("HWNAS_DATABASE_URL", url)
        get_settings.cache_clear()
        try:
            assert main(["db-backup", str(tmp_path / "b.db")]) == 0
            printed = capsys.readouterr()
            assert printed.out == f"{(tmp_path / 'b.db').resolve()}\n"
            assert printed.err.startswith("backed up 1 jobs, 0 evaluations (schema revision ")
            assert main(["db-backup", str(tmp_path / "b.db")]) == 2  # not over a backup
            assert "exists: name a new file" in capsys.readouterr().err
            assert main(["db-backup", f"{tmp_path / 'new' / 'folder'}/"]) == 0  # made
            [made] = (tmp_path / "new" / "folder").iterdir()
            assert capsys.readouterr().out == f"{made}\n" and made.name.startswith("hwnas-")
        finally:
            get_settings.cache_clear()


def test_sqlite_s_uri_form_names_its_file(tmp_path: Path) -> None:
    """``sqlite:///file:x.db?uri=true`` was taken for a file named ``file:x.db``: a backup
    of it failed, the free-space check looked at the wrong folder (review 29b)."""
    assert sqlite_database("sqlite:///file:var/x.db?mode=rwc&uri=true") == Path("var/x.db")
    assert sqlite_database("sqlite:///file:///abs/x%20y.db?uri=true") == Path("/abs/x y.db")
    assert sqlite_database("sqlite:///file:m?mode=memory&uri=true") is None
    assert sqlite_database("sqlite:///file::memory:?cache=shared&uri=true") is None
    assert sqlite_database("sqlite:///file:x.db") == Path("file:x.db")  # no uri: a name
    database = tmp_path / "uri.db"
    url = f"sqlite:///file:{database}?mode=rwc&uri=true"
    upgrade(url)
    engine = make_engine(url)
    try:
        with transaction(make_session_factory(engine)) as session:
            q.create_jobs(session, [(SPEC, None)])
    finally:
        engine.dispose()
    assert _jobs(backup_sqlite(url, tmp_path / "copy.db").path) == 1
