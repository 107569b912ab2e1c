"""Secrets kept out of what is shown: logs, start-up lines, error messages."""

from __future__ import annotations

import re

__all__ = ["hidden"]

#: A URL's password: from the user's colon to the last "@" (a password may hold an "@"),
#: in each of kombu's ";"-separated URLs; and one given as a query parameter.
_PASSWORD = re.compile(r"(://[^:/@;]*:)[^;]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pass)=)[^&;]*", re.IGNORECASE)


def hidden(url: str) -> str:
    """``url`` with its passwords as ``***``: the database's and the broker's URLs, wherever
    they are shown (SQLAlchemy's own rendering, ``hide_password=True``, shows a password
    given as ``?password=``, and the part after an unencoded "@" in one)."""
    return _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1***@", url))
