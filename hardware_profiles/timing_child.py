"""The timing child process of ``hardware_profiles.isolated``: ``main("module:function")``
answers pickled requests for ``function(*args)`` on its standard input with pickled answers
on its standard output."""

from __future__ import annotations

import importlib
import os
from multiprocessing.connection import Connection

from hardware_profiles.isolated import serve


def main(path: str, answers_fd: int) -> None:
    """Answers go to ``answers_fd`` (the standard output as it was at the start; the
    standard output now leads to the standard error, so a print cannot corrupt them)."""
    module, _, name = path.partition(":")
    measure = getattr(importlib.import_module(module), name)
    serve(measure, Connection(os.dup(0), writable=False), Connection(answers_fd, readable=False))
