"""``railyard predict`` and ``railyard serve-model``: use a job's published model.

Mounted in the main CLI with ``app.command("predict")(predict)`` and
``app.command("serve-model")(serve_model)``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from railyard.errors import RailyardError


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def predict(
    job_id: str = typer.Argument(..., help="id of a SUCCEEDED job"),
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
            model = client.load_model(job_id)
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
    job_id: str = typer.Argument(..., help="id of a SUCCEEDED job"),
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
    <API token>` of the job's team or an admin."""
    from urllib.parse import urlparse

    from railyard.client.credentials import find_token
    from railyard.client.sdk import RailyardClient
    from railyard.config import get_settings
    from railyard.errors import NotFoundError
    from railyard.serving.model_server import deploy_model

    settings = get_settings()
    try:
        with RailyardClient() as client:
            job = client.get(job_id)
        model_dir = (job.get("artifacts") or {}).get("model_dir")
        if not model_dir:
            raise NotFoundError(f"job {job_id} has no published model (status "
                                f"{job.get('status')})")
        url = deploy_model(settings, job_id=job_id, model_dir=model_dir, token=find_token(),
                           address=address or settings.ray_address, host=host,
                           port=port or urlparse(settings.api_url).port or 8000,
                           num_replicas=num_replicas)
    except RailyardError as exc:
        _fail(exc.message)
        return
    typer.echo(f"model of job {job_id} serving at {url}/predict  (info: {url}/)\n"
               "every request needs `Authorization: Bearer <API token>` (the job's team or an "
               "admin), e.g.\n"
               f"  curl -H \"Authorization: Bearer $RAILYARD_TOKEN\" {url}/")
