"""The schema comes from Alembic, and services refuse an un-migrated database."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from alembic import command
from core.errors import ServiceUnavailable
from store.db import alembic_config, check_migrated, make_engine, upgrade

from .backends import database_url


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
