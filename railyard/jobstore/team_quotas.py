"""Keyword-only CRUD over the teams' quota overrides (``team_quota``): an admin's limits for one
team instead of the server's RAILYARD_MAX_CONCURRENT_JOBS_PER_TEAM and RAILYARD_MAX_CPUS_PER_TEAM.
A None limit keeps the server's default; 0 means no limit."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from railyard.errors import SpecError
from railyard.jobstore.engine import session_scope
from railyard.jobstore.tables import TeamQuota, utcnow

_UNSET = object()


def get_quota(engine: Engine, *, team: str) -> TeamQuota | None:
    """The team's override, or None when it has none."""
    with session_scope(engine) as session:
        return session.get(TeamQuota, team)


def list_quotas(engine: Engine) -> list[TeamQuota]:
    """Every team's override, by team name."""
    with session_scope(engine) as session:
        return list(session.exec(select(TeamQuota).order_by(col(TeamQuota.team))).all())


def _check(max_jobs: int | None, max_cpus: float | None) -> None:
    problems = []
    if max_jobs is not None and max_jobs < 0:
        problems.append({"field": "max_jobs", "message": "must be 0 (no limit) or more"})
    if max_cpus is not None and not max_cpus >= 0:       # negative or NaN
        problems.append({"field": "max_cpus", "message": "must be 0 (no limit) or more"})
    if problems:
        raise SpecError("quota: " + "; ".join(f"{p['field']} {p['message']}" for p in problems),
                        details=problems)


def set_quota(engine: Engine, *, team: str, max_jobs: int | None, max_cpus: float | None,
              updated_by: str | None = None) -> TeamQuota:
    """Store the team's override (both limits; None: the server's default for that one)."""
    if not team:
        raise SpecError("quota: give a team name", details=[{"field": "team",
                                                              "message": "empty"}])
    _check(max_jobs, max_cpus)
    with session_scope(engine) as session:
        row = session.get(TeamQuota, team) or TeamQuota(team=team)
        row.max_jobs, row.max_cpus = max_jobs, max_cpus
        row.updated_at, row.updated_by = utcnow(), updated_by
        session.add(row)
        session.flush()
        session.refresh(row)
        return row


def delete_quota(engine: Engine, *, team: str) -> bool:
    """Drop the team's override (it gets the server's defaults again); False if it had none."""
    with session_scope(engine) as session:
        row = session.get(TeamQuota, team)
        if row is None:
            return False
        session.delete(row)
        return True
