"""The timing child process of ``hardware_profiles.isolated``: ``main("module:function")``
answers pickled requests for ``function(*args)`` on its standard input with pickled answers
on its standard output."""

from __future__ import annotations

import importlib
import os
from multiprocessing.connection import Connection

from hardware_profiles.isolated import serve


def main(path: str) -> None:
    """Answers go to the standard output, which nothing else may write to: a print or a
    warning goes to the standard error (the parent's)."""
    answers = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    module, _, name = path.partition(":")
    measure = getattr(importlib.import_module(module), name)
    serve(measure, Connection(os.dup(0), writable=False), answers)
