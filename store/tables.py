"""SQLAlchemy tables shared by api/ and workers/. The schema itself is made by Alembic."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, validates

from core.errors import printable

from . import clock


def utcnow() -> datetime:
    """Now, by the database's clock (``store.clock``): every time a job records."""
    return clock.now()


def in_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive one is UTC already (SQLite's rows are)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def storable_text(text: str) -> str:
    """``text`` as a job's message or error stores it: a control character (but newline and
    tab) or a lone surrogate as an escape (``\\x00``, ``\\x1b``; a name's byte that is not
    UTF-8, ``\\xff``: ``core.errors.printable``), everything else unchanged."""
    return printable(text)


class JobStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class JobKind(enum.StrEnum):
    """What a job does: a search (the product), or a calibration (measure a uniform sample of
    sub-networks on the device and fit its latency predictor: ``workers.calibration``)."""

    search = "search"
    calibration = "calibration"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, datetime: DateTime(timezone=True)}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[JobKind] = mapped_column(
        SAEnum(JobKind, name="job_kind", native_enum=False, length=16),
        index=True,
        default=JobKind.search,
        server_default=JobKind.search.value,
    )
    supernet: Mapped[str] = mapped_column(String(200), index=True)
    device: Mapped[str] = mapped_column(String(200), index=True)
    strategy: Mapped[str] = mapped_column(String(100))
    seed: Mapped[int] = mapped_column(Integer)
    budget: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[JobStatus] = mapped_column(
        SAEnum(JobStatus, name="job_status", native_enum=False, length=16), index=True
    )
    # Measured by this job (what the budget counts) / copied from earlier jobs on the same
    # supernet and device (warm start; free). Evaluation ``seq`` runs over both.
    evaluations_done: Mapped[int] = mapped_column(Integer, default=0)
    evaluations_reused: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    front_size: Mapped[int] = mapped_column(Integer, default=0)
    hypervolume: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)  # the listing
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # Seconds spent inside evaluation calls vs the whole run: the search's own overhead.
    eval_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    run_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    # The label of the API key that submitted it (``api.auth.key_label``), "" on a server
    # without keys or before 0011: what ``HWNAS_MAX_ACTIVE_JOBS_PER_KEY`` counts.
    submitted_by: Mapped[str] = mapped_column(String(16), default="", server_default="")
    # The Idempotency-Key it was submitted with, if any: one job per key and API key (its
    # retries find it; once it is deleted the key is free, and the next job gets a new id).
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True)

    __table_args__ = (
        Index(
            "ix_jobs_submitted_by_idempotency_key",
            "submitted_by",
            "idempotency_key",
            unique=True,
        ),
    )

    @validates("message", "error")
    def _storable(self, _key: str, text: str | None) -> str | None:
        """Notes and errors quote user input (file names, exception text). A NUL or a lone
        surrogate (Python's reading of a file name that is not UTF-8) cannot be stored as
        PostgreSQL text: they are kept as escapes, so the write that ends a job with such
        an error does not fail in turn (which left the job running until it was reaped)."""
        return None if text is None else storable_text(text)


class Evaluation(Base):
    """One measured sub-network of one job. (job_id, subnet_id) is unique: never measured twice."""

    __tablename__ = "evaluations"
    __table_args__ = (
        UniqueConstraint("job_id", "subnet_id", name="uq_evaluations_job_subnet"),
        UniqueConstraint("job_id", "seq", name="uq_evaluations_job_seq"),
        # A warm start reads a job's originals only (store.prior.prior_evaluations).
        Index("ix_evaluations_job_reused", "job_id", "reused"),
        # Where a sub-network was measured, its copies aside (store.prior.prior_failures:
        # a scan of the whole table without it, scale audit 33).
        Index(
            "ix_evaluations_subnet_original",
            "subnet_id",
            postgresql_where=text("reused IS false"),
            sqlite_where=text("reused IS 0"),
        ),
        # A finished job's front (/pareto): a dozen rows of its thousands.
        Index(
            "ix_evaluations_job_front",
            "job_id",
            "seq",
            postgresql_where=text("on_front IS true"),  # as .is_(True) reads: matched
            sqlite_where=text("on_front IS 1"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    subnet_id: Mapped[str] = mapped_column(String(400))
    arch: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Provenance and spread of measured values (latency median/IQR/repeats, runtime ...).
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    feasible: Mapped[bool] = mapped_column(Boolean)
    on_front: Mapped[bool] = mapped_column(Boolean, default=False)
    # Copied from an earlier job by a warm start (details.reused_from names that job).
    reused: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class JobLabel(Base):
    """One label of one job (``JobCreate.labels``: the user's name=value, such as
    ``project=kws``), by which the job listing filters; the job's spec holds them too."""

    __tablename__ = "job_labels"
    __table_args__ = (Index("ix_job_labels_name_value", "name", "value"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class DatabaseIdentity(Base):
    """One row: the database's random id (made by its migration), which workers announce
    with their devices so that an API counts only workers of its own database."""

    __tablename__ = "database_identity"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)


class LatencyPredictorRecord(Base):
    """One fitted latency predictor of one (supernet, device); versions count up from 1.

    ``payload`` is ``LatencyPredictor.to_payload()`` (JSON data, no code); ``metrics`` its
    cross-validated error; ``measurements`` the measured sub-networks it was fitted on
    (subnet id, latency and its spread), so it can be refitted or audited later.
    """

    __tablename__ = "latency_predictors"
    __table_args__ = (
        UniqueConstraint("supernet", "device", "version", name="uq_latency_predictors_version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    supernet: Mapped[str] = mapped_column(String(200), index=True)
    device: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer)
    n_measurements: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    measurements: Mapped[dict[str, Any]] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The calibration job that measured and fitted it (None: fitted before calibrations
    # were jobs, or its job row is gone).
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", name="fk_latency_predictors_job_id", ondelete="SET NULL"),
        index=True,
        unique=True,  # one version per calibration job
        nullable=True,
    )
