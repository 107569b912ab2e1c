"""Where exported sub-network files are kept: ``HWNAS_DATA_DIR/exports/<version>/<job>/``.

A file is built on its first download and kept. The route that serves it and ``hwnas prune``
both go through here, so the layout is in one place.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

#: Its version goes up when what an export holds changes, so a file written before is not
#: served for the new one: "2" the card inside each file, and the Transformer's ONNX at any
#: length.
EXPORTS = Path("exports") / "2"


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
        shutil.rmtree(data_dir / EXPORTS / job_id, ignore_errors=True)


def remove_old_versions(data_dir: Path) -> int:
    """Remove the folders of cache versions this version no longer serves; how many."""
    old = [
        v for v in (data_dir / EXPORTS.parent).glob("*") if v.is_dir() and v.name != EXPORTS.name
    ]
    for version in old:
        shutil.rmtree(version, ignore_errors=True)
    return len(old)
