"""One error hierarchy for hwnas.

Every error a user can cause or see derives from :class:`HwnasError`. The HTTP layer maps
each class to a status code in exactly one place (``api/errors.py``); the libraries
(``search/``, ``models/``, ``hardware_profiles/``) raise these without knowing about HTTP.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: The longest text of a user's value that an error message repeats.
SHOWN_CHARS = 100


#: Control characters (C0 but tab and newline, DEL, C1) and lone surrogates (a file name's
#: bytes that are not UTF-8, as Python decodes them); with ``lines=False`` tab and newline too.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_UNPRINTABLE_IN_A_LINE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def printable(text: str, *, lines: bool = True) -> str:
    """``text`` with each control character and lone surrogate as its backslash escape
    (``\\x1b``; a name's byte that is not UTF-8 as that byte, ``\\xff``): a file's name
    holding them forged log lines, put terminal escapes in a job's message, and made a
    422's text unencodable, a 500 (security audit 31). ``lines``: keep newlines and tabs
    (a message's own); False for a name."""
    pattern = _UNPRINTABLE if lines else _UNPRINTABLE_IN_A_LINE
    return pattern.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (os.fsdecode's surrogateescape)
        code -= 0xDC00
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(value: object) -> str:
    """``repr(value)`` for an error message, cut to ``SHOWN_CHARS`` with its length said:
    a 900 KB name was echoed whole, twice (fuzz probe, session 22)."""
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[: SHOWN_CHARS - 3]}...{size}"


class HwnasError(Exception):
    """Root of every hwnas error."""


class InvalidInput(HwnasError, ValueError):
    """A request or argument is malformed; ``field`` names the offending input."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownName(InvalidInput):
    """A name (supernet, device, strategy, objective, format) is not registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], *, field: str | None = None):
        self.kind = kind
        self.name = name
        self.known = sorted(known)
        super().__init__(
            f"unknown {kind} {shown(name)}; known: {', '.join(self.known) or '(none)'}",
            field=field or kind,
        )


class NotFound(HwnasError, LookupError):
    """A resource (job, sub-network) does not exist."""


class Unauthenticated(HwnasError):
    """The request carries no valid API key (only when the operator configured keys)."""


class Conflict(HwnasError):
    """The request is valid but the resource's state forbids it (e.g. export before measured)."""


class LimitReached(HwnasError):
    """The caller already has as many jobs queued or running as it may
    (``HWNAS_MAX_ACTIVE_JOBS_PER_KEY``)."""


class StorageError(HwnasError):
    """The database failed; the transaction was rolled back. ``unreachable``: it could not
    be reached or was busy (a connection refused or cut, a lock not granted): the same
    request may pass later; otherwise it refused the request itself (a constraint, a value
    it cannot store), which asking again will not mend."""

    def __init__(self, message: str, *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.unreachable = unreachable


class ServiceUnavailable(HwnasError):
    """A dependency (database schema, broker) is not ready."""


class PayloadTooLarge(HwnasError):
    """A request body over the size the API reads."""


class CheckpointMismatch(InvalidInput):
    """A checkpoint's keys or shapes do not match the chosen supernet."""


class PluginError(HwnasError):
    """A user supernet plugin could not be loaded (import failed, wrong type, name taken)."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s text ("" when it has none): what a message quotes of an
    error whose later lines (a traceback, a driver's SQL) are not for the reader. A first
    line that ends in a colon announces the next, which is given with it (torch's
    "Error(s) in loading state_dict for Net:" says which key only on its second line); at
    most ``FIRST_LINE_MAX`` characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return ""
    said = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    # torch's "Missing key(s) in state_dict: ..." names every key: 7.6 KB for 300 layers
    return said if len(said) <= FIRST_LINE_MAX else f"{said[: FIRST_LINE_MAX - 3]}..."


#: The longest ``first_line`` gives (a message, the catalog and a 422 quote it).
FIRST_LINE_MAX = 400
