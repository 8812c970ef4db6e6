"""Keyword-only CRUD over ``mlflow_export``: the state of each SUCCEEDED job's export to MLflow
(railyard.control.mlflow_export runs them).

A job is owed an export once it registered a model version (railyard.jobstore.registry);
``enqueue_new`` creates the missing rows, ``due`` lists the pending ones whose time came, and
each attempt ends in ``mark_exported``, ``mark_retry`` or ``mark_failed``.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from railyard.jobstore.engine import session_scope
from railyard.jobstore.tables import MlflowExport, ModelAliasEvent, ModelVersion, utcnow

PENDING, EXPORTED, FAILED = "pending", "exported", "failed"
MAX_ERROR_CHARS = 2000


def get(engine: Engine, *, job_id: str) -> MlflowExport | None:
    """The job's export row, or None (not exported: MLflow off, or not registered yet)."""
    with session_scope(engine) as session:
        return session.get(MlflowExport, job_id)


def enqueue_new(engine: Engine, *, limit: int = 100) -> list[str]:
    """Create a ``pending`` row for up to ``limit`` registered job models that have none
    (oldest registration first); the job ids enqueued."""
    taken = select(MlflowExport.job_id).where(MlflowExport.job_id == ModelVersion.job_id)\
        .exists()
    query = select(ModelVersion.job_id).where(~taken).order_by(col(ModelVersion.id)).limit(limit)
    with session_scope(engine) as session:
        job_ids = list(session.exec(query).all())
    added = []
    for job_id in job_ids:
        try:
            with session_scope(engine) as session:
                session.add(MlflowExport(job_id=job_id, next_attempt_at=utcnow()))
            added.append(job_id)
        except IntegrityError:     # enqueued meanwhile
            continue
    return added


def due(engine: Engine, *, now: datetime | None = None, limit: int = 20) -> list[MlflowExport]:
    """Pending exports whose next attempt is due, oldest first."""
    now = now or utcnow()
    query = select(MlflowExport).where(
        MlflowExport.status == PENDING,
        or_(col(MlflowExport.next_attempt_at).is_(None), col(MlflowExport.next_attempt_at) <= now),
    ).order_by(col(MlflowExport.created_at), col(MlflowExport.job_id)).limit(limit)
    with session_scope(engine) as session:
        return list(session.exec(query).all())


def record_progress(engine: Engine, *, job_id: str, run_id: str | None = None,
                    experiment_id: str | None = None, registered_name: str | None = None,
                    mlflow_version: int | None = None) -> None:
    """Keep what an attempt already created in MLflow (a retry reuses it)."""
    with session_scope(engine) as session:
        row = session.get(MlflowExport, job_id)
        if row is None:
            return
        for name, value in (("run_id", run_id), ("experiment_id", experiment_id),
                            ("registered_name", registered_name),
                            ("mlflow_version", mlflow_version)):
            if value is not None:
                setattr(row, name, value)
        session.add(row)


def mark_exported(engine: Engine, *, job_id: str) -> None:
    """The run and its registered version exist: done."""
    with session_scope(engine) as session:
        row = session.get(MlflowExport, job_id)
        if row is not None:
            row.status, row.attempts, row.error = EXPORTED, row.attempts + 1, None
            row.exported_at, row.next_attempt_at = utcnow(), None
            session.add(row)


def mark_retry(engine: Engine, *, job_id: str, error: str, next_attempt_at: datetime) -> None:
    """An attempt failed: keep the error, try again at ``next_attempt_at``."""
    with session_scope(engine) as session:
        row = session.get(MlflowExport, job_id)
        if row is not None:
            row.attempts, row.error = row.attempts + 1, error[:MAX_ERROR_CHARS]
            row.next_attempt_at = next_attempt_at
            session.add(row)


def mark_failed(engine: Engine, *, job_id: str, error: str) -> None:
    """The last attempt failed: give up (``failed``, with the error)."""
    with session_scope(engine) as session:
        row = session.get(MlflowExport, job_id)
        if row is not None:
            row.status, row.attempts = FAILED, row.attempts + 1
            row.error, row.next_attempt_at = error[:MAX_ERROR_CHARS], None
            session.add(row)


def retry_now(engine: Engine, *, job_id: str) -> None:
    """Make a failed or waiting export pending and due at once (its attempts start again)."""
    with session_scope(engine) as session:
        row = session.get(MlflowExport, job_id)
        if row is not None and row.status != EXPORTED:
            row.status, row.attempts, row.next_attempt_at = PENDING, 0, utcnow()
            session.add(row)


def exported_versions(engine: Engine, *, owner: str,
                      name: str) -> dict[int, tuple[str, int]]:
    """Railyard version -> (MLflow registered name, MLflow version) of the model's exported
    versions."""
    query = select(ModelVersion.version, MlflowExport.registered_name,
                   MlflowExport.mlflow_version)\
        .join(MlflowExport, col(MlflowExport.job_id) == col(ModelVersion.job_id))\
        .where(ModelVersion.owner == owner, ModelVersion.name == name,
               col(MlflowExport.mlflow_version).is_not(None))
    with session_scope(engine) as session:
        return {int(v): (str(n), int(m)) for v, n, m in session.exec(query).all()
                if n is not None and m is not None}


def alias_moves_after(engine: Engine, *, after_id: int,
                      limit: int = 500) -> tuple[set[tuple[str, str]], int]:
    """The (owner, name) of models whose aliases moved after event ``after_id``, and the
    last event id seen (``after_id`` when none)."""
    query = select(ModelAliasEvent.id, ModelAliasEvent.owner, ModelAliasEvent.name)\
        .where(col(ModelAliasEvent.id) > after_id).order_by(col(ModelAliasEvent.id))\
        .limit(limit)
    with session_scope(engine) as session:
        rows = list(session.exec(query).all())
    return {(o, n) for _, o, n in rows}, max((int(i) for i, _, _ in rows if i is not None),
                                             default=after_id)
