"""Where exported sub-network files are kept: ``HWNAS_DATA_DIR/exports/<version>/<job>/``.

A file is built on its first download and kept. The route that serves it and ``hwnas prune``
both go through here, so the layout is in one place.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: Its version goes up when what an export holds changes, so a file written before is not
#: served for the new one: "2" the card inside each file, and the Transformer's ONNX at any
#: length; "3" the card's ``output`` (shape, ONNX name, classes) and ``quality_from``; "4"
#: the input's ``axis_names`` (the Transformer's ONNX axis ``sequence``, was ``dim1``); "5"
#: the card's ``validation_data`` and ``measured_with``; "6" the input's ``file_shape`` and
#: ``onnx_name``, and the ``warning`` of a job that recorded no fingerprint; "7" the card's
#: ``constraints`` and ``feasible``; "8" its ``objectives``.
EXPORTS = Path("exports") / "8"


#: job id -> its folder's lock and how many threads hold or wait for it (dropped at 0).
_FOLDER_LOCKS: dict[str, tuple[threading.Lock, int]] = {}
_GUARD = threading.Lock()


@contextmanager
def folder_lock(job_id: str) -> Iterator[None]:
    """Held while a file is written into job ``job_id``'s folder and while the folder is
    removed (in this process): a DELETE removed the folder under an export being written
    (500), or just before one wrote its file (served, and left behind; fuzz probe,
    session 22)."""
    with _GUARD:
        lock, users = _FOLDER_LOCKS.get(job_id, (threading.Lock(), 0))
        _FOLDER_LOCKS[job_id] = (lock, users + 1)
    try:
        with lock:
            yield
    finally:
        with _GUARD:
            lock, users = _FOLDER_LOCKS.pop(job_id)
            if users > 1:
                _FOLDER_LOCKS[job_id] = (lock, users - 1)


def export_file(data_dir: Path, job_id: str, name: str) -> Path:
    """The file ``name`` (a sub-network id and its format's suffix) of job ``job_id``."""
    return data_dir / EXPORTS / job_id / name


def job_folders(data_dir: Path) -> list[str]:
    """The ids of the jobs with a folder of exports (this version's)."""
    return [folder.name for folder in (data_dir / EXPORTS).glob("*") if folder.is_dir()]


def remove_exports(data_dir: Path, job_ids: Iterable[str]) -> None:
    """The exported files of ``job_ids`` (those of the copies other jobs hold of their
    sub-networks too: they are built again on demand)."""
    for job_id in job_ids:
        with folder_lock(job_id):
            shutil.rmtree(data_dir / EXPORTS / job_id, ignore_errors=True)


def stale_version_folders(data_dir: Path) -> list[Path]:
    """The folders of cache versions this version no longer serves (an earlier version's,
    numbered or not), by name."""
    return sorted(
        v for v in (data_dir / EXPORTS.parent).glob("*") if v.is_dir() and v.name != EXPORTS.name
    )


def remove_old_versions(data_dir: Path) -> int:
    """Remove the folders of cache versions this version no longer serves; how many."""
    old = stale_version_folders(data_dir)
    for version in old:
        shutil.rmtree(version, ignore_errors=True)
    return len(old)
