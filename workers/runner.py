"""The job runner: turns a stored job into an ask/tell search loop over real measurements
(or, for a calibration job, the measurements of a uniform sample and the predictor's fit).

The same ``JobRunner.run`` is called by the embedded executor and by the Celery task. Every
evaluation is committed as it completes and a fresh strategy is rebuilt from the stored
evaluations on each (re)start, so a crash costs at most the evaluation in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import Connection, update
from sqlalchemy.orm import Session, sessionmaker

from core.errors import Conflict, HwnasError, InvalidInput, StorageError, first_line
from core.settings import Settings
from hardware_profiles.configured import device_profile
from hardware_profiles.latency_predictor import (
    MIN_MEASUREMENTS,
    PRIOR_MIN_SPEARMAN,
    PRIOR_MIN_WITHIN_10PCT,
)
from hardware_profiles.latency_sample import sample_archs
from models.base import Supernet
from models.metrics import COUNTED_METRICS, device_independent
from models.registry import get_supernet
from search import Bound, SearchSpace, create_strategy, is_feasible, strategy_class
from search.base import ENUMERATION_LIMIT, REJECTION_TRIES
from search.space import Arch
from store import evaluations as eq
from store import job_keys
from store import jobs as q
from store import prior as pq
from store.db import one_statement_writing, transaction
from store.front import constraints_of, front_of_metrics, summarise_front
from store.tables import Evaluation, Job, JobKind, JobStatus, storable_text

from . import failures
from .anchors import ANCHORS_SAID, job_anchors, out_of_reach, recorded_archs
from .busy_device import BUSY_RULE, noisy_latency_note
from .calibration import (
    PredictedLatency,
    fit_predictor,
    latency_predictor_for,
    save_predictor,
    summary,
)
from .evaluator import KnownQuality, Measurement, SubnetEvaluator, in_quality_step
from .failures import Failures
from .job_errors import job_error
from .warm_start import WarmStart, copy_earlier, earlier_measurements

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class JobPlan:
    """Everything the loop needs, built from a job's stored spec."""

    budget: int
    objectives: dict[str, str]
    constraints: dict[str, Bound]
    evaluator: SubnetEvaluator
    strategy: Any
    # The metrics of the job's stored evaluations, in order: the runner holding the lease is
    # their only writer, so progress is computed from this list, not read back each time.
    metrics: list[dict[str, float]] = field(default_factory=list)
    # Quality metrics other devices' jobs measured, by sub-network (``_from_other_devices``).
    known: dict[str, KnownQuality] = field(default_factory=dict)
    # Failed measurements the search goes on after (``store.job_keys.failures_allowed``), and
    # how many failed so far (anchors aside), this run and earlier ones.
    failures: Failures = field(default_factory=lambda: Failures(0))


def build_plan(
    spec: dict[str, Any],
    reused: int = 0,
    latency_prior: PredictedLatency | None = None,
    supernet: Supernet | None = None,
    known: dict[str, KnownQuality] | None = None,
) -> JobPlan:
    """The plan of a job; ``reused``: evaluations copied from earlier jobs, which the
    strategy is told on top of the ``budget`` it may measure; ``latency_prior``: a stored
    latency predictor of the pair, given to strategies that take a prior; ``supernet``: the
    job's (``job_supernet``), where the caller has it already; ``known``: the quality
    metrics other devices' jobs measured (``JobRunner._from_other_devices``), which screen
    the anchors too."""
    supernet = supernet or job_supernet(spec)
    profile = device_profile(spec["device"])
    constraints = constraints_of(spec)
    space = job_space(supernet)
    budget = spec["budget"]["evaluations"]
    evaluator = SubnetEvaluator(supernet, profile, quality=measures_quality(spec, supernet))
    known = dict(known or {})
    options: dict[str, Any] = {}
    if latency_prior is not None and strategy_class(spec["strategy"]).accepts_prior:
        options["prior"] = {"latency_ms": latency_prior}
    if job_keys.ANCHORS in spec:  # chosen at the job's first run: a resumed run keeps them
        anchors = recorded_archs(supernet, space, spec[job_keys.ANCHORS])
    else:
        quality = {key: value.metrics for key, value in known.items()}
        anchors = job_anchors(
            supernet, space, evaluator.counted, constraints, budget, latency_prior, quality
        )
    strategy = create_strategy(
        spec["strategy"],
        space=space,
        objectives=spec["objectives"],
        constraints=constraints,
        seed=spec["seed"],
        budget=budget + reused,
        initial=anchors,
        **options,
    )
    if not supernet.recorded and COUNTED_METRICS & set(constraints):
        strategy.screen_with(partial(_counted_or_nothing, evaluator))  # a bound they break
    return JobPlan(
        budget, spec["objectives"], constraints, evaluator, strategy, known=known,
        failures=Failures.of(spec),
    )  # fmt: skip


def _counted_or_nothing(evaluator: SubnetEvaluator, arch: Arch) -> dict[str, float]:
    """What the screen knows of ``arch`` for free (``SubnetEvaluator.counted``); nothing
    where counting raises (a plugin's ``complexity()``): the proposal is measured, and
    fails there as a measurement, counted against ``budget.failures`` (review 33b: the
    screen's exception failed the whole job)."""
    try:
        return evaluator.counted(arch)
    except Exception:
        return {}


def job_space(supernet: Supernet) -> SearchSpace:
    """The search space of a supernet's jobs: its genes, keyed by its canonical encoding."""
    return SearchSpace(supernet.space(), canonical=supernet.canonical, encode=supernet.encode)


def measures_quality(spec: dict[str, Any], supernet: Supernet) -> bool:
    """Whether a search job's objectives or constraints name a quality metric of its
    supernet (accuracy): its measurements evaluate each sub-network then."""
    named = set(spec["objectives"]) | set(constraints_of(spec))
    return bool(named & set(supernet.metrics))


def job_supernet(spec: dict[str, Any]) -> Supernet:
    """The supernet a search job measures with (bound to its validation data, if any)."""
    return get_supernet(spec["supernet"], validation_data=spec.get("validation_data"))


def _described(spec: dict[str, Any]) -> str:
    """A job's spec in a few words, for the log."""
    budget = spec.get("budget", {}).get("evaluations")
    what = f"{spec.get('supernet')} on {spec.get('device')}"
    if spec.get("kind") == JobKind.calibration.value:
        return f"{what}, calibration of {budget} samples"
    return f"{what}, {spec.get('strategy')} search, budget {budget}"


class _RunClock:
    """Wall time of one run of a job, booked into its ``run_seconds`` as the run goes (each
    heartbeat adds what passed since the last booking, so a running job's time grows and a
    killed run loses at most one heartbeat's worth) and, for the rest, in the transaction
    that ends the run, so a reader never sees a finished job whose timing lacks it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # one booking at a time: the heartbeat thread books too
        self._booked_until = time.perf_counter()
        self.booked = False  # the run's end (and the rest of its time) is committed

    def book(self, write: Callable[[float], bool]) -> None:
        """Book the seconds since the last booking with ``write(seconds)``, which returns
        True once they are committed; if it returns False or raises, they stay unbooked."""
        with self._lock:
            now = time.perf_counter()
            if write(now - self._booked_until):
                self._booked_until = now


class StopSignal(Protocol):
    """Set when the worker is shutting down (``threading.Event`` in the embedded mode;
    ``workers.celery_app`` gives one that reads Celery's shutdown state)."""

    def is_set(self) -> bool: ...


SHUTDOWN_REQUEUED = "interrupted by a worker shutdown; resumes when a worker takes it again"


class JobRunner:
    """Runs jobs for one worker identity. Thread-safe: each ``run`` uses its own sessions.

    Database steps are retried for ``settings.db_retry_s`` (the database may restart under a
    running job). Past that, a database that cannot be reached makes the run stop and hand
    its job back once it answers (uncounted); one that refuses what the run writes leaves the
    job to the reaper, which counts the attempt (and fails the job after ``max_attempts``).
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        worker_id: str,
        stop: StopSignal | None = None,
    ) -> None:
        self.factory = factory
        self.settings = settings
        self.worker_id = worker_id
        self.stop = stop or threading.Event()
        #: The job this thread runs (``run``), named by the log's lines about the database.
        self._running = threading.local()

    def _db(
        self,
        step: Callable[[Any], T],
        opener: Callable[[sessionmaker[Session]], AbstractContextManager[Any]] = transaction,
    ) -> T:
        """Run ``step`` in one transaction (or what ``opener`` opens), retrying while the
        database is unreachable (``StorageError.unreachable``); one that refuses what is
        written (a value it cannot store, a constraint) is not asked again: it would refuse
        it again."""
        deadline = time.monotonic() + self.settings.db_retry_s
        delay = 0.2
        while True:
            try:
                with opener(self.factory) as session:
                    return step(session)
            except StorageError as exc:
                if not exc.unreachable or time.monotonic() > deadline:
                    raise
                job = getattr(self._running, "job_id", None)
                log.warning(
                    "%sdatabase unavailable (%s); retrying in %.1f s",
                    f"job {job}: " if job else "",  # which job waits (ops audit 29)
                    exc,
                    delay,
                )
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def run(self, job_id: str, *, takeover_from: str | None = None) -> JobStatus | None:
        """Run (or resume) ``job_id``; returns its final status, ``queued`` if a shutdown
        interrupted it (it resumes from storage), None if it was not ours to run.
        ``takeover_from``: a worker known to be gone, whose lease on the job is taken even
        if its heartbeat is fresh (``store.jobs.claim_job``)."""

        def claim(session: Session) -> dict[str, Any] | None:
            job = q.claim_job(
                session,
                job_id,
                self.worker_id,
                stale_after_s=self.settings.stale_after_s,
                takeover_from=takeover_from,
            )
            return None if job is None else dict(job.spec)

        self._running.job_id = job_id
        spec = self._db(claim)
        if spec is None:  # a message delivered again, or a reaper's that raced the first
            try:  # once, not retried: a log line's (review 32b)
                with transaction(self.factory) as session:
                    why = _not_ours(session, job_id)
            except HwnasError as exc:
                why = f"its state could not be read ({exc})"
            log.info("job %s: not run here: %s", job_id, why)  # (chaos drill 32: silent)
            return None
        # Named in the log at both ends: an operator asked about a job greps for its id (the
        # Celery worker's own lines name only its task id; operator probe, session 22).
        log.info("job %s: running %s", job_id, _described(spec))
        started = time.perf_counter()
        try:
            status = self._run_claimed(job_id, spec)
        except BaseException as exc:  # not even its failure could be written (the reaper
            log.info(  # counts the attempt), or the process is ending
                "job %s: its run ended by %s after %.1f s",
                job_id,
                type(exc).__name__,
                time.perf_counter() - started,
            )
            raise
        ended = (
            "no longer ours (its lease was lost)"
            if status is None
            else "back in the queue (a shutdown or a database outage)"
            if status is JobStatus.queued
            else status.value
        )
        log.info(
            "job %s: %s after %.1f s of this run", job_id, ended, time.perf_counter() - started
        )
        return status

    def _run_claimed(self, job_id: str, spec: dict[str, Any]) -> JobStatus | None:
        clock = _RunClock()
        try:
            return self._loop(job_id, spec, clock)
        except Exception as exc:  # the job fails visibly; the worker lives on
            if isinstance(exc, StorageError) and exc.unreachable:  # past db_retry_s
                return self._hand_back_after_outage(job_id, clock, exc)
            # A database that refuses what the run writes fails it too, with its reason (a
            # plugin's metric it cannot store was retried as an outage, then said "its
            # worker kept dying"); if the failure cannot be written either, the error
            # propagates and the reaper counts the attempt.
            log.exception("job %s failed", job_id)
            reason, said = job_error(exc)

            def fail(session: Session) -> JobStatus | None:
                lease = _lease(session, job_id, self.worker_id, lock=True)
                if lease == "lost":
                    return None  # another worker runs it now: not this run's to end
                if lease == "cancel":  # the user asked to stop: that is how it ends
                    q.finish_job(
                        session,
                        job_id,
                        JobStatus.cancelled,
                        error=reason,
                        message="cancelled (its run had failed meanwhile; see error)",
                    )
                    return JobStatus.cancelled
                if self.stop.is_set():  # failed while shutting down: it may be the shutdown
                    message = f"{SHUTDOWN_REQUEUED} (its run had raised: {said})"
                    q.requeue(q.get_job(session, job_id), message, handed_back=True)
                    return JobStatus.queued
                q.finish_job(
                    session,
                    job_id,
                    JobStatus.failed,
                    error=reason,
                    message=f"failed: {said}",
                )
                return JobStatus.failed

            return self._end(job_id, clock, fail)
        finally:
            if not clock.booked:  # lease lost, or the database gone: book what ran
                self._end(job_id, clock, lambda session: None)

    def _end(self, job_id: str, clock: _RunClock, step: Callable[[Session], T]) -> T:
        """Run the step that ends this run of the job, booking the rest of the run's wall
        time in the same transaction."""
        ended: list[T] = []

        def write(seconds: float) -> bool:
            def ending(session: Session) -> T:
                result = step(session)
                _add_run_seconds(session, job_id, seconds)
                return result

            ended.append(self._db(ending))
            return True

        clock.book(write)
        clock.booked = True
        return ended[0]

    @contextmanager
    def _heartbeat(self, job_id: str, clock: _RunClock) -> Iterator[None]:
        """Keep the lease fresh from a side thread, also while an evaluation runs.

        Only a dead process stops heartbeating, so ``stale_after_s`` can stay short without
        a slow evaluation (a loaded machine, a big sub-network) losing its job to the reaper.
        """
        done = threading.Event()

        def beat() -> None:
            while not done.wait(self.settings.heartbeat_s):
                clock.book(lambda seconds: self._beat(job_id, seconds))

        thread = threading.Thread(target=beat, name=f"heartbeat-{job_id[:8]}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _beat(self, job_id: str, seconds: float) -> bool:
        """One heartbeat, booking ``seconds`` of run time; False if nothing was written (the
        job is not this run's any more, or the database failed: the run's end books them)."""
        try:
            with transaction(self.factory) as session:
                return q.heartbeat(session, job_id, self.worker_id, seconds)
        except HwnasError as exc:  # the loop's own checks decide what to do
            log.warning("job %s: heartbeat failed: %s", job_id, exc)
            return False

    def _loop(self, job_id: str, spec: dict[str, Any], clock: _RunClock) -> JobStatus | None:
        bodies = {JobKind.search: self._search, JobKind.calibration: self._calibrate}
        body = bodies[JobKind(spec.get("kind", JobKind.search))]
        with self._heartbeat(job_id, clock):
            return body(job_id, spec, clock)

    def _search(self, job_id: str, spec: dict[str, Any], clock: _RunClock) -> JobStatus | None:
        supernet = job_supernet(spec)  # once: with user data, a look-up stats its files
        spec = self._measured_with(job_id, spec, supernet)
        if measures_quality(spec, supernet) and (warning := supernet.quality_warning()):
            self._note(job_id, f"{spec['supernet']}: {warning}")  # the catalog alone said it
        stored = self._db(lambda s: eq.list_evaluations(s, job_id)[0])
        warm = spec.get("warm_start", True) and self.settings.warm_start_max > 0
        passed_over, not_alike = 0, pq.NotAlike()
        if not stored and warm:
            started = self._warm_start(job_id, spec, supernet)
            stored, passed_over, spec = started.stored, started.passed_over, started.spec
            not_alike = started.not_alike
        reused = sum(e.reused for e in stored)
        if reused or passed_over:  # said again by a resumed run: a claim clears the message
            name, device = spec["supernet"], spec["device"]
            earlier = q.counted(reused, "earlier measurement")
            said = f"warm start: {earlier} of {name} on {device} reused"
            if passed_over:  # the first run only: a resumed one copies nothing
                others = q.counted(passed_over, "other" if reused else "earlier measurement")
                said += (
                    f", {others} not, their latency timed on a busy device ({BUSY_RULE}): "
                    "measured again if the search proposes them"
                )
            self._note(job_id, said)
        if said_failed := failures.shared_said(spec):  # as above
            self._note(job_id, f"warm start: {said_failed}")
        name = spec["supernet"]  # measurements the warm start left out, and why
        for left_out, why in (  # the first run only, as the busy device's
            (not_alike.unfingerprinted, "an earlier hwnas began, which recorded no "
             "fingerprint of their weights and data, not reused"),
            (not_alike.other_code, f"that measured with other code of {name} not reused (an "
             "edit of any file of its package, or another version: docs/plugins.md)"),
            (not_alike.earlier_form, f"that recorded the code of {name} as an earlier hwnas "
             "told it not reused (they are exported and resumed: docs/plugins.md version)"),
        ):  # fmt: skip
            if left_out:
                measurements = q.counted(left_out, "measurement")
                self._note(job_id, f"warm start: {measurements} of jobs {why}")
        prior = self._latency_prior(job_id, spec)
        if job_keys.ANCHORS not in spec and len(stored) > reused:  # begun without recorded anchors
            spec = {**spec, job_keys.ANCHORS: []}
        measured, known = self._from_other_devices(job_id, spec, supernet) if warm else ([], {})
        plan = build_plan(spec, reused, prior, supernet, known)
        if job_keys.ANCHORS not in spec:  # by id: a resumed run takes them from there, whatever
            # predictor or plugin code would choose then
            anchors = [plan.strategy.space.key(arch) for arch in plan.strategy.initial_left]
            self._record_in_spec(job_id, job_keys.ANCHORS, anchors)
        if measured and plan.strategy.uses_hints:
            self._hint(job_id, plan, measured, {e.subnet_id for e in stored})
        for evaluation in stored:  # replay: the strategy continues where the job stopped
            plan.strategy.tell(evaluation.arch, evaluation.metrics)
            plan.metrics.append(evaluation.metrics)
        done = len(stored) - reused
        replayed = failures.replay(supernet, spec, plan.strategy, plan.failures, done)
        for note in replayed:  # said again, as below
            self._note(job_id, note)
        if prior is not None and (screened := plan.strategy.prior_proposals_left()):
            self._note(
                job_id,
                f"{screened} uniform proposals screened with latency predictor v{prior.version}",
            )
        if left := len(plan.strategy.initial_left):  # said again by a resumed run, as above
            self._note(job_id, f"{q.counted(left, 'anchor')} of {spec['supernet']} {ANCHORS_SAID}")
        if done:
            self._note(job_id, f"resumed after {q.counted(done, 'measured evaluation')}")
        retrying: dict[str, str] = spec.get(job_keys.RETRYING, {})
        # the anchors measured so far (by an earlier run, or copied by a warm start) ...
        anchored = [e.metrics for e in stored if plan.strategy.is_initial(e.arch)]
        # ... and whether one failed: then the cheapest may be missing from them
        anchor_failed = any(entry.get("anchor") for entry in spec.get(job_keys.FAILED, []))
        lease = self._db(lambda s: _lease(s, job_id, self.worker_id))
        while lease == "held" and done < plan.budget:
            if self.stop.is_set():
                return self._requeue(job_id, clock)
            proposals = plan.strategy.ask(1)
            if not proposals:  # the space has been measured, all of it or nearly
                self._note(job_id, _exhausted(spec["supernet"], plan, done))
                break
            arch = proposals[0]
            key = plan.strategy.space.key(arch)
            try:
                measurement = plan.evaluator.measure(arch, plan.known.get(key))
            except Exception as exc:
                anchor = plan.strategy.is_initial(arch)
                anchor_failed = anchor_failed or anchor
                skipped = self._skipped(
                    job_id, plan.failures, key, exc, done, reused=reused, anchor=anchor,
                    retried_from=retrying.get(key),
                )  # fmt: skip
                if skipped is None:
                    raise
                if skipped != "lost":
                    plan.strategy.tell_failed(arch)
                lease = skipped  # a cancel or a takeover meanwhile ends the loop
                continue
            for note in plan.evaluator.take_notes():
                self._note(job_id, note)
            lease = self._record(job_id, plan, arch, measurement, done, clock)
            if lease != "lost":
                anchor = plan.strategy.is_initial(arch)
                plan.strategy.tell(arch, measurement.metrics)
                plan.failures.measured()
                done += 1
                if anchor:
                    anchored.append(measurement.metrics)
                    if not (plan.strategy.initial_left or anchor_failed) and (
                        unreachable := out_of_reach(anchored, plan.constraints)
                    ):
                        self._note(job_id, unreachable)
        if lease != "held":
            return self._cancelled_or_lost(job_id, clock, lease == "cancel")
        return self._finish(job_id, plan, clock)

    def _measured_with(
        self, job_id: str, spec: dict[str, Any], supernet: Supernet, *, quality: bool = True
    ) -> dict[str, Any]:
        """The job's spec with ``measured_with`` and ``measured_code``: the fingerprints of
        what its supernet measures with (weights and validation data:
        ``Supernet.fingerprint``; its code: ``code_fingerprint``), recorded at the job's
        first run; a calibration's (``quality`` false: it times sub-networks, whatever their
        weights) with its code's alone. Warm starts, hints and latency priors reuse only
        measurements made with the same. A resumed run whose supernet measures otherwise now
        fails the job: its measurements would mix the two."""
        now = supernet.fingerprint() if quality else None
        code = supernet.code_fingerprint()
        if (job_keys.MEASURED_WITH if quality else job_keys.MEASURED_CODE) in spec:
            change = job_keys.measuring_change(spec, now, supernet.code_fingerprints())
            if change == "code":
                raise InvalidInput(
                    f"the code of {spec['supernet']} changed since this job began measuring "
                    "(its version, or the text of its source: docs/plugins.md); its "
                    "measurements would mix the two: submit it again"
                )
            if change is not None:
                raise InvalidInput(
                    f"the weights or validation data of {spec['supernet']} changed since this "
                    "job began measuring (another checkpoint, or a data file changed on "
                    "disk); its measurements would mix the two: submit it again"
                )
            if quality and now is not None and spec.get(job_keys.MEASURED_WITH) is None:
                self._note(job_id, UNFINGERPRINTED)  # said again by each run (review 31)
            return spec

        begun = (
            quality
            and now is not None
            and self._db(lambda s: eq.list_evaluations(s, job_id, limit=0)[1])
        )
        if begun:
            # Begun by an hwnas that recorded no fingerprint: what it measured with is not
            # known. Recording today's would have let its measurements, made with whatever
            # weights it had then, into other jobs' warm starts (upgrade audit 31): recorded
            # as unknown, it resumes unchecked, as then, and is reused by no other job.
            unknown = {job_keys.MEASURED_WITH: None, job_keys.MEASURED_CODE: None}
            self._record_all_in_spec(job_id, unknown)
            self._note(job_id, UNFINGERPRINTED)
            return {**spec, **unknown}
        measured: dict[str, Any] = {job_keys.MEASURED_WITH: now} if quality else {}
        if code is not None:  # hwnas's own supernets: none, as before
            measured[job_keys.MEASURED_CODE] = code
        if measured:  # together: a crash between left no code
            self._record_all_in_spec(job_id, measured)
        return {**spec, **measured}

    def _skipped(
        self,
        job_id: str,
        fails: Failures,
        key: str,
        exc: Exception,
        done: int,
        *,
        reused: int = 0,
        anchor: bool = False,
        retried_from: str | None = None,
    ) -> Lease | None:
        """The job's lease if it goes on without sub-network ``key``, whose measurement
        raised ``exc`` (``done``: the measurements the job made, ``reused``: the results it
        took from earlier jobs); None if
        ``exc`` ends the job. A sub-network the device cannot run (out of its memory, say)
        is no reason to lose the job: it is recorded in the job's spec
        (``store.job_keys.FAILED``: listed, never measured again, a resumed run too) and
        counted in ``fails``, up to ``budget.failures`` of them, unless (``budget.failures``
        not given) the job's first ``failures.FAILING_FROM_THE_START`` all failed with no
        result to show (every one would: a plugin or device at fault), or its last
        ``failures.FAILING_IN_A_ROW`` did (the device broke since). An ``anchor`` is
        skipped without counting (said in the job's message), whatever it raised but a
        ``Conflict`` (the plugin's code changed on disk: every measurement would fail): a head
        start the search itself chose; so is one that failed in job ``retried_from`` before
        (``failures.RETRY_ONE_IN``), but for hwnas's own errors. Never when the database
        failed or the worker stops, nor for hwnas's own errors (a plugin breaking its
        contract, the job's data): they would fail every measurement alike."""
        if isinstance(exc, StorageError) or self.stop.is_set():
            return None
        if isinstance(exc, Conflict) or (not anchor and isinstance(exc, HwnasError)):
            return None
        counted = not (anchor or retried_from)
        if counted and (ended := fails.ends_the_job(done + reused)):
            if fails.counted:  # said where it helps: "0 skipped before it" would not
                exc.add_note(ended)
            return None
        said = job_error(exc)[1]
        log.warning("job %s: sub-network %s could not be measured", job_id, key, exc_info=exc)
        if anchor:
            note = failures.anchor_said(key, said)
        elif retried_from:
            note = failures.retried_said(key, retried_from, said)
        else:
            note = fails.said()
        entry = failures.entry(
            key, said, anchor, done,
            quality_step=in_quality_step(exc), retried_from=None if anchor else retried_from,
        )  # fmt: skip

        def record(session: Session) -> Lease:
            job = q.get_job(session, job_id, lock=True)
            lease = _lease_of(job, self.worker_id)
            if lease != "lost":
                job.spec = {
                    **job.spec,
                    job_keys.FAILED: [*job.spec.get(job_keys.FAILED, []), entry],
                }
                _add_message(job, note)
            return lease

        lease = self._db(record)
        if lease != "lost" and counted:
            fails.failed()
        elif lease != "lost" and retried_from and not anchor:
            fails.failed_again += 1
        return lease

    def _record_in_spec(self, job_id: str, key: str, value: Any) -> None:
        """Write ``key: value`` into the job's stored spec, if the job is still this run's:
        what its first run decided, which a resumed run must keep."""
        self._record_all_in_spec(job_id, {key: value})

    def _record_all_in_spec(self, job_id: str, values: dict[str, Any]) -> None:
        """``_record_in_spec`` of several keys, in one transaction."""

        def record(session: Session) -> None:
            job = q.get_job(session, job_id, lock=True)
            if _lease_of(job, self.worker_id) == "held":
                job.spec = {**job.spec, **values}

        self._db(record)

    def _calibrate(self, job_id: str, spec: dict[str, Any], clock: _RunClock) -> JobStatus | None:
        """Measure the calibration's uniform sample (each measurement committed as it
        completes; a resumed job measures only what is missing), then fit the predictor and
        store it with the job's end, in one transaction, while the job is still ours."""
        supernet = get_supernet(spec["supernet"])
        spec = self._measured_with(job_id, spec, supernet, quality=False)
        evaluator = SubnetEvaluator(supernet, device_profile(spec["device"]), quality=False)
        sample = sample_archs(supernet, spec["budget"]["evaluations"], spec["seed"])
        stored = {e.subnet_id for e in self._db(lambda s: eq.list_evaluations(s, job_id)[0])}
        fails = Failures.of_calibration(spec, MIN_MEASUREMENTS)
        failed, notes = failures.recorded(spec, fails, len(stored))
        for note in notes:  # said again, as a search says them
            self._note(job_id, note)
        done = len(stored)
        if done:  # as a search says it
            self._note(job_id, f"resumed after {q.counted(done, 'measurement')}")
        lease = self._db(lambda s: _lease(s, job_id, self.worker_id))
        skip = stored | set(failed)
        missing = [(key, arch) for arch in sample if (key := supernet.encode(arch)) not in skip]
        for subnet_id, arch in missing:
            if lease != "held":
                break
            if self.stop.is_set():
                return self._requeue(job_id, clock)
            try:
                measurement = evaluator.measure(arch)
            except Exception as exc:  # the sample's others are fitted on, as a search skips
                skipped = self._skipped(job_id, fails, subnet_id, exc, done)
                if skipped is None:
                    raise
                lease = skipped
                continue
            lease = self._store(job_id, done, subnet_id, arch, measurement, clock)
            if lease != "lost":
                fails.measured()
                done += 1
        if lease != "held":
            return self._cancelled_or_lost(job_id, clock, lease == "cancel")
        measured = self._db(lambda s: eq.list_evaluations(s, job_id)[0])
        started = time.perf_counter()
        predictor = fit_predictor(spec, measured)
        fit_seconds = time.perf_counter() - started

        def finish(session: Session) -> JobStatus | None:
            lease = _lease(session, job_id, self.worker_id, lock=True)
            if lease == "lost":
                return None  # taken over meanwhile: its new runner stores the predictor
            if lease == "cancel":  # asked while fitting: the user's word wins, nothing stored
                q.finish_job(
                    session,
                    job_id,
                    JobStatus.cancelled,
                    message=f"cancelled after {q.counted(len(measured), 'measurement')}, before "
                    "storing the predictor",
                )
                return JobStatus.cancelled
            failed = q.get_job(session, job_id).spec.get(job_keys.FAILED, [])  # this run's too
            record = save_predictor(session, job_id, spec, measured, predictor, fit_seconds, failed)
            q.finish_job(session, job_id, JobStatus.succeeded, message=summary(record))
            return JobStatus.succeeded

        return self._end(job_id, clock, finish)

    def _note(self, job_id: str, note: str) -> None:
        """Add ``note`` to the job's message (once), if the job is still this run's."""

        def add(session: Session) -> None:
            job = q.get_job(session, job_id, lock=True)
            if _lease_of(job, self.worker_id) != "lost":
                _add_message(job, note)

        self._db(add)
        log.info("job %s: %s", job_id, note)

    def _latency_prior(self, job_id: str, spec: dict[str, Any]) -> PredictedLatency | None:
        """The newest latency predictor calibrated for the job's pair whose cross-validation
        makes it trustworthy, when the job constrains latency, its strategy takes a prior
        (the strategy screens its first proposals with it) and its spec does not turn it
        off (``latency_prior``). The job's message says which
        version was used, which newer ones were not, or why none was."""
        if "latency_ms" not in (spec.get("constraints") or {}):
            return None
        if not spec.get("latency_prior", True):  # the user's: none for this job
            return None
        if not strategy_class(spec["strategy"]).accepts_prior:
            return None
        try:
            prior = latency_predictor_for(self.factory, spec["supernet"], spec["device"])
        except HwnasError as exc:  # e.g. fitted on a search space that has changed since
            self._note(job_id, f"stored latency predictor not used: {exc}")
            return None
        if prior is None:
            return None
        if prior.trustworthy:
            if prior.passed_over:  # newer calibrations too poor to steer a search
                newer = ", ".join(f"v{v}" for v in prior.passed_over)
                self._note(
                    job_id,
                    f"newer latency predictor {newer} not used: cross-validated below what a "
                    f"prior needs (>= {PRIOR_MIN_WITHIN_10PCT:.0%} within 10 %, Spearman >= "
                    f"{PRIOR_MIN_SPEARMAN})",
                )
            return prior  # the search says how many proposals it screens (``_search``)
        metrics = prior.predictor.metrics
        self._note(
            job_id,
            f"latency predictor v{prior.version} not used: cross-validated "
            f"{metrics.get('within_10pct', 0.0):.0%} within 10 %, Spearman "
            f"{metrics.get('spearman', 0.0):.2f} (a prior needs >= "
            f"{PRIOR_MIN_WITHIN_10PCT:.0%} and >= {PRIOR_MIN_SPEARMAN})",
        )
        return None

    def _warm_start(self, job_id: str, spec: dict[str, Any], supernet: Supernet) -> WarmStart:
        """``warm_start.copy_earlier`` for the job, if it is still this run's."""
        profile = device_profile(spec["device"])
        quality, metrics = measures_quality(spec, supernet), supernet.metrics

        def copy(session: Session) -> WarmStart:
            job = q.get_job(session, job_id, lock=True)
            if _lease_of(job, self.worker_id) != "held":
                return WarmStart([], 0, spec)
            limit = self.settings.warm_start_max
            return copy_earlier(
                session, job, spec, limit, profile, quality=quality, quality_metrics=metrics,
                earlier_codes=supernet.code_fingerprints()[1:],
            )  # fmt: skip

        return self._db(copy)

    def _from_other_devices(
        self, job_id: str, spec: dict[str, Any], supernet: Supernet
    ) -> tuple[list[Evaluation], dict[str, KnownQuality]]:
        """What other devices' jobs measured of this supernet that holds on this device too:
        accuracy (on the same validation data, with the same weights: ``measured_with``)
        and counted complexity, not latency. Only measurements recorded before this job
        was created, so that a resumed job is normally given the same (a measurement
        committed late, or a deleted job, can change them). Returns them, oldest first
        (hints for strategies that use them: ``_hint``), and the quality metrics of each
        such sub-network, which its measurement here takes instead of evaluating it again
        (latency timed alone) and which screen the job's anchors (``build_plan``)."""
        quality = measures_quality(spec, supernet)
        takes = quality and not supernet.recorded  # a table looks them up
        if not takes and not strategy_class(spec["strategy"]).uses_hints:
            return [], {}
        metrics = set(supernet.metrics)

        def holds_quality(evaluation: Evaluation) -> bool:
            return metrics <= set(evaluation.metrics)

        def read(session: Session) -> list[Evaluation]:
            created = q.get_job(session, job_id).created_at
            return earlier_measurements(
                session, job_id, spec, self.settings.warm_start_max, other_devices=True,
                before=created,
                # a newer measurement without accuracy (a latency-only job) would hide one
                # with it; counted complexity, in every row, is computed here anyway
                usable=holds_quality if quality else None,
            )  # fmt: skip

        measured = list(reversed(self._db(read)))  # oldest first
        known: dict[str, KnownQuality] = {}
        space = job_space(supernet)
        for evaluation in measured if takes else ():
            try:  # its id is this supernet's for its arch still (not a changed space's)
                same = space.key(evaluation.arch) == evaluation.subnet_id
            except HwnasError:
                same = False
            if same:  # it holds the quality metrics: read as usable only then
                origin = evaluation.details.get(job_keys.QUALITY_FROM, evaluation.job_id)
                known[evaluation.subnet_id] = KnownQuality(
                    {name: evaluation.metrics[name] for name in supernet.metrics}, origin
                )
        return measured, known

    def _hint(
        self, job_id: str, plan: JobPlan, measured: list[Evaluation], stored: set[str]
    ) -> None:
        """``Strategy.hint`` the device-independent metrics of what other devices' jobs
        ``measured``, for sub-networks not among the job's ``stored`` ones: it guides the
        predictors, measures nothing, counts toward nothing."""
        hinted: set[str] = set()
        kept: set[str] = set()  # the metrics hinted
        used = set(plan.objectives) | set(plan.constraints)
        for evaluation in measured:
            metrics = device_independent(evaluation.metrics)
            shared = used & set(metrics)
            if evaluation.subnet_id in stored or not shared:
                continue
            try:
                if plan.strategy.hint(evaluation.arch, metrics):
                    hinted.add(evaluation.subnet_id)
                    kept |= shared
            except HwnasError as exc:  # e.g. measured before the supernet's space changed
                log.info("job %s: hint from job %s skipped: %s", job_id, evaluation.job_id, exc)
        if hinted:
            names = ", ".join(sorted(kept))
            count = q.counted(len(hinted), "sub-network")
            cap = plan.strategy.hints_kept
            if cap is not None and len(hinted) > cap:  # it said 544, linas kept 500 (audit 31)
                count = f"the latest {cap} of {count}"
            self._note(job_id, f"search guided by the {names} of {count} measured on other devices")

    def _record(
        self,
        job_id: str,
        plan: JobPlan,
        arch: dict[str, Any],
        measurement: Measurement,
        done: int,
        clock: _RunClock,
    ) -> Lease:
        """Store one evaluation (one write, ``store.evaluations.record_evaluation``; ``done``: the
        job's measured evaluations before it) and say whether the job is still ours.

        "lost": another worker took the job over, the evaluation is dropped; "cancel": it was
        stored and cancellation was asked; "held": stored, carry on.
        """
        supernet = plan.evaluator.supernet
        canonical = supernet.canonical(arch)
        metrics = [*plan.metrics, measurement.metrics]
        front, hypervolume = front_of_metrics(metrics, plan.objectives, plan.constraints)
        lease = self._store(
            job_id,
            done,
            supernet.encode(canonical),
            canonical,
            measurement,
            clock,
            feasible=is_feasible(measurement.metrics, plan.constraints),
            front_size=len(front),
            hypervolume=hypervolume,
        )
        if lease != "lost":
            plan.metrics.append(measurement.metrics)
        return lease

    def _store(
        self,
        job_id: str,
        done: int,
        subnet_id: str,
        arch: dict[str, Any],
        measurement: Measurement,
        clock: _RunClock,
        *,
        feasible: bool = True,
        front_size: int = 0,
        hypervolume: float | None = None,
    ) -> Lease:
        """One write (``store.evaluations.record_evaluation``) of a canonical ``arch``'s
        measurement with the job's new progress, booking the run's time so far with it (so
        a run killed later never shows less run time than evaluation time); the lease as
        ``_record`` says."""

        def record(connection: Session | Connection, run_seconds: float) -> Lease:
            cancel_requested = eq.record_evaluation(
                connection,
                job_id,
                self.worker_id,
                done=done,
                subnet_id=subnet_id,
                arch=arch,
                metrics=measurement.metrics,
                details={**measurement.details, "worker": self.worker_id},
                feasible=feasible,
                seconds=measurement.seconds,
                run_seconds=run_seconds,
                front_size=front_size,
                hypervolume=hypervolume,
            )
            if cancel_requested is None:
                log.warning("job %s: lease lost; dropping the evaluation in flight", job_id)
                return "lost"
            return "cancel" if cancel_requested else "held"

        leases: list[Lease] = []

        def write(run_seconds: float) -> bool:
            lease = self._db(lambda c: record(c, run_seconds), opener=one_statement_writing)
            leases.append(lease)
            return lease != "lost"  # stored: its run time is booked

        clock.book(write)
        return leases[-1]

    def _finish(self, job_id: str, plan: JobPlan, clock: _RunClock) -> JobStatus | None:
        # Read and summed up before the ending step: a front of many objectives takes
        # seconds (85 s for 4 objectives x 1,500 points), during which neither the run
        # clock (the heartbeat books under its lock: a job that stops beating is taken
        # over) nor the row's lock (on SQLite the process's one write slot) may be held.
        # No other run adds evaluations while this one holds the lease, checked in it.
        evaluations = self._db(lambda session: eq.list_evaluations(session, job_id)[0])
        summary = summarise_front(evaluations, plan.objectives, plan.constraints)

        def finish(session: Session) -> JobStatus | None:
            if _lease(session, job_id, self.worker_id, lock=True) == "lost":
                return None  # taken over meanwhile: the new run finishes it
            eq.set_front(session, job_id, [e.id for e in summary.front])
            if noisy := noisy_latency_note(evaluations, plan.evaluator.profile):
                _add_message(q.get_job(session, job_id), noisy)
            if taken := _quality_taken_note(evaluations, plan.evaluator.supernet):
                _add_message(q.get_job(session, job_id), taken)
            if screened := plan.strategy.n_screened:
                _add_message(q.get_job(session, job_id), _screened_note(screened))
            # nothing feasible (summary.message): said first, the run's notes after it
            job = q.finish_job(session, job_id, JobStatus.succeeded, message=summary.message)
            job.front_size, job.hypervolume = len(summary.front), summary.hypervolume
            return JobStatus.succeeded

        return self._end(job_id, clock, finish)

    def _requeue(
        self, job_id: str, clock: _RunClock, message: str = SHUTDOWN_REQUEUED
    ) -> JobStatus | None:
        def requeue(session: Session) -> JobStatus | None:
            job = q.get_job(session, job_id, lock=True)
            if job.worker_id == self.worker_id and job.status == JobStatus.running:
                q.requeue(job, message, handed_back=True)
                return JobStatus.queued
            return None

        return self._end(job_id, clock, requeue)

    def _hand_back_after_outage(
        self, job_id: str, clock: _RunClock, exc: StorageError
    ) -> JobStatus | None:
        """The run stops measuring; once the database answers again the job goes back to
        the queue like a shutdown's (``queued``: the Celery task publishes it again), not
        counted as an attempt: the worker did not die, and outages in a row had failed a
        healthy job as "its worker kept dying". A shutdown meanwhile leaves the job to the
        reaper, as before; a worker that took it over meanwhile keeps it (None)."""
        log.warning(
            "job %s: the database stayed unavailable past %.0f s (%s); the job goes back to "
            "the queue once it answers",
            job_id,
            self.settings.db_retry_s,
            first_line(exc),
        )
        message = (  # unavailable: unreachable, or refusing writes (a full disk: ops audit 29)
            f"interrupted: the database was unavailable for over {self.settings.db_retry_s:.0f}"
            f" s ({first_line(exc)}); resumes when a worker takes it again"
        )
        while True:
            try:
                return self._requeue(job_id, clock, message)
            except StorageError as again:  # still away (each try waited db_retry_s)
                if self.stop.is_set() or not again.unreachable:
                    raise
                time.sleep(1.0)

    def _cancelled_or_lost(
        self, job_id: str, clock: _RunClock, cancel_requested: bool
    ) -> JobStatus | None:
        if not cancel_requested:
            log.warning("job %s: lease lost to another worker", job_id)
            return None

        def cancel(session: Session) -> JobStatus:
            job = q.get_job(session, job_id)
            q.finish_job(
                session,
                job_id,
                JobStatus.cancelled,
                message=f"cancelled after {q.counted(job.evaluations_done, 'evaluation')}",
            )
            return JobStatus.cancelled

        return self._end(job_id, clock, cancel)


Lease = Literal["held", "cancel", "lost"]


def _exhausted(supernet: str, plan: JobPlan, done: int) -> str:
    """Why a job stopped before its budget: the strategy had nothing new to propose. A
    space of up to ``ENUMERATION_LIMIT`` is known to be measured whole; a larger one only
    gave no new sub-network in ``REJECTION_TRIES`` random draws in a row."""
    spent = f"{q.counted(done, 'new measurement')} of a budget of {plan.budget}"
    failed = plan.strategy.n_failed  # anchors and earlier jobs' too: not measured either
    if failed:
        spent += f", {failed} failed"
        earlier = plan.failures.from_earlier_jobs  # which progress.evaluations_failed leaves
        again = plan.failures.failed_again  # out, with the anchors
        anchors = failed - plan.failures.counted - earlier - again
        among = [q.counted(anchors, "anchor")] if anchors > 0 else []
        among += [f"{earlier} in earlier jobs"] if earlier else []
        among += [f"{again} in earlier jobs and again here"] if again else []
        if among:
            spent += f" ({', '.join(among)})"
    if screened := plan.strategy.n_screened:  # in this run
        spent += f", {screened} passed over (their counted metrics break the constraints)"
    if plan.strategy.space.size <= ENUMERATION_LIMIT:
        every = f"every distinct sub-network of {supernet}"
        outcomes = ["measured", *(["failed"] if failed else [])]
        outcomes += ["passed over"] if screened else []
        ends = f"{', '.join(outcomes[:-1])} or {outcomes[-1]}" if len(outcomes) > 1 else "measured"
        measured = f"was {ends}"
        return f"search space exhausted: {every} {measured} ({spent})"
    return (
        f"search stopped early: {REJECTION_TRIES} random draws in a row found no sub-network "
        f"of {supernet} not measured yet ({spent})"
    )


#: Said of a job an earlier hwnas began, which recorded no fingerprint of what it measured
#: with (``JobRunner._measured_with``).
UNFINGERPRINTED = (
    "begun by an earlier hwnas that recorded no fingerprint of the weights, data and code it "
    "measured with: resumed unchecked, and its measurements are reused by no other job"
)


def _not_ours(session: Session, job_id: str) -> str:
    """Why a claim of ``job_id`` took nothing, as a log line says it."""
    job = session.get(Job, job_id)
    if job is None:
        return "it was deleted"
    if job.status.finished:
        return f"it ended ({job.status.value})"
    if job.status == JobStatus.running:
        return f"worker {job.worker_id} runs it (its lease is alive)"
    return "another worker claimed it first"


def _add_message(job: Job, note: str) -> None:
    """Append ``note`` to the job's message once (a resumed run adds it again; the message
    holds it as stored, escapes included)."""
    if storable_text(note) not in (job.message or ""):
        job.message = f"{job.message}; {note}" if job.message else note


def _lease_of(job: Job, worker_id: str) -> Lease:
    if job.worker_id != worker_id or job.status != JobStatus.running:
        return "lost"
    return "cancel" if job.cancel_requested else "held"


def _lease(session: Session, job_id: str, worker_id: str, *, lock: bool = False) -> Lease:
    """The job's lease for ``worker_id``; ``lock``: hold the row until the transaction ends,
    for a step that changes the job only if the lease allows it."""
    return _lease_of(q.get_job(session, job_id, lock=lock), worker_id)


def _add_run_seconds(session: Session, job_id: str, seconds: float) -> None:
    """An increment in SQL: a run that lost its job books its time while the new owner's
    heartbeats book theirs (a read-add-write would erase theirs)."""
    session.execute(
        update(Job).where(Job.id == job_id).values(run_seconds=Job.run_seconds + seconds)
    )


def _screened_note(screened: int) -> str:
    """What the search's screen passed over (``Strategy.screen_with``)."""
    return (
        f"{q.counted(screened, 'proposal')} of the search passed over unmeasured: their "
        "MACs, params or model size, counted, break the constraints"
    )


def _quality_taken_note(evaluations: Sequence[Evaluation], supernet: Supernet) -> str | None:
    """What the job's message says of the measurements whose quality metrics came from
    another device's (``KnownQuality``)."""
    taken = [e for e in evaluations if job_keys.QUALITY_FROM in e.details and not e.reused]
    if not taken:
        return None
    names = ", ".join(supernet.metrics)
    return (
        f"{names} of {q.counted(len(taken), 'new measurement')} taken from other devices' "
        "measurements of the same sub-networks (same weights and validation data; "
        f"details.{job_keys.QUALITY_FROM} names the job): only their latency was timed here"
    )


__all__ = ["JobPlan", "JobRunner", "build_plan"]
