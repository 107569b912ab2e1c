"""Whether a measured latency was timed on a busy device: a warm start passes such
measurements over (a search measures them again if it proposes them) and a job's message
says when some of its own were (``workers.runner``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hardware_profiles import HardwareProfile
from store import job_keys
from store.tables import Evaluation

#: A measurement whose median's 95 % interval ended wider than this many times its
#: profile's target (the time cap stopped it) was taken while something else loaded the
#: device: medians of 10-23 ms were stored for networks of 2 ms on a busy 2-core host.
NOISY_FACTOR = 5.0
#: ... as was one whose median is over this many times its fastest tenth of calls (p10):
#: steady contention slows most calls alike, so the interval can stay narrow (a user probe,
#: session 21: medians of 10.7-15.1 ms with p10 2.0-2.2 ms and rel_ci 1.6-2.4 % for networks
#: of 2 ms), while a quiet device's median is within a few tenths of its p10.
SKEW_FACTOR = 2.0


def _spread(evaluation: Evaluation) -> float | None:
    """The half-width of a measured latency median's 95 % interval, relative to it."""
    latency = _measured_latency(evaluation)
    spread = latency.get("rel_ci")
    return float(spread) if isinstance(spread, int | float) else None


def _skew(evaluation: Evaluation) -> float | None:
    """A measured latency's median over its fastest tenth of calls (p10)."""
    latency = _measured_latency(evaluation)
    median, p10 = latency.get("median_ms"), latency.get("p10_ms")
    if isinstance(median, int | float) and isinstance(p10, int | float) and p10 > 0:
        return float(median) / float(p10)
    return None


def _measured_latency(evaluation: Evaluation) -> dict[str, Any]:
    latency = evaluation.details.get("latency")
    if isinstance(latency, dict) and latency.get("provenance") == "measured":
        return latency
    return {}


def _noisy_above(profile: HardwareProfile) -> float:
    """The ``rel_ci`` over which a latency on ``profile`` was timed on a busy device."""
    return NOISY_FACTOR * profile.protocol.target_rel_ci


def _busy_signs(
    evaluation: Evaluation, profile: HardwareProfile
) -> tuple[float | None, float | None]:
    """The spread and the skew of ``evaluation``'s latency that say it was timed on a busy
    device: its median's interval over ``NOISY_FACTOR`` times the target, the median over
    ``SKEW_FACTOR`` times p10; None for a rule that did not fire."""
    spread, skew = _spread(evaluation), _skew(evaluation)
    return (
        spread if spread is not None and spread > _noisy_above(profile) else None,
        skew if skew is not None and skew > SKEW_FACTOR else None,
    )


def noisy(evaluation: Evaluation, profile: HardwareProfile) -> bool:
    """Whether ``evaluation``'s latency was timed on a busy device (``_busy_signs``)."""
    return any(sign is not None for sign in _busy_signs(evaluation, profile))


#: How the job's message and the warm start's note say what a busy-device latency is.
BUSY_RULE = (
    f"the median's 95 % interval over {NOISY_FACTOR:g} times the profile's target, or the "
    f"median over {SKEW_FACTOR:g} times the fastest tenth of the calls"
)


def noisy_latency_note(evaluations: Sequence[Evaluation], profile: HardwareProfile) -> str | None:
    """What the job's message says when some of its latencies were measured on a busy
    device (the job's own measurements: copies keep their jobs' notes)."""
    own = [e for e in evaluations if job_keys.REUSED_FROM not in e.details and _measured_latency(e)]
    busy = [signs for signs in (_busy_signs(e, profile) for e in own) if signs != (None, None)]
    if not busy:
        return None
    spreads = [spread for spread, _ in busy if spread is not None]
    skews = [skew for _, skew in busy if skew is not None]
    found = [
        *([f"up to +-{max(spreads):.0%} against a target of +-{profile.protocol.target_rel_ci:.0%}"
           ] if spreads else []),
        *([f"up to {max(skews):.1f} times p10"] if skews else []),
    ]  # fmt: skip
    return (
        f"busy device: {len(busy)} of {len(own)} latencies were measured while something "
        f"else ran on the device ({BUSY_RULE}; {', '.join(found)}: details.latency.rel_ci, "
        "p10_ms): compare those points with care, or measure again on a quiet one"
    )
