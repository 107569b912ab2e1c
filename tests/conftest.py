"""Fixtures shared across the test tree: an isolated embedded service per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings


def embedded_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Embedded mode on a private SQLite file and data directory."""
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path / 'hwnas.db'}",
        "data_dir": tmp_path / "data",
        "broker_url": "",
        "embedded_devices": "cpu-1t",
        "api_keys": "",  # whatever the shell says: tests that want keys pass them
        "admin_api_keys": "",
        "job_visibility": "all",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return embedded_settings(tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The real app with its real in-process worker, started and stopped per test."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client
