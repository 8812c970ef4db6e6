"""The 2M-row blog spec measured off the head's cores, as a real cluster runs it.

    .venv/bin/python benchmarks/bench_off_head.py [--rows 2000000] [--rounds 100] [--repeat 3]

On one machine everything shares the same cores: Ray's head (GCS, dashboard, raylet), the Serve
proxy and the API replica, the job's supervisor and its driver. This benchmark pins them apart
with CPU affinity (what ``taskset`` does), as a cluster with its own head node would:

- core ``--head-core`` (0): the Ray head (no CPUs for work), the API on Ray Serve, this client;
- core ``--worker-core`` (1): one ``cpu`` pool node (``--num-cpus=1``) and its warm runner, so
  the job's supervisor and driver run there, with one training thread (the driver counts the
  cores it is pinned to, railyard.training.workflow.node_cpus).

The plain script (benchmarks/bench_end_to_end.plain_script: pyarrow read with the same
filters, the DATE_RANGE split, xgboost.train, holdout AUC, save) runs in a fresh process pinned
to the worker's core with ``nthread=1``. Railyard's time is POST → SUCCEEDED seen by the
client; runs alternate with the plain script. Each run also records how busy each core was
(/proc/stat), and the job's own timeline says where its time went. Writes
benchmarks/results/off_head.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_end_to_end as e2e  # noqa: E402

from railyard.client.sdk import RailyardClient  # noqa: E402
from railyard.cluster import local_cluster  # noqa: E402
from railyard.config import Settings  # noqa: E402
from railyard.data.demo import write_fraud_dataset  # noqa: E402
from railyard.jobstore import tokens  # noqa: E402
from railyard.jobstore.engine import get_engine, migrate  # noqa: E402
from tests.servers import free_port  # noqa: E402


def core_busy_s() -> dict[int, float]:
    """Busy (non-idle) CPU seconds per core since boot, from /proc/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    busy = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            values = [int(v) for v in fields]
            idle = values[3] + values[4]           # idle + iowait
            busy[int(name[3:])] = (sum(values[:8]) - idle) / ticks
    return busy


def busy_during(before: dict[int, float], cores: dict[str, int]) -> dict[str, float]:
    after = core_busy_s()
    return {role: round(after[core] - before[core], 2) for role, core in cores.items()}


def pin_tree(pid: int, core: int) -> None:
    """Pin a process and every thread it already has (affinity is per thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {core})
        except (ProcessLookupError, PermissionError):
            pass


def ray_processes() -> list[dict]:
    """Ray's and Railyard's processes with the cores each may run on."""
    found = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if not any(k in cmd for k in ("ray", "railyard", "Serve")) or proc.pid == os.getpid():
            continue
        try:
            found.append({"pid": proc.pid, "cmd": cmd[:120],
                          "cores": sorted(os.sched_getaffinity(proc.pid))})
        except (ProcessLookupError, PermissionError):
            continue
    return found


def plain_run(data: Path, work: Path, core: int, rounds: int) -> dict:
    """The plain script in a fresh interpreter pinned to ``core`` with one xgboost thread."""
    code = (f"import sys, json; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            "import bench_end_to_end as e; from pathlib import Path; "
            f"e.ROUNDS = {rounds}; steps = {{}}; "
            f"s, tr, ho = e.plain_script(Path({str(data)!r}), Path({str(work)!r}), threads=1, "
            "steps=steps); print(json.dumps({'s': s, 'train': tr, 'holdout': ho, "
            "'steps': steps}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, preexec_fn=lambda: os.sched_setaffinity(0, {core}),
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--head-core", type=int, default=0)
    parser.add_argument("--worker-core", type=int, default=1)
    parser.add_argument("--out", default="off_head.json")
    args = parser.parse_args()
    e2e.ROUNDS = args.rounds
    head, worker = args.head_core, args.worker_core
    cores = {"head_core": head, "worker_core": worker}
    if not {head, worker} <= os.sched_getaffinity(0) or head == worker:
        sys.exit(f"needs two distinct cores this process may use; has "
                 f"{sorted(os.sched_getaffinity(0))}")

    work = Path(tempfile.mkdtemp(prefix="railyard-offhead-"))
    dashboard, gcs_port = free_port(), free_port()
    settings = Settings(home=work / "home", ray_address=f"http://127.0.0.1:{dashboard}")
    migrate(settings.resolved_database_url)
    data = write_fraud_dataset(work / f"fraud-{args.rows}", args.rows, files=8)

    os.sched_setaffinity(0, {head})          # the head's processes inherit it
    address = local_cluster.start_head(settings, num_cpus=0, gcs_port=gcs_port,
                                       dashboard_port=dashboard)
    runs, plains = [], []
    try:
        os.sched_setaffinity(0, {worker})    # the pool node's raylet, workers and warm runner
        local_cluster.start_pool_node(settings, gcs_address=f"127.0.0.1:{gcs_port}",
                                      pool="cpu", cpus=1)
        os.sched_setaffinity(0, {head})
        api = local_cluster.deploy_api(settings, address=address, port=free_port())
        # A zero-CPU actor may land on either node; the API belongs on the head's core.
        moved = [p for p in ray_processes()
                 if "ServeReplica" in p["cmd"] and p["cores"] != [head]]
        for proc in moved:
            pin_tree(proc["pid"], head)
        token, _ = tokens.issue(get_engine(settings.resolved_database_url), team="bench",
                                admin=True)
        client = RailyardClient(api, token=token)
        e2e.railyard_run(client, data)       # warm-up: the runner's imports, page cache
        plain_run(data, work, worker, args.rounds)
        for _ in range(args.repeat):
            time.sleep(3)
            before = core_busy_s()
            seconds, job = e2e.railyard_run(client, data)
            runs.append({"s": round(seconds, 3), "cores_busy_s": busy_during(before, cores),
                         "phases_s": {p["name"]: p["duration_s"] for p in job["phases"]},
                         "timeline_s": job["timeline"],
                         "train_rows": job["dataset"]["train_rows"],
                         "holdout_rows": job["dataset"]["holdout_rows"]})
            time.sleep(3)
            before = core_busy_s()
            plain = plain_run(data, work, worker, args.rounds)
            plain["cores_busy_s"] = busy_during(before, cores)
            plains.append(plain)
            assert (plain["train"], plain["holdout"]) == (job["dataset"]["train_rows"],
                                                          job["dataset"]["holdout_rows"])
            print(f"railyard {seconds:6.2f}s {runs[-1]['phases_s']} cores busy "
                  f"{runs[-1]['cores_busy_s']} | plain {plain['s']:6.2f}s {plain['steps']} "
                  f"cores busy {plain['cores_busy_s']}", flush=True)
        placement = [p for p in ray_processes() if "raylet" in p["cmd"]
                     or "ServeReplica" in p["cmd"] or "gcs_server" in p["cmd"]
                     or "warm_runner" in p["cmd"]]
    finally:
        os.sched_setaffinity(0, {head, worker})
        local_cluster.stop_local_cluster(settings)
    ry = statistics.median(r["s"] for r in runs)
    pl = statistics.median(p["s"] for p in plains)
    result = {"measured_at": dt.datetime.now().isoformat(timespec="seconds"),
              "machine": "2 cores, 24 GiB; head + API pinned to one core, the pool node to "
                         "the other", "rows": args.rows, "rounds": args.rounds,
              "railyard_s": round(ry, 3), "plain_s": round(pl, 3), "ratio": round(ry / pl, 3),
              "overhead_s": round(ry - pl, 3), "api_replica_moved_to_head_core": len(moved),
              "runs": runs, "plain_runs": plains, "placement": placement}
    print(f"{args.rows:,} rows, {args.rounds} rounds, off the head's core: railyard {ry:.2f}s "
          f"plain {pl:.2f}s ratio {ry / pl:.2f}x overhead {ry - pl:.2f}s")
    out = ROOT / "benchmarks" / "results" / args.out
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
