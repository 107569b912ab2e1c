"""Passwords never shown: URLs in logs, start-up lines and error messages."""

from __future__ import annotations

import pytest

from core.redact import hidden


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///./var/hwnas.db", "sqlite:///./var/hwnas.db"),
        ("postgresql+psycopg://hwnas:s3cret@db:5432/hwnas", "postgresql+psycopg://hwnas:***@db:5432/hwnas"),
        ("redis://:p@ss@redis:6379/0", "redis://:***@redis:6379/0"),  # an "@" in the password
        ("postgresql+psycopg://u@h/db?password=s3cret&sslmode=require",
         "postgresql+psycopg://u@h/db?password=***&sslmode=require"),
        ("sentinel://:a@h1:26379;sentinel://:b@h2:26379", "sentinel://:***@h1:26379;sentinel://:***@h2:26379"),
        ("postgresql+psycopg://u:pa;ss@h/db", "postgresql+psycopg://u:***@h/db"),  # a ";" in it
        ("postgresql://u:p/ss@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("postgresql://u:pw@h/db?application_name=a@b", "postgresql://u:***@h/db?application_name=a@b"),
        ("postgresql://u@h/db?sslpassword=k3y", "postgresql://u@h/db?sslpassword=***"),
        ("postgresql://h:5432/db?application_name=a@b", "postgresql://h:5432/db?application_name=a@b"),
    ],
)  # fmt: skip
def test_every_password_of_a_url_is_hidden(url: str, shown: str) -> None:
    """The start-up line, database errors and worker warnings show URLs this way (the review
    of session 22 found SQLAlchemy's rendering showed a query parameter's password)."""
    assert hidden(url) == shown
