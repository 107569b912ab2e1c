"""The failure bookkeeping of a job on its own: the rules that end it, what a resumed run
counts again, and which earlier jobs' failures a warm start takes."""

from __future__ import annotations

from typing import Any

from store import jobs as q
from workers import failures
from workers.failures import Failures


def _entry(key: str, after: int | None = None, **more: Any) -> dict[str, Any]:
    entry = {"subnet_id": key, "error": "MemoryError: out", "anchor": False, **more}
    return entry if after is None else {**entry, "after": after}


def test_failures_in_a_row_end_a_job_by_default_only() -> None:
    fails = Failures(allowed=100)
    for _ in range(9):
        assert fails.ends_the_job(results=4) is None
        fails.failed()
    assert (fails.ends_the_job(results=4) or "").startswith("the last 10 measurements all failed")
    fails.measured()  # one succeeded: a new row
    assert fails.ends_the_job(results=5) is None and fails.counted == 9
    given = Failures(allowed=100, in_a_row=50, by_default=False)  # budget.failures given
    assert given.ends_the_job(results=4) is None


def test_a_resumed_run_counts_the_row_since_its_last_result() -> None:
    """Entries written after the job's last result are in the row; those before it, the
    anchors', earlier jobs', and entries written before "after" was, are not."""
    spec = {
        q.FAILED: [
            _entry("a", after=2),
            _entry("b", after=3),
            _entry("c", after=3, anchor=True),
            _entry("d", after=3, reused_from="job-0"),
            _entry("e"),  # an older version's entry
            _entry("f", after=3),
        ]
    }
    fails = Failures(allowed=100)
    keys, _ = failures.recorded(spec, fails, done=3)
    assert keys == list("abcdef")
    assert (fails.counted, fails.in_a_row, fails.from_earlier_jobs) == (4, 2, 1)


def test_a_warm_start_adds_failures_of_earlier_jobs_that_never_count() -> None:
    earlier = [_entry(k, reused_from="job-0", after=7, anchor=k == "a") for k in "ab"]
    earlier[1]["error"] = "RuntimeError: " + "x" * 400
    taken = failures.shared(earlier)
    assert [(e["subnet_id"], e["anchor"], e["reused_from"]) for e in taken] == [
        ("a", False, "job-0"),  # not this job's anchor
        ("b", False, "job-0"),
    ]
    assert not any("after" in e for e in taken)  # never in a row
    assert len(taken[1]["error"]) == failures.SHARED_ERROR_CHARS
    assert q.failures_counted({q.FAILED: taken}) == 0
    assert failures.shared_said({q.FAILED: taken}) == (
        "2 sub-networks whose measurement failed in earlier jobs not measured again "
        "(failed_evaluations; warm_start false measures them)"
    )
    assert failures.shared_said({q.FAILED: earlier[:0]}) is None
