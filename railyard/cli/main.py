"""The ``railyard`` command line: up | down | submit | jobs | status | logs | cancel | workflows |
demo | kuberay | token."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from railyard.config import Settings, get_settings
from railyard.errors import RailyardError
from railyard.secrets import redact

if TYPE_CHECKING:
    from railyard.client.sdk import RailyardClient

app = typer.Typer(help="Railyard on Ray: train models from a spec, tracked by job id.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _authenticate_to_ray() -> None:
    """Every command that reaches this home's local Ray cluster sends its Ray token."""
    from railyard.cluster import local_cluster

    local_cluster.use_ray_token(get_settings())


def _client() -> RailyardClient:
    from railyard.client.sdk import RailyardClient

    return RailyardClient()


def _fail(exc: RailyardError) -> None:
    err_console.print(f"[red]error[/red] ({type(exc).__name__}): {exc.message}")
    raise typer.Exit(code=1)


@app.command()
def up(port: int = typer.Option(8000, help="HTTP port of the API"),
       host: str = typer.Option("127.0.0.1", help="interface the API listens on"),
       address: str | None = typer.Option(
           None, help="Ray dashboard address of an existing cluster (http://HOST:8265); "
                      "default: start a local one"),
       num_cpus: int | None = typer.Option(None, help="CPUs of the local Ray head")) -> None:
    """Start a local Ray cluster (unless --address) and the API; return once /healthz answers."""
    from railyard.cluster import local_cluster
    from railyard.jobstore.engine import migrate

    settings = get_settings()
    if address:
        settings = settings.model_copy(update={"ray_address": address})
    os.umask(0o077)             # the store, its logs and tokens: for this user only
    settings.create_home()
    migrate(settings.resolved_database_url)
    _ensure_admin_token(settings)
    ray_address = settings.ray_address
    if not local_cluster.dashboard_alive(ray_address):
        if address:
            err_console.print(f"[red]no Ray cluster answers at {address}[/red]")
            raise typer.Exit(code=1)
        with console.status("starting a local Ray cluster…"):
            ray_address = local_cluster.start_head(settings, num_cpus=num_cpus)
        console.print(f"Ray cluster: {ray_address}")
    with console.status("deploying the API on Ray Serve…"):
        url = local_cluster.deploy_api(settings, address=ray_address, host=host, port=port)
    console.print(f"[green]Railyard API ready[/green] at {url}  (docs: {url}/docs)")
    console.print(f"web UI: {url}/  (sign in with an API token)")
    console.print(f"database: {redact(settings.resolved_database_url)}")
    console.print(f"artifacts: {settings.resolved_artifact_root}")
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        console.print(f"Ray token authentication on; the token is in "
                      f"{os.environ['RAY_AUTH_TOKEN_PATH']} (`ray job submit` and the Ray "
                      "dashboard need RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH set to it)")


def _ensure_admin_token(settings: Settings) -> None:
    """On first start (no admin token in the database) issue one and write it to
    $RAILYARD_HOME/token (0600), where this machine's CLI and SDK find it."""
    from railyard.client import credentials
    from railyard.jobstore import tokens
    from railyard.jobstore.engine import get_engine

    engine = get_engine(settings.resolved_database_url)
    path = credentials.token_file(settings)
    if not tokens.has_admin(engine):
        token, row = tokens.issue(engine, team="admin", admin=True)
        credentials.save_token(path, token)
        console.print(f"admin API token {row.prefix}… written to {path} (mode 0600)")
    elif credentials.find_token(settings) is None:
        err_console.print("[yellow]no API token for this CLI[/yellow]: set RAILYARD_TOKEN, or "
                          "issue one with `railyard token create --team TEAM --save`")


@app.command()
def down() -> None:
    """Remove the API from the cluster and stop the local cluster if `up` started it."""
    from railyard.cluster import local_cluster

    settings = get_settings()
    if local_cluster.dashboard_alive(settings.ray_address):
        local_cluster.undeploy_api(settings.ray_address)
        console.print("API removed")
    if local_cluster.started_local_cluster(settings):
        local_cluster.stop_local_cluster(settings)
        console.print("local Ray cluster stopped")


def _phase_table(job: dict[str, Any]) -> Table:
    table = Table(title=f"{job['id']}  {job['status']}", show_lines=False)
    table.add_column("phase")
    table.add_column("started")
    table.add_column("seconds", justify="right")
    for phase in job.get("phases", []):
        table.add_row(phase["name"], (phase.get("started_at") or "")[11:23],
                      "" if phase.get("duration_s") is None else f"{phase['duration_s']:.2f}"
                      if phase.get("finished_at") else "…")
    return table


def _watch(job_id: str) -> dict[str, Any]:
    client = _client()
    with Live(console=console, refresh_per_second=4) as live:
        job = client.wait(job_id, poll=0.5, on_update=lambda j: live.update(_phase_table(j)))
    return job


def _print_result(job: dict[str, Any]) -> None:
    if job["status"] == "SUCCEEDED":
        console.print(f"[green]SUCCEEDED[/green] train rows {job['dataset']['train_rows']}, "
                      f"holdout rows {job['dataset']['holdout_rows']}")
        console.print_json(data=job["metrics"])
        console.print(f"model: {job['artifacts'].get('model')}")
        console.print(f"logs:  {job['artifacts'].get('logs')}")
    else:
        console.print(f"[red]{job['status']}[/red] in phase {job.get('error_phase')}: "
                      f"{job.get('error')}")


@app.command()
def submit(spec_file: Path = typer.Argument(..., exists=True, readable=True),
           wait: bool = typer.Option(False, "--wait", help="follow the phases until it ends"),
           idempotency_key: str | None = typer.Option(
               None, "--idempotency-key",
               help="resubmitting with the same key returns the first job instead of a new one")
           ) -> None:
    """Submit a training spec (JSON file)."""
    try:
        job = _client().submit(json.loads(spec_file.read_text()),
                               idempotency_key=idempotency_key)
    except json.JSONDecodeError as exc:
        err_console.print(f"[red]{spec_file} is not valid JSON:[/red] {exc}")
        raise typer.Exit(code=2) from None
    except RailyardError as exc:
        _fail(exc)
    console.print(f"job [bold]{job['id']}[/bold] {job['status']}")
    if wait:
        job = _watch(job["id"])
        _print_result(job)
        raise typer.Exit(code=0 if job["status"] == "SUCCEEDED" else 1)


@app.command()
def status(job_id: str) -> None:
    """Show one job."""
    try:
        console.print_json(data=_client().get(job_id))
    except RailyardError as exc:
        _fail(exc)


@app.command()
def logs(job_id: str,
         follow: bool = typer.Option(False, "--follow", "-f",
                                     help="keep printing as the log grows until the job ends"),
         attempt: int | None = typer.Option(None, "--attempt", min=1,
                                               help="which attempt (default: the latest)"),
         poll_s: float = typer.Option(2.0, "--poll-s", min=0.05, help="seconds between reads "
                                                                        "with --follow")
         ) -> None:
    """Print a job's log (it streams while the job runs; -f follows it)."""
    try:
        if not follow:
            sys.stdout.write(_client().logs(job_id, attempt=attempt))
            return
        for chunk in _client().follow_logs(job_id, attempt=attempt, poll_s=poll_s):
            sys.stdout.write(chunk)
            sys.stdout.flush()
    except KeyboardInterrupt:
        raise typer.Exit(code=130) from None
    except RailyardError as exc:
        _fail(exc)


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job."""
    try:
        job = _client().cancel(job_id)
    except RailyardError as exc:
        _fail(exc)
    console.print(f"{job['id']} {job['status']}")


@app.command()
def workflows() -> None:
    """List registered workflows."""
    try:
        for wf in _client().workflows():
            console.print(f"[bold]{wf['name']}[/bold] ({wf['framework']}): {wf['doc']}")
    except RailyardError as exc:
        _fail(exc)


@app.command()
def demo(rows: int = typer.Option(100_000, help="rows of generated charges"),
         port: int = typer.Option(8000)) -> None:
    """Start everything on the embedded defaults, train the blog's sample request, show results."""
    from railyard.client.sdk import RailyardClient
    from railyard.data.demo import sample_spec, write_fraud_dataset

    settings = get_settings()
    data_dir = settings.home / "demo" / "fraud_data.parq"
    if not data_dir.exists():
        with console.status(f"generating {rows:,} demo charges…"):
            write_fraud_dataset(data_dir, rows)
    console.print(f"demo data: {data_dir}")
    client = RailyardClient(f"http://127.0.0.1:{port}")
    if not client.healthy():
        up(port=port, host="127.0.0.1", address=None, num_cpus=None)
    started = time.perf_counter()
    job = client.submit(sample_spec(str(data_dir), source="local"))
    console.print(f"submitted the blog's sample request as job [bold]{job['id']}[/bold]")
    with Live(console=console, refresh_per_second=4) as live:
        job = client.wait(job["id"], on_update=lambda j: live.update(_phase_table(j)))
    _print_result(job)
    console.print(f"end to end: {time.perf_counter() - started:.1f}s")
    console.print(f"see it in the web UI: http://127.0.0.1:{port}/jobs/{job['id']}")
    raise typer.Exit(code=0 if job["status"] == "SUCCEEDED" else 1)


cluster_app = typer.Typer(help="A local multi-node Ray cluster whose nodes stand in for pools.",
                          no_args_is_help=True)


def _parse_pools(text: str) -> dict[str, int]:
    pools: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition("=")
        if not count.isdigit():
            raise typer.BadParameter(f"{item!r}: use POOL=COUNT, e.g. cpu=1,highmem=1")
        pools[name] = int(count)
    return pools


@cluster_app.command("up")
def cluster_up(pools: str = typer.Option("cpu=1,highmem=1", help="POOL=COUNT,..."),
               cpus_per_node: int = typer.Option(1, help="CPUs each local node advertises")
               ) -> None:
    """Start a head and one `ray start` node per pool entry, labelled like the KubeRay groups."""
    from railyard.cluster import local_cluster
    from railyard.cluster.pools import get_pool

    settings = get_settings()
    wanted = _parse_pools(pools)
    try:
        for name in wanted:
            get_pool(name)
    except RailyardError as exc:
        _fail(exc)
    if local_cluster.dashboard_alive(settings.ray_address):
        err_console.print(f"[red]a Ray cluster already answers at {settings.ray_address}; "
                          "run `railyard cluster down` first[/red]")
        raise typer.Exit(code=1)
    with console.status("starting the head and pool nodes…"):
        address = local_cluster.start_pool_cluster(settings, wanted,
                                                   cpus_per_node=cpus_per_node)
    console.print(f"Ray cluster {address} with pools {wanted}; now `railyard up` deploys the "
                  "API on it")


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop every local Ray node."""
    from railyard.cluster import local_cluster

    local_cluster.stop_local_cluster(get_settings())
    console.print("local Ray cluster stopped")


app.add_typer(cluster_app, name="cluster")


def _mount_subcommands() -> None:
    from railyard.cli.jobs import jobs_app
    from railyard.cli.kuberay import kuberay_app
    from railyard.cli.models import diff, models_app, predict, rerun, serve_model
    from railyard.cli.teams import team_app
    from railyard.cli.tokens import token_app
    from railyard.cli.webhooks import webhooks_app

    app.add_typer(kuberay_app, name="kuberay", help="Render and validate KubeRay manifests.")
    app.add_typer(token_app, name="token", help="Issue, list and revoke API tokens.")
    app.add_typer(team_app, name="team", help="Show and set a team's quota.")
    app.add_typer(jobs_app, name="jobs")    # `railyard jobs` lists; `railyard jobs prune`
    app.command("predict")(predict)
    app.command("serve-model")(serve_model)
    app.add_typer(models_app, name="models")
    app.command("rerun")(rerun)
    app.command("diff")(diff)
    app.add_typer(webhooks_app, name="webhooks")


_mount_subcommands()

if __name__ == "__main__":
    app()
