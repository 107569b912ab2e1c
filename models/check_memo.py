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
        keeps no answer. ``guard`` is held while the check runs (not for an answer kept),
        e.g. a lock that keeps it off the cores a measurement is timed on."""
        with self._lock:
            kept = self._answers.get(key)
            if signature is not None and kept is not None and kept[0] == signature:
                self._answers.move_to_end(key)
        if signature is not None and kept is not None and kept[0] == signature:
            _answer(kept[1])
            return
        with guard if guard is not None else nullcontext():
            try:
                check()
            except InvalidInput as exc:
                self._keep(key, signature, (str(exc), exc.field))
                raise
        self._keep(key, signature, None)

    def clear(self) -> None:
        with self._lock:
            self._answers.clear()

    def _keep(self, key: Hashable, signature: Any, outcome: _Outcome) -> None:
        if signature is None:
            return
        with self._lock:
            self._answers[key] = (signature, outcome)
            self._answers.move_to_end(key)
            while len(self._answers) > self._size:
                self._answers.popitem(last=False)


def _answer(outcome: _Outcome) -> None:
    if outcome is not None:
        message, field = outcome
        raise InvalidInput(message, field=field)
