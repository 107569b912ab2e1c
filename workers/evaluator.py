"""Measures one sub-network for real: quality on validation data, latency on this device."""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from core.errors import HwnasError, InvalidInput, PluginError
from hardware_profiles import HardwareProfile, measure_latency
from models.base import Arch, Supernet
from models.metrics import metrics_of
from models.recorded import RecordedSupernet
from store.job_keys import QUALITY_FROM

BYTES_PER_PARAM = 4  # float32 weights


@dataclass(frozen=True)
class Measurement:
    """What one evaluation produced; ``details`` carries provenance and spread."""

    metrics: dict[str, float]
    details: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class KnownQuality:
    """A sub-network's quality metrics (accuracy) as job ``job_id`` measured them on another
    device, with the same weights and validation data: they do not depend on the device, so
    a measurement takes them and times the latency alone (its evaluation on the validation
    data was most of its time)."""

    metrics: dict[str, float]
    job_id: str


class SubnetEvaluator:
    """Evaluates architectures of one supernet on one hardware profile."""

    def __init__(self, supernet: Supernet, profile: HardwareProfile, quality: bool = True) -> None:
        """``quality``: evaluate the supernet's quality metrics (accuracy) too; a job whose
        objectives and constraints name none skips them, and their validation data, and a
        calibration measures latency only."""
        self.supernet = supernet
        self.profile = profile
        self.quality = quality
        #: What this evaluator found wrong with the supernet's code, not said yet
        #: (``take_notes``): the job goes on, its message says it.
        self.notes: list[str] = []
        self._complexity_checked = False
        self._undeclared_noted = False

    def measure(self, arch: Arch, known: KnownQuality | None = None) -> Measurement:
        """Measure ``arch``: for real, or by table lookup for a recorded supernet; its
        quality metrics taken from ``known`` where that holds every one of them."""
        if isinstance(self.supernet, RecordedSupernet):
            return self._look_up(self.supernet, arch, quality=self.quality)
        return self._run(arch, self._taken(known))

    def _taken(self, known: KnownQuality | None) -> KnownQuality | None:
        names = self.supernet.metrics
        if not self.quality or known is None or not set(names) <= set(known.metrics):
            return None
        return KnownQuality({name: known.metrics[name] for name in names}, known.job_id)

    def _look_up(
        self, supernet: RecordedSupernet, arch: Arch, *, quality: bool = True
    ) -> Measurement:
        started = time.perf_counter()
        profile = self.profile
        if profile.recorded_column is None or profile.source is None:
            raise InvalidInput(f"device {profile.id!r} has no recorded latencies", field="device")
        latency = supernet.recorded_latency(arch, profile.recorded_column, profile.source)
        if profile.simulated_delay_ms:
            time.sleep(profile.simulated_delay_ms / 1000.0)  # stands in for a remote device
        metrics = {**(supernet.evaluate(arch) if quality else {}), "latency_ms": latency}
        details = {
            "latency": {
                "median_ms": latency,
                "provenance": "recorded",
                "profile_id": profile.id,
                "source": profile.source,
                "column": profile.recorded_column,
            }
        }
        return Measurement(metrics, details, time.perf_counter() - started)

    def _run(self, arch: Arch, known: KnownQuality | None) -> Measurement:
        """Extract (BatchNorm recalibrated), evaluate and time ``arch``; without quality
        metrics, or with them ``known``, time the supernet's ``timing_module`` (same
        kernels, no recalibration). An error that is not hwnas's own is noted with the step
        it came from (a plugin's shape error otherwise names only torch's frames)."""
        started = time.perf_counter()
        supernet, batch = self.supernet, self.profile.batch_size
        _check_encoding(supernet, arch)
        with _step("counting MACs and params of", supernet, arch):
            complexity = self.counted(arch)  # first: an invalid architecture fails at once
        if self.quality and known is None:
            with _step("extracting", supernet, arch, quality=True):
                # in eval mode, as it is timed and exported: one returned in training mode
                # was measured with batch statistics (and dropout), its file without
                module = supernet.extract(arch)
                module.eval()  # not its return value: a train() override may return None
            with _step("evaluating on the validation data", supernet, arch, quality=True):
                quality = supernet.evaluate(arch, module)
            quality = checked_metrics(supernet, arch, quality)
            self._note_undeclared(quality)
        else:
            with _step("extracting (timing_module)", supernet, arch):
                module = supernet.timing_module(arch)
                module.eval()
            quality = known.metrics if known is not None else {}
        if not self._complexity_checked:  # once: a forward pass of its own
            self._complexity_checked = True
            self.notes.extend(_complexity_mismatch(supernet, arch, module, complexity))
        with _step(f"timing, on example_input of batch {batch},", supernet, arch):
            example = supernet.example_input(arch, batch)
            latency = measure_latency(module, example, self.profile)
        metrics = {**quality, "latency_ms": latency.median_ms, **complexity}
        details: dict[str, Any] = {"latency": _json_ready(asdict(latency))}
        if known is not None:
            details[QUALITY_FROM] = known.job_id
        return Measurement(metrics, details, time.perf_counter() - started)

    def _note_undeclared(self, quality: dict[str, Any]) -> None:
        """Once per evaluator: metrics ``evaluate`` returned that the class does not declare
        are stored, yet no objective or constraint may name them (plugin audit 32: a user
        saw the metric in the evaluations, then was told it was unknown)."""
        if self._undeclared_noted:
            return
        undeclared = sorted(set(quality) - set(metrics_of(self.supernet)))  # hwnas's own:
        # measured here, over what evaluate() gave (review 32a)
        if not undeclared:
            return
        self._undeclared_noted = True
        self.notes.append(
            f"{self.supernet.name}: evaluate() returned {', '.join(undeclared)}, which the "
            f"class's metrics {list(self.supernet.metrics)} does not list: stored with each "
            "evaluation, but no objective or constraint may name it (list it in metrics: "
            "docs/plugins.md)"
        )

    def take_notes(self) -> list[str]:
        """The notes not taken yet (``notes``), taken."""
        taken, self.notes = self.notes, []
        return taken

    def counted(self, arch: Arch) -> dict[str, float]:
        """The metrics counted without running ``arch``: MACs, params, model size
        (``COUNTED_METRICS``)."""
        complexity = self.supernet.complexity(arch)
        return {
            "macs": float(complexity.macs),
            "params": float(complexity.params),
            "model_size_mb": complexity.params * BYTES_PER_PARAM / 1e6,
        }


#: How far the network's own count may be from ``complexity()``'s before a job says so:
#: torch's counter misses a plugin's custom operators (MACs), never a parameter.
MACS_TOLERANCE, PARAMS_TOLERANCE = 0.1, 0.0


def _complexity_mismatch(
    supernet: Supernet, arch: Arch, module: torch.nn.Module, complexity: dict[str, float]
) -> list[str]:
    """A note when ``complexity()``'s MACs or params for ``arch`` are not those of the
    network measured (``module``: its parameters, and torch's ``FlopCounterMode`` over a
    forward pass at batch 1). A plugin's complexity() 10 times off put wrong MACs, params
    and model sizes into the job's front and its constraints, without a word (audit 29);
    the registry's contract test checks this, a deployed plugin may not have run it."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        params = sum(p.numel() for p in module.parameters())
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            module(supernet.example_input(arch, 1))
        macs = counter.get_total_flops() / 2
    except Exception:  # a module this count cannot run (another device's): no check
        return []
    said = {"MACs": (complexity["macs"], macs), "params": (complexity["params"], params)}
    off = [
        f"{value:,.0f} {name} where the network measured counts {count:,.0f}"
        for (name, (value, count)), tolerance in zip(
            said.items(), (MACS_TOLERANCE, PARAMS_TOLERANCE), strict=True
        )
        if abs(value - count) > tolerance * max(count, 1.0)
    ]
    if not off:
        return []
    return [
        f"{supernet.name}: complexity() gives {' and '.join(off)} (torch's FlopCounterMode "
        f"at batch 1), for sub-network {_which(supernet, arch)}: the job's macs, params and "
        "model_size_mb, and constraints on them, may be wrong (the registry's contract test "
        "checks complexity(): docs/plugins.md)"
    ]


def checked_metrics(supernet: Supernet, arch: Arch, quality: dict[str, Any]) -> dict[str, Any]:
    """A plugin's ``evaluate`` must give the metrics its class declares, as finite real
    numbers (``accuracy`` a fraction, 0..1); a one-element tensor or a numpy scalar is
    taken as its float. A job naming a metric left out failed later, saying only that the
    objective was missing; a tensor was refused by the database and retried as an outage,
    a NaN failed the job as "points contain NaN", and a percentage was stored as it came."""
    missing = [name for name in supernet.metrics if name not in quality]
    if missing:
        raise PluginError(
            f"{supernet.name}: evaluate() returned {sorted(quality)}, but the class declares "
            f"metrics {list(supernet.metrics)}; missing: {', '.join(missing)}"
        )
    checked: dict[str, Any] = {}
    for name, value in quality.items():
        number = _real(value)
        if number is None:
            problem = f"a {type(value).__name__}, not a number (give a float)"
        elif not math.isfinite(number):
            problem = f"{number}, not a finite number"
        elif name == "accuracy" and not 0.0 <= number <= 1.0:
            problem = f"{number}: accuracy is a fraction of 0..1, not a percentage"
        else:
            checked[name] = number
            continue
        raise PluginError(
            f"{supernet.name}: evaluate() returned {name} = {problem}, for sub-network "
            f"{_which(supernet, arch)}"
        )
    return checked


def _check_encoding(supernet: Supernet, arch: Arch) -> None:
    """``encode`` is the key that keeps a sub-network from being measured twice: one that
    gave a new string each time made a job stop early, claiming the space was measured."""
    with _step("encoding", supernet, arch):
        first, second = supernet.encode(arch), supernet.encode(arch)
    if first != second:
        raise PluginError(
            f"{supernet.name}: encode() gave {first!r}, then {second!r} for the same "
            "architecture; it must be deterministic (equal strings = equal networks)"
        )


_INTEGER_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _real(value: Any) -> float | None:
    """``value`` as a float: a real number, a numpy scalar or a one-element tensor."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if (
        isinstance(value, torch.Tensor)
        and value.numel() == 1
        and (value.is_floating_point() or value.dtype in _INTEGER_DTYPES)
    ):
        return float(value.item())
    return None


def _which(supernet: Supernet, arch: Arch) -> str:
    """How a message names ``arch``: its encoding, or the dict where encoding fails."""
    try:
        return supernet.encode(arch)
    except Exception:  # the architecture itself may be what failed
        return repr(arch)


#: The attribute ``_step`` sets on an exception raised in a step only a quality evaluation
#: runs (extracting the sub-network for, and evaluating it on, the validation data).
_QUALITY_STEP = "_hwnas_quality_step"


def in_quality_step(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while extracting a sub-network for, or evaluating it on,
    the validation data: a step that a measurement of latency alone never runs
    (``store.job_keys.QUALITY_STEP``)."""
    return getattr(exc, _QUALITY_STEP, False) is True


@contextmanager
def _step(doing: str, supernet: Supernet, arch: Arch, *, quality: bool = False) -> Iterator[None]:
    """Notes on an exception raised inside the block the step and the sub-network it came
    from; ``quality``: the step is one only a quality evaluation runs (``in_quality_step``)."""
    try:
        yield
    except HwnasError:
        raise  # says what it is about already
    except Exception as exc:
        exc.add_note(f"while {doing} sub-network {_which(supernet, arch)} of {supernet.name}")
        with suppress(AttributeError):  # an exception type without attributes of its own
            setattr(exc, _QUALITY_STEP, quality)  # this step's, not an earlier raise's
        raise


def _json_ready(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v))
        for k, v in values.items()
    }
