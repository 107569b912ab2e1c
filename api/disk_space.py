"""The free space where the service writes: its data directory and its SQLite file.

A full disk kept /healthz at ``ok`` while every write failed; an export then answered a bare
500, or for TorchScript "the export process ended ... twice in a row", which sent the
operator looking for a memory problem (ops audit 29).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from core.errors import ServiceUnavailable
from core.settings import Settings
from store.db import sqlite_database

#: Below this many free bytes, where the service writes, /healthz says so (degraded).
MIN_FREE_BYTES = 256 * 2**20
#: The errors of a write that found no room.
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT})


def written_folders(settings: Settings) -> dict[str, Path]:
    """Where the service writes, by the setting that names it: the data directory, and
    the folder of a SQLite database."""
    folders = {"HWNAS_DATA_DIR": Path(settings.data_dir)}
    if (database := sqlite_database(settings.database_url)) is not None:
        folders["HWNAS_DATABASE_URL"] = database.parent
    return folders


#: ... or below this share of the disk, on a disk smaller than 20 times that (a 200 MB
#: volume was never ok: review 29).
MIN_FREE_SHARE = 0.05


def low_space(
    settings: Settings,
    min_free: int = MIN_FREE_BYTES,
    *,
    only: str | None = None,
    share: float = MIN_FREE_SHARE,
) -> list[str]:
    """A problem for each file system the service writes on with less than ``min_free``
    bytes (or ``share`` of a small disk) free, one per file system, naming the settings
    whose folders are on it; ``only``: that setting's folder alone."""
    seen: dict[int, list[str]] = {}
    free_of: dict[int, tuple[int, int, Path]] = {}
    for setting, folder in written_folders(settings).items():
        if only is not None and setting != only:
            continue
        try:
            device = folder.stat().st_dev
            usage = shutil.disk_usage(folder)
        except OSError:  # not made yet, or away: other checks say so
            continue
        seen.setdefault(device, []).append(setting)
        free_of[device] = (usage.free, usage.total, folder.resolve())
    return [
        f"{free / 2**20:.0f} MiB free where {' and '.join(seen[device])} write "
        f"({folder}): exports and the database's writes fail once it is full"
        for device, (free, total, folder) in free_of.items()
        if free < min(min_free, share * total)
    ]


def no_room(exc: BaseException, folder: Path) -> ServiceUnavailable | None:
    """The error to answer for ``exc`` when it is a write that found no room in
    ``folder`` (None otherwise)."""
    if isinstance(exc, OSError) and exc.errno in NO_ROOM:
        return full_disk(folder)
    return None


def full_disk(folder: Path) -> ServiceUnavailable:
    """The answer to an export that could not be written for want of space."""
    return ServiceUnavailable(
        f"no space left where HWNAS_DATA_DIR writes ({folder.resolve()}): the file could "
        "not be written; ask again once space is freed"
    )
