"""Secrets kept out of what is shown: logs, start-up lines, error messages."""

from __future__ import annotations

import hashlib
import re

__all__ = ["hidden", "key_label"]

#: Where kombu's ";"-separated list of URLs starts its next URL (a ";" inside a password
#: is not followed by a scheme).
_NEXT_URL = re.compile(r";(?=[A-Za-z][A-Za-z0-9+.-]*://)")
#: A URL's password: from the user's colon to the last "@" before the query (a password may
#: hold an "@", a ";" or a "/"); and one given as a query parameter (libpq's sslpassword too).
_PASSWORD = re.compile(r"(://[^:/@]*:)[^?]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:(?:ssl)?password|passwd|pass)=)[^&;]*", re.IGNORECASE)


def hidden(url: str) -> str:
    """``url`` with its passwords as ``***``: the database's and the broker's URLs, wherever
    they are shown (SQLAlchemy's own rendering, ``hide_password=True``, shows a password
    given as ``?password=``, and the part after an unencoded "@" in one)."""
    parts = _NEXT_URL.split(url)
    return ";".join(
        _QUERY_PASSWORD.sub(r"\1***", _PASSWORD.sub(r"\1***@", part, count=1)) for part in parts
    )


def key_label(key: bytes) -> str:
    """What the service calls an API key: the first 8 hex digits of its SHA-256 (an
    operator finds a key's with ``printf %s KEY | sha256sum``), never the key: the change
    log's name for it (security audit 31) and a job's ``submitted_by``."""
    return hashlib.sha256(key).hexdigest()[:8]
