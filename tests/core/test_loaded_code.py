"""core.loaded_code: a plugin's modules as this process loaded them."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from core import loaded_code


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    (tmp_path / "lc_plugin.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(loaded_code, "_AS_LOADED", {})
    yield importlib.import_module("lc_plugin")
    sys.modules.pop("lc_plugin", None)


def test_a_module_is_remembered_as_first_read_and_compared_by_its_file(module: ModuleType) -> None:
    loaded_code.remember([module, sys])  # sys: no source file, nothing to remember
    first = loaded_code.as_loaded()
    assert list(first) == ["lc_plugin"]
    Path(module.__file__ or "").write_text("VALUE = 2\n")  # edited after: this process runs
    loaded_code.remember([module])  # the code read first, which it keeps
    assert loaded_code.as_loaded() == first and loaded_code.changed(first) == []
    other = {"lc_plugin": "0" * 24, "not_loaded_here": "1" * 24}
    assert loaded_code.changed(other) == [str(module.__file__)]  # the one loaded here only


def test_a_registration_replaces_what_was_remembered(module: ModuleType) -> None:
    """A plugin reloaded and registered again was refused by the child processes under
    the digest of its first load (review 30)."""
    path = Path(module.__file__ or "")
    loaded_code.remember([module])
    first = loaded_code.as_loaded()["lc_plugin"]
    path.write_text("VALUE = 3\n")  # reloaded: registered again
    loaded_code.remember_files({"lc_plugin": path})
    assert loaded_code.as_loaded()["lc_plugin"] != first
    assert loaded_code.changed({"lc_plugin": loaded_code.as_loaded()["lc_plugin"]}) == []
