"""The Celery task outside a worker: a message naming a job its database lacks is dropped
with a log line that says which database was looked in."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import get_settings
from store.db import database_id, upgrade
from workers import celery_app


@pytest.fixture
def worker_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade(url)
    monkeypatch.setenv("HWNAS_DATABASE_URL", url)
    get_settings.cache_clear()
    celery_app._session_factory.cache_clear()
    yield url
    get_settings.cache_clear()
    celery_app._session_factory.cache_clear()


def test_a_job_from_another_database_is_dropped_saying_where_it_looked(
    worker_settings: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Or deleted since it was queued (a cancelled job deleted before a worker took its
    message): an ERROR that blamed the configuration alone (soak probe, session 21)."""
    with caplog.at_level(logging.WARNING, logger="workers.celery_app"):
        assert celery_app.run_job_task("0123456789abcdef") is None
    assert f"job 0123456789abcdef is not in {worker_settings}" in caplog.text
    assert "deleted since it was queued, or this worker's HWNAS_DATABASE_URL" in caplog.text
    assert caplog.records[-1].levelno == logging.WARNING


@pytest.mark.parametrize("sent_for", ["this", "another"])
def test_the_message_tells_a_deleted_job_from_another_databases(
    worker_settings: str, caplog: pytest.LogCaptureFixture, sent_for: str
) -> None:
    """A message says which database it was published for (MLOps audit L7: a job deleted
    while queued was logged as a possible misconfiguration)."""
    ours = database_id(celery_app._session_factory())
    assert ours is not None
    header = {celery_app.DATABASE_HEADER: ours if sent_for == "this" else "f" * 32}
    task = celery_app.celery_app.tasks[celery_app.TASK_RUN_JOB]
    with caplog.at_level(logging.INFO, logger="workers.celery_app"):
        task.apply(args=["0123456789abcdef"], headers=header)
    [record] = [r for r in caplog.records if "0123456789abcdef" in r.getMessage()]
    if sent_for == "this":
        assert record.levelno == logging.INFO
        assert record.getMessage() == (
            "job 0123456789abcdef was deleted since it was queued (message dropped)"
        )
    else:
        assert record.levelno == logging.WARNING
        assert f"queued on another database (id {'f' * 32})" in record.getMessage()
        assert f"{worker_settings} (id {ours})" in record.getMessage()
