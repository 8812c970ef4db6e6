"""Helpers the integration tests share: the S3 data bucket and uploads to it, specs of the NoOp
workflow, the processes of a job's driver, the blog spec's expected row counts, and the errors
that mean "the API or the database is down right now" while a test waits through an outage."""

from __future__ import annotations

import datetime as dt
import io

import boto3
import httpx
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from click.testing import Result
from typer.testing import CliRunner

from railyard.config import get_settings
from railyard.data.demo import sample_spec
from railyard.errors import RailyardError

DATA_BUCKET = "railyard-data"
# What a call to the API or the database raises while it is down: for
# ``wait_for(..., ignore=OUTAGE_ERRORS)``, these count as "not yet".
OUTAGE_ERRORS = (httpx.HTTPError, RailyardError, OSError)


def upload_table(table: pa.Table, bucket: str, prefix: str, files: int = 4) -> str:
    """Write a table as Parquet files to S3 with boto3 (independently of Railyard's code)."""
    s3 = boto3.client("s3")
    step = -(-table.num_rows // files)
    for i in range(files):
        buf = io.BytesIO()
        pq.write_table(table.slice(i * step, step), buf)
        s3.put_object(Bucket=bucket, Key=f"{prefix}/part-{i}.parquet", Body=buf.getvalue())
    return f"s3://{bucket}/{prefix}"


def noop_spec(platform, name: str, **waits: float) -> dict:
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["model_name"] = name
    spec["train"].update(workflow_name="NoOp", label="has_fraud_dispute", custom_params=waits)
    return spec


def runner_processes(job_id: str) -> list[psutil.Process]:
    """The job's driver processes: the Ray entrypoint (railyard.execution.entrypoint, or
    railyard.execution.driver) and, when it runs warm, the driver a warm runner forked for it."""
    from railyard.execution.warm_runner import process_name

    found = []
    for proc in psutil.process_iter(["cmdline", "name"]):
        cmd = proc.info["cmdline"] or []
        if (("railyard.execution.driver" in cmd or "railyard.execution.entrypoint" in cmd)
                and job_id in cmd) or proc.info["name"] == process_name(job_id):
            found.append(proc)
    return found


def expected_counts(table: pa.Table) -> tuple[int, int]:
    """The blog's filters and holdout, computed directly with pyarrow.compute."""
    ts = table["created_at"]
    mask = pc.and_(
        pc.and_(pc.greater_equal(ts, pa.scalar(dt.datetime(2018, 1, 1), pa.timestamp("us"))),
                pc.less_equal(ts, pa.scalar(dt.datetime(2019, 1, 1), pa.timestamp("us")))),
        pc.and_(pc.greater(table["charge_amount"], 10.0),
                pc.is_in(table["charge_country"], pa.array(["US", "CA"]))))
    kept = table.filter(mask)
    ts = kept["created_at"]
    hold = pc.and_(pc.greater_equal(ts, pa.scalar(dt.datetime(2018, 10, 1), pa.timestamp("us"))),
                   pc.less_equal(ts, pa.scalar(dt.datetime(2019, 1, 1), pa.timestamp("us"))))
    holdout = pc.sum(hold.cast(pa.int64())).as_py()
    return kept.num_rows - holdout, holdout


def invoke_cli(args: list[str], env: dict[str, str]) -> Result:
    """Run the ``railyard`` CLI in this process with ``env`` set for the call (typer's
    CliRunner). The settings cache is cleared around it: a session's earlier test may have
    cached settings without that ``RAILYARD_API_URL``, and the CLI would call another URL."""
    from railyard.cli.main import app as cli_app

    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli_app, args, env=env)
    finally:
        get_settings.cache_clear()
