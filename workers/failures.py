"""A search job's failed measurements: which it skips and goes on after, which end it.

A sub-network whose measurement raises (out of the device's memory, a timing process
killed) is recorded in the job's spec (``store.job_keys.FAILED``), told to the strategy as failed
(never proposed again, a resumed run too) and counted against the job's ``budget.failures``
(``store.job_keys.failures_allowed``); an anchor's failure is recorded without counting, as is
that of a sub-network the job measured again after it failed in an earlier job
(``RETRY_ONE_IN``, ``SHARED_JOBS``). The runner (``JobRunner._skipped``) decides with
:meth:`Failures.ends_the_job` and writes the entry; a resumed run replays the spec's list
with :func:`replay` (a calibration job, which measures a fixed sample, skips them:
:func:`recorded`). A warm start adds earlier jobs' failures first (:func:`shared`,
``workers.warm_start``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

from models.base import Supernet
from search import Strategy
from store import job_keys
from store import jobs as q
from store.tables import utcnow

from .anchors import recorded_archs

#: A job whose first this many measurements (anchors aside) all failed, none of its own
#: having succeeded, fails at the last of them: every one would. 3 ended 4 of 70 linas jobs
#: on NAS-Bench-201 devices where the costliest 30 % of the space fails, none of which
#: would have failed otherwise; 5 ended none (benchmarks/failing_space.py, BENCHMARKS.md).
FAILING_FROM_THE_START = 5
#: A job whose last this many measurements (anchors aside) all failed fails at the last of
#: them, whatever it measured before: the device or the plugin broke since (a warm-started
#: job has results from the start, and would otherwise spend half its budget on failures).
#: On NAS-Bench-201 devices where a third of the space fails, no job saw more than 8 in a
#: row after a result; where half fails, 12 (benchmarks/failing_space.py, BENCHMARKS.md).
FAILING_IN_A_ROW = 10
#: How much of a failed measurement's line the job's spec keeps.
ERROR_CHARS = 500
#: Most failures of earlier jobs a warm start adds to a job's spec (the newest), and how much
#: of each one's line it keeps: the spec is read with every view of the job (its
#: ``failed_evaluations``) and written again with each of its own failures.
SHARED_MAX = 50
SHARED_ERROR_CHARS = 200
#: Of the failures a warm start finds in earlier jobs, it leaves one in this many out of the
#: job's spec, for the job to measure again if its search proposes them
#: (``store.job_keys.RETRYING``): a failure may have been the device's state then, not the
#: sub-network's, and one never measured again would be shared for good. One that fails
#: again costs the job a measurement's time, not its allowance (``store.job_keys.RETRIED_FROM``).
RETRY_ONE_IN = 10
#: A failure found in an earlier job after which this many of the pair's jobs that measured
#: something ended is left for the job to measure again too (``RETRYING``), not taken: the
#: device's passing state (another process holding its memory) is not the sub-network's,
#: and a failure the search never proposes again is never re-tried by ``RETRY_ONE_IN``. A
#: lasting one fails again (not counted) and is shared from that job, for as many jobs more.
SHARED_JOBS = 5


@dataclass
class Failures:
    """How many failed measurements a job goes on after, and how many have counted so far
    (anchors aside), in this run and earlier ones."""

    allowed: int
    counted: int = 0
    #: Of ``counted``, those since the job's last measurement that succeeded (or its start).
    in_a_row: int = 0
    #: ``budget.failures`` was left to its default: the job also fails when its first
    #: ``start`` measurements, or its last ``row``, all fail (a number the user gave is
    #: kept as the only rule).
    by_default: bool = True
    start: int = FAILING_FROM_THE_START
    row: int = FAILING_IN_A_ROW
    #: Failures of earlier jobs that a warm start took (not counted, never in a row).
    from_earlier_jobs: int = 0
    #: Sub-networks measured again after they failed in an earlier job (``RETRY_ONE_IN``)
    #: that failed again (not counted, never in a row).
    failed_again: int = 0
    #: What sets ``allowed``, as messages name it.
    source: str = "budget.failures"

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Failures:
        """A search job's, from its spec's budget (none counted yet)."""
        budget = spec["budget"]
        return cls(job_keys.failures_allowed(budget), by_default=budget.get("failures") is None)

    @classmethod
    def of_calibration(cls, spec: dict[str, Any], needed: int) -> Failures:
        """A calibration job's: the search's default, but never so many that fewer than
        ``needed`` of its sample (what its fit needs) would be measured."""
        samples = int(spec["budget"]["evaluations"])
        allowed = job_keys.failures_allowed({"evaluations": samples}, fit_needs=needed)
        return cls(allowed, source=f"a sample of {samples}, whose fit needs {needed}")

    def ends_the_job(self, results: int) -> str | None:
        """Why one more failed measurement (not an anchor's, nor hwnas's own error) ends
        the job, or None: past ``budget.failures``, or, by default, when the job's first
        ``start`` measurements all failed (``results``: the results it has, measured or
        reused from earlier jobs) or its last ``row`` did."""
        skipped = q.counted(self.counted, "failed measurement")
        if self.counted >= self.allowed:
            return f"{skipped} skipped before it: {self.source} allows {self.allowed}"
        if not self.by_default:
            return None
        if results == 0 and self.counted + 1 >= self.start:
            return f"{skipped} skipped before it, and none succeeded: every measurement fails"
        if self.in_a_row + 1 >= self.row:
            return (
                f"the last {self.row} measurements all failed, {self.counted + 1} in all: "
                "the device or the plugin broke since its last result"
            )
        return None

    def failed(self) -> None:
        """One more measurement (not an anchor's) failed and was skipped."""
        self.counted += 1
        self.in_a_row += 1

    def measured(self) -> None:
        """A measurement succeeded: failures in a row start again from none."""
        self.in_a_row = 0

    def said(self) -> str:
        """The job's note once a measurement (not an anchor's) failed and was skipped."""
        return (
            f"failed measurements are skipped, at most {self.allowed} "
            f"({self.source}; failed_evaluations lists them)"
        )


def entry(
    key: str,
    said: str,
    anchor: bool,
    done: int,
    *,
    quality_step: bool = False,
    retried_from: str | None = None,
) -> dict[str, Any]:
    """A failed measurement as the job's spec lists it (``store.job_keys.FAILED``), with the
    measurements the job had made then (``after``: a resumed run counts the failures in a
    row from it, and a warm start shares only the failures a job measured something after:
    ``store.prior.prior_failures``) and when (``at``: a warm start counts the jobs that
    ended since, ``SHARED_JOBS``); ``quality_step``: it failed in a step only a quality
    evaluation runs; ``retried_from``: the earlier job where it failed before."""
    listed = {
        "subnet_id": key,
        "error": said[:ERROR_CHARS],
        "anchor": anchor,
        "after": done,
        "at": utcnow().isoformat(),
    }
    if quality_step:
        listed[job_keys.QUALITY_STEP] = True
    if retried_from:
        listed[job_keys.RETRIED_FROM] = retried_from
    return listed


def anchor_said(key: str, said: str) -> str:
    """The job's note for an anchor whose measurement failed."""
    return f"anchor {key} skipped: {said}"


def retried_said(key: str, origin: str, said: str) -> str:
    """The job's note for a sub-network measured again after it failed in job ``origin``
    (``RETRY_ONE_IN``) that failed again."""
    return f"sub-network {key} failed again, as in job {origin} (not counted): {said}"


def retried(job_id: str, subnet_id: str) -> bool:
    """Whether a warm start of job ``job_id`` leaves the failure of ``subnet_id`` in an
    earlier job for it to measure again: one in ``RETRY_ONE_IN``, by a hash of the two (a
    warm start run again chooses the same; another job, others)."""
    return zlib.crc32(f"{job_id}/{subnet_id}".encode()) % RETRY_ONE_IN == 0


def to_retry(job_id: str, earlier: list[dict[str, Any]]) -> dict[str, str]:
    """Of the failures of earlier jobs a warm start found (``store.prior.prior_failures``),
    those job ``job_id`` may measure again (``retried``, or ``SHARED_JOBS`` old), as
    ``store.job_keys.RETRYING`` lists them: the job where each failed, by sub-network id."""
    return {
        e["subnet_id"]: e[job_keys.REUSED_FROM]
        for e in earlier
        if e.get(job_keys.JOBS_SINCE, 0) >= SHARED_JOBS or retried(job_id, e["subnet_id"])
    }


def recorded(spec: dict[str, Any], failures: Failures, done: int) -> tuple[list[str], list[str]]:
    """The ids of the measurements that failed in the job's earlier runs, counted (anchors
    and earlier jobs' aside) in ``failures`` (those after its last measurement, ``done``
    being how many it made, as in a row; the earlier jobs' in ``from_earlier_jobs``), and the notes
    they gave, to say again (a claim clears the job's message)."""
    failed = spec.get(job_keys.FAILED, [])
    failures.counted = job_keys.failures_counted(spec)
    failures.in_a_row = sum(
        job_keys.counts_as_failure(e) and e.get("after") == done for e in failed
    )
    failures.from_earlier_jobs = taken_from_earlier_jobs(spec)
    failures.failed_again = sum(bool(e.get(job_keys.RETRIED_FROM)) for e in failed)
    notes = [
        anchor_said(e["subnet_id"], e["error"]) if e.get("anchor")
        else retried_said(e["subnet_id"], e[job_keys.RETRIED_FROM], e["error"])
        for e in failed if e.get("anchor") or e.get(job_keys.RETRIED_FROM)
    ]  # fmt: skip
    return [e["subnet_id"] for e in failed], notes + ([failures.said()] if failures.counted else [])


def shared(earlier: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The failures of earlier jobs on the pair (``store.prior.prior_failures``) as a warm
    start adds them to the job's spec: not anchors of this job, not counted, never in a
    row (no ``after``)."""
    return [
        {"subnet_id": e["subnet_id"], "error": e["error"][:SHARED_ERROR_CHARS],
         "anchor": False, job_keys.REUSED_FROM: e[job_keys.REUSED_FROM]}
        for e in earlier
    ]  # fmt: skip


def taken_from_earlier_jobs(spec: dict[str, Any]) -> int:
    """How many of the failures the job's spec lists a warm start took from earlier jobs
    (:func:`shared`)."""
    return sum(bool(e.get(job_keys.REUSED_FROM)) for e in spec.get(job_keys.FAILED, []))


def shared_said(spec: dict[str, Any]) -> str | None:
    """The warm start's words on the failures it took from earlier jobs, and on those it
    left for the job to measure again, if any."""
    n, retrying = taken_from_earlier_jobs(spec), len(spec.get(job_keys.RETRYING, {}))
    failed = "whose measurement failed in earlier jobs"
    said = []
    if n:
        said.append(
            f"{q.counted(n, 'sub-network')} {failed} not measured again "
            "(failed_evaluations; warm_start false measures them)"
        )
    if retrying:
        others = (
            q.counted(retrying, "other") if n else f"{q.counted(retrying, 'sub-network')} {failed}"
        )
        said.append(
            f"{others} measured again if the search proposes {'it' if retrying == 1 else 'them'} "
            f"(one in {RETRY_ONE_IN}, and those {SHARED_JOBS} or more jobs old: a failure "
            "may have been the device's state then; failing again, not counted)"
        )
    return ", ".join(said) or None


def replay(
    supernet: Supernet, spec: dict[str, Any], strategy: Strategy, failures: Failures, done: int
) -> list[str]:
    """:func:`recorded`, the failed sub-networks told to ``strategy`` as failed too; the
    notes to say again."""
    keys, notes = recorded(spec, failures, done)
    for arch in recorded_archs(supernet, strategy.space, keys, "failed sub-network"):
        if not strategy.is_told(arch):
            strategy.tell_failed(arch)
    return notes
