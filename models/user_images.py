"""User validation data as a directory of images (the ImageFolder layout), decoded with Pillow.

Layout of a data directory ``<dir>``:

- ``<dir>/<class name>/<images>``: labelled images, at any depth below the class directory.
  Labels index the class names in sorted order, or in the order of ``<dir>/classes.txt``
  (one name per line, blank lines ignored) when that file exists; it must name every class
  directory once, and may name classes that have none (images of a few of ImageNet's 1,000
  classes keep their ids when it lists all 1,000). Labels must be the model's class ids, so
  give every class the model predicts in its order (ImageNet's sorted synset directories
  ``n01440764, ...`` are); directories named as the supernet's own classes in another
  sorted order are refused at submission (``check_class_order``).
- ``<dir>/_calib/<images>`` (optional, any depth): unlabelled images for BatchNorm
  recalibration. ``_calib`` is reserved: it is never a class.

Images are the files ending in one of ``EXTENSIONS`` (any case), decoded only by the Pillow
plugins of those formats; other files (``classes.txt``, READMEs) and names starting with
``.`` are ignored. A file that does not decode is refused with its path in the message.

Limits: every directory and image is resolved (symlinks followed) and must lie inside a data
root, so a link out of the roots is refused; the images' total size on disk is at most
``HWNAS_MAX_DATA_FILE_MB``, their number (calibration images included) at most
``HWNAS_MAX_DATA_IMAGES``; an image of more than ``MAX_PIXELS`` pixels is refused from its
header, before it is decoded (decompression bombs).

Conversion, as the supernet declares (:class:`models.base.ImageFormat`): the first frame
(16-bit grey scaled to 8 bits) is
converted to Pillow mode ``L`` or ``RGB`` (alpha dropped), its shorter side resized to
``size`` (Pillow's bilinear filter, antialiased when shrinking; an image already
``size x size`` is not resampled) and the centre ``size x size`` kept, as uint8: (N, H, W)
for ``L``, (N, 3, H, W) for ``RGB``; an export's card says so (``image_file_stage``).
"""

from __future__ import annotations

import errno
import io
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from core.errors import InvalidInput, printable

from .base import NOT_REGULAR, ImageFormat, open_if_regular

FIELD = "validation_data"
CALIB_DIR = "_calib"
CLASSES_FILE = "classes.txt"
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff")
#: Pillow decodes by content, not by name: only these plugins (the formats above) may run.
PILLOW_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "PPM", "TIFF")
#: Largest image (width x height) decoded; 40 MP is above any camera photo, and below
#: Pillow's own bomb threshold (~89 MP), whose warning would not stop the decoding.
MAX_PIXELS = 40_000_000
#: Most entries besides images (files and folders) an image directory may hold, for each
#: image it may hold (``HWNAS_MAX_DATA_IMAGES``), plus 1,000: listing them all is the cost.
ENTRIES_PER_IMAGE = 4
#: Most pixels decoded in all for one directory: bytes on disk bound nothing (a blank 40 MP
#: PNG is 39 KB and takes 0.2 s to decode: minutes of a worker's time within the size
#: limits, security audit 31); 8 billion is 10,000 images of 800 000 pixels (ImageNet's
#: are ~110 000 on average), about a minute of decoding on one core.
MAX_TOTAL_PIXELS = 8_000_000_000
_MAX_CLASSES_FILE = 2**20


@dataclass(frozen=True)
class ImageFile:
    """An image found by a scan: its resolved path, and the name messages give it."""

    path: Path
    name: str


@dataclass(frozen=True)
class ImageFolder:
    """What a scan found: class names, labelled images, calibration images."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[ImageFile, ...]
    labels: tuple[int, ...]
    calib: tuple[ImageFile, ...]


@contextmanager
def lookup_errors(given: str) -> Iterator[None]:
    """Path look-ups (resolve, stat) inside: a name the system refuses (too long) or a loop
    of symbolic links is the request's error, named by what the user gave (not by where it
    was looked up)."""
    try:
        yield
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop
        reason = (
            exc.strerror if isinstance(exc, OSError) and exc.strerror else "a symbolic link loop"
        )
        given = printable(given, lines=False)
        shown = given if len(given) <= 200 else given[:200] + "..."
        raise InvalidInput(f"{shown!r} cannot be looked up: {reason}", field=FIELD) from None


def open_regular(path: Path, shown: str) -> BinaryIO:
    """``path`` (resolved) open for reading, if it is a regular file as opened
    (``models.base.open_if_regular``: not a FIFO swapped in after the scan, nor a link to
    outside the roots). ``shown``: the name errors give."""
    with lookup_errors(shown):
        try:
            handle = open_if_regular(path, follow=False)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            # looked up as a file: a link put in its place since (the system's words were
            # "Too many levels of symbolic links": review 31b L7)
            raise InvalidInput(f"{shown}: {BECAME_A_LINK}", field=FIELD) from None
    if handle is None:
        raise InvalidInput(f"{shown}: {NOT_REGULAR}", field=FIELD)
    return handle


#: Said of a file that a symbolic link replaced between its look-up and its reading.
BECAME_A_LINK = (
    "replaced by a symbolic link since it was looked up (data changing while a job "
    "reads it): give the data again once it stays put"
)


class _Scan:
    """Walks a data directory, checking confinement and the count and size limits."""

    def __init__(self, root: Path, roots: Sequence[Path], max_bytes: int, max_images: int):
        self.root, self.roots = root, [Path(r).resolve() for r in roots]
        self.max_bytes, self.max_images = max_bytes, max_images
        self.max_entries = ENTRIES_PER_IMAGE * max_images + 1000
        self.count = self.bytes = self.entries = self.images_listed = 0

    def name(self, path: Path) -> str:
        return printable(f"{self.root.name}/{path.relative_to(self.root).as_posix()}", lines=False)

    def resolved(self, path: Path) -> Path:
        with lookup_errors(self.name(path)):
            real = path.resolve()
        if not any(real.is_relative_to(root) for root in self.roots):
            raise InvalidInput(
                f"{self.name(path)} resolves outside the configured data roots (HWNAS_DATA_ROOTS)",
                field=FIELD,
            )
        return real

    def images(self, top: Path) -> Iterator[ImageFile]:
        """Image files under ``top``, resolved, in a fixed order (files, then sub-directories,
        each sorted by name); a directory reached twice (link cycles) is walked once."""
        stack, seen = [top], set()
        while stack:
            current = stack.pop()
            real = self.resolved(current)
            if real in seen:
                continue
            seen.add(real)
            with lookup_errors(self.name(current)):  # e.g. a directory it may not read
                listed = sorted(self.listed(current))
            subdirs = []
            for entry, is_dir in listed:
                if entry.name.startswith("."):
                    continue
                if is_dir:
                    subdirs.append(entry)
                elif _is_image(entry.name):
                    yield self.count_in(entry)
            stack.extend(reversed(subdirs))

    def listed(self, folder: Path) -> Iterator[tuple[Path, bool]]:
        """``folder``'s entries (each, and whether it is a directory), counted as they are
        listed: images against ``max_images``, the others against ``max_entries`` (only
        images were counted, after the listing: 300,000 other files in a class folder took
        16 s to list at each submission, security audit 31)."""
        with os.scandir(folder) as entries:
            for entry in entries:
                is_dir = entry.is_dir()
                if not is_dir and _is_image(entry.name):
                    self.images_listed += 1
                    if self.images_listed > self.max_images:
                        raise self._too_many_images()
                else:
                    self.entries += 1
                    if self.entries > self.max_entries:
                        raise InvalidInput(
                            f"{name_of(self.root)}: more than {self.max_entries:,} files and "
                            f"folders besides images ({ENTRIES_PER_IMAGE} for each image "
                            "HWNAS_MAX_DATA_IMAGES allows, and 1,000): keep other files out "
                            "of an image directory",
                            field=FIELD,
                        )
                yield Path(entry.path), is_dir

    def _too_many_images(self) -> InvalidInput:
        return InvalidInput(
            f"{name_of(self.root)}: more than {self.max_images} images (HWNAS_MAX_DATA_IMAGES)",
            field=FIELD,
        )

    def count_in(self, path: Path) -> ImageFile:
        real = self.resolved(path)
        if not real.is_file():
            raise InvalidInput(f"{self.name(path)} is not a readable file", field=FIELD)
        self.count, self.bytes = self.count + 1, self.bytes + real.stat().st_size
        if self.count > self.max_images:
            raise self._too_many_images()
        if self.bytes > self.max_bytes:
            raise InvalidInput(
                f"{name_of(self.root)}: the images are over the limit of "
                f"{self.max_bytes / 2**20:.1f} MiB in all (HWNAS_MAX_DATA_FILE_MB)",
                field=FIELD,
            )
        return ImageFile(real, self.name(path))


def scan_images(
    root: Path, *, roots: Sequence[Path], max_bytes: int, max_images: int
) -> ImageFolder:
    """The layout of the (resolved) data directory ``root``, checked without decoding."""
    scan = _Scan(root, roots, max_bytes, max_images)
    classes, present = _class_names(scan)
    samples: list[ImageFile] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        if name not in present:  # listed in classes.txt, no images of it here
            continue
        found = list(scan.images(root / name))
        if not found:
            raise InvalidInput(
                f"{scan.name(root / name)}: class {name!r} has no images ({', '.join(EXTENSIONS)})",
                field=FIELD,
            )
        samples += found
        labels += [label] * len(found)
    calib: tuple[ImageFile, ...] = ()
    if (root / CALIB_DIR).is_dir():
        calib = tuple(scan.images(root / CALIB_DIR))
        if not calib:
            raise InvalidInput(f"{scan.name(root / CALIB_DIR)} holds no images", field=FIELD)
    return ImageFolder(root, classes, tuple(samples), tuple(labels), calib)


def class_names(root: Path, *, roots: Sequence[Path]) -> tuple[str, ...]:
    """The classes of the (resolved) data directory ``root`` in label order, as
    ``scan_images`` finds them, from its listing and ``classes.txt`` alone (no image is
    looked at): what a submission reads to hold it to the supernet's outputs."""
    return _class_names(_Scan(root, roots, max_bytes=0, max_images=0))[0]


def check_class_count(root: Path, classes: Sequence[str], num_classes: int) -> None:
    """Refuse the data directory ``root`` when its ``classes`` (in label order) are more
    than the ``num_classes`` the supernet predicts: its last classes' labels would be ids
    the network has no output for. Fewer are fine (a ``classes.txt`` naming some of the
    model's classes keeps their ids)."""
    if len(classes) <= num_classes:
        return
    counted = (
        f"its {CLASSES_FILE} names {len(classes)} classes"
        if (root / CLASSES_FILE).is_file()
        else f"{len(classes)} class directories"
    )
    raise InvalidInput(
        f"{name_of(root)}: {counted}, but the supernet predicts {num_classes} classes "
        f"(labels must lie in 0..{num_classes - 1})",
        field=FIELD,
    )


def check_class_order(root: Path, classes: Sequence[str], known: Sequence[str]) -> None:
    """Refuse the data directory ``root`` when its class directories, labelled in sorted
    order (no ``classes.txt``), are the supernet's ``known`` classes (``output_classes``;
    by name, case and punctuation aside: ``Ankle_boot`` is "Ankle boot") in another order:
    each would be scored against another class's output (Fashion-MNIST's folders scored
    0.38 for 0.93: audit 30). The message gives the ``classes.txt`` that labels them as
    the model does."""
    if (root / CLASSES_FILE).is_file():
        return
    ids = {_plain(name): index for index, name in enumerate(known)}
    found = {name: ids.get(_plain(name)) for name in classes}
    if None in found.values() or len(set(found.values())) < len(found):
        return  # not (all) the model's classes: their labels are the user's to give
    if all(found[name] == label for label, name in enumerate(classes)):
        return
    by_id = {index: name for name, index in found.items()}
    lines = [by_id.get(index, name) for index, name in enumerate(known)]
    wrong = next(name for label, name in enumerate(classes) if found[name] != label)
    raise InvalidInput(
        f"{name_of(root)}: its class directories are the supernet's classes, but labelled in "
        f"sorted order they are not the model's ({wrong} would be class "
        f"{classes.index(wrong)}, the model's {found[wrong]}); add a {CLASSES_FILE} naming "
        f"them in the model's order, one a line: {', '.join(lines)}",
        field=FIELD,
    )


def _is_image(name: str) -> bool:
    """Whether a file named ``name`` is taken as an image (hidden files are not)."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in EXTENSIONS


def name_of(path: Path) -> str:
    """The name of ``path`` as a message gives it (``core.errors.printable``)."""
    return printable(path.name, lines=False)


def _plain(name: str) -> str:
    """A class name without case or punctuation (``T-shirt_top`` is "T-shirt/top")."""
    return "".join(character for character in name.lower() if character.isalnum())


def _class_names(scan: _Scan) -> tuple[tuple[str, ...], set[str]]:
    """The classes in label order, and those with a directory here."""
    root = scan.root
    with lookup_errors(root.name):  # its entries counted too (review 31b)
        present = sorted(
            entry.name
            for entry, is_dir in scan.listed(root)
            if is_dir and not entry.name.startswith(".") and entry.name != CALIB_DIR
        )
    if not present:
        raise InvalidInput(
            f"{name_of(root)}: no class sub-directories; expected <dir>/<class name>/<images>",
            field=FIELD,
        )
    if odd := [name for name in present if printable(name, lines=False) != name]:
        raise InvalidInput(  # a class name goes into every export's card (output.classes)
            f"{scan.name(root / odd[0])}: a class directory's name must be UTF-8 text without "
            "control characters",
            field=FIELD,
        )
    if not (root / CLASSES_FILE).is_file():
        return tuple(present), set(present)
    listed = _read_classes_file(scan, root / CLASSES_FILE)
    if odd := [name for name in listed if printable(name, lines=False) != name]:
        raise InvalidInput(
            f"{scan.name(root / CLASSES_FILE)}: {printable(odd[0], lines=False)!r} holds "
            "control characters; name each class with text",
            field=FIELD,
        )
    twice = sorted(name for name, count in Counter(listed).items() if count > 1)
    missing = sorted(set(present) - set(listed))
    if twice or missing:
        raise InvalidInput(
            f"{scan.name(root / CLASSES_FILE)} must name each class directory once; "
            f"not listed: {missing[:5]}, listed twice: {twice[:5]}",
            field=FIELD,
        )
    return tuple(listed), set(present)


def _read_classes_file(scan: _Scan, path: Path) -> list[str]:
    with open_regular(scan.resolved(path), scan.name(path)) as handle:
        raw = handle.read(_MAX_CLASSES_FILE + 1)
    try:
        if len(raw) > _MAX_CLASSES_FILE:
            raise ValueError("over 1 MiB")
        text = raw.decode("utf-8-sig")  # a byte-order mark (Notepad's) is no class name
    except ValueError as exc:
        raise InvalidInput(f"{scan.name(path)}: not a UTF-8 list ({exc})", field=FIELD) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_images(
    images: Sequence[ImageFile], image_format: ImageFormat, *, max_bytes: int
) -> torch.Tensor:
    """Decode ``images`` (from :func:`scan_images`) into one uint8 tensor, reading at most
    ``max_bytes`` in all (a file may have grown since the scan). Images that do not decode
    are refused together, the first named with its reason, the others after it (one job
    each found the next: audit 30)."""
    size, rgb = image_format.size, image_format.mode == "RGB"
    out = torch.empty((len(images), *((3,) if rgb else ()), size, size), dtype=torch.uint8)
    left, pixels_left, broken = max_bytes, MAX_TOTAL_PIXELS, []
    for i, image in enumerate(images):
        with open_regular(image.path, image.name) as handle:
            data = handle.read(left + 1)
        left -= len(data)
        if left < 0:
            raise InvalidInput(
                f"{image.name}: the images are over the limit of {max_bytes / 2**20:.1f} MiB "
                "in all (HWNAS_MAX_DATA_FILE_MB)",
                field=FIELD,
            )
        pixels_left -= _pixel_count(data)
        if pixels_left < 0:
            raise InvalidInput(
                f"{image.name}: the images are over the limit of {MAX_TOTAL_PIXELS:,} pixels "
                "in all (decoding them would hold the worker for minutes): give smaller "
                "images, or fewer",
                field=FIELD,
            )
        try:
            pixels = _decode(data, image_format, image.name)
        except InvalidInput as exc:
            broken.append((image.name, exc))
            continue
        out[i] = torch.from_numpy(pixels.transpose(2, 0, 1) if rgb else pixels)
    if broken:
        (_, first), others = broken[0], [name for name, _ in broken[1:]]
        also = ""
        if others:
            shown = ", ".join(others[:_NAMED_MAX])
            more = f" and {len(others) - _NAMED_MAX} more" if len(others) > _NAMED_MAX else ""
            counted = "1 other image does" if len(others) == 1 else f"{len(others)} other images do"
            also = f"; {counted} not decode either: {shown}{more}"
        raise InvalidInput(f"{first}{also}", field=FIELD) from None
    return out


#: Most images that do not decode named in one refusal besides the first.
_NAMED_MAX = 10


def _pixel_count(data: bytes) -> int:
    """Width x height from the image's header, read without decoding; 0 where Pillow does
    not identify it (decoding it then says why)."""
    try:
        with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as image:
            return int(image.width * image.height)
    except Exception:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        return 0


def _decode(data: bytes, image_format: ImageFormat, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InvalidInput(
                    f"{name}: {image.width}x{image.height} pixels is over the limit of "
                    f"{MAX_PIXELS} pixels",
                    field=FIELD,
                )
            fitted = _fit(_eight_bit(image).convert(image_format.mode), image_format.size)
    except InvalidInput:
        raise
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "BytesIO" in reason:  # Pillow names its buffer: "cannot identify image file <...>"
            reason = "not a format Pillow identifies"
        raise InvalidInput(f"{name}: not a readable image ({reason})", field=FIELD) from None
    return np.array(fitted, dtype=np.uint8)  # a writable copy, as torch.from_numpy wants


#: Pillow's modes of 16-bit grey images (PNG, TIFF): its ``convert`` clips their values to
#: 255 (a 16-bit mid-grey became white: audit 30). Mode ``I`` (32-bit integers) is 16-bit
#: from a PGM (Pillow scales a maxval over 255 to 65535), and taken as 16-bit elsewhere (a
#: TIFF) where a value is over 255, else as 8-bit values.
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def _eight_bit(image: Image.Image) -> Image.Image:
    """``image``, a 16-bit grey one scaled to 8 bits (value / 257, rounded: 65535 -> 255)."""
    if image.mode not in _SIXTEEN_BIT and image.mode != "I":
        return image
    wide = np.asarray(image, dtype=np.float64)
    sixteen = image.mode in _SIXTEEN_BIT or image.format == "PPM"  # a dark PGM: 16-bit too
    scale = 257.0 if sixteen or wide.max(initial=0) > 255 else 1.0
    return Image.fromarray(np.clip(np.rint(wide / scale), 0, 255).astype(np.uint8), mode="L")


def image_file_stage(image_format: ImageFormat) -> dict[str, Any]:
    """How an image file of a directory became the ``size x size`` pixels ``evaluate``
    reads (``_decode``), for an export's card: its deployer prepares inputs so to get what
    was measured (an OFA card gave only the later resize: 14 % of predictions differed on
    an image directory, audit 30)."""
    size, mode = image_format.size, image_format.mode
    return {
        "decoder": "Pillow",
        "mode": mode,
        "shorter_side": size,
        "resample": "BILINEAR",
        "centre_crop": size,
        "text": (
            f"the image file decoded with Pillow (first frame; EXIF orientation not applied; "
            "transparency dropped, not composited; 16-bit grey scaled by 1/257, 32-bit "
            f"integer grey too where a value is over 255), converted "
            f"to {mode}, its shorter side resized to {size} (Image.resize, BILINEAR; the other "
            f"side {size} * long // short) unless it is {size} x {size} already, centre crop "
            f"{size} x {size} (offsets rounded down), as 0..255 values"
        ),
    }


def _fit(image: Image.Image, size: int) -> Image.Image:
    """Shorter side resized to ``size`` (sizes as in ``imagenet_preprocess``), centre crop."""
    width, height = image.size
    if (width, height) == (size, size):
        return image
    short = min(width, height)
    width, height = size * width // short, size * height // short
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    left, top = (width - size) // 2, (height - size) // 2
    return image.crop((left, top, left + size, top + size))
