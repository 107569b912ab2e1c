"""The latency measurement protocol and its statistics. Pure Python: no torch, no numpy.

``measure`` times any zero-argument callable, so the stopping rule and the statistics are
tested with a scripted fake clock, deterministically, and the runners only decide *what* one
call is.

Confidence interval of the median: distribution-free, from order statistics. The number of
samples below the true median is Binomial(n, 1/2); with its normal approximation the
interval between the order statistics of ranks ``n/2 - z*sqrt(n)/2`` and
``1 + n/2 + z*sqrt(n)/2`` (1-based, rounded to the nearest integer, clamped to the sample;
Conover, *Practical Nonparametric Statistics*) covers the median with probability
~``confidence``: checked against the exact binomial, at 95% the coverage is >= 95.0% for
every n from 6 to 400. No bootstrap, O(1) on sorted samples, and no assumption about the
latency distribution (which is skewed and often multi-modal). For n < 6 no pair of order
statistics reaches 95%; the interval is then the whole sample range.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import Literal

from .schema import MeasurementProtocol

StopReason = Literal["precision", "time_cap", "max_repeats"]

# Calibration never packs more calls than this into one sample (guards a no-op callable or a
# clock that does not advance).
MAX_CALLS_PER_SAMPLE = 1_000_000


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one measurement; every time is per call, in milliseconds.

    ``repeats`` counts timed samples, each of ``calls_per_sample`` back-to-back calls;
    ``rel_ci`` is the relative half-width of the ~95% confidence interval of the median.
    """

    median_ms: float
    iqr_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    repeats: int
    calls_per_sample: int
    rel_ci: float
    stopped_by: StopReason


def quantile(sorted_samples: Sequence[float], q: float) -> float:
    """The ``q`` quantile by linear interpolation between order statistics (numpy's default)."""
    if not sorted_samples:
        raise ValueError("samples: need at least one value")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q: must be in [0, 1], got {q}")
    position = q * (len(sorted_samples) - 1)
    below = math.floor(position)
    above = min(below + 1, len(sorted_samples) - 1)
    fraction = position - below
    return sorted_samples[below] + fraction * (sorted_samples[above] - sorted_samples[below])


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Distribution-free ``confidence`` interval ``(low, high)`` of the median of ``samples``.

    See the module docstring for the method. ``samples`` need not be sorted.
    """
    if not samples:
        raise ValueError("samples: need at least one value")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence}")
    ordered = sorted(samples)
    low_rank, high_rank = _ci_ranks(len(ordered), confidence)
    return ordered[low_rank], ordered[high_rank]


def relative_ci_half_width(sorted_samples: Sequence[float], confidence: float = 0.95) -> float:
    """Half the width of the median's confidence interval, relative to the median."""
    low_rank, high_rank = _ci_ranks(len(sorted_samples), confidence)
    median = quantile(sorted_samples, 0.5)
    half_width = (sorted_samples[high_rank] - sorted_samples[low_rank]) / 2.0
    if median <= 0.0:
        return 0.0 if half_width == 0.0 else math.inf
    return half_width / median


def summarize(
    samples: Sequence[float], *, calls_per_sample: int, stopped_by: StopReason
) -> LatencyStats:
    """Median, IQR, p10/p90, mean and median CI of per-call times (ms) in ``samples``."""
    ordered = sorted(samples)
    return LatencyStats(
        median_ms=quantile(ordered, 0.5),
        iqr_ms=quantile(ordered, 0.75) - quantile(ordered, 0.25),
        p10_ms=quantile(ordered, 0.10),
        p90_ms=quantile(ordered, 0.90),
        mean_ms=math.fsum(ordered) / len(ordered),
        repeats=len(ordered),
        calls_per_sample=calls_per_sample,
        rel_ci=relative_ci_half_width(ordered),
        stopped_by=stopped_by,
    )


def measure(
    call: Callable[[], None],
    protocol: MeasurementProtocol,
    *,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] | None = None,
) -> LatencyStats:
    """Time ``call`` following ``protocol``; ``clock`` returns seconds.

    Call order: ``protocol.warmup`` untimed calls; calibration (1, 2, 5, 10, 20, ... calls per
    sample until one sample lasts ``min_sample_ms``; these samples are discarded); then timed
    samples until the stopping rule of :class:`MeasurementProtocol` holds. At least three
    samples are always taken, even past the time cap, so that a spread exists. The time cap
    covers calibration and sampling, not the warm-up.

    ``sync`` (e.g. ``torch.cuda.synchronize``) runs after *every* call, inside the timed
    region: a timed call is then one complete request, launch to result, and consecutive calls
    never overlap on the device. Not thread-safe with respect to the device: the caller makes
    sure nothing else runs there meanwhile.
    """
    step = call if sync is None else _then(call, sync)
    for _ in range(protocol.warmup):
        step()
    started = clock()
    calls = _calibrate(step, clock, protocol.min_sample_ms / 1000.0)
    ordered: list[float] = []
    while True:
        bisect.insort(ordered, _time_calls(step, calls, clock) / calls * 1000.0)
        reason = _stop_reason(ordered, protocol, clock() - started)
        if reason is not None:
            return summarize(ordered, calls_per_sample=calls, stopped_by=reason)


def _stop_reason(
    ordered: list[float], protocol: MeasurementProtocol, elapsed_s: float
) -> StopReason | None:
    repeats = len(ordered)
    if repeats >= protocol.min_repeats and (
        relative_ci_half_width(ordered) <= protocol.target_rel_ci
    ):
        return "precision"
    if repeats >= protocol.max_repeats:
        return "max_repeats"
    if repeats >= 3 and elapsed_s >= protocol.time_cap_s:
        return "time_cap"
    return None


def _calibrate(step: Callable[[], None], clock: Callable[[], float], min_sample_s: float) -> int:
    """Smallest of 1, 2, 5, 10, 20, 50, ... calls whose sample lasts ``min_sample_s``."""
    for calls in _one_two_five():
        if calls >= MAX_CALLS_PER_SAMPLE or _time_calls(step, calls, clock) >= min_sample_s:
            return min(calls, MAX_CALLS_PER_SAMPLE)
    raise AssertionError("unreachable")  # pragma: no cover


def _time_calls(step: Callable[[], None], calls: int, clock: Callable[[], float]) -> float:
    """Seconds taken by ``calls`` back-to-back calls."""
    start = clock()
    for _ in range(calls):
        step()
    return clock() - start


def _one_two_five() -> Iterator[int]:
    decade = 1
    while True:
        for factor in (1, 2, 5):
            yield factor * decade
        decade *= 10


def _then(call: Callable[[], None], sync: Callable[[], None]) -> Callable[[], None]:
    def step() -> None:
        call()
        sync()

    return step


def _ci_ranks(n: int, confidence: float) -> tuple[int, int]:
    """0-based ranks of the order statistics bounding the median's confidence interval."""
    spread = _z(confidence) * math.sqrt(n) / 2.0
    low = math.floor(n / 2.0 - spread + 0.5)  # 1-based ranks, rounded to nearest
    high = math.floor(1.0 + n / 2.0 + spread + 0.5)
    return max(low, 1) - 1, min(high, n) - 1


@lru_cache(maxsize=8)
def _z(confidence: float) -> float:
    return NormalDist().inv_cdf((1.0 + confidence) / 2.0)
