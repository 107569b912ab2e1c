"""The time hwnas writes and compares: this host's clock, set to the database's.

A lease is a time one process writes (a worker's heartbeat) and another compares with its
own clock (a reaper, the API's "waiting:" note, a cancel). On hosts whose clocks differed by
more than ``HWNAS_STALE_AFTER_S``, a healthy job was failed as "its worker kept dying" and a
cancel ended a live run at once (chaos drill 32). So each process measures how far its
clock is from the database's (PostgreSQL's ``clock_timestamp()``; a SQLite file is on this
host) in a ``store.db.transaction``, at most every ``FOLLOW_EVERY_S``, and adds the
difference to every time it reads where it is over ``TOLERANCE``, saying so in a warning.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

#: A difference this small is left alone (a measurement's own error is milliseconds).
TOLERANCE = timedelta(seconds=1)
#: How often a process measures the difference again (a clock set meanwhile is followed).
FOLLOW_EVERY_S = 60.0
#: How soon it measures again after an answer too slow to tell.
RETRY_S = 5.0

_lock = threading.Lock()
_offset = timedelta(0)
_followed_at: float | None = None  # time.monotonic() of the last measurement


def now() -> datetime:
    """The database's time as this process knows it (UTC)."""
    return _local_now() + _offset


def _local_now() -> datetime:
    return datetime.now(UTC)


def offset() -> timedelta:
    """What ``now`` adds to this host's clock."""
    return _offset


def follow(session: Session) -> None:
    """Measure this host's clock against the database's, in ``session``, if it is due. A
    difference within ``TOLERANCE`` of the one followed already changes nothing (a warning
    each minute for a clock hovering about a second off: review 32b)."""
    global _offset, _followed_at
    if session.get_bind().dialect.name != "postgresql":
        return
    with _lock:
        started = time.monotonic()
        if _followed_at is not None and started - _followed_at < FOLLOW_EVERY_S:
            return
        _followed_at = started
    # Checked out (and pinged) first: waiting for the pool counted as skew (review 32b).
    # The round trip is timed by a clock that does not step (a step during the query
    # skewed the measurement: review 32d).
    connection = session.connection()
    before, sent = _local_now(), time.monotonic()
    database = connection.execute(text("SELECT clock_timestamp()")).scalar_one()
    round_trip = timedelta(seconds=time.monotonic() - sent)
    if round_trip > TOLERANCE / 2:  # too slow an answer to tell: measured again in
        with _lock:  # RETRY_S (at every transaction, a database that answers slowly got a
            _followed_at = started - FOLLOW_EVERY_S + RETRY_S  # query more each: review 32c)
        return
    skew = database - (before + round_trip / 2)
    with _lock:
        if abs(skew - _offset) <= TOLERANCE:
            return
        _offset = skew if abs(skew) > TOLERANCE else timedelta(0)
    if _offset:
        log.warning(
            "this host's clock is %+.1f s off the database's: hwnas times leases and records "
            "by the database's clock (set this host's clock: NTP)",
            -_offset.total_seconds(),
        )
    else:
        log.info("this host's clock agrees with the database's again")


def forget() -> None:
    """Drop what was measured (tests; a process that changes database)."""
    global _offset, _followed_at
    with _lock:
        _offset, _followed_at = timedelta(0), None
