"""``railyard jobs``: list jobs through the API (no sub-command), and ``railyard jobs prune``:
retention, directly against the database named by the settings (RAILYARD_DATABASE_URL,
migrated first), like ``railyard token``.

Mounted in the main CLI with ``app.add_typer(jobs_app, name="jobs")``.
"""

from __future__ import annotations

import re
from datetime import timedelta

import typer
from rich.console import Console
from rich.table import Table

from railyard.config import get_settings
from railyard.errors import RailyardError

jobs_app = typer.Typer(help="List jobs (no sub-command) and prune old finished ones.")
console = Console()
err_console = Console(stderr=True)

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` as a timedelta (BadParameter otherwise)."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text.lower())
    if not match or int(match.group(1)) == 0:
        raise typer.BadParameter(f"{text!r} is not an age: write a positive number and a unit, "
                                 "as 30d, 12h, 90m, 3600s or 2w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _fail(exc: RailyardError) -> None:
    err_console.print(f"[red]error[/red] ({type(exc).__name__}): {exc.message}")
    raise typer.Exit(code=1)


@jobs_app.callback(invoke_without_command=True)
def show(ctx: typer.Context, owner: str | None = None, project: str | None = None,
         status: str | None = None, limit: int = 20) -> None:
    """List jobs, newest first (with no sub-command)."""
    if ctx.invoked_subcommand is not None:
        return
    from railyard.client.sdk import RailyardClient

    try:
        page = RailyardClient().list(owner=owner, project=project, status=status, limit=limit)
    except RailyardError as exc:
        _fail(exc)
    table = Table()
    table.add_column("id", no_wrap=True)
    for column in ("status", "phase", "owner", "model", "workflow", "created"):
        table.add_column(column)
    for job in page["jobs"]:
        table.add_row(job["id"], job["status"], job.get("phase") or "", job["owner"],
                      job["model_name"], job["workflow_name"], job["created_at"][:19])
    console.print(table)


@jobs_app.command("prune")
def prune(older_than: str = typer.Option(..., "--older-than",
                                         help="delete jobs that finished longer ago than this: "
                                              "30d, 12h, 90m, 3600s, 2w"),
          status: str = typer.Option("SUCCEEDED,FAILED,CANCELLED", "--status",
                                     help="comma-separated terminal statuses to prune"),
          dry_run: bool = typer.Option(False, "--dry-run",
                                       help="only count the jobs that would be deleted"),
          batch_size: int = typer.Option(1000, "--batch-size", min=1,
                                         help="jobs deleted per transaction")) -> None:
    """Delete finished jobs (with their events and attempts) older than --older-than.
    QUEUED, PENDING and RUNNING jobs are never deleted, nor jobs that registered a model
    version."""
    from railyard.jobstore import jobs, registry
    from railyard.jobstore.engine import get_engine, migrate
    from railyard.jobstore.tables import JobStatus, utcnow

    age = parse_age(older_than)
    try:
        statuses = [JobStatus(s.strip().upper()) for s in status.split(",") if s.strip()]
    except ValueError:
        raise typer.BadParameter(f"{status!r}: use SUCCEEDED, FAILED and/or CANCELLED",
                                 param_hint="--status") from None
    url = get_settings().resolved_database_url
    migrate(url)
    cutoff = utcnow() - age
    try:
        engine = get_engine(url)
        # a job that registered a model version stays: the registry points at its spec,
        # metrics, lineage and artifacts
        count = jobs.prune_jobs(engine, finished_before=cutoff, statuses=statuses,
                                batch_size=batch_size, dry_run=dry_run,
                                keep=lambda ids: registry.registered_job_ids(engine, ids))
    except RailyardError as exc:
        _fail(exc)
    names = ",".join(s.value for s in statuses)
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {count} {names} jobs finished before {cutoff.isoformat()}")
