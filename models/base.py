"""The supernet protocol every supernet in hwnas implements (built-in or plugin).

Call order for one architecture: ``canonical`` -> ``encode`` (the de-duplication key) ->
``complexity`` (cheap, no model built) -> ``extract`` (a standalone module with only the
active weights, ready for inference) -> ``evaluate`` on that module -> ``example_input`` for
latency measurement and export. Implementations must be deterministic: the same
architecture always extracts to the same weights, so a measured accuracy is reproducible
from an exported file.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import numbers
import os
import site
import stat
import sys
import sysconfig
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from core import loaded_code
from core.errors import InvalidInput, printable

Arch = dict[str, Any]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Complexity:
    """Multiply-accumulates and parameters of one sub-network at batch size 1."""

    macs: int
    params: int


@dataclass(frozen=True)
class InputSpec:
    """What an exported sub-network expects: shape (batch 1) and how to preprocess.

    ``mean`` and ``std`` hold one value per channel (``x = (pixel - mean[c]) / std[c]``), or
    one value for every channel; the layout names the scale they apply to (``RGB/255``:
    pixel values divided by 255 first). A plain float is accepted and kept as a 1-tuple, so
    plugins written when the spec held one float still work. For an ``NCHW`` layout each
    must have 1 or ``shape[1]`` values.

    ``variable_axes``: axes besides the batch (0) whose size an input may have smaller than
    ``shape`` says, such as a sequence's length; the exported ONNX file takes any size there,
    while latency and MACs are those of ``shape``. ``axis_names``: one name per axis of
    ``shape`` (``("batch", "sequence")``), which the exported ONNX file gives the variable
    ones (without them: ``batch`` and ``dim<axis>``). ``preprocess``:
    how a raw input becomes this tensor (resize, crop, scale), in words, for whoever deploys
    the file: the measured accuracy holds for inputs prepared that way.
    """

    shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    layout: str = "NCHW"
    variable_axes: tuple[int, ...] = ()
    preprocess: str = ""
    axis_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(not 0 < axis < len(self.shape) for axis in self.variable_axes):
            raise ValueError(
                f"variable_axes must name axes 1..{len(self.shape) - 1}, got {self.variable_axes}"
            )
        if isinstance(self.axis_names, str):  # "bs" would name the axes b and s
            raise ValueError(f"axis_names must be a tuple of names, got {self.axis_names!r}")
        names = tuple(self.axis_names)
        object.__setattr__(self, "axis_names", names)  # frozen: a list kept it unhashable
        if names and (
            len(names) != len(self.shape)
            or len(set(names)) != len(names)
            or not all(isinstance(n, str) and n.isidentifier() for n in names)
        ):
            raise ValueError(
                f"axis_names must give {len(self.shape)} distinct names (letters, digits, _), "
                f"one per axis of {self.shape}, got {names}"
            )
        channels = self.shape[1] if self._is_nchw() else None
        for name in ("mean", "std"):
            values = _per_channel(name, getattr(self, name), channels)
            object.__setattr__(self, name, values)  # frozen: normalised once, here
        if any(value <= 0 for value in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def _is_nchw(self) -> bool:
        return self.layout.partition(":")[0] == "NCHW" and len(self.shape) == 4


def _per_channel(
    name: str, value: float | Sequence[float], channels: int | None
) -> tuple[float, ...]:
    values = (float(value),) if isinstance(value, int | float) else tuple(map(float, value))
    if not values or (channels is not None and len(values) not in (1, channels)):
        expected = "at least 1 value" if channels is None else "1 value"
        if channels not in (None, 1):
            expected += f" or {channels} (one per channel)"
        raise ValueError(f"{name} must have {expected}, got {values}")
    return values


@dataclass(frozen=True)
class ImageFormat:
    """How a supernet takes a directory of images (see ``models.user_images``).

    Every image is converted to Pillow mode ``mode`` (``"L"``: grey, stored as (H, W);
    ``"RGB"``: stored as (3, H, W)), its shorter side resized to ``size`` and the centre
    ``size x size`` kept, as uint8 pixel values 0..255: the tensor ``evaluate`` reads.
    """

    mode: Literal["L", "RGB"]
    size: int


class Supernet(ABC):
    """A weight-sharing supernet: a search space and the means to measure its members."""

    name: ClassVar[str]
    #: Metrics ``evaluate`` returns (besides macs/params, which ``complexity`` gives).
    metrics: ClassVar[tuple[str, ...]] = ("accuracy",)
    #: True for table-backed supernets (see ``models.recorded``): nothing to extract or run.
    recorded: ClassVar[bool] = False
    #: The version of the code that gives the metrics (``evaluate``, ``extract``,
    #: ``complexity``): change it when a change of the code changes them. None (the
    #: default): a class defined outside hwnas (a plugin) is told by the text of its source
    #: files instead, so that any edit of them starts afresh (``code_fingerprint``).
    version: ClassVar[str | None] = None
    #: The files hwnas built this instance with (the configured weights file, the job's
    #: validation data), set by ``models.registry``: what ``fingerprint`` hashes when
    #: ``quality_inputs`` gives nothing.
    given_files: tuple[Path, ...] = ()
    #: The validation data file or directory hwnas built this instance with (the job's
    #: ``validation_data``, resolved), set by ``models.registry``; None for the supernet's
    #: own data. An export's card says how an image file became its input where it is a
    #: directory of images (``models.export.architecture_card``).
    given_data: Path | None = None

    @abstractmethod
    def space(self) -> dict[str, list[Any]]:
        """Gene name -> allowed choices, in a stable order."""

    @abstractmethod
    def canonical(self, arch: Arch) -> Arch:
        """The same architecture with genes that have no effect set to a fixed value."""

    @abstractmethod
    def encode(self, arch: Arch) -> str:
        """Compact, documented string for ``arch``; equal strings mean equal networks."""

    @abstractmethod
    def decode(self, encoding: str) -> Arch:
        """Inverse of ``encode`` (returns a canonical architecture)."""

    @abstractmethod
    def complexity(self, arch: Arch) -> Complexity:
        """MACs and params, computed without building the model."""

    @abstractmethod
    def extract(self, arch: Arch) -> nn.Module:
        """A standalone module holding only the active weights, in eval mode."""

    def timing_module(self, arch: Arch) -> nn.Module:
        """A module that computes what ``extract(arch)`` computes, as fast, for latency
        measurement only (calibrations, and a search's measurement whose quality metrics
        another device's job measured: ``workers.evaluator.KnownQuality``): its latency must
        be ``extract``'s, since one job's front mixes both. The default is ``extract``
        itself; a supernet whose ``extract`` does work that changes no operator or shape
        (BatchNorm recalibration: new statistics, same kernels) may skip it here."""
        return self.extract(arch)

    @abstractmethod
    def evaluate(self, arch: Arch, module: nn.Module | None = None) -> dict[str, float]:
        """Measured quality metrics (e.g. accuracy in [0, 1]) on the validation data."""

    @abstractmethod
    def input_spec(self, arch: Arch) -> InputSpec:
        """Input shape and preprocessing of the extracted sub-network."""

    def image_format(self) -> ImageFormat | None:
        """How a directory of images given as validation data becomes input tensors; None
        (the default) means the supernet reads tensor files only."""
        return None

    def num_outputs(self) -> int | None:
        """How many classes a classifier predicts (its number of outputs), known without
        building its network; None (the default): not a classifier, or unknown. A directory
        of images given as validation data is held to it at submission, from its class
        names alone (``models.registry.check_validation_data``)."""
        return None

    def output_classes(self) -> Sequence[str] | None:
        """What each output index of a classifier stands for, in order (its label names),
        where known; exports carry them in their card. None (the default): unknown."""
        return None

    def anchors(self) -> list[Arch]:
        """Sub-networks a search measures before any other (``workers.runner`` gives them to
        the strategy as ``initial``). The default, where every gene's choices are numbers:
        each gene at its smallest choice, then each at its largest (canonical, distinct). On
        once-for-all-style spaces (depths, widths, kernel sizes, resolutions) those are the
        cheapest and the costliest networks, the two ends of every accuracy/cost front,
        which neither uniform nor predictor-guided proposals tend to reach. None where some
        choice is not a number (operation names: no order to take ends of). A supernet whose
        numeric genes do not order cost (or that knows better networks to start from)
        overrides this."""
        space = self.space()
        numeric = all(
            isinstance(c, numbers.Real) and not isinstance(c, bool)
            for choices in space.values()
            for c in choices
        )
        if not space or not numeric:
            return []
        try:
            ends = [self.canonical({g: pick(cs) for g, cs in space.items()}) for pick in (min, max)]
        except InvalidInput:  # a space whose ends are no networks: no anchors, no warning
            return []
        return [ends[0]] if self.encode(ends[0]) == self.encode(ends[1]) else ends

    def example_input(self, arch: Arch, batch_size: int = 1) -> torch.Tensor:
        """A deterministic input of the right shape, for latency measurement and export."""
        shape = (batch_size, *self.input_spec(arch).shape[1:])
        generator = torch.Generator().manual_seed(0)
        return torch.randn(shape, generator=generator)

    def has_validation_data(self) -> bool:
        """Whether ``evaluate`` has data to measure quality on (the supernet's own or the
        user's). A supernet that ships none says False until it is given some, so a job
        that needs its quality metrics is refused at submission."""
        return True

    def check_data(self) -> None:
        """Raise ``InvalidInput`` (field ``validation_data``) when ``evaluate`` could not
        measure on this instance's validation data: keys, shapes, dtypes, label or value
        ranges; without running a network. A job naming a data file is checked at
        submission this way, on an instance made with ``validation_data`` alone (no
        weights), so a bad file is a 422 and not a job that fails in a worker's queue later.
        The default checks nothing."""
        return None

    def quality_inputs(self) -> Sequence[Any]:
        """What ``evaluate``'s metrics depend on besides the architecture: the weights (a
        module or a state dict) and the validation data (arrays or tensors), as loaded.
        ``fingerprint`` hashes them. Empty (the default) for a supernet whose metrics depend
        on nothing else, such as a recorded table; a plugin with weights or data should
        override it, or jobs reuse measurements made with other ones."""
        return ()

    def fingerprint(self) -> str | None:
        """A hash of the weights and data the metrics depend on, computed once per
        instance: jobs reuse each other's measurements, and a job's sub-networks are
        exported, only where theirs are equal, so a new checkpoint or a changed data file
        is not mixed with what the old ones gave (``code_fingerprint``: the code's).

        It hashes ``quality_inputs``, or where they are empty the content of the files hwnas
        built the instance with (``given_files``: a plugin that gives no ``quality_inputs``
        was matched by nothing, and an export after its weights file was replaced carried
        the old metrics: audit 29). None when there is nothing to hash (a recorded table)."""
        if "_fingerprint" not in self.__dict__:
            inputs = self.quality_inputs()
            self.__dict__["_fingerprint"] = (
                digest(inputs) if inputs else files_digest(self.given_files)
            )
        fingerprint: str | None = self.__dict__["_fingerprint"]
        return fingerprint

    def code_fingerprint(self) -> str | None:
        """What tells the code that gives the metrics (``code_version`` of the class, read
        once per class): a fixed ``evaluate`` left its buggy accuracies to the
        next job's warm start (audit 29). None for hwnas's own supernets without a
        ``version``: their jobs are matched by ``fingerprint`` alone, as before."""
        return code_version(type(self))

    def code_fingerprints(self) -> tuple[str | None, ...]:
        """``code_fingerprint`` first, then what earlier hwnas versions recorded for the
        same code (``accepted_code_versions``): a stored job that recorded any of them
        measured with this code."""
        return (self.code_fingerprint(), *earlier_code_versions(type(self)))

    def quality_warning(self) -> str | None:
        """What makes the quality metrics (accuracy) this instance measures meaningless, if
        anything: random weights, no checkpoint given. A job that measures them says it,
        and so does the card of each file it exports (the catalog alone said it: audit
        30). None (the default): nothing known."""
        return None

    def describe(self) -> dict[str, Any]:
        """Public summary: name, genes and their choices, search-space size."""
        space = self.space()
        size = 1
        for choices in space.values():
            size *= len(choices)
        return {"name": self.name, "space": space, "genes": len(space), "raw_space_size": size}


#: hwnas's own supernets: told apart by ``version`` alone.
_OWN_CODE = Path(__file__).resolve().parent


def code_version(cls: type) -> str | None:
    """What tells the code of the supernet class ``cls`` (``Supernet.version``): the
    ``version`` the nearest of the class and its bases sets (a string or a number: where
    it is anything else, such as a method or a property of that name, whose text names a
    memory address, the code is told by its source), with, where a base of another
    top-level package (or module) sets it, the text of the classes below that base and of
    ``cls``'s package (plugin audit 32: a subclass's edited metric was reused under its
    base's version), else the text of the source files of the
    plugin's code: those of the supernet classes it derives from outside hwnas and of
    every class of its own top-level package or of a module beside its own (its mixins),
    not a library's (``torch.nn.Module``: an upgrade of torch would have refused every
    export of the plugin: review 29b), then those of the plugin's other modules
    (:func:`_plugin_code`: its layers in a module of their own were not hashed: session
    30); None for hwnas's own classes without a version. Read once per class, when it is
    first asked for (``models.registry`` asks at its registration): the code loaded, not a
    file edited since (review 29b); the plugin's modules are remembered then for its child
    processes' check (``core.loaded_code``)."""
    return _code_versions(cls)[0]


def _code_versions(cls: type) -> tuple[str | None, str | None]:
    """``code_version`` of ``cls`` and the form an earlier hwnas gave it (None where the
    same), computed once per class."""
    if cls in _CODE_VERSIONS:
        return _CODE_VERSIONS[cls]
    package = cls.__module__.partition(".")[0]
    own_file = _source_of(cls)
    definer = _version_definer(cls)
    sources, beyond = [], []  # beyond: of subclasses of the class setting the version,
    # outside its plugin (not its bases: a version covers what derives from a library)
    for klass in cls.__mro__:
        source = _source_of(klass)
        if source is None or source.is_relative_to(_OWN_CODE) or source in sources:
            continue  # no text to read (compiled only, made in a notebook); hwnas's own
        own = klass.__module__.partition(".")[0] == package or (
            own_file is not None and source.parent == own_file.parent  # a sibling module
        )
        if own or issubclass(klass, Supernet):  # not a library's base (torch's Module)
            sources.append(source)
            below = definer is not None and klass is not definer and issubclass(klass, definer)
            if below and not _same_plugin(klass, definer):  # type: ignore[arg-type]
                beyond.append(source)
    code = _plugin_code(cls) if sources else {}
    loaded_code.remember_files(code)  # for the child processes' check
    earlier = None
    if definer is not None:
        found: str | None = f"version {vars(definer)['version']}"
        if beyond:  # a subclass in another package: its own code is not the version's,
            # the code of the plugin that sets it is (a single module imports its base's
            # module beside it: an edit of that base, its version kept, counted: review 32d)
            covered = {path.resolve() for path in _plugin_code(definer).values()}
            files = sorted({path.resolve() for path in code.values()} - set(beyond) - covered)
            found, earlier = f"{found}, source {files_digest([*beyond, *files])}", found
    elif not sources:
        found = None
    else:
        files = sorted({path.resolve() for path in code.values()} - set(sources))
        found = f"source {files_digest([*sources, *files])}"
        if files:  # how hwnas hashed it before session 30: its jobs stay exportable
            earlier = f"source {files_digest(sources)}"
    _CODE_VERSIONS[cls] = found, earlier
    return found, earlier


def _version_definer(cls: type) -> type | None:
    """The nearest class of ``cls``'s MRO that sets ``version``, where what it sets is a
    string or a number (anything else, such as a method or a property of that name, whose
    text names a memory address, leaves the code told by its source)."""
    for klass in cls.__mro__:
        if "version" in vars(klass):
            version = vars(klass)["version"]
            usable = isinstance(version, str | int | float) and not isinstance(version, bool)
            return klass if usable else None
    return None


def _same_plugin(one: type, other: type) -> bool:
    """Whether two classes are of one plugin: one top-level package (a single module beside
    another is a plugin of its own, deriving from it: review 32c)."""
    return one.__module__.partition(".")[0] == other.__module__.partition(".")[0]


def earlier_code_versions(cls: type) -> tuple[str, ...]:
    """What an earlier hwnas gave as ``code_version`` of ``cls``'s code as it is loaded
    now: the files of its supernet classes and mixins alone, before its other modules were
    hashed too (session 30). A job that recorded it measured with this code as far as that
    hwnas could tell: its exports and its resumed run are not refused for it."""
    earlier = _code_versions(cls)[1]
    return () if earlier is None else (earlier,)


def accepted_code_versions(cls: type) -> tuple[str | None, ...]:
    """The code fingerprints a stored job or calibration may have recorded for ``cls``'s
    code as it is loaded now: its ``code_version`` first, then ``earlier_code_versions``."""
    return (code_version(cls), *earlier_code_versions(cls))


#: hwnas's own packages: never a plugin's code (a plugin package beside them in a checkout
#: is, review 30).
_OWN_PACKAGES = tuple(
    _OWN_CODE.parent / name
    for name in ("api", "core", "hardware_profiles", "models", "search", "store", "workers")
)


def _modules_beside(root: ModuleType, root_file: Path) -> list[ModuleType]:
    """A plugin that is a module of its own (not in a package): that module and the
    modules beside it that it names (``import layers``, ``from layers import Block``),
    unless it lies among installed libraries, whose modules beside it are other
    libraries'."""
    folder = root_file.resolve().parent
    if folder in _library_folders():
        return [root]
    named = []
    for value in vars(root).values():
        module = value if isinstance(value, ModuleType) else None
        if module is None and isinstance(getattr(value, "__module__", None), str):
            module = sys.modules.get(value.__module__)
        path = None if module is None else loaded_code.source_file(module)
        if module is not None and path is not None and path.resolve().parent == folder:
            named.append(module)
    return [root, *sorted(set(named) - {root}, key=lambda module: module.__name__)]


def _plugin_root(cls: type) -> ModuleType | None:
    """The outermost regular package ``cls``'s module is in (a namespace package's other
    parts are other distributions'), or that module where it is in none; None for hwnas's
    own, or a module without a source file."""
    parts = cls.__module__.split(".")
    for end in range(1, len(parts) + 1):
        candidate = sys.modules.get(".".join(parts[:end]))
        path = None if candidate is None else loaded_code.source_file(candidate)
        if path is not None:
            return None if _is_own(path) else candidate
    return None


def _package_files(root: ModuleType) -> dict[str, Path]:
    """The Python files of the package ``root`` on disk, by module name (hidden folders and
    ``__pycache__`` aside): all of them, whichever were imported first (the modules loaded
    at registration depended on the order plugins were named in: review 30), in each folder
    of its ``__path__``, through links to folders (each real folder once)."""
    found: dict[str, Path] = {}
    walked: set[str] = set()
    for entry in getattr(root, "__path__", []):
        top = Path(entry)
        if not top.is_dir():
            continue
        for folder, folders, files in walk_through_links(top, walked):
            folders[:] = sorted(f for f in folders if not f.startswith(".") and f != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py") and not name.startswith("."):
                    path = Path(folder, name)
                    parts = path.relative_to(top).with_suffix("").parts
                    parts = parts[:-1] if parts[-1] == "__init__" else parts
                    found.setdefault(".".join((root.__name__, *parts)), path)
    return found


def walk_through_links(
    top: Path, walked: set[str] | None = None
) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(top)`` through links to folders, each real folder once (``walked``: those
    seen, shared between calls; a link back up the tree is a loop). The caller may prune
    the folders it is given, as ``os.walk``'s."""
    walked = set() if walked is None else walked
    for folder, folders, files in os.walk(top, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked:
            folders.clear()
            continue
        walked.add(real)
        yield folder, folders, files


def _is_own(path: Path) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(folder) for folder in _OWN_PACKAGES)


def _plugin_code(cls: type) -> dict[str, Path]:
    """The plugin's Python files by module name (``_package_files``, ``_modules_beside``),
    those that can be read now: one gone from disk (generated, deleted since its import) is
    left out, with a warning, not a refusal of every supernet (review 30)."""
    root = _plugin_root(cls)
    root_file = None if root is None else loaded_code.source_file(root)
    if root is None or root_file is None:
        return {}
    if hasattr(root, "__path__"):  # a package: its files, imported or not
        files = _package_files(root)
    else:
        files = {
            module.__name__: path
            for module in _modules_beside(root, root_file)
            if (path := loaded_code.source_file(module)) is not None
        }
    readable = {}
    for name, path in files.items():
        if path.is_file() and os.access(path, os.R_OK):
            readable[name] = path
        else:
            log.warning("plugin %s: %s cannot be read: its code fingerprint leaves it out",
                        cls.__name__, path)  # fmt: skip
    return readable


def _library_folders() -> set[Path]:
    """Where installed libraries live (site-packages and the standard library)."""
    paths = [*site.getsitepackages(), site.getusersitepackages()]
    paths += [sysconfig.get_paths()[key] for key in ("purelib", "platlib", "stdlib")]
    return {Path(path).resolve() for path in paths}


def _source_of(cls: type) -> Path | None:
    """The Python file that defines ``cls``, if there is one to read."""
    try:
        source = Path(inspect.getfile(cls)).resolve()
    except (TypeError, OSError):  # a built-in type (object)
        return None
    return source if source.suffix == ".py" and source.is_file() else None


#: ``code_version`` of each class asked for, as its code was then, and how hwnas hashed that
#: code before session 30 where it differs (``earlier_code_versions``).
_CODE_VERSIONS: weakref.WeakKeyDictionary[type, tuple[str | None, str | None]] = (
    weakref.WeakKeyDictionary()
)


def files_digest(paths: Sequence[Path]) -> str | None:
    """A short hash of the content of ``paths`` (a directory: every file under it, by
    relative name and content: ``_folder_digest``), in order; not of their names, so a
    file named by another path hashes alike. None for no paths."""
    if not paths:
        return None
    hasher = hashlib.blake2b(digest_size=12)
    folders: dict[str, bytes] = {}
    for path in paths:
        hasher.update(b"\0path\0")
        if path.is_dir():
            hasher.update(_folder_digest(str(path), frozenset(), folders))
        else:
            hasher.update(_file_digest(str(path)))
    return hasher.hexdigest()


def _file_digest(path: str) -> bytes:
    """A file's content, hashed; ``InvalidInput`` if it cannot be read."""
    hasher = hashlib.blake2b(digest_size=16)
    try:
        stream = open_if_regular(path)
        if stream is None:
            raise _unreadable(path, NOT_REGULAR)
        with stream:
            while chunk := stream.read(1 << 20):
                hasher.update(chunk)
    except OSError as exc:  # gone, or not readable: said as the data's problems are
        raise _unreadable(path, exc.strerror or exc) from None
    return hasher.digest()


def _unreadable(path: str, reason: object) -> InvalidInput:
    """A file or folder hashed that cannot be read, named as messages name files
    (``core.errors.printable``: review 31b)."""
    return InvalidInput(f"cannot read {printable(Path(path).name, lines=False)}: {reason}")


#: Why a file that is not a regular one is not read.
NOT_REGULAR = "not a regular file (a FIFO, socket or device, whose reader may wait for ever)"


def open_if_regular(path: str | Path, *, follow: bool = True) -> BinaryIO | None:
    """``path`` open for reading if it is a regular file as opened, else None: checked on
    the open file, not by its name beforehand (a file swapped for a FIFO after a check hung
    the worker on its read until someone wrote to it: security audit 31). ``follow``:
    through a symbolic link (False for a path resolved already: a link swapped in since
    raises ``OSError``). Other failures to open raise ``OSError``."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    handle = os.open(path, flags)  # O_NONBLOCK: a FIFO without a writer opens at once
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            os.close(handle)
            return None
        os.set_blocking(handle, True)
        return os.fdopen(handle, "rb")
    except BaseException:
        os.close(handle)
        raise


def _folder_digest(path: str, above: frozenset[str], folders: dict[str, bytes]) -> bytes:
    """A folder's files and sub-folders by name and content, through symbolic links as the
    image loader follows them (a class folder linked in from elsewhere hashed as an empty
    one: review 29), hidden ones left out as the loader leaves them (an unreadable
    ``.Trash``: review 29c); a link back up the tree is not followed again, and a folder
    reached by several links is read once (``folders``, by real path: nested links to one
    folder made the walk exponential: review 29c)."""
    real = os.path.realpath(path)
    if real in above:  # a loop
        return b"loop"
    if real in folders:
        return folders[real]
    hasher = hashlib.blake2b(digest_size=16)
    try:
        with os.scandir(path) as found:
            entries = sorted(found, key=lambda e: e.name)
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():  # follows links
                inner = _folder_digest(entry.path, above | {real}, folders)
                hasher.update(b"d" + entry.name.encode() + b"\0" + inner)
            elif entry.is_file():
                hasher.update(b"f" + entry.name.encode() + b"\0" + _file_digest(entry.path))
    except OSError as exc:  # a folder it may not read: said as the data's problems are
        raise _unreadable(path, exc.strerror or exc) from None
    folders[real] = hasher.digest()
    return folders[real]


def digest(parts: Iterable[Any]) -> str:
    """A short hash of modules (their state dicts), state dicts, tensors and arrays, by
    names, dtypes, shapes and bytes; None entries are skipped."""
    hasher = hashlib.blake2b(digest_size=12)

    def add(part: Any) -> None:
        if isinstance(part, nn.Module):
            part = part.state_dict()
        if isinstance(part, Mapping):
            for name in sorted(part):
                hasher.update(str(name).encode())
                add(part[name])
            return
        tensor = torch.as_tensor(np.asarray(part) if not torch.is_tensor(part) else part)
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())

    for part in parts:
        if part is not None:
            add(part)
    return hasher.hexdigest()
