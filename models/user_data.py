"""User validation data given by a path: confined to the data roots, size-limited, no pickle.

A user evaluates a supernet on their own data by naming a tensor file or an image directory
under one of the configured data roots (``HWNAS_DATA_ROOTS``, comma separated; none
configured = refused):

- ``.npz`` (read with ``numpy.load(allow_pickle=False)``) or ``.pt`` / ``.pth`` (read with
  ``torch.load(weights_only=True)``, a dict of tensors);
- keys: ``inputs`` (or ``images`` / ``x``): the samples, first axis N; ``labels`` (or ``y``):
  N integer class ids; optional ``calib_inputs`` (or ``calib_images`` / ``calib_x``):
  unlabelled samples for BatchNorm recalibration, for supernets that recalibrate;
- or a directory of images, ``<dir>/<class name>/<images>`` with optional ``classes.txt``
  and ``_calib/`` (see :mod:`models.user_images`), for supernets that declare an
  :class:`~models.base.ImageFormat` (``Supernet.image_format``); the caller passes it.

What the samples look like is the supernet's business (its docstring says: grey images with
pixel values 0..255 for ``fmnist-ofa-cnn``, int64 token ids for ``text-transformer-synth``).
Paths are resolved (symlinks followed) before the root check, so a link out of a root is
refused; files (and, for zip-based formats, their uncompressed members) larger than
``HWNAS_MAX_DATA_FILE_MB`` are refused, as are image directories whose images add up to more
than that or number more than ``HWNAS_MAX_DATA_IMAGES``.
"""

from __future__ import annotations

import os
import re
import time
import zipfile
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from core.errors import InvalidInput, first_line
from core.settings import comma_list, get_settings

from .base import ImageFormat, walk_through_links
from .check_memo import CheckMemo
from .user_images import (
    FIELD,
    ImageFolder,
    check_class_count,
    lookup_errors,
    name_of,
    open_regular,
    read_images,
    scan_images,
)

INPUT_KEYS = ("inputs", "images", "x")
LABEL_KEYS = ("labels", "y")
CALIB_KEYS = ("calib_inputs", "calib_images", "calib_x")
SUFFIXES = (".npz", ".pt", ".pth")


@dataclass(frozen=True)
class UserData:
    """Validation samples and labels, and optional calibration samples, as tensors."""

    inputs: torch.Tensor
    labels: torch.Tensor
    calib: torch.Tensor | None
    source: Path | None
    #: The class names in label order, where the data names them (an image directory).
    classes: tuple[str, ...] | None = None


def configured_roots() -> list[Path]:
    """The data roots of the settings (``HWNAS_DATA_ROOTS``), resolved."""
    text = get_settings().data_roots
    return [Path(part).resolve() for part in comma_list(text)]


def confine(path: str | Path, roots: Sequence[Path]) -> Path:
    """``path`` resolved, if it exists inside one of ``roots``; relative paths are looked up
    under each root in order (a root where the look-up fails is passed over; its error is
    the answer if no root holds the path). Anything else is refused without naming the
    roots."""
    if not roots:
        raise InvalidInput(
            "user data paths are disabled: no data roots are configured (HWNAS_DATA_ROOTS)",
            field=FIELD,
        )
    if not str(path).strip():  # Path("") is ".": the root itself, walked as images
        raise InvalidInput(
            "empty: name a file or image directory under the data roots", field=FIELD
        )
    given = Path(path)
    candidates = [given] if given.is_absolute() else [Path(root) / given for root in roots]
    unreadable: InvalidInput | None = None  # a root where the look-up failed: others may hold it
    for candidate in candidates:
        try:
            with lookup_errors(str(path)):
                resolved = candidate.resolve()
                inside = any(resolved.is_relative_to(Path(root).resolve()) for root in roots)
                found = inside and resolved.exists()
                regular = found and (resolved.is_file() or resolved.is_dir())
        except InvalidInput as exc:
            unreadable = unreadable or exc
            continue
        if found and not regular:  # a FIFO, a socket, a device: a reader could block forever
            raise InvalidInput(f"{str(path)!r} is not a regular file or a directory", field=FIELD)
        if found:
            return resolved
    if unreadable is not None:
        raise unreadable
    raise InvalidInput(
        f"{str(path)!r} is not an existing file or directory inside the configured data roots "
        "(HWNAS_DATA_ROOTS)",
        field=FIELD,
    )


def data_signature(path: str | Path, roots: Sequence[Path] | None = None) -> tuple[Any, ...]:
    """What changes when the data ``path`` names changes: a file's size, modification time
    and inode; for a directory, those of every file under it. Data loaded before is stale
    when its signature differs. ``()`` where the path cannot be looked up (loading it then
    says why)."""
    roots = configured_roots() if roots is None else roots
    try:
        resolved = confine(path, roots)
    except InvalidInput:
        return ()
    if not resolved.is_dir():
        return file_state(resolved)
    # Through links to folders, as the image loader reads them (class folders linked in
    # from elsewhere changed unseen: a running server measured the old images; audit 30),
    # but not out of the roots, which loading refuses: a link to /usr was walked whole,
    # 126,000 files, at each job's start and export (security audit 31).
    inside = [Path(root).resolve() for root in roots]
    entries: list[tuple[Any, ...]] = []
    for folder, folders, files in walk_through_links(resolved):
        for name in list(folders):
            real = Path(os.path.realpath(os.path.join(folder, name)))
            if not any(real.is_relative_to(root) for root in inside):
                folders.remove(name)
                entries.append((folder, name, "outside the data roots"))
        entries.extend((folder, name, *file_state(Path(folder) / name)) for name in files)
    return tuple(sorted(entries))


def file_state(path: Path) -> tuple[Any, ...]:
    """Size, modification time, inode and status-change time of ``path`` (what tells a
    rewritten file, or one whose permissions changed), or the error number of a look-up
    that fails."""
    try:
        found = path.stat()
    except OSError as exc:  # a broken link: what loading the folder would say
        return (exc.errno,)
    return found.st_size, found.st_mtime_ns, found.st_ino, found.st_ctime_ns


def check_path(
    path: str | Path,
    *,
    roots: Sequence[Path] | None = None,
    max_bytes: int | None = None,
    max_images: int | None = None,
    guard: AbstractContextManager[Any] | None = None,
) -> Path:
    """The resolved file or directory ``path`` names, after the checks that need no decoding
    (root, type, size; for a directory its layout and limits): for validating a request up
    front. Roots and limits default to the settings. A directory's answer is kept while no
    file is added, removed or renamed under it and its ``classes.txt`` is unchanged
    (``tree_state``, ``models.check_memo``; an image that grows in place is found by the
    load); ``guard`` is held while a directory is walked."""
    roots = configured_roots() if roots is None else roots
    resolved = confine(path, roots)
    if resolved.is_dir():
        count = max_images if max_images is not None else get_settings().max_data_images
        limit = _limit(max_bytes)
        key = (str(resolved), tuple(roots), limit, count)
        walk = partial(_scan, resolved, roots, limit, count)
        _DIRECTORY_CHECKS.run(key, tree_state(resolved, count), walk, guard)
    else:
        _check_file(resolved, _limit(max_bytes))
    return resolved


#: ``check_path``'s answers for directories.
_DIRECTORY_CHECKS = CheckMemo(64)


def tree_state(root: Path, max_dirs: int) -> tuple[Any, ...] | None:
    """What changes when a file is added to, removed from or renamed in the directory
    ``root`` or any directory under it (links followed, each real directory once), or its
    ``classes.txt`` changes: each directory's state, not each file's (listing the
    directories reads no file's metadata). None when one of them changed too recently to be
    told from a change to come (``recent``), or there are over ``max_dirs``."""
    states: list[tuple[Any, ...]] = [("classes.txt", *file_state(root / "classes.txt"))]
    stack, seen = [root], set[Path]()
    while stack:
        if len(seen) > max_dirs:  # more than a check walks: no state stands for it all
            return None
        current = stack.pop()
        try:
            real = current.resolve()
            if real in seen:
                continue
            seen.add(real)
            states.append((str(current), *file_state(current)))
            with os.scandir(current) as entries:
                stack.extend(Path(e.path) for e in entries if e.is_dir())
        except OSError as exc:
            states.append((str(current), exc.errno))
    if any(recent(state[1:]) for state in states):
        return None
    return tuple(sorted(states, key=str))


#: A file modified this recently may be modified again within the same tick of the file
#: system's clock, leaving its state unchanged (git's "racy" index entries): a state this
#: fresh is no proof that the data is still what was read.
SETTLE_NS = 2_000_000_000


def recent(state: tuple[Any, ...]) -> bool:
    """Whether ``file_state``'s ``state`` was modified within ``SETTLE_NS`` of now."""
    return len(state) == 4 and time.time_ns() - state[1] < SETTLE_NS


def load_user_data(
    path: str | Path,
    *,
    num_classes: int | None = None,
    image_format: ImageFormat | None = None,
    roots: Sequence[Path] | None = None,
    max_bytes: int | None = None,
    max_images: int | None = None,
) -> UserData:
    """Load validation data from ``path`` (see the module docstring for the format); labels
    must lie in ``0..num_classes-1`` when that is given. A directory of images is read only
    when the caller gives the ``image_format`` its supernet declares."""
    roots = configured_roots() if roots is None else roots
    resolved = confine(path, roots)
    if resolved.is_dir():
        if image_format is None:
            raise InvalidInput(
                f"{name_of(resolved)}: a directory, but this supernet does not take images; "
                f"give a tensor file ({', '.join(SUFFIXES)}) with 'inputs' and 'labels'",
                field=FIELD,
            )
        folder = _scan(resolved, roots, max_bytes, max_images)
        loaded = _from_folder(folder, image_format, _limit(max_bytes), num_classes)
    else:
        loaded = _user_data(_read_file(resolved, _limit(max_bytes)), resolved)
    labels = loaded.labels
    if num_classes is not None and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise InvalidInput(
            f"{name_of(resolved)}: labels must lie in 0..{num_classes - 1}, found "
            f"{int(labels.min())}..{int(labels.max())}",
            field=FIELD,
        )
    return loaded


def _limit(max_bytes: int | None) -> int:
    return max_bytes if max_bytes is not None else _settings_limit()


def _scan(
    root: Path, roots: Sequence[Path], max_bytes: int | None, max_images: int | None
) -> ImageFolder:
    count = max_images if max_images is not None else get_settings().max_data_images
    return scan_images(root, roots=roots, max_bytes=_limit(max_bytes), max_images=count)


def _from_folder(
    folder: ImageFolder, image_format: ImageFormat, limit: int, num_classes: int | None
) -> UserData:
    if num_classes is not None:
        check_class_count(folder.root, folder.classes, num_classes)
    # One read for both, so that the size limit holds for everything read.
    pixels = read_images(folder.samples + folder.calib, image_format, max_bytes=limit)
    count = len(folder.samples)
    calib = pixels[count:] if folder.calib else None
    labels = torch.tensor(folder.labels, dtype=torch.int64)
    return UserData(pixels[:count], labels, calib, folder.root, folder.classes)


def _check_file(resolved: Path, limit: int) -> None:
    """A single data file's type, and its size unpacked, checked on the file as opened
    (by its name, a FIFO swapped in since the look-up hung the check: review 31b)."""
    _check_suffix(resolved)
    with open_regular(resolved, name_of(resolved)) as handle:
        _check_opened(handle, resolved, limit)


def _read_file(resolved: Path, limit: int) -> dict[str, Any]:
    """A single data file's arrays, checked and read from one opening of it."""
    _check_suffix(resolved)
    with open_regular(resolved, name_of(resolved)) as handle:
        _check_opened(handle, resolved, limit)
        handle.seek(0)
        if resolved.suffix == ".npz":
            return _read_npz(handle, resolved)
        return _read_torch(handle, resolved)


def _check_suffix(resolved: Path) -> None:
    if resolved.suffix not in SUFFIXES:
        raise InvalidInput(
            f"{name_of(resolved)}: unsupported file type; use one of {', '.join(SUFFIXES)}, "
            "or a directory of images",
            field=FIELD,
        )


def _check_opened(handle: BinaryIO, path: Path, limit: int) -> None:
    zipped = zipfile.is_zipfile(handle)
    _check_size(handle, path, limit, zipped)
    if path.suffix == ".npz" and not zipped:
        raise _not_an_npz(path)


def _not_an_npz(path: Path) -> InvalidInput:
    """For a .npz that is not a zip: numpy reads any other file as a pickle, and refuses it
    with advice to load it unsafely; a text file named .npz is answered for what it is."""
    return InvalidInput(
        f"{name_of(path)}: not a .npz file (numpy.savez writes a zip archive of .npy arrays)",
        field=FIELD,
    )


def _settings_limit() -> int:
    return int(get_settings().max_data_file_mb * 1024 * 1024)


def _check_size(handle: BinaryIO, path: Path, limit: int, zipped: bool) -> None:
    size = os.fstat(handle.fileno()).st_size
    if zipped:  # .npz and torch.save files: count the unpacked members
        handle.seek(0)
        with zipfile.ZipFile(handle) as archive:
            size = max(size, sum(info.file_size for info in archive.infolist()))
    if size > limit:
        raise InvalidInput(
            f"{name_of(path)}: {size / 2**20:.1f} MiB is over the limit of {limit / 2**20:.1f} MiB "
            "(HWNAS_MAX_DATA_FILE_MB)",
            field=FIELD,
        )


def _reason(exc: BaseException) -> str:
    """An error's first line; for a system error only its reason (its text names the path,
    inside the data roots, which a job's error would show); for a KeyError or MemoryError,
    whose text alone says little ("101"), its type too."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    line = first_line(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {line}" if isinstance(exc, KeyError | MemoryError) else line


#: Terminal colour codes, which torch's messages carry (bold around a warning).
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
#: What torch's refusal of a pickled object names (its long text offers ways to load it
#: that run the file's code, which a service must not take).
_UNPICKLER = re.compile(r"WeightsUnpickler error:\s*(.+?)(?: Please use |\n|$)")


def torch_load_reason(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a line: for pickled Python
    objects, which ones (torch's text gave its first line, about "two options", and
    terminal escape codes: audit 29); otherwise as ``_reason``."""
    text = _ESCAPES.sub("", str(exc))
    if isinstance(exc, EOFError):  # an empty file, or one cut short (review 32a)
        return f"empty, or cut short ({text or 'EOFError'})"
    found = _UNPICKLER.search(text)
    if found and found.group(1).startswith("Unsupported operand"):  # not a pickle at all
        return f"not a file torch.save wrote, or a damaged one ({found.group(1).rstrip('. ')})"
    if found:
        return (
            f"it holds Python objects besides tensors ({found.group(1).rstrip('. ')}): "
            "save a dict of tensors only"
        )
    return _ESCAPES.sub("", _reason(exc))


def _read_npz(handle: BinaryIO, path: Path) -> dict[str, Any]:
    try:
        with np.load(handle, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, MemoryError) as exc:
        # MemoryError: an array whose header declares more than the zip holds (or than fits)
        reason = _reason(exc)
        if "pickle" in reason:  # numpy's own words advise loading it unsafely
            reason = "it holds object arrays, which need pickles: save numeric arrays"
        raise InvalidInput(
            f"{name_of(path)}: not a readable .npz without pickles ({reason})", field=FIELD
        ) from None


def _read_torch(handle: BinaryIO, path: Path) -> dict[str, Any]:
    try:
        loaded = torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for bad files
        hint = "" if zipfile.is_zipfile(handle) else " (not the zip archive torch.save writes)"
        raise InvalidInput(
            f"{name_of(path)}: refused by torch.load(weights_only=True): "
            f"{torch_load_reason(exc)}{hint}",
            field=FIELD,
        ) from None
    if not isinstance(loaded, Mapping):
        raise InvalidInput(f"{name_of(path)}: expected a dict of tensors", field=FIELD)
    return dict(loaded)


def _pick(arrays: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in arrays:
            return arrays[key]
    return None


def _tensor(value: Any, what: str, path: Path) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise InvalidInput(f"{name_of(path)}: {what} has dtype {value.dtype}", field=FIELD)
        if value.dtype == np.uint64 and value.size and value.max() > np.iinfo(np.int64).max:
            raise InvalidInput(f"{name_of(path)}: {what} holds values over 2**63 - 1", field=FIELD)
        tensor = torch.from_numpy(np.ascontiguousarray(value))
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype not in _REAL:
            raise InvalidInput(f"{name_of(path)}: {what} has dtype {tensor.dtype}", field=FIELD)
    else:
        raise InvalidInput(
            f"{name_of(path)}: {what} is a {type(value).__name__}, not an array", field=FIELD
        )
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        # A network fed NaN answers something: the job would report a meaningless accuracy.
        raise InvalidInput(f"{name_of(path)}: {what} holds NaN or infinite values", field=FIELD)
    return tensor


#: Tensor dtypes a tensor file's arrays may have: numpy's kinds "biuf", as torch spells them.
_REAL = frozenset(
    (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    + (torch.float16, torch.bfloat16, torch.float32, torch.float64)
)


def _user_data(arrays: Mapping[str, Any], path: Path) -> UserData:
    raw_inputs, raw_labels = _pick(arrays, INPUT_KEYS), _pick(arrays, LABEL_KEYS)
    if raw_inputs is None or raw_labels is None:
        raise InvalidInput(
            f"{name_of(path)}: needs keys 'inputs' and 'labels'; found {sorted(arrays)}",
            field=FIELD,
        )
    inputs, labels = _tensor(raw_inputs, "inputs", path), _tensor(raw_labels, "labels", path)
    if labels.dim() != 1 or labels.is_floating_point() or labels.dtype == torch.bool:
        raise InvalidInput(f"{name_of(path)}: labels must be a 1-D integer array", field=FIELD)
    if inputs.dim() < 2 or len(inputs) != len(labels) or len(labels) == 0:
        raise InvalidInput(
            f"{name_of(path)}: inputs {tuple(inputs.shape)} and labels {tuple(labels.shape)} "
            "must hold the same number (> 0) of samples",
            field=FIELD,
        )
    raw_calib = _pick(arrays, CALIB_KEYS)
    calib = None if raw_calib is None else _tensor(raw_calib, "calib_inputs", path)
    if calib is not None and (calib.dim() < 2 or len(calib) == 0):
        raise InvalidInput(
            f"{name_of(path)}: calib_inputs {tuple(calib.shape)} holds no samples; leave it out "
            "when there are none",
            field=FIELD,
        )
    return UserData(inputs, labels.long(), calib, path)


def grey_images(images: torch.Tensor, what: str = "inputs") -> np.ndarray:
    """(N, H, W) or (N, 1, H, W) images with values 0..255 as a float32 (N, H, W) array."""
    if images.dim() == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.dim() != 3 or images.shape[1] != images.shape[2]:
        raise InvalidInput(
            f"{what} must be square grey images (N, H, W) or (N, 1, H, W), "
            f"got {tuple(images.shape)}",
            field=FIELD,
        )
    check_pixel_scale(images, what)
    return images.float().numpy()


def check_pixel_scale(images: torch.Tensor, what: str = "inputs") -> None:
    """Refuse floating-point images that all lie in 0..1: the supernets read pixel values
    0..255 (their preprocessing divides by 255), and images stored scaled to 0..1, a common
    way to keep them, were accepted and scored at chance (0.106 on Fashion-MNIST)."""
    if not images.is_floating_point() or images.numel() == 0:
        return
    largest = float(images.max())
    if 0.0 < largest <= 1.0:  # (all zeros: black images, whatever their scale)
        raise InvalidInput(
            f"{what} look scaled to 0..1 (the largest value is {largest:.3g}): give pixel "
            "values 0..255 (uint8, or the floats multiplied by 255), which the supernet's "
            "preprocessing divides by 255",
            field=FIELD,
        )
