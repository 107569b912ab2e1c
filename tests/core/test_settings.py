"""core.settings: the environment's HWNAS_* variables."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.errors import InvalidInput
from core.settings import Settings, get_settings, unknown_variables


def test_a_misspelt_variable_is_named_with_the_setting_it_resembles() -> None:
    """HWNAS_BROKER_ULR silently gave the embedded mode (operator probe, session 22)."""
    warnings = unknown_variables(
        {"HWNAS_BROKER_ULR": "redis://x", "HWNAS_URL": "u", "HWNAS_API_KEY": "k",
         "HWNAS_BROKER_URL": "", "HWNAS_WHATEVER_ELSE": "1", "PATH": "/bin",
         "HWNAS_CONTRACT_VALIDATION_DATA": "val.npz"}  # docs/plugins.md's (docs audit 32)
    )  # fmt: skip
    assert warnings == [
        "HWNAS_BROKER_ULR is not an hwnas setting: ignored; did you mean HWNAS_BROKER_URL?",
        "HWNAS_WHATEVER_ELSE is not an hwnas setting: ignored",
    ]


def test_reading_the_settings_warns_of_unknown_variables(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("HWNAS_ACESS_LOG", "false")
    get_settings.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="core.settings"):
            assert get_settings().access_log is True
    finally:
        get_settings.cache_clear()
    assert "HWNAS_ACESS_LOG is not an hwnas setting: ignored; did you mean HWNAS_ACCESS_LOG?" in (
        caplog.text
    )


def test_the_public_url_is_an_http_base_kept_without_its_final_slash() -> None:
    given = Settings(public_url="https://nas.example.com/hwnas/")
    assert given.public_url == "https://nas.example.com/hwnas"
    assert Settings().public_url == ""  # the request's own
    wrong_ones = ("nas.example.com", "ftp://nas.example.com", "https://x/?a=1", "https://x/#f",
                  "https://x/?", "https://u:p@x", "https://x/a b", "https://x/\r\nSet: y",
                  "https://", "https://:80")  # fmt: skip
    for wrong in wrong_ones:
        with pytest.raises(ValidationError, match="public_url"):
            Settings(public_url=wrong)


def test_strict_settings_make_an_unknown_variable_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A misspelt variable only warned, in a log an operator may not read (ops audit 29)."""
    monkeypatch.setenv("HWNAS_STRICT_SETTINGS", "true")
    monkeypatch.setenv("HWNAS_BROKER_ULR", "redis://127.0.0.1:6379/0")
    get_settings.cache_clear()
    try:
        with pytest.raises(InvalidInput) as refused:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert str(refused.value) == (
        "HWNAS_BROKER_ULR is not an hwnas setting; did you mean HWNAS_BROKER_URL? "
        "(HWNAS_STRICT_SETTINGS is true: correct or unset it)"
    )
    assert refused.value.field == "HWNAS_BROKER_ULR"


def test_every_setting_is_in_the_readme_s_table() -> None:
    """The README's configuration table is where an operator looks a variable up."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = {line.split("|")[1].strip() for line in readme.splitlines() if line.startswith("| `")}
    variables = [f"HWNAS_{name.upper()}" for name in Settings.model_fields]
    assert [v for v in variables if f"`{v}`" not in rows] == []
