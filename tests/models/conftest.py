"""Fixtures shared by the model tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import get_settings


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """One configured data root (HWNAS_DATA_ROOTS) under the test's own directory."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("HWNAS_DATA_ROOTS", str(root))
    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()
