"""What other jobs of a supernet on a device measured, read for a warm start: their
measurements (``prior_evaluations``) and their failed ones (``prior_failures``), of the
jobs that measured alike (``measuring_alike``: the same weights, data and code). Callers own
the session (see ``store.db.transaction``)."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, select, text
from sqlalchemy.orm import Session

from .job_keys import (
    FAILED,
    JOBS_SINCE,
    MEASURED_CODE,
    MEASURED_WITH,
    QUALITY_FROM,
    QUALITY_STEP,
    RETRIED_FROM,
    REUSED_FROM,
)
from .jobs import IN_LIST_MAX
from .tables import Evaluation, Job, JobKind, in_utc


def prior_evaluations(
    session: Session,
    *,
    supernet: str,
    device: str,
    validation_data: str | None,
    exclude_job: str,
    limit: int,
    measured_with: str | None = None,
    measured_code: str | None = None,
    other_devices: bool = False,
    before: datetime | None = None,
    usable: Callable[[Evaluation], bool] | None = None,
    jobs: Sequence[AlikeJob] | None = None,
    submitted_by: str | None = None,
) -> list[Evaluation]:
    """Measurements of ``supernet`` on ``device`` (accuracy on ``validation_data``) made by
    other search jobs: one per sub-network, the latest that is ``usable`` (all, by
    default) among the newest jobs that have one (read ``JOBS_A_READ`` jobs at a time,
    newest first), at most ``limit``. Copies
    (``reused``; ``details.reused_from`` names their origin) are skipped: the original is
    what counts; so are calibration jobs' measurements (latency only, a uniform sample:
    they would shadow a search's full measurement of the same sub-network and fill the
    ``limit`` with what a search cannot use).

    ``measured_with``: only jobs whose supernet measured with the same weights and data
    (``spec.measured_with``, a ``Supernet.fingerprint``), whatever path named the data
    (``./v.npz`` and ``v.npz`` alike); None matches jobs that recorded none, as a recorded
    table's do, with the same ``validation_data``; ``measured_code``: and with the same
    code (``spec.measured_code``, a ``Supernet.code_fingerprint``). ``other_devices``:
    measurements on every device but ``device`` instead (for the metrics that do not
    depend on the device);
    ``before``: only those recorded before that time; ``jobs``: those jobs, as
    ``measuring_alike`` gave them for the same arguments (read once for this and
    ``prior_failures``); ``submitted_by``: only jobs that API key submitted (``REUSES_OF``)."""
    on_device = Job.device != device if other_devices else Job.device == device
    if jobs is not None and other_devices:  # a caller's slip, not a user's
        raise ValueError("jobs= lists the jobs on the device itself (measuring_alike)")
    if jobs is None:
        jobs = list(
            _measuring_alike(
                session,
                supernet,
                on_device,
                exclude_job,
                (measured_with, measured_code),
                validation_data,
                submitted_by=submitted_by,
            )  # fmt: skip
        )
    matching = [job.id for job in jobs]
    found: dict[str, Evaluation] = {}
    if matching and session.get_bind().dialect.name == "postgresql":
        # The reads below stream (``yield_per``: a server-side cursor), and PostgreSQL plans
        # a cursor for its first tenth of rows: it walked the primary key backwards from
        # the table's end, the job ids a filter, where the (job_id, reused) index reads
        # them (an old pair at 3.7 M rows: 1.3-1.6 s so, 0.12-0.15 s planned for every
        # row; verify 33). Until this transaction ends.
        session.execute(text("SET LOCAL cursor_tuple_fraction = 1.0"))
    # A few jobs at a time, newest first, each read through the index on (job_id, reused),
    # which leaves the copies out (every warm-started job adds one of each row it reused,
    # so they outnumber the originals by the jobs run on the pair). One query over all the
    # jobs, newest row first, walked the whole table's primary key backwards from its end:
    # the longer since the pair was last used, the more rows of other pairs it passed
    # (4.6 s at 3.7 M rows; 0.36 s so: scale audit 33).
    for start in range(0, len(matching), JOBS_A_READ):
        query = (
            select(Evaluation)
            .where(
                Evaluation.job_id.in_(matching[start : start + JOBS_A_READ]),
                Evaluation.reused.is_(False),
            )
            .order_by(Evaluation.id.desc())
            .execution_options(yield_per=500)
        )
        if before is not None:
            query = query.where(Evaluation.created_at < before)
        read = session.scalars(query)
        for evaluation in read:
            if usable is None or usable(evaluation):
                found.setdefault(evaluation.subnet_id, evaluation)
                if len(found) >= limit:
                    read.close()
                    return list(found.values())
    return list(found.values())


#: How many jobs' measurements ``prior_evaluations`` reads in one query.
JOBS_A_READ = 100


class AlikeJob(NamedTuple):
    """Another job as ``measuring_alike`` gives it."""

    id: str
    spec: dict[str, Any]
    done: int  # measurements made
    finished_at: datetime | None


@dataclass
class NotAlike:
    """Measurements of other jobs of the pair that ``measuring_alike`` left out, counted in
    the same reading: a warm start says why it reused none of them."""

    #: Of jobs that recorded no fingerprint where the job has one (an earlier hwnas's:
    #: upgrade audit 31).
    unfingerprinted: int = 0
    #: Of jobs that measured with the same weights and data but other code of a plugin
    #: (its ``version`` or its source: plugin audit 32, where a script edited in the
    #: plugin's package left a job with no word of why nothing was reused).
    other_code: int = 0
    #: Of jobs that recorded a form an earlier hwnas gave the plugin's code (``earlier`` of
    #: ``measuring_alike``: the same code, as far as that hwnas could tell): exported and
    #: resumed, not reused.
    earlier_form: int = 0


def measuring_alike(
    session: Session,
    *,
    supernet: str,
    device: str,
    validation_data: str | None,
    exclude_job: str,
    measured_with: str | None = None,
    measured_code: str | None = None,
    not_alike: NotAlike | None = None,
    earlier: Collection[str | None] = (),
    submitted_by: str | None = None,
) -> list[AlikeJob]:
    """The other search jobs of ``supernet`` on ``device`` that measured as
    ``measured_with`` and ``measured_code`` say (``prior_evaluations``), newest first: what
    a warm start reads once for ``prior_evaluations`` and ``prior_failures`` (``jobs``).
    ``not_alike``: counts what was left out, where it says why; ``earlier``: the forms an
    earlier hwnas gave the plugin's code as it is now (``Supernet.code_fingerprints``);
    ``submitted_by``: only jobs that API key submitted."""
    return list(
        _measuring_alike(
            session,
            supernet,
            Job.device == device,
            exclude_job,
            (measured_with, measured_code),
            validation_data,
            (not_alike, earlier),
            submitted_by=submitted_by,
        )  # fmt: skip
    )


def _measuring_alike(
    session: Session,
    supernet: str,
    on_device: ColumnElement[bool],
    exclude_job: str,
    measured: tuple[str | None, str | None],
    validation_data: str | None,
    counted: tuple[NotAlike | None, Collection[str | None]] = (None, ()),
    *,
    submitted_by: str | None = None,
) -> Iterator[AlikeJob]:
    """(id, spec, measurements made) of the other search jobs of ``supernet`` on the
    devices ``on_device`` selects that measured as ``measured`` (the weights' and data's
    fingerprint, the code's) says (``prior_evaluations``), newest first."""
    measured_with, measured_code = measured
    jobs = (
        select(Job.id, Job.spec, Job.evaluations_done, Job.finished_at)
        .where(Job.supernet == supernet, on_device, Job.id != exclude_job)
        .where(Job.kind == JobKind.search)
        .order_by(Job.created_at.desc(), Job.id.desc())
    )
    if submitted_by is not None:
        jobs = jobs.where(Job.submitted_by == submitted_by)
    # The specs are compared here, not by the database's JSON operators: a spec may hold a
    # lone surrogate escape (a file name that is not UTF-8), which PostgreSQL's json
    # operators refuse for the whole document, and SQLite's driver refuses as a parameter.
    not_alike, earlier = counted
    for job_id, spec, done, finished_at in session.execute(jobs):
        same_data = spec.get(MEASURED_WITH) == measured_with and (
            # a fingerprint is the weights' and data's content, whatever path named the
            # data; without one (a recorded table, a plugin that gives none), the path
            measured_with is not None or spec.get("validation_data") == validation_data
        )
        code = spec.get(MEASURED_CODE)
        if same_data and code == measured_code:  # a job before codes: None, unknown code
            yield AlikeJob(job_id, spec, done, finished_at)
        elif not_alike is None:
            continue
        elif measured_with is not None and spec.get(MEASURED_WITH) is None:
            not_alike.unfingerprinted += done
        elif same_data and code is not None and measured_code is not None:
            if code in earlier:
                not_alike.earlier_form += done
            else:
                not_alike.other_code += done


#: ``prior_failures`` leaves out runs of this many failures in a row or more: a device's
#: passing state (a few minutes of another process holding its memory) more than the
#: sub-networks' (review 25b: a job whose measurements 4-8 failed, then the device worked).
#: A sub-network measured again after it failed in an earlier job (``RETRIED_FROM``) is in
#: the run too (not counted against the job's allowance, but the device failed it then),
#: though itself shared whatever run it was in: it failed in two jobs.
SHARED_RUN = 3


def prior_failures(
    session: Session,
    *,
    supernet: str,
    device: str,
    validation_data: str | None,
    exclude_job: str,
    limit: int,
    measured_with: str | None = None,
    measured_code: str | None = None,
    skip: Collection[str] = (),
    quality: bool = True,
    quality_metrics: Collection[str] = (),
    jobs: Sequence[AlikeJob] | None = None,
    submitted_by: str | None = None,
) -> list[dict[str, Any]]:
    """The sub-networks of ``supernet`` whose measurement failed on ``device`` in other
    search jobs that measured alike (``prior_evaluations``'s ``measured_with`` rule), each
    as the job that saw it fail lists it (``FAILED``) with ``REUSED_FROM``: that job, and
    ``JOBS_SINCE``: how many of those jobs, having measured something, ended after it
    failed (its ``at``; an entry written before it was recorded: when its job ended); the
    newest first, at most ``limit``, none of ``skip``. Only failures the job measured
    something after: not a run of failures that ended it or that it ended on (a device that
    broke, a plugin that fails every measurement); not a run of ``SHARED_RUN`` or more in a
    row; not its anchors' (skipped whatever they raised); not those it took from earlier
    jobs (their origin lists them, while it is kept); and none of a sub-network that one of
    those jobs measured (for a failure of a step only a quality evaluation runs,
    ``QUALITY_STEP``: a measurement holding every one of ``quality_metrics``, the supernet's,
    not taken from another device's). ``quality``: False for a job that measures latency
    only, which takes no failure of a step it never runs. ``jobs``, ``submitted_by``: as
    ``prior_evaluations``'."""
    found: dict[str, dict[str, Any]] = {}
    read: list[str] = []
    if jobs is None:
        jobs = measuring_alike(
            session, supernet=supernet, device=device, validation_data=validation_data,
            exclude_job=exclude_job, measured_with=measured_with, measured_code=measured_code,
            submitted_by=submitted_by,
        )  # fmt: skip
    ended = sorted(in_utc(j.finished_at) for j in jobs if j.done and j.finished_at)
    for job in jobs:
        read.append(job.id)
        own = [e for e in job.spec.get(FAILED, []) if not (e.get("anchor") or e.get(REUSED_FROM))]
        in_a_row = Counter(e.get("after") for e in own)  # the job's measurements then
        for entry in reversed(own):
            after = entry.get("after")  # None in entries written before it was
            if entry["subnet_id"] in skip or not isinstance(after, int) or after >= job.done:
                continue
            if not quality and entry.get(QUALITY_STEP):
                continue
            if in_a_row[after] < SHARED_RUN or entry.get(RETRIED_FROM):
                since = _jobs_ended_since(ended, _failed_at(entry, job), job)
                held = found.get(entry["subnet_id"])
                if held is None or since < held[JOBS_SINCE]:  # its newest failure
                    found[entry["subnet_id"]] = {**entry, REUSED_FROM: job.id, JOBS_SINCE: since}
        if len(found) >= IN_LIST_MAX:  # enough to choose ``limit`` from
            break
    if found:  # measured in one of those jobs since, or before: not the sub-network's fault
        measured = select(Evaluation.subnet_id, Evaluation.metrics, Evaluation.details).where(
            Evaluation.reused.is_(False), Evaluation.subnet_id.in_(list(found))
        )
        if len(read) <= IN_LIST_MAX:
            measured = measured.where(Evaluation.job_id.in_(read))
        else:  # as prior_evaluations: the jobs' filter again (a little wider: any data)
            measured = measured.join(Job, Job.id == Evaluation.job_id).where(
                Job.supernet == supernet, Job.device == device, Job.kind == JobKind.search
            )
            if submitted_by is not None:  # another team's measurement clears none of its
                measured = measured.where(Job.submitted_by == submitted_by)  # (review 34b)
        for subnet_id, metrics, details in session.execute(measured):
            entry = found.get(subnet_id)
            if entry is None:
                continue
            # a failure of the quality evaluation is cleared only by a measurement that ran
            # it: one timed alone (latency only, or accuracy taken from another device) ran
            # none of what failed
            evaluated = QUALITY_FROM not in details and set(quality_metrics) <= set(metrics)
            if evaluated or not entry.get(QUALITY_STEP):
                del found[subnet_id]
    return list(found.values())[:limit]


def _failed_at(entry: Mapping[str, Any], job: AlikeJob) -> datetime | None:
    """When a failure (``FAILED`` entry of ``job``) happened: its ``at``, else (an entry
    written before it was recorded) when its job ended; None if neither is known."""
    try:
        return in_utc(datetime.fromisoformat(entry["at"]))
    except (KeyError, TypeError, ValueError):
        return None if job.finished_at is None else in_utc(job.finished_at)


def _jobs_ended_since(ended: list[datetime], at: datetime | None, origin: AlikeJob) -> int:
    """Of the jobs that measured something, ended at ``ended`` (sorted), how many ended after
    ``at``, ``origin`` (the job where the failure was) aside; 0 when ``at`` is unknown."""
    if at is None:
        return 0
    later = len(ended) - bisect.bisect_right(ended, at)
    itself = bool(origin.done and origin.finished_at and in_utc(origin.finished_at) > at)
    return later - itself
