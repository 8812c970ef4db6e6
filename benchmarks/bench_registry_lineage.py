"""What lineage and registration cost per job, against the per-job overhead Railyard already
has, measured in the same run on the same servers (Postgres and moto's S3 server, started here).

    .venv/bin/python benchmarks/bench_registry_lineage.py [--files 40] [--repeat 20]

Per job, ``--repeat`` times, on the blog spec over ``--files`` Parquet objects on S3:

- ``baseline``: what every job already pays outside its training: planning the read
  (``plan_read``: schemas from the Parquet footers, column and filter checks) and its partition
  scan (``SourcePlan.scan``: the files and bytes read), plus the job store's lifecycle writes
  (create, RUNNING, the five phases' start/end events, SUCCEEDED with results).
- ``lineage``: ``railyard.data.lineage.record`` on that plan (one S3 listing for the files'
  ETags, sizes and version ids, the workflow source's SHA-256, package versions, seeds) and
  storing it on the job.
- ``registration``: ``railyard.execution.promotion.register_and_promote`` (the job's next model
  version, idempotent; no gate).

Prints the median of each and the ratio (lineage + registration) / baseline; writes
benchmarks/results/registry_lineage.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUCKET = "railyard-bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    from tests.servers import postgres_server, s3_server

    with s3_server() as s3, postgres_server() as pg:
        os.environ.update(s3.env())
        result = measure(pg.url(), args.files, args.rows, args.repeat)
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    out = ROOT / "benchmarks" / "results" / "registry_lineage.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def upload(files: int, rows: int) -> str:
    import boto3
    import pyarrow.parquet as pq

    from railyard.data.demo import fraud_table

    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    table = fraud_table(rows, seed=5)
    step = -(-rows // files)
    for i in range(files):
        buf = io.BytesIO()
        pq.write_table(table.slice(i * step, step), buf)
        client.put_object(Bucket=BUCKET, Key=f"fraud/part-{i:04d}.parquet", Body=buf.getvalue())
    return f"s3://{BUCKET}/fraud"


def measure(database_url: str, files: int, rows: int, repeat: int) -> dict:
    from railyard.data import lineage
    from railyard.data.demo import sample_spec
    from railyard.data.read_plan import plan_read
    from railyard.execution.promotion import register_and_promote
    from railyard.jobstore import jobs
    from railyard.jobstore.engine import get_engine, migrate
    from railyard.jobstore.tables import JobStatus, utcnow
    from railyard.spec import parse_spec
    from railyard.training.registry import get_workflow

    migrate(database_url)
    engine = get_engine(database_url)
    uri = upload(files, rows)
    spec = parse_spec(sample_spec(uri, source="s3"))
    workflow = get_workflow(spec.train.workflow_name)(spec.train)
    lineage.package_versions()   # warm: importlib.metadata's first scan is paid once

    timings: dict[str, list[float]] = {"baseline": [], "lineage": [], "registration": []}
    files_listed = 0
    for _ in range(repeat + 1):       # the first round warms connections and imports
        started = time.perf_counter()
        job = jobs.create_job(engine, spec=spec)
        jobs.transition(engine, job_id=job.id, status=JobStatus.RUNNING,
                        allowed_from=frozenset({JobStatus.QUEUED}), started_at=utcnow())
        plan = plan_read(spec, derived=workflow.derived_columns)
        scan = plan.sources[0].scan
        for phase in ("fetch", "split", "train", "evaluate", "publish"):
            jobs.add_event(engine, job_id=job.id, kind="phase_started", phase=phase)
            jobs.add_event(engine, job_id=job.id, kind="phase_finished", phase=phase)
        jobs.transition(engine, job_id=job.id, status=JobStatus.SUCCEEDED,
                        metrics={"holdout": {"auc": 0.7}}, artifacts={"model": "s3://x"})
        baseline = time.perf_counter() - started

        started = time.perf_counter()
        record = lineage.record(plan, spec=spec.model_dump(mode="json"),
                                spec_hash=spec.spec_hash(), workflow=workflow,
                                ran_at=utcnow())
        jobs.update_job(engine, job_id=job.id, lineage=record)
        lineage_s = time.perf_counter() - started

        started = time.perf_counter()
        register_and_promote(engine, job_id=job.id)
        registration_s = time.perf_counter() - started
        if _ == 0:
            continue
        files_listed = len(record["sources"][0]["files"])
        assert scan is not None and files_listed == scan.files_read
        timings["baseline"].append(baseline)
        timings["lineage"].append(lineage_s)
        timings["registration"].append(registration_s)

    med = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    ratio = (med["lineage"] + med["registration"]) / med["baseline"]
    print(f"{files} S3 objects ({files_listed} read after pruning), {repeat} jobs, median ms:")
    for name, value in med.items():
        print(f"  {name:13s} {value:8.2f} ms")
    print(f"  lineage + registration = {ratio:.3f} x the baseline per-job overhead "
          f"(+{med['lineage'] + med['registration']:.1f} ms per job)")
    return {"when": dt.datetime.now(dt.UTC).isoformat(), "files": files, "rows": rows,
            "repeat": repeat, "files_read": files_listed, "median_ms": med,
            "ratio_added_to_baseline": ratio,
            "all_ms": {k: [round(x * 1000, 3) for x in v] for k, v in timings.items()}}


if __name__ == "__main__":
    main()
