"""The schema comes from Alembic, and services refuse an un-migrated database."""

from __future__ import annotations

import fcntl
import json
import logging
import multiprocessing
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, make_url, text

from alembic import command
from core.errors import ServiceUnavailable
from store import jobs
from store.db import (
    MIGRATION_LOCK,
    alembic_config,
    check_migrated,
    database_id,
    make_engine,
    make_session_factory,
    migrate_at_start,
    renew_database_id,
    transaction,
    upgrade,
)
from store.tables import Base, Evaluation

from .backends import database_url, migrated_database


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrade_creates_the_schema_and_downgrade_removes_it(backend: str, tmp_path: Path) -> None:
    with database_url(backend, tmp_path) as url:
        engine = make_engine(url)
        with pytest.raises(ServiceUnavailable, match="hwnas db-upgrade"):
            check_migrated(engine)
        upgrade(url)
        check_migrated(engine)
        tables = set(inspect(engine).get_table_names())
        assert {"jobs", "evaluations", "alembic_version"} <= tables
        uniques = {u["name"] for u in inspect(engine).get_unique_constraints("evaluations")}
        assert "uq_evaluations_job_subnet" in uniques
        command.downgrade(alembic_config(url), "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_migrated_schema_is_the_one_the_tables_declare(backend: str, tmp_path: Path) -> None:
    """Alembic's own comparison of the migrated database with ``store.tables``: a column,
    index or foreign key added to one and not the other shows here."""
    with database_url(backend, tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        engine.dispose()
    assert differences == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_downgrading_below_calibration_jobs_removes_them_and_keeps_searches(
    backend: str, tmp_path: Path
) -> None:
    with migrated_database(backend, tmp_path) as (url, engine, factory):
        search = {
            "supernet": "nb201-cifar10",
            "device": "nb201-pixel3",
            "strategy": "random",
            "seed": 0,
            "budget": {"evaluations": 5},
            "objectives": {"accuracy": "max"},
        }
        calibration = {**search, "kind": "calibration", "strategy": "uniform", "objectives": {}}
        with transaction(factory) as session:
            kept, gone = jobs.create_jobs(session, [(search, None), (calibration, None)])
        for job_id in (kept.id, gone.id):
            with engine.begin() as connection:
                connection.execute(
                    Evaluation.__table__.insert(),  # type: ignore[attr-defined]
                    {"job_id": job_id, "seq": 0, "subnet_id": "a", "arch": {}, "metrics": {},
                     "details": {}, "feasible": True, "on_front": False, "seconds": 0.0},
                )  # fmt: skip
        command.downgrade(alembic_config(url), "0004")
        with engine.connect() as connection:
            ids = [row[0] for row in connection.execute(text("SELECT id FROM jobs"))]
            owners = [row[0] for row in connection.execute(text("SELECT job_id FROM evaluations"))]
        assert ids == [kept.id] and owners == [kept.id]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_upgrading_to_the_reused_flag_marks_the_copies_stored_before(
    backend: str, tmp_path: Path
) -> None:
    """Revision 0006's flag is set on the warm-start copies already stored: those whose
    details have the key ``reused_from``, however odd the rest of their text (a lone
    surrogate escape, which PostgreSQL's json operators refuse), and no others."""
    with migrated_database(backend, tmp_path) as (url, engine, factory):
        spec = {"supernet": "nb201-cifar10", "device": "nb201-pixel3", "strategy": "random",
                "seed": 0, "budget": {"evaluations": 5}}  # fmt: skip
        with transaction(factory) as session:
            [job] = jobs.create_jobs(session, [(spec, None)])
        command.downgrade(alembic_config(url), "0005")
        details = {
            "copy": {"reused_from": "j1", "file": "w\udcff.npz"},
            "original": {"note": "reused_from: a value, not the key", "file": "w\udcff.npz"},
            "plain": {},
        }
        with engine.begin() as connection:
            for seq, (subnet, detail) in enumerate(details.items()):
                connection.execute(
                    text(
                        "INSERT INTO evaluations (job_id, seq, subnet_id, arch, metrics, "
                        "details, feasible, on_front, seconds, created_at) VALUES (:job, :seq, "
                        ":subnet, '{}', '{}', :details, true, false, 0, CURRENT_TIMESTAMP)"
                    ),
                    {
                        "job": job.id,
                        "seq": seq,
                        "subnet": subnet,
                        "details": json.dumps(detail),
                    },  # fmt: skip
                )
        upgrade(url)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT subnet_id, reused FROM evaluations"))
            flags = {subnet: bool(reused) for subnet, reused in rows}
        assert flags == {"copy": True, "original": False, "plain": False}
        command.downgrade(alembic_config(url), "0005")  # and back: the column goes
        columns = {c["name"] for c in inspect(engine).get_columns("evaluations")}
        assert "reused" not in columns and "details" in columns


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_revision_0011_keeps_keyed_jobs_and_scopes_their_keys_by_submitter(
    backend: str, tmp_path: Path
) -> None:
    """A job keyed before 0011 is found again without API keys (submitted_by ""); after it
    two API keys may hold the same Idempotency-Key; back at 0010 the key is unique again."""
    with migrated_database(backend, tmp_path) as (url, engine, factory):
        spec = {"supernet": "nb201-cifar10", "device": "nb201-pixel3", "strategy": "random",
                "seed": 0, "budget": {"evaluations": 5}}  # fmt: skip
        command.downgrade(alembic_config(url), "0010")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO jobs (id, kind, supernet, device, strategy, seed, budget, "
                    "spec, status, evaluations_done, evaluations_reused, front_size, "
                    "cancel_requested, attempts, created_at, eval_seconds, run_seconds, "
                    "idempotency_key) VALUES ('old', 'search', 'nb201-cifar10', "
                    "'nb201-pixel3', 'random', 0, 5, :spec, 'queued', 0, 0, 0, false, 0, "
                    "CURRENT_TIMESTAMP, 0, 0, 'run-1')"
                ),
                {"spec": json.dumps({**spec, jobs.REQUEST_DIGEST: "d"})},
            )
        upgrade(url)
        with transaction(factory) as session:
            found, created = jobs.create_job_once(session, spec, "run-1", "d")
            assert (found.id, created, found.submitted_by) == ("old", False, "")
            theirs, created = jobs.create_job_once(session, spec, "run-1", "d", submitted_by="b")
            assert created and theirs.id != "old" and theirs.submitted_by == "b"
        # two jobs of one key cannot go back: refused, naming both and how to free one
        both = f"(?s)'run-1': job old .*'run-1': job {theirs.id}"
        with pytest.raises(RuntimeError, match=both) as caught:
            command.downgrade(alembic_config(url), "0010")
        assert "UPDATE jobs SET idempotency_key = NULL WHERE id" in str(caught.value)
        with engine.begin() as connection:  # as it says: the job stays, its key freed
            connection.execute(
                text("UPDATE jobs SET idempotency_key = NULL WHERE id = :id"), {"id": theirs.id}
            )
        command.downgrade(alembic_config(url), "0010")
        columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
        assert "submitted_by" not in columns and "idempotency_key" in columns
        unique = [i for i in inspect(engine).get_indexes("jobs") if i["unique"]]
        assert [i["column_names"] for i in unique] == [["idempotency_key"]]


def test_each_database_gets_an_identity_of_its_own(tmp_path: Path) -> None:
    """Workers announce it with their devices; an API counts only its own database's."""
    ids = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / name}.db"
        upgrade(url)
        upgrade(url)  # again: nothing changes
        factory = make_session_factory(make_engine(url))
        ids.append(database_id(factory))
        assert database_id(factory) == ids[-1]
    assert all(i is not None and len(i) == 32 for i in ids) and ids[0] != ids[1]


@pytest.mark.parametrize(
    "password_part", ["nobody:s3cret@127.0.0.1:1/db", "nobody@127.0.0.1:1/db?password=s3cret"]
)
def test_a_database_error_hides_the_password(password_part: str) -> None:
    """SQLAlchemy's ``hide_password`` rendering kept a password given as ``?password=``;
    every message naming the database goes through ``core.redact.hidden`` now."""
    url = f"postgresql+psycopg://{password_part}"
    engine = make_engine(url)
    try:
        for fails in (lambda: check_migrated(engine), lambda: upgrade(url)):
            with pytest.raises(ServiceUnavailable, match=r"127\.0\.0\.1:1/db") as caught:
                fails()
            assert "s3cret" not in str(caught.value) and "***" in str(caught.value)
    finally:
        engine.dispose()


def test_plain_alembic_migrates_a_fresh_sqlite_path_from_any_folder(tmp_path: Path) -> None:
    """`alembic upgrade head` on a fresh checkout failed: nothing made ./var (`hwnas
    db-upgrade` did); and the ini's script location only held from the repo root."""
    ini = Path(__file__).resolve().parents[2] / "alembic.ini"
    url = f"sqlite:///{tmp_path / 'var' / 'hwnas.db'}"
    env = {**os.environ, "HWNAS_DATABASE_URL": url}
    alembic = Path(sys.executable).parent / "alembic"
    done = subprocess.run(
        [str(alembic), "-c", str(ini), "upgrade", "head"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    engine = make_engine(url)
    try:
        check_migrated(engine)
    finally:
        engine.dispose()


def test_a_copy_of_a_database_can_be_given_its_own_identity(tmp_path: Path) -> None:
    """A restored or cloned database keeps its source's identity (review of session 22):
    `hwnas db-upgrade --new-identity` gives it another, and only that."""
    url = f"sqlite:///{tmp_path / 'copy.db'}"
    upgrade(url)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    try:
        spec = {"supernet": "nb201-cifar10", "device": "nb201-pixel3", "strategy": "random",
                "seed": 0, "budget": {"evaluations": 5}}  # fmt: skip
        with transaction(factory) as session:
            (job,) = jobs.create_jobs(session, [(spec, None)])
        before = database_id(factory)
        renewed = renew_database_id(factory)
        assert before is not None and renewed != before and database_id(factory) == renewed
        with transaction(factory) as session:
            assert jobs.get_job(session, job.id).spec == spec
    finally:
        engine.dispose()


def _upgrade_at_once(url: str, barrier: Any, outcomes: Any) -> None:
    barrier.wait(30)
    try:
        upgrade(url)
        outcomes.put("ok")
    except Exception as exc:  # the test reads what failed
        outcomes.put(repr(exc))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_migrations_started_together_run_one_at_a_time(backend: str, tmp_path: Path) -> None:
    """Two servers started together on a fresh database both created its schema; the
    second failed with "table jobs already exists" (session 24)."""
    with database_url(backend, tmp_path) as url:
        context = multiprocessing.get_context("fork")
        barrier, outcomes = context.Barrier(4), context.Queue()
        processes = [
            context.Process(target=_upgrade_at_once, args=(url, barrier, outcomes))
            for _ in range(4)
        ]
        for process in processes:
            process.start()
        try:
            said = [outcomes.get(timeout=60) for _ in processes]
        finally:
            for process in processes:
                process.join(30)
        assert said == ["ok"] * 4
        engine = make_engine(url)
        check_migrated(engine)
        engine.dispose()


class _OnLogLine(logging.Handler):
    """Calls ``then`` once a log line holding ``text`` is written."""

    def __init__(self, text: str, then: Callable[[], None]) -> None:
        super().__init__()
        self.text, self.then, self.seen = text, then, False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.seen and self.text in record.getMessage():
            self.seen = True
            self.then()


@contextmanager
def _migration_lock_held(url: str) -> Iterator[Callable[[], None]]:
    """Another process's migration of ``url`` in progress: its lock held (a flock on the
    lock file from another open file, PostgreSQL's advisory lock on another connection)
    until the block ends or the function it gives is called."""
    if url.startswith("sqlite"):
        path = Path(str(make_url(url).database)).resolve()
        handle = os.open(path.with_name(path.name + ".migrate-lock"), os.O_RDWR | os.O_CREAT)
        fcntl.flock(handle, fcntl.LOCK_EX)
        release: Callable[[], None] = lambda: fcntl.flock(handle, fcntl.LOCK_UN)  # noqa: E731
        try:
            yield release
        finally:
            os.close(handle)
        return
    engine = make_engine(url)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()
        unlock = text("SELECT pg_advisory_unlock(:key)")
        released = threading.Event()

        def release_pg() -> None:
            if not released.is_set():
                released.set()
                connection.execute(unlock, {"key": MIGRATION_LOCK})
                connection.commit()

        try:
            yield release_pg
        finally:
            release_pg()
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_migration_waits_for_another_at_most_its_wait_and_says_so(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A hung migration held every other process's migration, and so its start, without a
    word: one that finds the lock held says so in its log and fails after its wait
    (HWNAS_MIGRATION_WAIT_S), naming the lock; one whose wait outlasts the other's
    migration goes on after it."""
    caplog.set_level(logging.WARNING, logger="alembic.env")
    with database_url(backend, tmp_path) as url:
        with _migration_lock_held(url):
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable) as failed:
                upgrade(url, wait_s=0.5)
            assert 0.5 <= time.monotonic() - started < 10
        said = str(failed.value)
        assert said.startswith("cannot migrate the database")
        assert "another process held the migration lock of" in said
        assert "for over 0.5 s (HWNAS_MIGRATION_WAIT_S): a migration hung" in said
        if backend == "sqlite":
            assert ".migrate-lock" in said
        assert "another process is migrating it; waiting up to 0.5 s" in caplog.text

        caplog.clear()
        with _migration_lock_held(url) as release:
            ending = _OnLogLine("waiting up to", release)  # the other migration ends then
            logging.getLogger("alembic.env").addHandler(ending)
            try:
                upgrade(url, wait_s=60)
            finally:
                logging.getLogger("alembic.env").removeHandler(ending)
        assert ending.seen and "the other migration ended after" in caplog.text
        engine = make_engine(url)
        check_migrated(engine)
        engine.dispose()


def test_the_sqlite_lock_file_is_not_followed_through_a_link_nor_another_name_chmodded(
    tmp_path: Path,
) -> None:
    """Security audit 31: a link named as the lock file made each migration give the file it
    points to mode 0666; a second name of a file (a hard link) must keep its mode too."""
    target = tmp_path / "secret.txt"
    target.write_text("mine")
    target.chmod(0o600)
    lock = tmp_path / "x.db.migrate-lock"
    lock.symlink_to(target)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(Exception, match="lock file is a symbolic link, which hwnas does not"):
        upgrade(url)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    lock.unlink()
    os.link(target, lock)
    upgrade(url)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    lock.unlink()
    upgrade(url)  # a lock file of its own: readable and writable by all, as before
    assert stat.S_IMODE(lock.stat().st_mode) == 0o666


def test_a_database_a_newer_version_migrated_is_refused_saying_so(tmp_path: Path) -> None:
    """Upgrade audit 31: the advice was `hwnas db-upgrade`, which then failed with alembic's
    "Can't locate revision"; neither said that a newer version had migrated it."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0999'"))
    newer = "is at revision 0999, newer than this version's"
    with pytest.raises(ServiceUnavailable, match=newer) as refused:
        check_migrated(engine)
    assert "restore the backup taken before the upgrade" in str(refused.value)
    assert "db-upgrade" not in str(refused.value)
    with pytest.raises(ServiceUnavailable, match=newer):
        upgrade(url)
    engine.dispose()


def test_a_migration_at_start_says_so_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Upgrade audit 31: a server started on an older database (HWNAS_AUTO_MIGRATE) migrated
    it with alembic's lines alone; nothing said that no backup was taken."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    command.upgrade(alembic_config(url), "0008")
    with caplog.at_level(logging.WARNING, logger="store.db"):
        migrate_at_start(url)
        migrate_at_start(url)  # at head: nothing said
    [said] = [r.getMessage() for r in caplog.records if r.name == "store.db"]
    assert said.startswith(f"migrated the database {url} from schema revision 0008 to 0012")
    assert "no backup was taken" in said
