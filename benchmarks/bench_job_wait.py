"""Clients waiting for jobs: polling (the SDK's old ``wait``) vs the API's long poll.

    .venv/bin/python benchmarks/bench_job_wait.py [--waiters 30] [--changes 6] [--postgres]

The API runs under plain uvicorn in its own process (on SQLite, or a throwaway Postgres with
``--postgres``) with the in-memory execution backend of tests/fakes.py. ``--waiters`` jobs are
created, and one client thread per job waits for it to end, seeing every change; a driver
thread in this process moves each job through ``--changes`` states (PENDING → RUNNING with a
phase → next phases → SUCCEEDED) every 0.4–1.2 s at random, writing straight to the database
as a job's driver does. Per way of waiting, in the same run: how late a client saw each change
(p50, p95, max), how many requests the clients sent, and the API process's CPU seconds. Writes
benchmarks/results/job_wait.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from railyard.client.sdk import TERMINAL, RailyardClient  # noqa: E402
from railyard.jobstore import jobs, tokens  # noqa: E402
from railyard.jobstore.engine import get_engine, migrate  # noqa: E402
from railyard.jobstore.tables import JobStatus  # noqa: E402
from tests.polling import wait_for  # noqa: E402
from tests.servers import free_port  # noqa: E402

PHASES = ("fetch", "split", "train", "evaluate", "publish")


def serve(database_url: str, port: int) -> None:
    """The API under uvicorn (the --serve child)."""
    import uvicorn

    from railyard.config import Settings
    from railyard.control.service import JobService
    from serve_app.app import create_app
    from tests.fakes import InMemoryBackend

    settings = Settings(home=Path(tempfile.mkdtemp(prefix="railyard-wait-")),
                        database_url=database_url)
    service = JobService(engine=get_engine(database_url), backend=InMemoryBackend(),
                         settings=settings)
    uvicorn.run(create_app(lambda: service), host="127.0.0.1", port=port,
                log_level="warning", lifespan="off")


def steps(changes: int) -> list[tuple[JobStatus, str | None]]:
    """The states a job goes through after PENDING: RUNNING per phase, then SUCCEEDED."""
    running = [(JobStatus.RUNNING, phase) for phase in PHASES[:max(1, changes - 1)]]
    return [*running, (JobStatus.SUCCEEDED, None)]


def drive(engine, job_ids: list[str], changes: int, changed: dict[tuple[str, str], float],
          seed: int) -> None:
    """Move every job through its states at random 0.4-1.2 s intervals."""
    rng = random.Random(seed)
    plan = []
    for job_id in job_ids:
        at = 0.0
        for n in range(len(steps(changes))):
            at += rng.uniform(0.4, 1.2)
            plan.append((at, job_id, n))
    plan.sort()
    start = time.monotonic()
    for at, job_id, n in plan:
        time.sleep(max(0.0, at - (time.monotonic() - start)))
        status, phase = steps(changes)[n]
        if status is JobStatus.RUNNING and n == 0:
            jobs.transition(engine, job_id=job_id, status=status, phase=phase)
        elif status is JobStatus.RUNNING:
            jobs.update_job(engine, job_id=job_id, phase=phase)
        else:
            jobs.transition(engine, job_id=job_id, status=status, phase=None)
        changed[(job_id, f"{status.value}:{phase or ''}")] = time.monotonic()


def poll_wait(client: RailyardClient, job_id: str, interval: float, on_update) -> None:
    """The SDK's wait before the long poll: read, sleep ``interval``, read again."""
    while True:
        job = client.get(job_id)
        on_update(job)
        if job["status"] in TERMINAL:
            return
        time.sleep(interval)


def one_way(name: str, url: str, token: str, engine, spec: dict, args) -> dict:
    created = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                      timeout=30) as http:
        for _ in range(args.waiters):
            created.append(http.post("/v1/jobs", json=spec).json()["id"])
    changed: dict[tuple[str, str], float] = {}
    seen: dict[tuple[str, str], float] = {}
    requests = [0]
    lock = threading.Lock()

    def waiter(job_id: str) -> None:
        client = RailyardClient(url, token=token)
        client._http.event_hooks["request"].append(lambda _: _count())

        def on_update(job: dict) -> None:
            key = (job_id, f"{job['status']}:{job['phase'] or ''}")
            with lock:
                seen.setdefault(key, time.monotonic())
        if name == "long poll":
            client.wait(job_id, timeout=120, on_update=on_update)
        else:
            poll_wait(client, job_id, float(name.split()[1].rstrip("s")), on_update)
        client.close()

    def _count() -> None:
        with lock:
            requests[0] += 1

    api = psutil.Process(args.api_pid)
    cpu_before = sum(api.cpu_times()[:2])
    threads = [threading.Thread(target=waiter, args=(job_id,)) for job_id in created]
    for thread in threads:
        thread.start()
    time.sleep(0.5)                 # every waiter has read its job once
    started = time.monotonic()
    drive(engine, created, args.changes, changed, seed=args.seed)
    for thread in threads:
        thread.join(timeout=120)
    wall = time.monotonic() - started
    cpu = sum(api.cpu_times()[:2]) - cpu_before
    late = sorted(seen[key] - at for key, at in changed.items() if key in seen)
    missed = sum(1 for key in changed if key not in seen)
    result = {"way": name, "changes": len(changed), "seen": len(late),
              "missed_intermediate": missed,
              "late_s": {"p50": round(statistics.median(late), 3),
                         "p95": round(late[int(0.95 * (len(late) - 1))], 3),
                         "max": round(late[-1], 3)},
              "requests": requests[0], "requests_per_waiter_per_s":
                  round(requests[0] / args.waiters / wall, 2),
              "api_cpu_s": round(cpu, 2), "wall_s": round(wall, 2)}
    print(f"{name:10s} late p50 {result['late_s']['p50']:.3f}s p95 "
          f"{result['late_s']['p95']:.3f}s max {result['late_s']['max']:.3f}s | "
          f"{requests[0]} requests ({result['requests_per_waiter_per_s']}/waiter/s) | "
          f"API CPU {cpu:.2f}s | missed {missed} intermediate states", flush=True)
    return result


def run_all(database_url: str, work: Path, args, sample_spec, write_fraud_dataset) -> list:
    """Every way of waiting against one API process."""
    migrate(database_url)
    engine = get_engine(database_url)
    token, _ = tokens.issue(engine, team="admin", admin=True)
    spec = sample_spec(str(write_fraud_dataset(work / "fraud", 2000, files=2)))
    port = free_port()
    api = subprocess.Popen([sys.executable, __file__, "--serve", database_url, str(port)],
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    results = []
    try:
        wait_for(lambda: _answers(url, api), 60, "the API", interval=0.2)
        args.api_pid = api.pid
        for name in ("poll 0.5s", "poll 0.25s", "long poll"):
            results.append(one_way(name, url, token, engine, spec, args))
    finally:
        api.terminate()
        api.wait(timeout=30)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--waiters", type=int, default=30)
    parser.add_argument("--changes", type=int, default=6,
                        help="state changes per job after PENDING (the last is SUCCEEDED)")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--serve", nargs=2, metavar=("DATABASE_URL", "PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return

    import contextlib

    from railyard.data.demo import sample_spec, write_fraud_dataset
    from tests.servers import postgres_server

    work = Path(tempfile.mkdtemp(prefix="railyard-wait-"))
    with postgres_server() if args.postgres else contextlib.nullcontext() as pg:
        database_url = pg.url() if pg is not None else f"sqlite:///{work}/wait.db"
        results = run_all(database_url, work, args, sample_spec, write_fraud_dataset)
    base = next(r for r in results if r["way"] == "poll 0.5s")
    long_poll = next(r for r in results if r["way"] == "long poll")
    out = {"measured_at": dt.datetime.now().isoformat(timespec="seconds"),
           "machine": "2 cores, 24 GiB; API under uvicorn in its own process, in-memory backend",
           "database": "postgres" if args.postgres else "sqlite", "waiters": args.waiters,
           "results": results,
           "ratios_vs_poll_0.5s": {
               "late_p50": round(long_poll["late_s"]["p50"] / base["late_s"]["p50"], 3),
               "requests": round(long_poll["requests"] / base["requests"], 3),
               "api_cpu": round(long_poll["api_cpu_s"] / max(base["api_cpu_s"], 1e-9), 3)}}
    print(f"long poll vs polling every 0.5 s: late p50 {out['ratios_vs_poll_0.5s']['late_p50']}x"
          f", requests {out['ratios_vs_poll_0.5s']['requests']}x, API CPU "
          f"{out['ratios_vs_poll_0.5s']['api_cpu']}x")
    path = ROOT / "benchmarks" / "results" / "job_wait.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


def _answers(url: str, api: subprocess.Popen) -> bool:
    if api.poll() is not None:
        raise RuntimeError("the API process exited")
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
