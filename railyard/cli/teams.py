"""``railyard team``: show and set a team's quota (jobs and CPUs on Ray at once), directly
against the database named by the settings (RAILYARD_DATABASE_URL, migrated first), like
``railyard token``. Over the API: ``GET/PUT /v1/teams/{team}/quota``.

Mounted in the main CLI with ``app.add_typer(team_app, name="team")``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from railyard.config import get_settings
from railyard.errors import RailyardError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

team_app = typer.Typer(help="Team quotas: jobs and CPUs on Ray at once (over the server's "
                            "defaults).", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)


def _engine() -> Engine:
    from railyard.jobstore.engine import get_engine, migrate

    url = get_settings().resolved_database_url
    migrate(url)
    return get_engine(url)


def _limit(value: float) -> str:
    return "no limit" if not value else f"{value:g}"


def _show(engine: Engine, team: str) -> None:
    from railyard.control import team_limits
    from railyard.control.access import SYSTEM

    view = team_limits.read_quota(engine, get_settings(), caller=SYSTEM, team=team)
    table = Table("team", "max jobs", "max CPUs", "jobs on Ray", "CPUs on Ray", "queued",
                  "set by")
    table.add_row(view.team,
                  _limit(view.max_jobs) + ("" if view.override_max_jobs is not None
                                           else " (default)"),
                  _limit(view.max_cpus) + ("" if view.override_max_cpus is not None
                                           else " (default)"),
                  str(view.jobs_on_ray), f"{view.cpus_on_ray:g}", str(view.queued),
                  view.updated_by or "-")
    console.print(table)


@team_app.command("set")
def set_quota(team: str = typer.Argument(..., help="the team (job owner)"),
              max_jobs: int | None = typer.Option(
                  None, "--max-jobs", min=0,
                  help="jobs on Ray at once (0: no limit); unset: keep the current value"),
              max_cpus: float | None = typer.Option(
                  None, "--max-cpus", min=0,
                  help="CPUs of its jobs on Ray at once (0: no limit); unset: keep the current "
                       "value"),
              default: bool = typer.Option(
                  False, "--default",
                  help="drop the team's own quota: it gets the server's defaults "
                       "(RAILYARD_MAX_CONCURRENT_JOBS_PER_TEAM, RAILYARD_MAX_CPUS_PER_TEAM)")
              ) -> None:
    """Set a team's quota; its queued jobs are released on it at the reconciler's next tick."""
    from railyard.jobstore import team_quotas

    engine = _engine()
    try:
        if default:
            team_quotas.delete_quota(engine, team=team)
        else:
            if max_jobs is None and max_cpus is None:
                err_console.print("give --max-jobs, --max-cpus or --default")
                raise typer.Exit(code=2)
            current = team_quotas.get_quota(engine, team=team)
            team_quotas.set_quota(
                engine, team=team,
                max_jobs=max_jobs if max_jobs is not None or current is None
                else current.max_jobs,
                max_cpus=max_cpus if max_cpus is not None or current is None
                else current.max_cpus,
                updated_by="cli")
        _show(engine, team)
    except RailyardError as exc:
        err_console.print(f"[red]error[/red] ({type(exc).__name__}): {exc.message}")
        raise typer.Exit(code=1) from None


@team_app.command("show")
def show(team: str = typer.Argument(..., help="the team (job owner)")) -> None:
    """A team's quota in force and its jobs' use now."""
    _show(_engine(), team)


@team_app.command("list")
def list_quotas() -> None:
    """The teams with their own quota."""
    from railyard.jobstore import team_quotas

    settings = get_settings()
    table = Table("team", "max jobs", "max CPUs", "updated", "by")
    for row in team_quotas.list_quotas(_engine()):
        table.add_row(row.team,
                      "default" if row.max_jobs is None else _limit(row.max_jobs),
                      "default" if row.max_cpus is None else _limit(row.max_cpus),
                      row.updated_at.isoformat(timespec="seconds"), row.updated_by or "-")
    console.print(table)
    console.print(f"defaults: {_limit(settings.max_concurrent_jobs_per_team)} jobs, "
                  f"{_limit(settings.max_cpus_per_team)} CPUs per team")
