"""Database tables (SQLModel)."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Text, UniqueConstraint, false
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Timezone-aware now, in UTC."""
    return datetime.now(UTC)


class JobStatus(str, Enum):
    """Lifecycle of a training job."""

    QUEUED = "QUEUED"        # stored, not yet accepted by Ray
    PENDING = "PENDING"      # submitted to Ray, driver not started
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    def is_terminal(self) -> bool:
        """True once the job can change no more."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATUSES = frozenset(set(JobStatus) - TERMINAL_STATUSES)

PHASES = ("fetch", "split", "train", "evaluate", "publish")


def _tz() -> Column:
    return Column(DateTime(timezone=True), nullable=True)


class Job(SQLModel, table=True):
    """One training job: its spec, where it is, and what it produced."""

    id: str = Field(primary_key=True, max_length=64)
    status: str = Field(default=JobStatus.QUEUED.value, index=True, max_length=16)
    phase: str | None = Field(default=None, max_length=32)
    owner: str = Field(index=True, max_length=256)
    project: str = Field(default="", index=True, max_length=256)
    trainer: str = Field(default="", max_length=256)
    model_name: str = Field(max_length=256)
    model_description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    workflow_name: str = Field(max_length=256)
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    spec_hash: str = Field(max_length=64)
    origin: str = Field(default="api", max_length=32)
    created_at: datetime = Field(default_factory=utcnow,
                                 sa_column=Column(DateTime(timezone=True), nullable=False,
                                                  index=True))
    started_at: datetime | None = Field(default=None, sa_column=_tz())
    finished_at: datetime | None = Field(default=None, sa_column=_tz())
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error_phase: str | None = Field(default=None, max_length=32)
    train_rows: int | None = None
    holdout_rows: int | None = None
    dataset_stats: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    artifacts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    ray_submission_id: str | None = Field(default=None, max_length=128)
    pool: str | None = Field(default=None, max_length=64)
    pool_enforced: bool = False
    placement_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    status_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    submitted_at: datetime | None = Field(default=None, sa_column=_tz())
    # Who sent it (the API token's team) and, with an Idempotency-Key, the key and a hash of
    # the request body: one job per (team, key), enforced by the database.
    submitted_by: str | None = Field(default=None, max_length=256)
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str | None = Field(default=None, max_length=64)
    # Which attempt runs (or ran last): 1, then 2, 3... for retries. The runner's heartbeat
    # lets the reconciler tell a live driver from one that hangs or vanished unnoticed.
    attempt: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    heartbeat_at: datetime | None = Field(default=None, sa_column=_tz())
    # The submitting token's data access, checked again by the driver against every file it
    # reads: its path prefixes and the SQL connections granted to it (None: no narrowing).
    data_prefixes: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    sql_connections: list[str] | None = Field(default=None,
                                              sa_column=Column(JSON, nullable=True))
    # The spec's priority (0-100, default 50): the queue releases higher ones first.
    priority: int = Field(default=50, sa_column_kwargs={"server_default": "50"})
    # What the job read and ran (railyard.data.lineage, migration 0007): files with their size
    # and ETag/version or mtime, SQL queries, the workflow's source digest, packages, seeds.
    lineage: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # A rerun: the job it repeats, and the files it must read unchanged (None: not pinned).
    rerun_of: str | None = Field(default=None, max_length=64)
    pinned_files: dict[str, Any] | None = Field(default=None,
                                                sa_column=Column(JSON, nullable=True))

    # Every list filter (none, owner, project, status, their combinations) and the queue walk
    # one of these in (created_at, id) order (migration 0006).
    __table_args__ = (UniqueConstraint("submitted_by", "idempotency_key",
                                       name="uq_job_submitted_by_idempotency_key"),
                      Index("ix_job_created_id", "created_at", "id"),
                      Index("ix_job_owner_created_id", "owner", "created_at", "id"),
                      Index("ix_job_project_created_id", "project", "created_at", "id"),
                      Index("ix_job_status_created_id", "status", "created_at", "id"),
                      Index("ix_job_owner_status_created_id", "owner", "status", "created_at",
                            "id"),
                      Index("ix_job_owner_project_created_id", "owner", "project", "created_at",
                            "id"),
                      Index("ix_job_project_status_created_id", "project", "status",
                            "created_at", "id"),
                      Index("ix_job_status_priority_created_id", "status", "priority",
                            "created_at", "id"))


class ApiToken(SQLModel, table=True):
    """An API token: only its SHA-256 and a short display prefix are stored, never the token.

    Each token acts for one team; an admin token acts for every team. ``data_prefixes``, when
    set, narrows the data paths the team's specs may read (on top of the server-wide
    RAILYARD_ALLOWED_DATA_PREFIXES).
    """

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    prefix: str = Field(max_length=16, unique=True, index=True)
    token_hash: str = Field(max_length=64)
    team: str = Field(max_length=256, index=True)
    is_admin: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    data_prefixes: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    # SQL connection names this token's specs may read; a token with data_prefixes reads SQL
    # only through these (None on a token without prefixes: every configured connection).
    sql_connections: list[str] | None = Field(default=None,
                                              sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow,
                                 sa_column=Column(DateTime(timezone=True), nullable=False))
    revoked_at: datetime | None = Field(default=None, sa_column=_tz())


class JobEvent(SQLModel, table=True):
    """A timestamped entry on a job's timeline (status changes, phase starts and ends)."""

    __tablename__ = "job_event"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=64)
    at: datetime = Field(default_factory=utcnow,
                         sa_column=Column(DateTime(timezone=True), nullable=False))
    kind: str = Field(max_length=32)        # status | phase_started | phase_finished | progress
    phase: str | None = Field(default=None, max_length=32)
    message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class FailureKind(str, Enum):
    """Who a failure is down to: the platform (a lost node, a killed driver, an unreachable
    database) or the job's own code and data. They have separate retry budgets."""

    INFRASTRUCTURE = "infrastructure"
    USER_CODE = "user_code"


class JobAttempt(SQLModel, table=True):
    """One run of a job on Ray. A retried job keeps every attempt, numbered from 1."""

    __tablename__ = "job_attempt"

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=64)
    attempt: int
    ray_submission_id: str | None = Field(default=None, max_length=128)
    status: str = Field(default=JobStatus.RUNNING.value, max_length=16)
    failure_kind: str | None = Field(default=None, max_length=32)
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    error_phase: str | None = Field(default=None, max_length=32)
    started_at: datetime = Field(default_factory=utcnow,
                                 sa_column=Column(DateTime(timezone=True), nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=_tz())

    __table_args__ = (UniqueConstraint("job_id", "attempt", name="uq_job_attempt_number"),)



class TeamQuota(SQLModel, table=True):
    """An admin's override of the per-team quotas (RAILYARD_MAX_CONCURRENT_JOBS_PER_TEAM,
    RAILYARD_MAX_CPUS_PER_TEAM) for one team; None keeps the server's default."""

    __tablename__ = "team_quota"

    team: str = Field(primary_key=True, max_length=256)
    max_jobs: int | None = None
    max_cpus: float | None = None
    updated_at: datetime = Field(default_factory=utcnow,
                                 sa_column=Column(DateTime(timezone=True), nullable=False))
    updated_by: str | None = Field(default=None, max_length=256)


class ModelVersion(SQLModel, table=True):
    """One registered version of a model (owner, name): the model a SUCCEEDED job published.
    Versions count 1, 2, ... per (owner, name); a job registers at most one (migration 0007)."""

    __tablename__ = "model_version"

    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(max_length=256)
    name: str = Field(max_length=256)
    version: int
    job_id: str = Field(max_length=64, unique=True)
    created_at: datetime = Field(default_factory=utcnow,
                                 sa_column=Column(DateTime(timezone=True), nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    workflow_name: str = Field(default="", max_length=256)
    spec_hash: str = Field(default="", max_length=64)

    __table_args__ = (UniqueConstraint("owner", "name", "version",
                                       name="uq_model_version_number"),)


class ModelAlias(SQLModel, table=True):
    """A named pointer (``production``, ``staging``…) at one version of a model."""

    __tablename__ = "model_alias"

    owner: str = Field(primary_key=True, max_length=256)
    name: str = Field(primary_key=True, max_length=256)
    alias: str = Field(primary_key=True, max_length=128)
    version: int
    updated_at: datetime = Field(default_factory=utcnow,
                                 sa_column=Column(DateTime(timezone=True), nullable=False))


class ModelAliasEvent(SQLModel, table=True):
    """One move of an alias: from which version to which (None: created or deleted), who moved
    it (a team, or ``gate`` for the promotion gate) and why."""

    __tablename__ = "model_alias_event"

    id: int | None = Field(default=None, primary_key=True)
    owner: str = Field(max_length=256)
    name: str = Field(max_length=256)
    alias: str = Field(max_length=128)
    from_version: int | None = None
    to_version: int | None = None
    at: datetime = Field(default_factory=utcnow,
                         sa_column=Column(DateTime(timezone=True), nullable=False))
    actor: str = Field(max_length=256)
    reason: str = Field(max_length=32)          # gate | person
    job_id: str | None = Field(default=None, max_length=64)
    message: str | None = Field(default=None, sa_column=Column(Text, nullable=True))

    __table_args__ = (Index("ix_model_alias_event_model", "owner", "name", "id"),)


class WebhookEndpoint(SQLModel, table=True):
    """A registered webhook receiver: the events it wants of the jobs of ``owner`` (None: an
    admin's endpoint for every team). The signing secret is kept encrypted
    (railyard.control.webhooks_secrets), never returned after creation."""

    __tablename__ = "webhook_endpoint"

    id: str = Field(primary_key=True, max_length=64)
    owner: str | None = Field(default=None, index=True, max_length=256)
    url: str = Field(sa_column=Column(Text, nullable=False))
    events: list[str] = Field(sa_column=Column(JSON, nullable=False))
    secret_encrypted: str = Field(sa_column=Column(Text, nullable=False))
    created_by: str = Field(max_length=256)
    created_at: datetime = Field(default_factory=utcnow,
                                 sa_column=Column(DateTime(timezone=True), nullable=False))


class WebhookOutboxEvent(SQLModel, table=True):
    """The outbox: one row per job status change that webhooks can announce, written in the
    transaction of the change itself (jobs.transition). The dispatcher fans each out to the
    endpoints that want it (one delivery each) and stamps ``fanned_out_at``; ``payload`` is the
    body every endpoint receives. ``seq`` orders the events."""

    __tablename__ = "webhook_outbox_event"

    seq: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=64, unique=True)
    job_id: str = Field(max_length=64)
    type: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow,
                                 sa_column=Column(DateTime(timezone=True), nullable=False))
    fanned_out_at: datetime | None = Field(default=None, sa_column=_tz())
    payload: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))

    __table_args__ = (Index("ix_webhook_outbox_pending", "fanned_out_at", "seq"),)


class WebhookDelivery(SQLModel, table=True):
    """One event owed to one endpoint: ``pending`` until a 2xx (``delivered``) or until its
    retries run out (``failed``); ``next_attempt_at`` is when it is tried next. An endpoint
    gets its deliveries in ``id`` (event) order."""

    __tablename__ = "webhook_delivery"

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: str = Field(max_length=64)
    event_seq: int
    event_id: str = Field(max_length=64)
    event_type: str = Field(max_length=16)
    job_id: str = Field(max_length=64)
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    created_at: datetime = Field(default_factory=utcnow,
                                 sa_column=Column(DateTime(timezone=True), nullable=False))
    next_attempt_at: datetime | None = Field(default=None, sa_column=_tz())
    finished_at: datetime | None = Field(default=None, sa_column=_tz())

    __table_args__ = (Index("ix_webhook_delivery_endpoint_status_id", "endpoint_id", "status",
                            "id"),
                      Index("ix_webhook_delivery_status_next", "status", "next_attempt_at"))


class WebhookAttempt(SQLModel, table=True):
    """One HTTP try of a delivery: when, the receiver's status code (None: no answer), the
    error, and when the next try is due (None: no more)."""

    __tablename__ = "webhook_attempt"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(index=True)
    at: datetime = Field(default_factory=utcnow,
                         sa_column=Column(DateTime(timezone=True), nullable=False))
    http_status: int | None = None
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    duration_ms: float | None = None
    next_retry_at: datetime | None = Field(default=None, sa_column=_tz())


class MlflowExport(SQLModel, table=True):
    """A SUCCEEDED job's export to MLflow (railyard.control.mlflow_export): ``pending`` until
    its run and registered version exist (``exported``) or its retries ran out (``failed``);
    ``next_attempt_at`` is when it is tried next, ``error`` the last attempt's failure. The
    MLflow run id and model version are kept as soon as they exist, so a retry reuses them."""

    __tablename__ = "mlflow_export"

    job_id: str = Field(primary_key=True, max_length=64)
    status: str = Field(default="pending", max_length=16)
    attempts: int = 0
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    run_id: str | None = Field(default=None, max_length=64)
    experiment_id: str | None = Field(default=None, max_length=64)
    registered_name: str | None = Field(default=None, max_length=512)
    mlflow_version: int | None = None
    created_at: datetime = Field(default_factory=utcnow,
                                 sa_column=Column(DateTime(timezone=True), nullable=False))
    next_attempt_at: datetime | None = Field(default=None, sa_column=_tz())
    exported_at: datetime | None = Field(default=None, sa_column=_tz())

    __table_args__ = (Index("ix_mlflow_export_status_next", "status", "next_attempt_at"),)
