"""What a job's spec and an evaluation's details hold beyond the request, by key: what the
run writes as it goes (the fingerprints it measured with, its anchors, its failed
measurements) and reads back on a resume or a warm start; and how its failures count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The details key naming the job a warm start copied an evaluation from.
REUSED_FROM = "reused_from"
#: The key of an evaluation's ``details`` naming the job whose measurement gave its quality
#: metrics (accuracy), taken from another device's (``workers.evaluator.KnownQuality``).
QUALITY_FROM = "quality_from"
#: The spec's key for the fingerprint of what a search job's supernet measured with (its
#: weights and validation data: ``Supernet.fingerprint``), written at the job's first run.
MEASURED_WITH = "measured_with"


#: The spec's key for the fingerprint of the code a search job's supernet measured with
#: (``Supernet.code_fingerprint``: a plugin's ``version`` or source), written beside
#: ``MEASURED_WITH`` at the job's first run; absent in jobs stored before 2026-12-07.
MEASURED_CODE = "measured_code"


def measuring_change(
    spec: Mapping[str, Any], now: str | None, codes: Sequence[str | None]
) -> str | None:
    """What differs between how the job of ``spec`` measured and a supernet whose
    fingerprints are now ``now`` (weights and data) and ``codes`` (its code's, with what an
    earlier hwnas gave for the same code: ``Supernet.code_fingerprints``): "weights or
    data", "code", or None when nothing does. A fingerprint the job did not record is not
    compared (a job of a version that did not take it, as a plugin's without
    ``quality_inputs`` or any code before 2026-12-07: unchecked, as then)."""
    recorded = spec.get(MEASURED_WITH)
    if recorded is not None and recorded != now:
        return "weights or data"
    if spec.get(MEASURED_CODE) is not None and spec[MEASURED_CODE] not in codes:
        return "code"
    return None


#: The spec's key, where keys see their own jobs only (``HWNAS_JOB_VISIBILITY=own``), for
#: the ``submitted_by`` whose earlier jobs alone a warm start reads: a team's measurements
#: and failures are not copied into another's jobs.
REUSES_OF = "reuses_of"


#: The spec's key for the anchors a search job measures first (``workers.anchors``), by
#: sub-network id, written at the job's first run so that a resumed run measures the same.
ANCHORS = "anchors"
#: The spec's key for a search job's failed measurements: ``{"subnet_id", "error",
#: "anchor", "after", "at"}`` each (``after``: the measurements the job had made then;
#: ``at``: when, in UTC, ISO 8601;
#: ``QUALITY_STEP`` where it failed in a step only a quality evaluation runs), written as
#: they fail, so that a resumed run proposes none of them again and counts them towards the
#: job's ``budget.failures``; a warm start adds those of earlier jobs on the pair first, with
#: ``reused_from`` naming the job where each failed (``prior_failures``; not counted).
FAILED = "failed"
#: A failed measurement's key (``FAILED``), true where it failed while extracting the
#: sub-network for, or evaluating it on, the validation data: a job that measures latency
#: only never runs those steps, and takes no such failure from earlier jobs.
QUALITY_STEP = "quality_step"
#: The spec's key for the sub-networks whose measurement failed in earlier jobs that a warm
#: start left for the job to measure again if its search proposes them (a failure may have
#: been the device's state then, not the sub-network's): ``{subnet_id: job}``, the job where
#: it failed. One that fails again is listed in ``FAILED`` with ``RETRIED_FROM``: that job
#: (not counted).
RETRYING = "retrying"
RETRIED_FROM = "retried_from"
#: The key ``prior_failures`` adds to each failure it finds: how many of the pair's jobs
#: (measuring alike) that measured something ended after it failed: how old the failure is,
#: in jobs.
JOBS_SINCE = "jobs_since"


def counts_as_failure(entry: Mapping[str, Any]) -> bool:
    """Whether a failed measurement the job's spec lists (``FAILED``) counts against its
    allowance: its anchors' do not, nor those that failed in earlier jobs (``REUSED_FROM``),
    nor those it measured again after they failed in one (``RETRIED_FROM``)."""
    return not (entry.get("anchor") or entry.get(REUSED_FROM) or entry.get(RETRIED_FROM))


def failures_counted(spec: Mapping[str, Any]) -> int:
    """How many of a job's recorded failed measurements count against its allowance."""
    return sum(map(counts_as_failure, spec.get(FAILED, [])))


def failures_allowed(budget: Mapping[str, Any], *, fit_needs: int = 0) -> int:
    """How many failed measurements a job goes on after (its anchors' aside): its budget's
    ``failures``, else half its ``evaluations``, at least 3; for a calibration, whose fit
    needs ``fit_needs`` measurements of its sample, never more than leaves that many."""
    given, evaluations = budget.get("failures"), int(budget["evaluations"])
    allowed = int(given) if given is not None else max(3, evaluations // 2)
    return min(allowed, max(0, evaluations - fit_needs)) if fit_needs else allowed
