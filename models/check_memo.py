"""Answers of the checks of a user's data, kept while the data they read is unchanged.

A submission that names a data file or an image directory is checked before it is stored
(``models.user_data.check_path``, ``models.registry.check_validation_data``). Reading the
data again for every request would let a stream of requests naming the same large file or
directory keep the server's cores busy (beside the latency timings of the embedded worker),
so each answer, a pass or the error, is kept under what was checked and given again while
the data's signature (sizes, modification times, inodes) is the same.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from core.errors import InvalidInput

#: A check's answer: None (passed) or the error's (message, field).
_Outcome = tuple[str, str | None] | None


class CheckMemo:
    """The latest ``size`` answers of a check, least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._answers: OrderedDict[Hashable, tuple[Any, _Outcome]] = OrderedDict()
        self._lock = threading.Lock()

    def run(
        self,
        key: Hashable,
        signature: Any,
        check: Callable[[], object],
        guard: AbstractContextManager[Any] | None = None,
    ) -> None:
        """``check()``, unless it ran on ``key`` with this ``signature``: then its answer
        again (return, or its ``InvalidInput`` raised anew). A ``signature`` of None (data
        changed too recently to be told from a later change: ``models.user_data.recent``)
        keeps no answer, nor does a check that returns ``SKIPPED`` (it could not check) or
        a refusal caused by the system rather than the data (an ``OSError`` such as a
        permission denied, a ``MemoryError``: ``chmod`` leaves the signature as it was).
        ``guard`` is held while the check runs (not for an answer kept), e.g. a lock that
        keeps it off the cores a measurement is timed on; the answer is looked up again
        once it is held, so requests that queued behind the same check do not repeat it."""
        if self._answered(key, signature):
            return
        with guard if guard is not None else nullcontext():
            if self._answered(key, signature):
                return
            try:
                result = check()
            except InvalidInput as exc:
                if not _caused_by_the_system(exc):
                    self._keep(key, signature, (str(exc), exc.field))
                raise
        if result is not SKIPPED:
            self._keep(key, signature, None)

    def _answered(self, key: Hashable, signature: Any) -> bool:
        """True for a pass kept for ``signature``; a refusal kept is raised; else False."""
        if signature is None:
            return False
        with self._lock:
            kept = self._answers.get(key)
            if kept is None or kept[0] != signature:
                return False
            self._answers.move_to_end(key)
        _answer(kept[1])
        return True

    def _keep(self, key: Hashable, signature: Any, outcome: _Outcome) -> None:
        if signature is None:
            return
        with self._lock:
            self._answers[key] = (signature, outcome)
            self._answers.move_to_end(key)
            while len(self._answers) > self._size:
                self._answers.popitem(last=False)


#: What a check returns when it could not check (nothing to keep).
SKIPPED = object()


def _caused_by_the_system(exc: BaseException) -> bool:
    """Whether an ``OSError`` or ``MemoryError`` is among ``exc``'s causes."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, OSError | MemoryError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _answer(outcome: _Outcome) -> None:
    if outcome is not None:
        message, field = outcome
        raise InvalidInput(message, field=field)
