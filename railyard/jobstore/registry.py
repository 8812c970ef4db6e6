"""Keyword-only CRUD over the model registry: versions of (owner, name), aliases and the
record of every alias move (tables ``model_version``, ``model_alias``, ``model_alias_event``).

Registration is idempotent per job (``model_version.job_id`` is unique) and safe under
concurrency: two jobs of one model succeeding at once race for the next number, and the loser
of the ``(owner, name, version)`` unique constraint takes the number after.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from railyard.jobstore.engine import session_scope
from railyard.jobstore.tables import Job, ModelAlias, ModelAliasEvent, ModelVersion, utcnow

REGISTER_ATTEMPTS = 8


@dataclass(frozen=True)
class ModelSummary:
    """One registered model in a listing: its latest version, how many, and its aliases."""

    owner: str
    name: str
    latest_version: int
    versions: int
    aliases: dict[str, int] = field(default_factory=dict)


def version_of_job(engine: Engine, *, job_id: str) -> ModelVersion | None:
    """The version the job registered, if it did."""
    with session_scope(engine) as session:
        return session.exec(select(ModelVersion).where(ModelVersion.job_id == job_id)).first()


def register_version(engine: Engine, *, job: Job) -> ModelVersion:
    """Register the model of SUCCEEDED ``job`` as the next version of (owner, model_name);
    the version it already has when it was registered before."""
    for _ in range(REGISTER_ATTEMPTS):
        try:
            with session_scope(engine) as session:
                existing = session.exec(
                    select(ModelVersion).where(ModelVersion.job_id == job.id)).first()
                if existing is not None:
                    return existing
                latest = session.exec(
                    select(func.max(ModelVersion.version)).where(
                        ModelVersion.owner == job.owner,
                        ModelVersion.name == job.model_name)).one()
                row = ModelVersion(owner=job.owner, name=job.model_name,
                                   version=int(latest or 0) + 1, job_id=job.id,
                                   metrics=dict(job.metrics or {}),
                                   workflow_name=job.workflow_name, spec_hash=job.spec_hash)
                session.add(row)
                session.flush()
                return row
        except IntegrityError:    # a concurrent registration took the number (or this job)
            continue
    raise RuntimeError(f"could not register job {job.id}: {REGISTER_ATTEMPTS} concurrent "
                       "registrations of the same model won the version number first")


def register_succeeded(engine: Engine, *, job: Job, gate_actor: str = "gate") -> ModelVersion:
    """Register SUCCEEDED ``job``'s model (idempotent) and apply its promotion gate's decision
    (``metrics.promotion``): when it promoted, move the alias to the new version, recorded as
    a ``gate`` move and on the job's timeline. Safe to repeat: the alias moves once."""
    from railyard.jobstore import jobs

    row = register_version(engine, job=job)
    decision = (job.metrics or {}).get("promotion")
    if decision and decision.get("promoted"):
        event = set_alias(engine, owner=job.owner, name=job.model_name,
                          alias=str(decision["alias"]), version=row.version, actor=gate_actor,
                          reason="gate", job_id=job.id, message=decision.get("reason"))
        if event is not None:
            jobs.add_event(engine, job_id=job.id, kind="promotion",
                           message=f"{decision['alias']} -> version {row.version}: "
                                   f"{decision.get('reason')}")
    return row


def unregistered_succeeded(engine: Engine, *, created_after: datetime,
                           finished_before: datetime, limit: int = 100) -> list[Job]:
    """SUCCEEDED jobs created after ``created_after`` and finished before ``finished_before``
    that registered no model version (their driver ended between the two writes). Walks the
    (status, created_at, id) index from ``created_after`` on only."""
    taken = select(ModelVersion.id).where(ModelVersion.job_id == Job.id).exists()
    query = select(Job).where(Job.status == "SUCCEEDED", col(Job.created_at) > created_after,
                              col(Job.finished_at) < finished_before, ~taken)\
        .order_by(col(Job.created_at), col(Job.id)).limit(limit)
    with session_scope(engine) as session:
        return list(session.exec(query).all())


def list_models(engine: Engine, *, owner: str | None = None, q: str | None = None,
                limit: int = 200) -> list[ModelSummary]:
    """Registered models (owner, then name order), optionally of one owner and with ``q`` in
    their name (case-insensitive), with their aliases: two queries."""
    query = select(ModelVersion.owner, ModelVersion.name, func.max(ModelVersion.version),
                   func.count()).group_by(col(ModelVersion.owner), col(ModelVersion.name))
    if owner:
        query = query.where(ModelVersion.owner == owner)
    if q:
        escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(col(ModelVersion.name).ilike(f"%{escaped}%", escape="\\"))
    query = query.order_by(col(ModelVersion.owner), col(ModelVersion.name)).limit(limit)
    with session_scope(engine) as session:
        rows = list(session.exec(query).all())
        owners = sorted({row[0] for row in rows})
        aliases: dict[tuple[str, str], dict[str, int]] = {}
        if owners:
            for alias in session.exec(select(ModelAlias).where(col(ModelAlias.owner).in_(owners))):
                aliases.setdefault((alias.owner, alias.name), {})[alias.alias] = alias.version
    return [ModelSummary(owner=o, name=n, latest_version=int(latest), versions=int(count),
                         aliases=dict(sorted(aliases.get((o, n), {}).items())))
            for o, n, latest, count in rows]


def list_versions(engine: Engine, *, owner: str, name: str) -> list[ModelVersion]:
    """Every version of the model, first to last ([] for an unknown model)."""
    with session_scope(engine) as session:
        query = select(ModelVersion).where(ModelVersion.owner == owner,
                                           ModelVersion.name == name)\
            .order_by(col(ModelVersion.version))
        return list(session.exec(query).all())


def get_version(engine: Engine, *, owner: str, name: str, version: int) -> ModelVersion | None:
    """One version of the model, or None."""
    with session_scope(engine) as session:
        return session.exec(select(ModelVersion).where(
            ModelVersion.owner == owner, ModelVersion.name == name,
            ModelVersion.version == version)).first()


def aliases_of(engine: Engine, *, owner: str, name: str) -> dict[str, int]:
    """The model's aliases: alias -> version."""
    with session_scope(engine) as session:
        rows = session.exec(select(ModelAlias).where(ModelAlias.owner == owner,
                                                     ModelAlias.name == name))
        return {row.alias: row.version for row in sorted(rows, key=lambda r: r.alias)}


def get_alias(engine: Engine, *, owner: str, name: str, alias: str) -> ModelAlias | None:
    """The alias row, or None."""
    with session_scope(engine) as session:
        return session.get(ModelAlias, (owner, name, alias))


def aliased_version(engine: Engine, *, owner: str, name: str,
                    alias: str) -> tuple[ModelAlias, ModelVersion | None] | None:
    """The alias row and the version it points at, in one query; None for an unknown alias
    (the version is None only if its row is gone)."""
    with session_scope(engine) as session:
        row = session.exec(
            select(ModelAlias, ModelVersion).outerjoin(ModelVersion, and_(
                col(ModelVersion.owner) == col(ModelAlias.owner),
                col(ModelVersion.name) == col(ModelAlias.name),
                col(ModelVersion.version) == col(ModelAlias.version)))
            .where(ModelAlias.owner == owner, ModelAlias.name == name,
                   ModelAlias.alias == alias)).first()
        return None if row is None else (row[0], row[1])


def set_alias(engine: Engine, *, owner: str, name: str, alias: str, version: int, actor: str,
              reason: str, job_id: str | None = None,
              message: str | None = None) -> ModelAliasEvent | None:
    """Point ``alias`` at ``version`` (creating it) and record the move; None (and no event)
    when it already points there."""
    with session_scope(engine) as session:
        row = session.exec(select(ModelAlias).where(
            ModelAlias.owner == owner, ModelAlias.name == name, ModelAlias.alias == alias)
            .with_for_update()).first()
        previous = row.version if row is not None else None
        if previous == version:
            return None
        if row is None:
            session.add(ModelAlias(owner=owner, name=name, alias=alias, version=version))
        else:
            row.version, row.updated_at = version, utcnow()
            session.add(row)
        event = ModelAliasEvent(owner=owner, name=name, alias=alias, from_version=previous,
                                to_version=version, actor=actor, reason=reason, job_id=job_id,
                                message=message)
        session.add(event)
        session.flush()
        return event


def delete_alias(engine: Engine, *, owner: str, name: str, alias: str, actor: str,
                 reason: str, message: str | None = None) -> ModelAliasEvent | None:
    """Remove ``alias`` and record it; None when there was no such alias."""
    with session_scope(engine) as session:
        row = session.exec(select(ModelAlias).where(
            ModelAlias.owner == owner, ModelAlias.name == name, ModelAlias.alias == alias)
            .with_for_update()).first()
        if row is None:
            return None
        session.delete(row)
        event = ModelAliasEvent(owner=owner, name=name, alias=alias, from_version=row.version,
                                to_version=None, actor=actor, reason=reason, message=message)
        session.add(event)
        session.flush()
        return event


def alias_events(engine: Engine, *, owner: str, name: str,
                 limit: int = 500) -> list[ModelAliasEvent]:
    """The model's alias moves, oldest first (the newest ``limit``)."""
    with session_scope(engine) as session:
        query = select(ModelAliasEvent).where(ModelAliasEvent.owner == owner,
                                              ModelAliasEvent.name == name)\
            .order_by(col(ModelAliasEvent.id).desc()).limit(limit)
        return list(reversed(session.exec(query).all()))


def registered_job_ids(engine: Engine, job_ids: Iterable[str]) -> set[str]:
    """Which of ``job_ids`` registered a model version (retention keeps those jobs)."""
    ids = list(job_ids)
    if not ids:
        return set()
    with session_scope(engine) as session:
        return set(session.exec(select(ModelVersion.job_id)
                                .where(col(ModelVersion.job_id).in_(ids))).all())


def version_summary(row: ModelVersion) -> dict[str, Any]:
    """A version as the API shows it."""
    return {"version": row.version, "job_id": row.job_id, "created_at": row.created_at,
            "metrics": row.metrics or {}, "workflow_name": row.workflow_name,
            "spec_hash": row.spec_hash}
