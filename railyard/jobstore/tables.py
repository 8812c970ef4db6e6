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
