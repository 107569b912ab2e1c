"""Request and response schemas of the HTTP API (kept apart from the ORM tables)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationInfo,
    field_validator,
    model_validator,
)

from api.bodies import files_checked_later
from core.errors import HwnasError, InvalidInput, UnknownName, shown
from core.settings import get_settings
from hardware_profiles import device_lock
from hardware_profiles.configured import check_measures, device_profiles
from hardware_profiles.latency_predictor import (
    DEFAULT_KIND,
    MIN_MEASUREMENTS,
    PREDICTOR_KINDS,
    PRIOR_MIN_SPEARMAN,
    PRIOR_MIN_WITHIN_10PCT,
)
from hardware_profiles.latency_sample import MAX_SAMPLES
from models.base import Supernet
from models.metrics import METRIC_RANGES, metrics_of
from models.registry import (
    check_validation_data,
    get_supernet,
    list_supernets,
    takes_validation_data,
)
from models.user_data import check_path, configured_roots, confine
from search import list_strategies
from search.space import SearchSpace
from store.tables import JobKind, JobStatus

Sense = Literal["min", "max"]


def _as_utc(moment: datetime) -> datetime:
    """SQLite reads timestamps back naive (stored in UTC), PostgreSQL in its session's time
    zone: answers always say UTC, with the offset written out."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]


class Answer(BaseModel):
    """A response body: every field is in every answer (null where it has no value), so
    the OpenAPI document lists them all as required, defaults included (an HTTP-only
    integrator's generated client made about 20 always-present fields optional: audit
    34)."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)


# Request bodies: JSON types as declared (no "5" for 5, no "yes" for true) and finite numbers.
STRICT_INPUT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class BoundIn(BaseModel):
    """A constraint on one metric: ``{"max": 2.0}``, ``{"min": 0.9}`` or both."""

    model_config = STRICT_INPUT
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self) -> BoundIn:
        if self.min is None and self.max is None:
            raise ValueError("a constraint needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


#: A search's budget and a calibration's sample when the request gives none; an operator's
#: lower HWNAS_MAX_BUDGET lowers them (a default over the cap would refuse every such body).
DEFAULT_EVALUATIONS, DEFAULT_SAMPLES = 60, 50


def _capped(default: int) -> int:
    return min(default, get_settings().max_budget)


class BudgetIn(BaseModel):
    model_config = STRICT_INPUT
    evaluations: int = Field(
        default_factory=lambda: _capped(DEFAULT_EVALUATIONS),
        validate_default=True,
        description=f"real measurements the search may spend (default {DEFAULT_EVALUATIONS}, "
        "or HWNAS_MAX_BUDGET when that is lower), at most HWNAS_MAX_BUDGET",
        json_schema_extra={"minimum": 1},  # the check is the validator's: its message
    )

    failures: int | None = Field(
        default=None,
        ge=0,
        description="failed measurements (a sub-network that raises: out of the device's "
        "memory, say) the search skips and goes on after; the next one fails the job. "
        "Each is listed in the job's "
        "`failed_evaluations`, never proposed again, and not counted in `evaluations`; an "
        "anchor that fails is skipped without counting. Default (none given): half of "
        "`evaluations`, at least 3, and the job also fails when its first 5 measurements all "
        "fail, or its last 10; a number given is the only rule (0: the first failure fails "
        "the job); at most HWNAS_MAX_BUDGET",
    )

    @field_validator("failures")
    @classmethod
    def _failures_in_range(cls, value: int | None) -> int | None:
        limit = get_settings().max_budget
        if value is not None and value > limit:
            raise ValueError(f"must be at most {limit} (HWNAS_MAX_BUDGET), got {value}")
        return value

    @field_validator("evaluations")
    @classmethod
    def _in_range(cls, value: int) -> int:
        limit = get_settings().max_budget
        if not 1 <= value <= limit:
            raise ValueError(f"must be between 1 and {limit} (HWNAS_MAX_BUDGET), got {value}")
        return value


#: A job's labels (``JobCreate.labels``): how many, a name's form, a value's length.
MAX_LABELS = 16
LABEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
LABEL_VALUE_CHARS = 200


def check_label(name: str, value: str | None) -> None:
    """``ValueError`` unless ``name`` is a label's name and ``value`` (None: not given) a
    label's value: printable text (no control character, no lone surrogate)."""
    if not LABEL_NAME.fullmatch(name):
        raise ValueError(
            f"label name {shown(name)} must be 1-63 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    if value is None:
        return
    if len(value) > LABEL_VALUE_CHARS:
        raise ValueError(f"label {name}: at most {LABEL_VALUE_CHARS} characters, got {len(value)}")
    if not value.isprintable():  # a control character, a lone surrogate (not storable)
        raise ValueError(f"label {name}: {shown(value)} holds a character that is not printable")


def _checked_labels(value: dict[str, Any]) -> dict[str, Any]:
    for name, said in value.items():
        check_label(name, said)
    return value


#: A job's labels as submitted (``JobCreate``, ``CalibrationCreate``), each one checked.
Labels = Annotated[dict[str, str], AfterValidator(_checked_labels)]
LABELS_SAID = (
    f"the job's labels, name: value (such as project: kws, or a pipeline's run id), at most "
    f"{MAX_LABELS}: GET /v1/jobs?label=name=value lists the jobs that carry them, PATCH "
    f"/v1/jobs/{{id}} changes them. A name is 1-63 letters, digits, '_', '.' or '-', "
    f"starting with a letter or digit; a value at most {LABEL_VALUE_CHARS} printable "
    f"characters"
)


class JobPatch(BaseModel):
    """Changes to a job (``PATCH /v1/jobs/{id}``): its labels, merged into the ones it has
    as a JSON Merge Patch (RFC 7396) merges."""

    model_config = ConfigDict(
        **STRICT_INPUT,
        json_schema_extra={"examples": [{"labels": {"chosen": "r24-k3e4", "stage": None}}]},
    )
    labels: Annotated[dict[str, str | None], AfterValidator(_checked_labels)] = Field(
        max_length=2 * MAX_LABELS,
        description=f"name: value sets that label (added, or its value replaced); name: "
        f"null removes it; the job's other labels are kept. At most {MAX_LABELS} may remain; "
        f"names and values as JobCreate.labels",
    )


def _known(kind: str, value: str, known: list[str]) -> str:
    if value not in known:
        raise ValueError(str(UnknownName(kind, value, known)))
    return value


def _default_objectives() -> dict[str, Sense]:
    return {"accuracy": "max", "latency_ms": "min"}


class JobCreate(BaseModel):
    """A search job: which supernet, on which device, for what, under which constraints."""

    model_config = ConfigDict(
        **STRICT_INPUT,
        json_schema_extra={
            "examples": [
                {
                    "supernet": "fmnist-ofa-cnn",
                    "device": "cpu-1t",
                    "objectives": {"accuracy": "max", "latency_ms": "min"},
                    "constraints": {"latency_ms": {"max": 2.0}},
                    "budget": {"evaluations": 60},
                    "strategy": "linas",
                    "seed": 0,
                }
            ]
        },
    )

    supernet: str = Field(description="a registered supernet's id (GET /v1/supernets)")
    device: str = Field(
        description="a hardware profile's id (GET /v1/devices): where latency is measured"
    )
    objectives: dict[str, Sense] = Field(
        default_factory=_default_objectives,
        description="metric: min or max, any of the supernet's metrics (default: accuracy "
        "max, latency_ms min)",
    )
    constraints: dict[str, BoundIn] = Field(
        default_factory=dict,
        description="metric: {min, max}, such as latency_ms: {max: 2.0}; only sub-networks "
        "within every bound are feasible (the search aims inside them)",
    )
    budget: BudgetIn = Field(default_factory=BudgetIn)
    strategy: str = Field(
        "linas",
        description=f"the search strategy: {', '.join(list_strategies())}",
        json_schema_extra={"enum": list[JsonValue](list_strategies())},
    )
    seed: int = Field(0, ge=0, le=2**31 - 1, description="seeds the search's random choices")
    warm_start: bool = Field(
        True,
        description="reuse earlier jobs' measurements of this supernet on this device: they "
        "join the job's evaluations (marked reused_from) and guide the search; the budget "
        "counts new measurements only. Sub-networks whose measurement failed in those jobs "
        "are not measured again (failed_evaluations, reused_from), but for one in 10 and "
        "those of jobs 5 or more jobs old, measured again if the search proposes them. "
        "Measurements on other "
        "devices guide linas too, "
        "by their device-independent metrics (accuracy on the same validation data, counted "
        "complexity), but are not results: those sub-networks are measured here if chosen "
        "(their latency timed; the accuracy measured with the same weights and data taken, "
        "details.quality_from naming that job)",
    )
    latency_prior: bool = Field(
        True,
        description="with a latency_ms constraint, linas screens its first proposals with "
        "the newest well cross-validated latency predictor calibrated for the supernet and "
        "device (the job's message names it); false: none, so that a seed gives the same "
        "proposals whatever was calibrated since",
    )
    labels: Labels = Field(default_factory=dict, max_length=MAX_LABELS, description=LABELS_SAID)
    # after every other field, before validation_data: its check reads them (info.data)
    validation_data: str | None = Field(
        None,
        description="a .npz or .pt file under HWNAS_DATA_ROOTS ('inputs', 'labels', optional "
        "'calib_inputs'), or a directory of images there (<dir>/<class name>/<images>, "
        "optional classes.txt and _calib/), to measure accuracy on instead of the supernet's "
        "own validation data (required when the supernet has none and the job names "
        "accuracy)",
        validate_default=True,
    )

    @field_validator("supernet")
    @classmethod
    def _supernet(cls, value: str) -> str:
        _known("supernet", value, list_supernets())
        usable_supernet(value)  # else the other fields' checks would each fail with its error
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str, info: ValidationInfo) -> str:
        profiles = device_profiles()
        if value not in profiles:  # sorted only for the error, which lists them
            _known("device", value, sorted(profiles))
        supernet = info.data.get("supernet")
        if supernet is not None:
            check_measures(value, get_supernet(supernet), profiles=profiles)
        return value

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        return _known("strategy", value, list_strategies())

    @field_validator("validation_data")
    @classmethod
    def _validation_data(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            _check_quality_measurable(info.data)
            return value
        if files_checked_later(info):  # not on the event loop: see api.bodies
            return value
        if set(cls.model_fields) - {"validation_data"} - set(info.data):
            confine(value, configured_roots())  # another field is refused: the path alone,
            return value  # its data is read only for a job that would be stored
        # One check at a time, and not while this process times a sub-network on the CPU
        # (the embedded worker): answers are kept until the data changes (models.check_memo)
        guard = device_lock("cpu")
        path = check_path(value, guard=guard)  # inside the data roots, known type and size
        supernet = info.data.get("supernet")
        if supernet is not None and not takes_validation_data(supernet):
            raise ValueError(f"supernet {supernet!r} does not measure accuracy on user data")
        if supernet is not None and path.is_dir() and get_supernet(supernet).image_format() is None:
            raise ValueError(
                f"{path.name} is a directory of images, but supernet {supernet!r} reads tensor "
                "files only (.npz or .pt)"
            )
        if supernet is not None:  # its contents: keys, shapes, labels, as evaluate needs them
            check_validation_data(supernet, value, guard)
        return value

    @field_validator("objectives", "constraints")
    @classmethod
    def _metrics(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        supernet = info.data.get("supernet")
        if supernet is None:  # the supernet itself was invalid: reported on its own
            return value
        allowed = sorted(metrics_of(get_supernet(supernet)))
        if info.field_name == "objectives" and not value:
            raise ValueError(f"give at least one of {', '.join(allowed)}")
        for name in value:
            if name not in allowed:
                raise ValueError(f"unknown metric {shown(name)}; allowed: {', '.join(allowed)}")
        if info.field_name == "constraints":
            for name, bound in value.items():
                _check_reachable(name, bound)
        return value


def _check_reachable(name: str, bound: BoundIn) -> None:
    """A bound no value of the metric can meet (an accuracy over 1, a negative latency)
    spent a whole budget, then said nothing was feasible."""
    if name not in METRIC_RANGES:
        return
    lowest, highest = METRIC_RANGES[name]
    span = f"{lowest:g}..{highest:g}" if highest is not None else f"{lowest:g} or more"
    if bound.max is not None and bound.max < lowest:
        unmet = f"{name} <= {bound.max:g}"
    elif bound.min is not None and highest is not None and bound.min > highest:
        unmet = f"{name} >= {bound.min:g}"
    else:
        return
    raise ValueError(f"{unmet} can be met by no sub-network: {name} is {span}")


#: Supernets whose space() was checked, with the instance checked.
_spaces_checked: dict[str, Supernet] = {}


def usable_supernet(name: str) -> Supernet:
    """``name``'s shared instance; ``InvalidInput`` on ``supernet`` saying why it cannot be
    searched: it cannot be built as configured (``models.registry.get_supernet``), or its
    ``space()`` is not a search space (a gene without choices, a choice of another type
    than int, float, bool or str: what a job's run would fail on)."""
    supernet = get_supernet(name)
    if _spaces_checked.get(name) is not supernet:
        try:
            SearchSpace(supernet.space())
        except Exception as exc:  # a plugin's space() may raise anything
            reason = str(exc) if isinstance(exc, HwnasError) else f"{type(exc).__name__}: {exc}"
            raise InvalidInput(
                f"supernet {name!r} has no valid search space: {reason}", field="supernet"
            ) from None
        _spaces_checked[name] = supernet
    return supernet


def _check_quality_measurable(job: dict[str, Any]) -> None:
    """A job that names a quality metric of a supernet with no validation data of its own
    (the OFA supernets) must bring some: refused now, not failed at its first evaluation."""
    if "supernet" not in job:  # invalid: reported on its own
        return
    supernet = get_supernet(job["supernet"])
    named = set(job.get("objectives", {})) | set(job.get("constraints", {}))
    quality = sorted(named & set(supernet.metrics))
    if quality and not supernet.has_validation_data():
        raise ValueError(
            f"supernet {supernet.name!r} has no validation data of its own, so it cannot "
            f"measure {', '.join(quality)}: give validation_data (a file or image directory "
            f"under HWNAS_DATA_ROOTS), or leave {', '.join(quality)} out of the objectives "
            "and constraints (latency, MACs, params and size need no data)"
        )


class Progress(Answer):
    evaluations_done: int = Field(description="measured by this job; the budget counts these")
    evaluations_reused: int = Field(0, description="copied from earlier jobs (warm start)")
    evaluations_failed: int = Field(
        0,
        description="measurements that failed and were skipped, counted against "
        "`failures_allowed` (`failed_evaluations` lists them, and those that do not count: "
        "failed anchors, failures of earlier jobs that a warm start took, and those it "
        "measured again that failed again: retried_from)",
    )
    failures_allowed: int = Field(
        0,
        description="budget.failures: failed measurements skipped before one fails the job "
        "(a calibration's: half its samples, at least 3, leaving the 5 its fit needs)",
    )
    budget: int
    fraction: float = Field(
        description="how far the job has gone, 0..1: its evaluations_done of its budget (a "
        "calibration's failed samples count as done); 1 once it succeeded, its budget spent "
        "or its search space measured whole"
    )
    front_size: int
    hypervolume: float | None = Field(
        None,
        description="of the current front, normalised to the bounding box of the job's "
        "evaluations so far (infeasible ones included), the reference a tenth of the box "
        "beyond its worst corner (1: one point best in every objective; estimated within "
        "about 0.01 for a large front in 3 or more objectives): a progress signal "
        "that can fall when "
        "a new evaluation widens the box; not comparable across jobs",
    )


class FailedSample(Answer):
    """A sub-network whose measurement raised, skipped."""

    subnet_id: str
    error: str = Field(description="the failure's type and first line")


class FailedEvaluation(FailedSample):
    anchor: bool = Field(
        description="one of the anchors measured first (Supernet.anchors): skipped without "
        "counting towards budget.failures"
    )
    reused_from: str | None = Field(
        None,
        description="the earlier job on this supernet and device where it failed (warm "
        "start): not measured again, not counted towards budget.failures",
    )
    retried_from: str | None = Field(
        None,
        description="the earlier job where it failed before: a warm start leaves one in 10 "
        "of those failures, and those of jobs 5 or more jobs old, for the job to measure "
        "again if its search proposes them (a failure may have been the device's state "
        "then); it failed again here, not counted towards budget.failures",
    )


class Timing(Answer):
    run_seconds: float = Field(
        description="wall time of the job's runs so far, summed (a run that lost its "
        "lease, such as a worker frozen past HWNAS_STALE_AFTER_S while another took the job "
        "over, counts too: the sum can exceed the time from start to finish); grows while it "
        "runs (at every heartbeat), so a run cut short loses at most one heartbeat's worth"
    )
    eval_seconds: float = Field(description="time inside evaluation calls (measurement)")


class CalibrationOfJob(Answer):
    """What a calibration job fits, and where the version it stores is listed."""

    predictor_kind: str
    n_samples: int
    predictors_url: str = Field(
        description="GET: the predictor version this job stored (none until it succeeds)"
    )


class JobPublic(Answer):
    id: str
    url: str
    kind: JobKind = Field(
        description="'search', or 'calibration' (POST /v1/devices/{id}/calibrations: "
        "measures `budget` sampled sub-networks and fits the device's latency predictor)"
    )
    status: JobStatus
    cancel_requested: bool = Field(
        description="a cancel was asked; a running job stops after its evaluation in flight"
    )
    supernet: str
    device: str
    strategy: str = Field(
        description="a search's strategy (as JobCreate.strategy); 'uniform' for a "
        "calibration (it measures a uniform sample)"
    )
    seed: int
    labels: dict[str, str] = Field(
        default_factory=dict, description="as submitted, then as PATCH /v1/jobs/{id} changed them"
    )
    submitted_by: str | None = Field(
        None,
        description="the label of the API key that submitted it (the start of the key's "
        "SHA-256, as the server's log names it: printf %s KEY | sha256sum | cut -c1-8); null "
        "on a server without keys",
    )
    warm_start: bool
    latency_prior: bool = Field(
        True, description="whether a calibrated latency predictor may screen its proposals"
    )
    objectives: dict[str, Sense]
    constraints: dict[str, dict[str, float | None]]
    validation_data: str | None = Field(
        None,
        description="the file or image directory the job measures accuracy on, as "
        "submitted; null: the supernet's own validation data",
    )
    measured_with: str | None = Field(
        None,
        description="a fingerprint of the weights and validation data the job measures with, "
        "set when its run starts (jobs share measurements only where theirs are equal; an "
        "exported file's card carries it); null before, or for a supernet that has none",
    )
    progress: Progress
    failed_evaluations: list[FailedEvaluation] = Field(
        default_factory=list,
        description="sub-networks whose measurement failed, skipped by the search and never "
        "proposed again (budget.failures): those a warm start took from earlier jobs "
        "(reused_from) first, then the job's own in the order they failed",
    )
    calibration: CalibrationOfJob | None = Field(None, description="calibration jobs only")
    message: str | None
    error: str | None
    attempts: int
    worker: str | None = Field(
        None,
        description="the worker that runs the job, or ran it last (none before its first "
        "run); a job's evaluations name theirs in details.worker",
    )
    heartbeat_at: UtcDatetime | None = Field(
        None,
        description="while it runs, its worker's last heartbeat (every HWNAS_HEARTBEAT_S; "
        "one older than HWNAS_STALE_AFTER_S: its worker stopped, and the message says so)",
    )
    timing: Timing
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class JobsPublic(Answer):
    data: list[JobPublic]
    count: int = Field(description="jobs that match the filters, in all")
    status: list[str] = Field(
        default_factory=list,
        description="the statuses the jobs were filtered on, as asked (empty: any status)",
    )
    offset: int
    limit: int
    next_after: str | None = Field(
        None,
        description="the next page's `after` (GET /v1/jobs?after=...): given when more jobs "
        "follow this page, null when it is the last (jobs submitted since come first, on no "
        "page after it)",
    )


class EvaluationPublic(Answer):
    subnet_id: str
    seq: int
    arch: dict[str, Any]
    metrics: dict[str, float]
    details: dict[str, Any]
    feasible: bool
    on_front: bool = Field(
        description="on the job's Pareto front, as /pareto lists it: final once the job "
        "succeeded, the front so far while it runs or once it ended otherwise"
    )
    seconds: float


class EvaluationsPublic(Answer):
    data: list[EvaluationPublic]
    count: int
    offset: int
    limit: int


class ParetoPoint(Answer):
    subnet_id: str
    arch: dict[str, Any]
    accuracy: float | None
    latency_ms: float | None
    macs: int | None
    params: int | None
    metrics: dict[str, float]
    latency: dict[str, Any] = Field(description="median/IQR/repeats and provenance")
    export_url: str | None = Field(description="none for recorded (table-backed) supernets")


class ParetoPublic(Answer):
    job_id: str
    status: JobStatus
    objectives: dict[str, Sense]
    constraints: dict[str, dict[str, float | None]] = Field(
        default_factory=dict, description="the job's constraints, which every point meets"
    )
    data: list[ParetoPoint]
    message: str | None


class SupernetPublic(Answer):
    id: str
    genes: int
    raw_space_size: int
    space_size: int | None = Field(
        None, description="distinct sub-networks (genes of inactive blocks collapsed), if known"
    )
    space: dict[str, list[Any]]
    metrics: list[str]
    has_validation_data: bool = Field(
        description="it has validation data of its own; if not, a job that names accuracy "
        "must give validation_data"
    )
    note: str | None = Field(None, description="what its numbers mean, e.g. random weights")


class DevicePublic(Answer):
    id: str
    name: str
    kind: str
    runtime: str | None
    threads: int | None
    batch_size: int
    served: bool = Field(description="a live worker measures on this device now")
    supernets: list[str] = Field(
        default_factory=list,
        description="the registered supernets whose latency it gives (a recorded device: "
        "those of its table; a live one: every trained one) and that can be searched as "
        "configured (GET /v1/supernets says why one cannot): what a job on it may search",
    )
    queued: int = Field(0, description="its jobs waiting for a worker now")
    running: int = Field(0, description="its jobs being measured now")


class CalibrationCreate(BaseModel):
    model_config = STRICT_INPUT
    supernet: str = Field(description="registered supernet id, e.g. fmnist-ofa-cnn")
    n_samples: int = Field(
        default_factory=lambda: _capped(DEFAULT_SAMPLES),
        validate_default=True,
        ge=MIN_MEASUREMENTS,
        le=MAX_SAMPLES,
        description=f"sub-networks to measure (default {DEFAULT_SAMPLES}, or HWNAS_MAX_BUDGET "
        "when that is lower)",
    )
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="seeds the sample and the cross-validation folds"
    )
    kind: str = Field(
        DEFAULT_KIND,
        description=f"predictor kind: {', '.join(PREDICTOR_KINDS)}",
        json_schema_extra={"enum": list[JsonValue](PREDICTOR_KINDS)},
    )
    labels: Labels = Field(default_factory=dict, max_length=MAX_LABELS, description=LABELS_SAID)

    @field_validator("supernet")
    @classmethod
    def _supernet(cls, value: str) -> str:
        _known("supernet", value, list_supernets())
        usable_supernet(value)
        return value

    @field_validator("n_samples", mode="before")
    @classmethod
    def _possible(cls, value: Any) -> Any:
        """Under a cap below a calibration's least sample, say that (the default was cut to
        the cap, then refused as "n_samples" below 5, a field the client had not sent;
        operator probe, session 22)."""
        limit = get_settings().max_budget
        if limit < MIN_MEASUREMENTS:
            raise ValueError(
                f"a calibration measures at least {MIN_MEASUREMENTS} sub-networks, more than "
                f"this service allows (HWNAS_MAX_BUDGET={limit})"
            )
        return value

    @field_validator("n_samples")
    @classmethod
    def _within_budget(cls, value: int) -> int:
        """A calibration's measurements are its budget: the operator's cap holds for it too."""
        limit = get_settings().max_budget
        if value > limit:
            raise ValueError(f"must be at most {limit} (HWNAS_MAX_BUDGET), got {value}")
        return value

    @field_validator("kind")
    @classmethod
    def _kind(cls, value: str) -> str:
        return _known("predictor kind", value, list(PREDICTOR_KINDS))


class CalibrationPublic(Answer):
    """One stored predictor version; ``metrics`` is its cross-validated error."""

    id: int
    supernet: str
    device: str
    version: int
    kind: str
    job_id: str | None = Field(description="the calibration job that fitted it")
    seed: int
    n_measurements: int
    failed_samples: list[FailedSample] = Field(
        default_factory=list,
        description="sub-networks of its sample whose measurement failed (out of the "
        "device's memory, say), left out of the fit",
    )
    latency_source: str  # measured on the device, or recorded (a table)
    metrics: dict[str, Any]
    measured_code: str | None = Field(
        default=None,
        description="the code fingerprint of the supernet it timed (a plugin's version, or "
        "a hash of its source: docs/plugins.md); null for hwnas's own supernets",
    )
    steers_searches: bool = Field(
        description="its cross-validation is good enough to screen a search's proposals "
        f"(Spearman >= {PRIOR_MIN_SPEARMAN} and >= {PRIOR_MIN_WITHIN_10PCT:.0%} within 10 %), "
        "and it timed the supernet's code as it is now; searches use the newest such version"
    )
    seconds: float
    created_at: UtcDatetime


class CalibrationsPublic(Answer):
    data: list[CalibrationPublic]
    count: int = Field(description="the versions that match, on every page")
    offset: int
    limit: int


class HealthPublic(BaseModel):
    """``GET /healthz``: a caller without a key (API keys set) gets ``status`` alone."""

    status: Literal["ok", "degraded"]
    devices_served: list[str] = Field(
        default_factory=list, description="devices a live worker serves (absent: no key)"
    )
    problems: list[str] = Field(
        default_factory=list,
        description="what keeps jobs from reaching workers, or the disk low (absent: no key)",
    )
