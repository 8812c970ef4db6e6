"""Ray's job list with a long history, before and after Railyard deletes the finished jobs'
records (railyard.control.ray_history).

    .venv/bin/python benchmarks/bench_ray_history.py [--history 5000] [--calls 10]

A local Ray head (dashboard, GCS, Ray's token authentication) and an embedded SQLite store.
Ray's history is filled directly in the GCS's job table, the key-value records Ray Jobs itself
writes for each submission (JobInfoStorageClient), with ``--history`` SUCCEEDED jobs that
ended an hour ago, each the record of a finished Railyard job in the store. Running that many
real jobs would take hours on 2 cores; Ray's listing reads the same records either way.

Measured in one run: ``JobSubmissionClient.list_jobs()`` (what the reconciler's tick and the
capacity view call), ``--calls`` times with the whole history; then one
``ray_history.prune`` pass (the reconciler's, with a retention of 10 minutes, repeated until
nothing is left); then ``list_jobs()`` again. Written to benchmarks/results/ray_history.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from railyard.cluster import local_cluster  # noqa: E402
from railyard.config import Settings  # noqa: E402
from railyard.data.demo import sample_spec, write_fraud_dataset  # noqa: E402
from tests.servers import free_port  # noqa: E402


def fill_store(engine, data: Path, count: int) -> list[str]:
    """``count`` finished jobs in the Railyard store; their ids."""
    from sqlalchemy import text

    from railyard.jobstore import jobs
    from railyard.spec import parse_spec

    spec = parse_spec(sample_spec(str(data)))
    ids = [jobs.create_job(engine, spec=spec).id for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(text("UPDATE job SET status = 'SUCCEEDED', finished_at = created_at"))
    return ids


def fill_ray(gcs_address: str, job_ids: list[str], ended_s: float) -> None:
    """One SUCCEEDED Ray Jobs record per job id, as Ray's JobManager writes them."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]
    from ray.dashboard.modules.job.common import JobInfo, JobInfoStorageClient
    from ray.job_submission import JobStatus

    storage = JobInfoStorageClient(GcsClient(address=gcs_address))
    ended_ms = int(ended_s * 1000)

    async def put_all() -> None:
        for start in range(0, len(job_ids), 200):
            await asyncio.gather(*(storage.put_info(f"railyard-{job_id}", JobInfo(
                status=JobStatus.SUCCEEDED, entrypoint=f"python -m "
                f"railyard.execution.entrypoint {job_id}", message="Job finished successfully.",
                start_time=ended_ms - 2000, end_time=ended_ms,
                metadata={"railyard_job_id": job_id, "railyard_attempt": "1"},
                driver_exit_code=0)) for job_id in job_ids[start:start + 200]))

    asyncio.run(put_all())


def list_timings(address: str, calls: int) -> dict[str, float]:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    seconds, listed = [], 0
    for _ in range(calls):
        started = time.perf_counter()
        listed = len(client.list_jobs())
        seconds.append(time.perf_counter() - started)
    return {"jobs_listed": listed, "p50_s": round(statistics.median(seconds), 4),
            "max_s": round(max(seconds), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--history", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--out", default="ray_history.json")
    args = parser.parse_args()

    from railyard.control import ray_history
    from railyard.control.backend import RayJobsBackend
    from railyard.jobstore.engine import get_engine, migrate
    from railyard.jobstore.tables import utcnow

    work = Path(tempfile.mkdtemp(prefix="railyard-bench-ray-history-"))
    data = write_fraud_dataset(work / "fraud", 200, files=1)
    gcs_port, dashboard = free_port(), free_port()
    settings = Settings(home=work / "home", database_url=f"sqlite:///{work}/store.db",
                        ray_address=f"http://127.0.0.1:{dashboard}")
    migrate(settings.resolved_database_url)
    engine = get_engine(settings.resolved_database_url)
    started = time.perf_counter()
    job_ids = fill_store(engine, data, args.history)
    address = local_cluster.start_head(
        settings, num_cpus=0, gcs_port=gcs_port, dashboard_port=dashboard,
        extra_args=[f"--temp-dir={Path('/tmp') / f'ray-bench-history-{gcs_port}'}"])
    try:
        fill_ray(f"127.0.0.1:{gcs_port}", job_ids, time.time() - 3600)
        print(f"filled {args.history} jobs in {time.perf_counter() - started:.1f}s", flush=True)
        before = list_timings(address, args.calls)
        print(f"list_jobs with the history: {before}", flush=True)
        backend = RayJobsBackend(address)
        prune_started, deleted, passes = time.perf_counter(), 0, 0
        while True:
            passes += 1
            done = ray_history.prune(engine, backend, now=utcnow(), retention_s=600)
            deleted += done
            if done == 0:
                break
        prune_s = time.perf_counter() - prune_started
        print(f"pruned {deleted} records in {passes} passes, {prune_s:.1f}s", flush=True)
        after = list_timings(address, args.calls)
        print(f"list_jobs after pruning: {after}", flush=True)
    finally:
        local_cluster.stop_local_cluster(settings)
    result = {
        "measured_at": dt.datetime.now().isoformat(timespec="seconds"),
        "history": args.history, "calls": args.calls,
        "list_jobs_with_history": before, "list_jobs_after_prune": after,
        "ratio_p50": round(after["p50_s"] / before["p50_s"], 4) if before["p50_s"] else None,
        "prune": {"deleted": deleted, "passes": passes, "seconds": round(prune_s, 2),
                  "per_delete_ms": round(1000 * prune_s / deleted, 2) if deleted else None},
    }
    out = ROOT / "benchmarks" / "results" / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
