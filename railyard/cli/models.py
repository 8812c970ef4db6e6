"""``railyard predict`` and ``railyard serve-model``: use a job's published model (by job id or
``models:/OWNER/NAME@ALIAS`` / ``models:/OWNER/NAME/VERSION``); ``railyard models list | show |
alias | unalias``: the model registry; ``railyard rerun`` and ``railyard diff``: reproduce and
compare jobs.

Mounted in the main CLI with ``app.command("predict")(predict)``,
``app.command("serve-model")(serve_model)``, ``app.add_typer(models_app, name="models")``,
``app.command("rerun")(rerun)`` and ``app.command("diff")(diff)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from railyard.errors import RailyardError

models_app = typer.Typer(help="The model registry: versions and aliases of each model.")
MODEL_HELP = "a job id, models:/OWNER/NAME@ALIAS or models:/OWNER/NAME/VERSION"


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def predict(
    job_id: str = typer.Argument(..., help=MODEL_HELP),
    input_path: Path = typer.Argument(..., exists=True, readable=True,
                                      help="Parquet file (or directory) of rows to score"),
    output_path: Path = typer.Argument(..., help="Parquet file to write"),
    only_predictions: bool = typer.Option(
        False, "--only-predictions", help="write the prediction columns without the input's"),
) -> None:
    """Score IN.parquet with the job's model; OUT gets the input columns plus `prediction`
    (and `probability_<k>` per class for multiclass models)."""
    import pyarrow.parquet as pq

    from railyard.client.sdk import RailyardClient

    try:
        with RailyardClient() as client:
            model = client.load_model(client.resolve_model(job_id))
        table = pq.read_table(input_path)
        out = model.predict_table(table, keep_input=not only_predictions)
    except RailyardError as exc:
        _fail(exc.message)
        return
    output_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(out, output_path)
    typer.echo(f"wrote {out.num_rows} rows to {output_path} (model {model.manifest['workflow']}"
               f", task {model.task}, columns {', '.join(out.column_names[-4:])})")


def serve_model(
    job_id: str = typer.Argument(..., help=MODEL_HELP),
    port: int | None = typer.Option(
        None, help="HTTP port of Ray Serve (default: the API's; Serve keeps the port it "
                   "already runs on)"),
    host: str = typer.Option("127.0.0.1", help="interface Serve listens on when it starts"),
    address: str | None = typer.Option(
        None, help="Ray dashboard address (default: RAILYARD_RAY_ADDRESS)"),
    num_replicas: int = typer.Option(1, min=1, help="replicas of the model deployment"),
) -> None:
    """Deploy the job's model on Ray Serve beside the API: POST {"rows": [...]} to the printed
    URL (/models/KEY/predict; KEY does not reveal the job id) with `Authorization: Bearer
    <API token>` of the job's team or an admin. Given models:/OWNER/NAME@ALIAS, the served
    model follows the alias when it moves (within RAILYARD_MODEL_ALIAS_POLL_S)."""
    from urllib.parse import urlparse

    from railyard.client.credentials import find_token
    from railyard.client.sdk import RailyardClient
    from railyard.config import get_settings
    from railyard.errors import NotFoundError
    from railyard.serving.model_server import deploy_model

    settings = get_settings()
    # an alias is followed: the served model changes when the alias moves
    alias = job_id if job_id.startswith("models:/") and "@" in job_id else None
    try:
        with RailyardClient() as client:
            job_id = client.resolve_model(job_id)
            job = client.get(job_id)
        model_dir = (job.get("artifacts") or {}).get("model_dir")
        if not model_dir:
            raise NotFoundError(f"job {job_id} has no published model (status "
                                f"{job.get('status')})")
        url = deploy_model(settings, job_id=job_id, model_dir=model_dir, token=find_token(),
                           address=address or settings.ray_address, host=host,
                           port=port or urlparse(settings.api_url).port or 8000,
                           num_replicas=num_replicas, alias=alias)
    except RailyardError as exc:
        _fail(exc.message)
        return
    following = f"{alias} (now job {job_id}; it follows the alias)" if alias else f"job {job_id}"
    typer.echo(f"model of {following} serving at {url}/predict  (info: {url}/)\n"
               "every request needs `Authorization: Bearer <API token>` (the job's team or an "
               "admin), e.g.\n"
               f"  curl -H \"Authorization: Bearer $RAILYARD_TOKEN\" {url}/")


def _split_model(text: str) -> tuple[str, str]:
    owner, sep, name = text.removeprefix("models:/").partition("/")
    if not sep or not owner or not name or "/" in name:
        raise typer.BadParameter(f"{text!r}: write the model as OWNER/NAME")
    return owner, name


@models_app.command("list")
def list_models(owner: str | None = typer.Option(None, help="only this team's models"),
                q: str | None = typer.Option(None, help="text the name contains")) -> None:
    """Registered models: latest version and aliases."""
    from railyard.client.sdk import RailyardClient

    try:
        with RailyardClient() as client:
            models = client.registered_models(owner=owner, q=q)
    except RailyardError as exc:
        _fail(exc.message)
        return
    if not models:
        typer.echo("no registered models (a model is registered when a job of it succeeds)")
    for m in models:
        aliases = ", ".join(f"{a}=v{v}" for a, v in m["aliases"].items()) or "-"
        typer.echo(f"{m['owner']}/{m['name']}  latest v{m['latest_version']}  "
                   f"({m['versions']} versions)  aliases: {aliases}")


@models_app.command("show")
def show_model(model: str = typer.Argument(..., help="OWNER/NAME")) -> None:
    """A model's versions (job, metrics), aliases and alias moves."""
    from railyard.client.sdk import RailyardClient

    owner, name = _split_model(model)
    try:
        with RailyardClient() as client:
            found = client.registered_model(owner, name)
    except RailyardError as exc:
        _fail(exc.message)
        return
    typer.echo(f"{owner}/{name}")
    pointing: dict[int, list[str]] = {}
    for alias, version in found["aliases"].items():
        pointing.setdefault(version, []).append(alias)
    for v in found["versions"]:
        holdout = (v.get("metrics") or {}).get("holdout") or {}
        shown = ", ".join(f"{k}={val:.4g}" for k, val in sorted(holdout.items())
                          if isinstance(val, (int, float)) and k != "rows")
        tags = f"  [{', '.join(pointing.get(v['version'], []))}]" \
            if v["version"] in pointing else ""
        typer.echo(f"  v{v['version']}  {v['job_id']}  {v['created_at']}  {shown}{tags}")
    for e in found.get("alias_events", []):
        typer.echo(f"  {e['at']}  {e['alias']}: v{e['from_version']} -> v{e['to_version']}  "
                   f"by {e['actor']} ({e['reason']}){': ' + e['message'] if e['message'] else ''}")


@models_app.command("alias")
def set_alias(model: str = typer.Argument(..., help="OWNER/NAME"),
              alias: str = typer.Argument(..., help="e.g. production"),
              version: int = typer.Argument(..., min=1, help="the version it points at"),
              message: str | None = typer.Option(None, help="why (kept with the move)")) -> None:
    """Point ALIAS at VERSION of the model (recorded as a move by your team)."""
    from railyard.client.sdk import RailyardClient

    owner, name = _split_model(model)
    try:
        with RailyardClient() as client:
            got = client.set_alias(owner, name, alias, version, message=message)
    except RailyardError as exc:
        _fail(exc.message)
        return
    typer.echo(f"{owner}/{name}@{alias} -> v{got['version']} (job {got.get('job_id')})")


@models_app.command("unalias")
def delete_alias(model: str = typer.Argument(..., help="OWNER/NAME"),
                 alias: str = typer.Argument(...)) -> None:
    """Remove ALIAS from the model."""
    from railyard.client.sdk import RailyardClient

    owner, name = _split_model(model)
    try:
        with RailyardClient() as client:
            client.delete_alias(owner, name, alias)
    except RailyardError as exc:
        _fail(exc.message)
        return
    typer.echo(f"{owner}/{name}@{alias} removed")


def rerun(job_id: str = typer.Argument(..., help="the job to run again"),
          allow_changed_data: bool = typer.Option(
              False, "--allow-changed-data", help="run even if its files changed since")) -> None:
    """Submit JOB_ID's spec again, pinned to the files it read (refused, naming the file, if
    one changed or vanished, unless --allow-changed-data)."""
    from railyard.client.sdk import RailyardClient

    try:
        with RailyardClient() as client:
            job = client.rerun(job_id, allow_changed_data=allow_changed_data)
    except RailyardError as exc:
        _fail(exc.message)
        return
    typer.echo(f"{job['id']} (rerun of {job_id}) {job['status']}")


def diff(first: str = typer.Argument(..., help="a job id"),
         second: str = typer.Argument(..., help="another job id")) -> None:
    """What differs between two jobs: spec, lineage (files, packages, code, seeds), metrics."""
    from railyard.client.sdk import RailyardClient

    try:
        with RailyardClient() as client:
            a, b = client.get(first), client.get(second)
            la, lb = client.lineage(first), client.lineage(second)
    except RailyardError as exc:
        _fail(exc.message)
        return
    changes = job_diff({"spec": a["spec"], "metrics": a.get("metrics", {}),
                        "lineage": comparable_lineage(la)},
                       {"spec": b["spec"], "metrics": b.get("metrics", {}),
                        "lineage": comparable_lineage(lb)})
    if not changes:
        typer.echo(f"{first} and {second}: no difference in spec, lineage or metrics")
    for path, left, right in changes:
        typer.echo(f"{path}: {json.dumps(left, default=str)} -> {json.dumps(right, default=str)}")


def comparable_lineage(lineage: dict[str, Any]) -> dict[str, Any]:
    """A lineage keyed for comparison: files by path, without the per-job fields."""
    return {"files": {f["path"]: {k: v for k, v in f.items() if k != "path"}
                      for s in lineage.get("sources", []) for f in s.get("files", [])},
            "sql": {q.get("connection", ""): q.get("query") for q in lineage.get("sql", [])},
            "code": lineage.get("code", {}), "seeds": lineage.get("seeds", {})}


def job_diff(left: Any, right: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Every leaf that differs between two JSON documents: (dotted path, left, right); a key
    on one side only shows ``None`` on the other."""
    if isinstance(left, dict) and isinstance(right, dict):
        out: list[tuple[str, Any, Any]] = []
        for key in sorted(set(left) | set(right), key=str):
            out += job_diff(left.get(key), right.get(key), f"{path}.{key}" if path else key)
        return out
    return [] if left == right else [(path, left, right)]
