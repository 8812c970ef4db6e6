"""Who may do what: the caller behind an API token and the rules the API applies to it.

- A token acts for one team. The team's jobs are those whose ``owner`` is the team's name: it
  submits only jobs it owns, and reads, lists, cancels and sees the logs and events of only
  those (another team's job is a 403, an unknown one a 404).
- An admin token acts for every team: it sees every job and may submit for any owner.
- A token's ``data_prefixes``, when set, narrow the paths its specs may read, on top of the
  server-wide RAILYARD_ALLOWED_DATA_PREFIXES (both must allow a path).
- SQL sources are a privilege of their own: a token reads only the SQL connections granted to
  it (``railyard token create --sql-connection NAME``). A token without grants reads every
  connection the server defines, unless it has data prefixes: it then reads no SQL source.

The API applies :func:`check_job` to every route with a ``{job_id}`` in one app-wide guard
(``serve_app.deps.authorize``), so a new job route is protected without further code;
:class:`railyard.control.service.JobService` applies :func:`check_submit` and :func:`owner_filter`.
"""

from __future__ import annotations

from dataclasses import dataclass

from railyard.data.allowed_paths import check_allowed_paths
from railyard.errors import ForbiddenError
from railyard.jobstore.tables import ApiToken, Job
from railyard.spec import SqlSource, TrainingSpec


@dataclass(frozen=True)
class Caller:
    """The authenticated sender of a request."""

    team: str
    is_admin: bool = False
    data_prefixes: tuple[str, ...] = ()
    token_prefix: str | None = None
    # SQL connection names granted to the token (None: not narrowed by the token).
    sql_connections: tuple[str, ...] | None = None

    @classmethod
    def from_token(cls, row: ApiToken) -> Caller:
        """The caller a stored token stands for."""
        return cls(team=row.team, is_admin=row.is_admin,
                   data_prefixes=tuple(row.data_prefixes or ()), token_prefix=row.prefix,
                   sql_connections=(None if row.sql_connections is None
                                    else tuple(row.sql_connections)))

    @property
    def granted_sql_connections(self) -> tuple[str, ...] | None:
        """The SQL connection names this caller may read (None: every one the server defines):
        its grants; none for a token narrowed by data prefixes without grants."""
        if self.sql_connections is not None:
            return self.sql_connections
        return () if self.data_prefixes else None


SYSTEM = Caller(team="system", is_admin=True)
"""In-process callers (tests, tools) that act with full rights."""


def check_sql_grants(caller: Caller, spec: TrainingSpec) -> None:
    """403 naming the first SQL source whose connection is not granted to ``caller``."""
    granted = caller.granted_sql_connections
    if granted is None:
        return
    for i, source in enumerate(spec.data.features):
        if not isinstance(source, SqlSource) or source.connection in granted:
            continue
        where = f"data.features.{i}.connection"
        why = (f"this token of team {caller.team!r} may read SQL only through "
               f"{', '.join(repr(name) for name in granted)}" if granted else
               f"this token of team {caller.team!r} has data prefixes and no SQL connection "
               "grants, so it reads no SQL source")
        raise ForbiddenError(
            f"{where}: SQL connection {source.connection!r} is not granted: {why}; use a "
            f"granted connection or ask an admin for a token that grants it (railyard token "
            f"create --team {caller.team} --sql-connection {source.connection} …)",
            details=[{"field": where, "message": "SQL connection not granted to the token",
                      "granted_connections": list(granted)}])


def check_submit(caller: Caller, spec: TrainingSpec) -> None:
    """403 unless ``caller`` may submit ``spec``: its owner, its data paths and SQL
    connections."""
    if not caller.is_admin and spec.owner != caller.team:
        raise ForbiddenError(
            f"owner: {spec.owner!r} is not your team; this token submits jobs for team "
            f"{caller.team!r} only: set \"owner\": {caller.team!r} or use a token of team "
            f"{spec.owner!r}", details=[{"field": "owner", "message": "not the token's team",
                                         "team": caller.team}])
    if caller.data_prefixes:
        check_allowed_paths(spec.data, list(caller.data_prefixes),
                            granted_by=f"team {caller.team!r}",
                            remedy=f"ask an admin for a token of team {caller.team!r} that "
                                   "covers it (railyard token create --data-prefix …)")
    check_sql_grants(caller, spec)


def check_job(caller: Caller, job: Job) -> None:
    """403 unless ``caller`` may see and act on ``job``."""
    if not caller.is_admin and job.owner != caller.team:
        raise ForbiddenError(
            f"job {job.id} is not owned by team {caller.team!r} (this token's team); only its "
            "owner team or an admin token may read, cancel or follow it",
            details=[{"field": "job_id", "message": "owned by another team",
                      "team": caller.team}])


def owner_filter(caller: Caller, owner: str | None) -> str | None:
    """The ``owner`` a job listing is restricted to: the caller's team unless admin."""
    if caller.is_admin:
        return owner
    if owner is not None and owner != caller.team:
        raise ForbiddenError(
            f"owner={owner!r}: this token lists the jobs of team {caller.team!r} only; drop "
            "the owner filter or use that team's token",
            details=[{"field": "owner", "message": "not the token's team",
                      "team": caller.team}])
    return caller.team
