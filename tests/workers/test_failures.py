"""The failure bookkeeping of a job on its own: the rules that end it, what a resumed run
counts again, and which earlier jobs' failures a warm start takes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from store import job_keys
from store.tables import utcnow
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
        job_keys.FAILED: [
            _entry("a", after=2),
            _entry("b", after=3),
            _entry("c", after=3, anchor=True),
            _entry("d", after=3, reused_from="job-0"),
            _entry("e"),  # an older version's entry
            _entry("f", after=3),
            _entry("g", after=3, retried_from="job-0"),  # failed there, and again here
        ]
    }
    fails = Failures(allowed=100)
    keys, notes = failures.recorded(spec, fails, done=3)
    assert keys == list("abcdefg")
    assert (fails.counted, fails.in_a_row, fails.from_earlier_jobs, fails.failed_again) == (
        4, 2, 1, 1,
    )  # fmt: skip
    assert notes[:2] == [
        "anchor c skipped: MemoryError: out",
        "sub-network g failed again, as in job job-0 (not counted): MemoryError: out",
    ]


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
    assert job_keys.failures_counted({job_keys.FAILED: taken}) == 0
    assert failures.shared_said({job_keys.FAILED: taken}) == (
        "2 sub-networks whose measurement failed in earlier jobs not measured again "
        "(failed_evaluations; warm_start false measures them)"
    )
    assert failures.shared_said({job_keys.FAILED: earlier[:0]}) is None


def test_a_warm_start_leaves_one_in_ten_failures_to_measure_again() -> None:
    """Chosen by a hash of the job and the sub-network: the same for a job, about one in
    ``RETRY_ONE_IN`` of them, other ones for another job."""
    earlier = [_entry(f"s{i}", reused_from="job-0", after=1) for i in range(2000)]
    retry = failures.to_retry("job-1", earlier)
    assert retry == failures.to_retry("job-1", earlier)  # a warm start run again
    assert set(retry.values()) == {"job-0"}
    assert 150 <= len(retry) <= 250  # 2000 / 10, give or take 5 standard deviations
    assert len(set(retry) & set(failures.to_retry("job-2", earlier))) <= 40  # ~ 20 by chance
    assert failures.shared_said({job_keys.RETRYING: {"s1": "job-0"}}) == (
        "1 sub-network whose measurement failed in earlier jobs measured again if the search "
        "proposes it (one in 10, and those 5 or more jobs old: a failure may have been the "
        "device's state then; failing again, not counted)"
    )
    said = failures.shared_said(
        {job_keys.FAILED: failures.shared(earlier[:3]), job_keys.RETRYING: retry}
    )
    assert (said or "").startswith(
        "3 sub-networks whose measurement failed in earlier jobs not measured again "
        f"(failed_evaluations; warm_start false measures them), {len(retry)} others measured "
        "again if the search proposes them"
    )


def test_a_warm_start_leaves_every_failure_of_an_old_job_to_measure_again() -> None:
    """A failure after which ``SHARED_JOBS`` of the pair's jobs measured something
    (``store.job_keys.JOBS_SINCE``) is measured again if proposed, whatever its hash."""
    old = failures.SHARED_JOBS
    earlier = [
        _entry(f"s{i}-{since}", reused_from=f"job-{since}", after=1, **{job_keys.JOBS_SINCE: since})
        for i in range(200)
        for since in (old - 1, old, old + 3)
    ]
    retry = failures.to_retry("job-9", earlier)
    assert {e["subnet_id"] for e in earlier if e[job_keys.JOBS_SINCE] >= old} <= set(retry)
    younger = [e for e in earlier if e[job_keys.JOBS_SINCE] < old]
    assert 0 < sum(e["subnet_id"] in retry for e in younger) < len(younger) / 4  # by hash
    hashed = [e for e in younger if failures.retried("job-9", e["subnet_id"])]
    assert failures.to_retry("job-9", younger) == {
        e["subnet_id"]: e[job_keys.REUSED_FROM] for e in hashed
    }


def test_an_entry_says_where_it_failed_and_whether_it_counts() -> None:
    before = utcnow()
    plain = failures.entry("a", "MemoryError: out", False, 4)
    at = datetime.fromisoformat(plain.pop("at"))  # when: a warm start counts jobs since
    assert before <= at <= utcnow() and at.tzinfo is not None
    assert plain == {"subnet_id": "a", "error": "MemoryError: out", "anchor": False, "after": 4}
    again = failures.entry("b", "x" * 900, False, 4, quality_step=True, retried_from="job-0")
    assert again[job_keys.QUALITY_STEP] and again[job_keys.RETRIED_FROM] == "job-0"
    assert len(again["error"]) == failures.ERROR_CHARS
    assert [job_keys.counts_as_failure(e) for e in (plain, again)] == [True, False]
