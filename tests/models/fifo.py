"""A call that may wait for ever on a FIFO (a reader blocks until a writer comes): run on a
thread, let go if it waits, for the tests that a FIFO is refused rather than waited on."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest


def raised_without_waiting(fifo: Path, call: Callable[[], object]) -> BaseException | None:
    """What ``call`` raised (None: nothing); a call still waiting after 20 s is let go (the
    FIFO opened for writing) and the test fails."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    caller = threading.Thread(target=run, daemon=True)
    caller.start()
    caller.join(timeout=20)
    if caller.is_alive():  # the code before the fix: let it go before failing
        with open(fifo, "wb"):
            pass
        caller.join(timeout=20)
        pytest.fail(f"waited on the FIFO {fifo.name}")
    [raised] = outcome
    return raised
