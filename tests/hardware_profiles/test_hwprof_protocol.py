"""The measurement protocol on a scripted fake clock, and its statistics."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable

import numpy as np
import pytest

from hardware_profiles import MeasurementProtocol, measure, median_ci, quantile, summarize


class ScriptedClock:
    """Fake time in seconds: each ``call()`` advances it by the next scripted duration (ms)."""

    def __init__(self, durations_ms: Iterable[float]) -> None:
        self.now = 0.0
        self.calls = 0
        self._durations = iter(durations_ms)

    def __call__(self) -> float:
        return self.now

    def call(self) -> None:
        self.calls += 1
        self.now += next(self._durations) / 1000.0


def protocol(**changes: float) -> MeasurementProtocol:
    fields: dict[str, float] = {
        "warmup": 0, "min_repeats": 5, "max_repeats": 500, "target_rel_ci": 0.02,
        "time_cap_s": 10.0, "min_sample_ms": 0.2,
    }  # fmt: skip
    fields.update(changes)
    return MeasurementProtocol.model_validate(fields)


def test_constant_durations_stop_by_precision_at_min_repeats() -> None:
    clock = ScriptedClock(itertools.repeat(1.5))
    stats = measure(clock.call, protocol(warmup=3, min_repeats=7), clock=clock)
    assert stats.stopped_by == "precision"
    assert stats.repeats == 7 and stats.calls_per_sample == 1
    assert clock.calls == 3 + 1 + 7  # warm-up, one calibration sample, the samples
    assert stats.median_ms == pytest.approx(1.5)
    assert stats.iqr_ms == pytest.approx(0.0, abs=1e-9)
    assert stats.rel_ci == pytest.approx(0.0, abs=1e-9)


def test_noisy_durations_stop_by_time_cap() -> None:
    clock = ScriptedClock(itertools.cycle([1.0, 3.0]))
    stats = measure(clock.call, protocol(time_cap_s=0.1), clock=clock)
    assert stats.stopped_by == "time_cap"
    assert stats.rel_ci > 0.02
    assert 0.1 <= clock.now < 0.1 + 0.003  # stopped by the first sample past the cap
    assert stats.repeats == clock.calls - 1  # all but the calibration sample were kept


def test_noisy_durations_stop_at_max_repeats() -> None:
    clock = ScriptedClock(itertools.cycle([1.0, 3.0]))
    stats = measure(clock.call, protocol(max_repeats=12), clock=clock)
    assert (stats.stopped_by, stats.repeats) == ("max_repeats", 12)


def test_at_least_three_samples_even_past_the_time_cap() -> None:
    clock = ScriptedClock(itertools.repeat(1000.0))
    stats = measure(clock.call, protocol(time_cap_s=0.5), clock=clock)
    assert (stats.stopped_by, stats.repeats) == ("time_cap", 3)


def test_fast_calls_are_grouped_so_a_sample_beats_timer_resolution() -> None:
    clock = ScriptedClock(itertools.repeat(0.05))
    stats = measure(clock.call, protocol(min_sample_ms=0.2), clock=clock)
    assert stats.calls_per_sample == 5  # 1 and 2 calls last < 0.2 ms, 5 calls 0.25 ms
    assert clock.calls == 1 + 2 + 5 + 5 * stats.repeats
    assert stats.median_ms == pytest.approx(0.05)


def test_statistics_are_exact_on_scripted_durations() -> None:
    samples = [7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0]
    clock = ScriptedClock([100.0, *samples])  # the first call is the calibration sample
    stats = measure(clock.call, protocol(min_repeats=10, max_repeats=10), clock=clock)
    assert stats.repeats == 10
    assert stats.median_ms == pytest.approx(5.5)
    assert stats.iqr_ms == pytest.approx(7.75 - 3.25)
    assert (stats.p10_ms, stats.p90_ms) == (pytest.approx(1.9), pytest.approx(9.1))
    assert stats.mean_ms == pytest.approx(5.5)


def test_warmup_is_not_timed() -> None:
    clock = ScriptedClock(itertools.chain([500.0] * 4, itertools.repeat(2.0)))
    stats = measure(clock.call, protocol(warmup=4), clock=clock)
    assert stats.median_ms == pytest.approx(2.0) and stats.p90_ms == pytest.approx(2.0)


def test_sync_runs_after_every_call_inside_the_timed_region() -> None:
    clock = ScriptedClock(itertools.repeat(0.5))
    syncs: list[int] = []

    def sync() -> None:
        syncs.append(clock.calls)
        clock.now += 0.0005  # the device finishes its work here

    stats = measure(clock.call, protocol(warmup=2), clock=clock, sync=sync)
    assert syncs == list(range(1, clock.calls + 1))
    assert stats.median_ms == pytest.approx(1.0)


def test_summarize_matches_numpy_quantiles() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(0.0, 0.5) for _ in range(101)]
    stats = summarize(samples, calls_per_sample=1, stopped_by="precision")
    q10, q25, q50, q75, q90 = np.quantile(samples, [0.1, 0.25, 0.5, 0.75, 0.9])
    assert stats.median_ms == pytest.approx(q50)
    assert stats.iqr_ms == pytest.approx(q75 - q25)
    assert (stats.p10_ms, stats.p90_ms) == (pytest.approx(q10), pytest.approx(q90))
    assert stats.mean_ms == pytest.approx(float(np.mean(samples)))


def test_quantile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError, match="samples"):
        quantile([], 0.5)
    with pytest.raises(ValueError, match="q"):
        quantile([1.0], 1.5)


def exact_coverage(n: int, low_rank: int, high_rank: int) -> float:
    """P(x[low] <= true median <= x[high]) for 0-based ranks: Binomial(n, 1/2) counts below."""
    return sum(math.comb(n, below) for below in range(low_rank + 1, high_rank + 1)) / 2**n


@pytest.mark.parametrize("confidence", [0.8, 0.9, 0.95, 0.99])
def test_median_ci_covers_at_least_its_confidence(confidence: float) -> None:
    # Samples equal to their ranks, so the interval's ends are the ranks the method chose.
    for n in range(12, 401):
        low, high = median_ci([float(rank) for rank in range(n)], confidence)
        assert exact_coverage(n, int(low), int(high)) >= confidence, n


def test_median_ci_is_the_sample_range_for_tiny_samples() -> None:
    assert median_ci([3.0]) == (3.0, 3.0)
    assert median_ci([2.0, 9.0, 4.0, 1.0, 5.0]) == (1.0, 9.0)


def test_median_ci_brackets_the_median_and_ignores_order() -> None:
    rng = random.Random(3)
    samples = [rng.expovariate(1.0) for _ in range(200)]
    low, high = median_ci(samples)
    assert min(samples) <= low <= quantile(sorted(samples), 0.5) <= high <= max(samples)
    assert median_ci(list(reversed(samples))) == (low, high)


def test_median_ci_widens_with_confidence_and_narrows_with_samples() -> None:
    rng = random.Random(5)
    samples = [rng.gauss(10.0, 1.0) for _ in range(400)]
    narrow, wide = median_ci(samples, 0.8), median_ci(samples, 0.99)
    assert wide[0] <= narrow[0] and narrow[1] <= wide[1]
    few, many = median_ci(samples[:25]), median_ci(samples)
    assert many[1] - many[0] < few[1] - few[0]


def test_median_ci_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="samples"):
        median_ci([])
    with pytest.raises(ValueError, match="confidence"):
        median_ci([1.0, 2.0], confidence=1.0)
