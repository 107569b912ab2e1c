"""A search job's failed measurements: which it skips and goes on after, which end it.

A sub-network whose measurement raises (out of the device's memory, a timing process
killed) is recorded in the job's spec (``store.jobs.FAILED``), told to the strategy as failed
(never proposed again, a resumed run too) and counted against the job's ``budget.failures``
(``store.jobs.failures_allowed``); an anchor's failure is recorded without counting. The
runner (``JobRunner._skipped``) decides with :meth:`Failures.ends_the_job` and writes the
entry; a resumed run replays the spec's list with :func:`replay` (a calibration job, which
measures a fixed sample, skips them: :func:`recorded`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.base import Supernet
from search import Strategy
from store import jobs as q

from .anchors import recorded_archs

#: A job whose first this many measurements (anchors aside) all failed, none of its own
#: having succeeded, fails at the last of them: every one would. 3 ended 4 of 70 linas jobs
#: on NAS-Bench-201 devices where the costliest 30 % of the space fails, none of which
#: would have failed otherwise; 5 ended none (benchmarks/failing_space.py, BENCHMARKS.md).
FAILING_FROM_THE_START = 5
#: How much of a failed measurement's line the job's spec keeps.
ERROR_CHARS = 500


@dataclass
class Failures:
    """How many failed measurements a job goes on after, and how many have counted so far
    (anchors aside), in this run and earlier ones."""

    allowed: int
    counted: int = 0
    #: ``budget.failures`` was left to its default: the job also fails when its first
    #: ``start`` measurements all fail (a number the user gave is kept).
    from_the_start: bool = True
    start: int = FAILING_FROM_THE_START
    #: What sets ``allowed``, as messages name it.
    source: str = "budget.failures"

    @classmethod
    def of(cls, spec: dict[str, Any]) -> Failures:
        """A search job's, from its spec's budget (none counted yet)."""
        budget = spec["budget"]
        return cls(q.failures_allowed(budget), from_the_start=budget.get("failures") is None)

    @classmethod
    def of_calibration(cls, spec: dict[str, Any], needed: int) -> Failures:
        """A calibration job's: the search's default, but never so many that fewer than
        ``needed`` of its sample (what its fit needs) would be measured."""
        samples = int(spec["budget"]["evaluations"])
        allowed = q.failures_allowed({"evaluations": samples}, fit_needs=needed)
        return cls(allowed, source=f"a sample of {samples}, whose fit needs {needed}")

    def ends_the_job(self, results: int) -> str | None:
        """Why one more failed measurement (not an anchor's, nor hwnas's own error) ends
        the job, or None: past ``budget.failures``, or, by default, when the job's first
        ``start`` measurements all failed (``results``: the results it has, measured or
        reused from earlier jobs)."""
        skipped = q.counted(self.counted, "failed measurement")
        if self.counted >= self.allowed:
            return f"{skipped} skipped before it: {self.source} allows {self.allowed}"
        if self.from_the_start and results == 0 and self.counted + 1 >= self.start:
            return f"{skipped} skipped before it, and none succeeded: every measurement fails"
        return None

    def said(self) -> str:
        """The job's note once a measurement (not an anchor's) failed and was skipped."""
        return (
            f"failed measurements are skipped, at most {self.allowed} "
            f"({self.source}; failed_evaluations lists them)"
        )


def entry(key: str, said: str, anchor: bool) -> dict[str, Any]:
    """A failed measurement as the job's spec lists it (``store.jobs.FAILED``)."""
    return {"subnet_id": key, "error": said[:ERROR_CHARS], "anchor": anchor}


def anchor_said(key: str, said: str) -> str:
    """The job's note for an anchor whose measurement failed."""
    return f"anchor {key} skipped: {said}"


def recorded(spec: dict[str, Any], failures: Failures) -> tuple[list[str], list[str]]:
    """The ids of the measurements that failed in the job's earlier runs, counted (anchors
    aside) in ``failures``, and the notes they gave, to say again (a claim clears the
    job's message)."""
    failed = spec.get(q.FAILED, [])
    failures.counted = q.failures_counted(spec)
    notes = [anchor_said(e["subnet_id"], e["error"]) for e in failed if e.get("anchor")]
    return [e["subnet_id"] for e in failed], notes + ([failures.said()] if failures.counted else [])


def replay(
    supernet: Supernet, spec: dict[str, Any], strategy: Strategy, failures: Failures
) -> list[str]:
    """:func:`recorded`, the failed sub-networks told to ``strategy`` as failed too; the
    notes to say again."""
    keys, notes = recorded(spec, failures)
    for arch in recorded_archs(supernet, strategy.space, keys, "failed sub-network"):
        if not strategy.is_told(arch):
            strategy.tell_failed(arch)
    return notes
