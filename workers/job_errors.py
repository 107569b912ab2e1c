"""What a failed run's job, or a skipped measurement's entry, says of the exception that
ended it: hwnas's own errors as their text, others as a short traceback that names a
plugin's line (``workers.runner``)."""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback

from core.errors import HwnasError, first_line
from hardware_profiles.isolated import CHILD_FRAMES


def job_error(exc: BaseException) -> tuple[str, str]:
    """A failed run's ``error`` and the line its message gives. hwnas's own errors are their
    text; others a short traceback, and their type, first line and notes (the step of the
    evaluation, ``workers.evaluator``)."""
    if isinstance(exc, HwnasError):
        return str(exc), (str(exc).splitlines() or [type(exc).__name__])[-1]
    notes = "; ".join(getattr(exc, "__notes__", ()))
    said = f"{type(exc).__name__}: {first_line(exc)}" + (f" ({notes})" if notes else "")
    return short_traceback(exc), said


def short_traceback(exc: BaseException) -> str:
    """The exception with the last two frames outside the libraries a network runs in
    (hwnas's, a plugin's, wherever it is installed) and the last two overall: a plugin's
    error inside torch names its line."""
    frames = traceback.extract_tb(exc.__traceback__)
    if child_frames := getattr(exc, CHILD_FRAMES, None):  # raised in a timing child: there
        frames = traceback.StackSummary.from_list([*frames, *child_frames])
    own = [f for f in frames if not _in_a_library(f.filename)]
    kept = own[-2:] + [f for f in frames[-2:] if f not in own[-2:]]
    listed = traceback.format_list(kept)
    said = _clipped("".join(traceback.format_exception_only(exc)).strip())
    return "".join(["Traceback (last frames):\n", *listed, said])


#: How much of an exception's own text a job's error keeps (the log has all of it): torch's
#: tracer check puts both graphs in its message, 100 KB that every poll of the job carried.
ERROR_LINES, ERROR_CHARS = 30, 4_000


def _clipped(text: str) -> str:
    lines = text.splitlines()
    if len(lines) <= ERROR_LINES and len(text) <= ERROR_CHARS:
        return text
    kept = "\n".join(lines[:ERROR_LINES])[:ERROR_CHARS]
    return f"{kept}\n... ({len(text) - len(kept):,} more characters: see the worker's log)"


#: Libraries whose frames a job's error leaves out unless they are the last ones.
LIBRARIES = ("torch", "numpy", "scipy", "sklearn", "onnx", "onnxruntime")


def _in_a_library(filename: str) -> bool:
    """Whether a frame's file is one of ``LIBRARIES``' or the standard library's; not what
    is installed beside them (without a virtual environment, as in the Docker image,
    site-packages is a folder of the standard library's: a plugin installed there is kept)."""
    for name in LIBRARIES:
        path = getattr(sys.modules.get(name), "__file__", None)
        if path and filename.startswith(os.path.dirname(path) + os.sep):
            return True
    stdlib = sysconfig.get_paths()["stdlib"] + os.sep
    if not filename.startswith(stdlib):
        return False
    inside = filename[len(stdlib) :]
    return not inside.startswith(("site-packages" + os.sep, "dist-packages" + os.sep))
