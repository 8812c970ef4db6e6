"""A burst of tiny jobs: N NoOp jobs from 5 teams POSTed at once vs the same jobs one by one.

    .venv/bin/python benchmarks/bench_burst.py [--jobs 1000] [--serial 10] [--cpus 6]

A local pool cluster (a head with no CPUs running the API, one ``cpu`` node with ``--cpus``
CPUs), Postgres, local artifacts, no team limit, the reconciler ticking every second. First the
serial rate: ``--serial`` NoOp jobs, each POSTed after the previous one SUCCEEDED. Then the
burst: ``--jobs`` POSTs from ``--clients`` threads (an admin token submitting for 5 owners),
waited for in the job table. Railyard hands Ray only what the pool can start
(railyard.control.capacity); the rest waits QUEUED.

Reported (and written to benchmarks/results/burst.json): wall time, jobs/min and the ratio to
the serial rate; the machine's busy CPU seconds per job in each phase (/proc/stat, every
process counted, and the jobs/min the cores could give at the burst's cost); each job
exactly once (one row per accepted POST, every one SUCCEEDED, Ray's submissions per job <= its
attempts); none stuck; the peak number of Ray jobs alive at once
(Ray's list_jobs polled through the burst); the GCS/dashboard health (/api/gcs_healthz polled:
failures, slowest answer); the RSS of a running job's Ray supervisor actor and driver.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from railyard.cluster import local_cluster  # noqa: E402
from railyard.config import Settings  # noqa: E402
from railyard.data.demo import sample_spec, write_fraud_dataset  # noqa: E402
from railyard.execution.warm_runner import process_name  # noqa: E402
from railyard.jobstore import tokens  # noqa: E402
from railyard.jobstore.engine import get_engine, migrate  # noqa: E402
from tests.fakes import fresh_database  # noqa: E402
from tests.servers import free_port, postgres_server  # noqa: E402

TEAMS = [f"team-{i}" for i in range(1, 6)]
ALIVE = ("PENDING", "RUNNING")
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def noop_spec(data: Path, owner: str, name: str) -> dict:
    spec = sample_spec(str(data))
    spec.update(owner=owner, model_name=name)
    spec["train"].update(workflow_name="NoOp", label="has_fraud_dispute", custom_params={})
    return spec


def job_counts(engine) -> dict[str, int]:
    from sqlalchemy import text

    with engine.connect() as conn:
        return dict(conn.execute(text("SELECT status, count(*) FROM job GROUP BY status")).all())


class Watcher:
    """Polls Ray's job list, the GCS health endpoint and the processes of running jobs."""

    def __init__(self, address: str) -> None:
        from ray.job_submission import JobSubmissionClient

        self.address = address
        self.ray = JobSubmissionClient(address)
        self.peak_alive = 0
        self.alive_samples: list[int] = []
        self.list_s: list[float] = []
        self.health_s: list[float] = []
        self.health_failures: list[str] = []
        self.rss: list[dict] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._ray_loop, daemon=True),
                         threading.Thread(target=self._health_loop, daemon=True),
                         threading.Thread(target=self._rss_loop, daemon=True)]

    def __enter__(self) -> Watcher:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _ray_loop(self) -> None:
        while not self._stop.wait(1.0):
            started = time.perf_counter()
            try:
                listed = self.ray.list_jobs()
            except Exception as exc:  # noqa: BLE001
                self.health_failures.append(f"list_jobs: {exc}"[:200])
                continue
            self.list_s.append(time.perf_counter() - started)
            alive = sum(str(j.status.value) in ALIVE for j in listed if j.submission_id)
            self.alive_samples.append(alive)
            self.peak_alive = max(self.peak_alive, alive)

    def _health_loop(self) -> None:
        while not self._stop.wait(0.5):
            started = time.perf_counter()
            try:
                code = httpx.get(f"{self.address}/api/gcs_healthz", timeout=10).status_code
                if code != 200:
                    self.health_failures.append(f"gcs_healthz {code}")
            except httpx.HTTPError as exc:
                self.health_failures.append(f"gcs_healthz: {exc!r}"[:200])
            self.health_s.append(time.perf_counter() - started)

    def _rss_loop(self) -> None:
        """Per running job: its JobSupervisor actor's worker and its driver processes (the
        entrypoint and the driver a warm runner forked for it), matched by job id."""
        while not self._stop.wait(2.0):
            supervisors: dict[str, int] = {}
            drivers: dict[str, int] = {}
            for proc in psutil.process_iter(["cmdline", "name", "memory_info"]):
                try:
                    cmd = " ".join(proc.info["cmdline"] or [])
                    rss = proc.info["memory_info"].rss if proc.info["memory_info"] else 0
                except (psutil.Error, TypeError):
                    continue
                if "JobSupervisor" in cmd:
                    supervisors[str(proc.pid)] = rss
                elif "railyard.execution.entrypoint" in cmd:
                    drivers[cmd.split()[-1]] = drivers.get(cmd.split()[-1], 0) + rss
                elif (proc.info["name"] or "").startswith("ry-"):
                    drivers[proc.info["name"]] = drivers.get(proc.info["name"], 0) + rss
            entry = {name: rss for name, rss in drivers.items() if not name.startswith("ry-")}
            for job_id in list(entry):
                entry[job_id] += drivers.get(process_name(job_id), 0)
            if entry and supervisors:
                self.rss.append({"jobs": len(entry), "supervisors": len(supervisors),
                                 "supervisor_mib": statistics.median(supervisors.values()) / 2**20,
                                 "driver_mib": statistics.median(entry.values()) / 2**20})


def machine_busy_s() -> float:
    """Busy (non-idle) CPU seconds of the whole machine since boot, from /proc/stat: what a
    phase cost, short-lived processes (entrypoints, forked drivers, new Ray workers) included."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class ProcessCpu:
    """CPU seconds by kind of process over a phase: every process's own utime+stime
    (/proc/PID/stat), sampled every ``interval_s`` so that short-lived ones (each job's Ray
    worker for its supervisor, its entrypoint, its forked driver: orphans whose time no
    parent of ours reaps) are counted up to their last sample."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s = interval_s
        self.baseline: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcessCpu:
        self.baseline = {pid: cpu for pid, (_, cpu) in self._sample().items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.last.update(self._sample())

    def per_job(self, jobs: int) -> dict[str, float]:
        """CPU seconds per job by kind, largest first (kinds under 5 ms left out)."""
        spent: dict[str, float] = {}
        for pid, (kind, cpu) in self.last.items():
            spent[kind] = spent.get(kind, 0.0) + cpu - self.baseline.get(pid, 0.0)
        return {k: round(v / jobs, 3) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])
                if v / jobs >= 0.005}

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.last.update(self._sample())

    def _sample(self) -> dict[int, tuple[str, float]]:
        tick = os.sysconf("SC_CLK_TCK")
        found: dict[int, tuple[str, float]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                stat = (entry / "stat").read_text()
                # Classified on every sample: a Ray worker renames itself once it holds an
                # actor, a forked driver once it runs a job; its last name is what it was.
                kind = process_kind(stat[stat.index("(") + 1:stat.rindex(")")],
                                    (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                                    .decode(errors="replace"))
            except (OSError, ValueError):
                continue
            fields = stat.rsplit(")", 1)[1].split()
            found[pid] = (kind, (int(fields[11]) + int(fields[12])) / tick)
        return found


def process_kind(comm: str, cmdline: str) -> str:
    """A short name for what a process is in this benchmark."""
    if comm.startswith("ry-"):                 # a forked driver keeps its server's cmdline
        return "forked driver"
    for mark, kind in (("gcs_server", "ray gcs"), ("/raylet", "raylet"),
                       ("dashboard/agent.py", "ray dashboard agent"),
                       ("dashboard/dashboard.py", "ray dashboard"),
                       ("log_monitor", "ray log monitor"), ("monitor.py", "ray monitor"),
                       ("runtime_env/agent", "ray runtime env agent"),
                       ("ServeReplica", "serve replica (API)"), ("ProxyActor", "serve proxy"),
                       ("ServeController", "serve controller"),
                       ("JobSupervi", "job supervisor"), ("DashboardA", "ray dashboard agent"),
                       ("ray-dashboard-", "ray dashboard"),
                       ("warm_runner", "warm runner"),
                       ("postgres", "postgres"), ("bench_burst", "this benchmark")):
        if mark in cmdline or mark in comm:
            return kind
    if "railyard.execution.entrypoint" in cmdline:
        return "entrypoint"
    if "standby_supervisor" in cmdline:
        return "standby prestart helper"
    if cmdline.startswith("ray::IDLE") or "default_worker.py" in cmdline:
        return "ray worker (idle or starting)"
    return f"other: {comm}"


def run_serial(http: httpx.Client, data: Path, count: int) -> float:
    """Seconds per job, jobs POSTed one after another, each waited for to SUCCEEDED."""
    started = time.perf_counter()
    for i in range(count):
        job = http.post("/v1/jobs", json=noop_spec(data, TEAMS[i % 5], f"serial_{i}"))
        job.raise_for_status()
        job_id = job.json()["id"]
        while True:
            got = http.get(f"/v1/jobs/{job_id}").json()
            if got["status"] in TERMINAL:
                break
            time.sleep(0.25)
        if got["status"] != "SUCCEEDED":
            raise RuntimeError(f"serial job {job_id} {got['status']}: {got.get('error')}")
    return (time.perf_counter() - started) / count


def run_burst(api: str, token: str, data: Path, engine, count: int, clients: int,
              timeout: float) -> dict:
    before = job_counts(engine)
    accepted: list[str] = []
    refused: list[str] = []

    def post(i: int) -> None:
        with httpx.Client(base_url=api, timeout=120,
                          headers={"Authorization": f"Bearer {token}"}) as http:
            r = http.post("/v1/jobs", json=noop_spec(data, TEAMS[i % 5], f"burst_{i}"))
        (accepted if r.status_code == 201 else refused).append(
            r.json()["id"] if r.status_code == 201 else f"{r.status_code} {r.text[:200]}")

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, range(count)))
    posted_s = time.perf_counter() - started
    print(f"  {len(accepted)} POSTs accepted in {posted_s:.1f}s ({len(refused)} refused)",
          flush=True)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        counts = job_counts(engine)
        done = sum(counts.get(s, 0) - before.get(s, 0) for s in TERMINAL)
        line = ", ".join(f"{k} {v - before.get(k, 0)}" for k, v in sorted(counts.items())
                         if v - before.get(k, 0))
        if line != last:
            print(f"  {time.perf_counter() - started:6.1f}s: {line}", flush=True)
            last = line
        if done >= len(accepted):
            break
        time.sleep(1.0)
    wall = time.perf_counter() - started
    return {"accepted": accepted, "refused": refused, "wall_s": wall, "post_s": posted_s}


def check_once(engine, address: str, ids: list[str]) -> dict:
    """Every accepted job one row, SUCCEEDED; Ray ran each at most its attempts times."""
    from ray.job_submission import JobSubmissionClient
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = {r[0]: (r[1], r[2]) for r in conn.execute(
            text("SELECT id, status, attempt FROM job WHERE model_name LIKE 'burst_%'")).all()}
    per_job: dict[str, int] = {}
    pack_sizes: list[int] = []
    for info in JobSubmissionClient(address).list_jobs():
        metadata = info.metadata or {}
        if "railyard_pack" in metadata:          # one Ray job for several (job:attempt)s
            members = [m.rsplit(":", 1)[0] for m in metadata["railyard_pack"].split(",")]
            pack_sizes.append(len(members))
        else:
            members = [metadata["railyard_job_id"]] if metadata.get("railyard_job_id") else []
        for job_id in members:
            per_job[job_id] = per_job.get(job_id, 0) + 1
    statuses: dict[str, int] = {}
    for status, _ in rows.values():
        statuses[status] = statuses.get(status, 0) + 1
    problems = []
    if set(rows) != set(ids) or len(ids) != len(set(ids)):
        problems.append(f"{len(rows)} rows for {len(set(ids))} accepted ids")
    over = [j for j, n in per_job.items() if j in rows and n > (rows[j][1] or 1)]
    if over:
        problems.append(f"{len(over)} jobs submitted to Ray more often than their attempts")
    missing = [j for j in ids if per_job.get(j, 0) == 0]
    if missing:
        problems.append(f"{len(missing)} jobs never reached Ray")
    stuck = [j for j, (status, _) in rows.items() if status not in TERMINAL]
    if stuck:
        problems.append(f"{len(stuck)} jobs stuck (not finished)")
    return {"statuses": statuses, "ray_submissions": sum(per_job.get(j, 0) for j in ids),
            "ray_jobs_of_packs": len(pack_sizes),
            "jobs_in_packs": sum(pack_sizes),
            "mean_pack_size": round(sum(pack_sizes) / len(pack_sizes), 2) if pack_sizes else None,
            "retried": sum(1 for _, attempt in rows.values() if (attempt or 1) > 1),
            "stuck": len(stuck), "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--serial", type=int, default=10)
    parser.add_argument("--cpus", type=int, default=6, help="CPUs of the cpu pool's node")
    parser.add_argument("--clients", type=int, default=20, help="threads POSTing the burst")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--pack-max-jobs", type=int, default=1,
                        help="RAILYARD_PACK_MAX_JOBS for the API (1: every job its own Ray job)")
    parser.add_argument("--out", default="burst.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="railyard-bench-burst-"))
    data = write_fraud_dataset(work / "fraud", 2000, files=2)
    # Inherited by the local nodes, so by the API's Serve replica: no team limit, and the
    # reconciler (which submits queued jobs as others end) ticks every second.
    os.environ.update(RAILYARD_MAX_CONCURRENT_JOBS_PER_TEAM="0",
                      RAILYARD_RECONCILE_INTERVAL_S="1",
                      RAILYARD_PACK_MAX_JOBS=str(args.pack_max_jobs))
    with postgres_server() as pg:
        database_url = fresh_database(pg, "burst")
        dashboard = free_port()
        settings = Settings(home=work / "home", database_url=database_url,
                            artifact_root=str(work / "artifacts"),
                            ray_address=f"http://127.0.0.1:{dashboard}")
        migrate(database_url)
        engine = get_engine(database_url)
        token, _ = tokens.issue(engine, team="admin", admin=True)
        address = local_cluster.start_pool_cluster(
            settings, {"cpu": 1}, cpus_per_node={"cpu": args.cpus}, gcs_port=free_port(),
            dashboard_port=dashboard,
            extra_head_args=[f"--temp-dir={Path('/tmp') / f'ray-bench-burst-{os.getpid()}'}"])
        local_cluster.use_ray_token(settings)
        try:
            api = local_cluster.deploy_api(settings, address=address, port=free_port())
            with httpx.Client(base_url=api, timeout=60,
                              headers={"Authorization": f"Bearer {token}"}) as http:
                run_serial(http, data, 1)                       # warm-up
                busy = machine_busy_s()
                with ProcessCpu() as processes:
                    serial_s = run_serial(http, data, args.serial)
                serial_cpu = (machine_busy_s() - busy) / args.serial
                serial_kinds = processes.per_job(args.serial)
            serial_rate = 60 / serial_s
            print(f"serial: {serial_s:.2f}s per job ({serial_rate:.1f} jobs/min)", flush=True)
            with Watcher(address) as watch:
                busy = machine_busy_s()
                with ProcessCpu(interval_s=0.25) as processes:
                    burst = run_burst(api, token, data, engine, args.jobs, args.clients,
                                      args.timeout)
                burst_cpu = (machine_busy_s() - busy) / max(1, len(burst["accepted"]))
                burst_kinds = processes.per_job(max(1, len(burst["accepted"])))
            check = check_once(engine, address, burst["accepted"])
        finally:
            local_cluster.stop_local_cluster(settings)
    done = len(burst["accepted"])
    rate = done / burst["wall_s"] * 60
    rss = watch.rss
    result = {
        "measured_at": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{psutil.cpu_count()} cores, "
                   f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "pool": {"cpu": {"nodes": 1, "cpus": args.cpus}}, "teams": len(TEAMS),
        "pack_max_jobs": args.pack_max_jobs,
        "serial": {"jobs": args.serial, "s_per_job": round(serial_s, 3),
                   "jobs_per_min": round(serial_rate, 1),
                   "machine_cpu_s_per_job": round(serial_cpu, 2),
                   "cpu_s_per_job_by_process": serial_kinds},
        "burst": {"jobs": args.jobs, "accepted": done, "refused": burst["refused"][:5],
                  "post_s": round(burst["post_s"], 1), "wall_s": round(burst["wall_s"], 1),
                  "jobs_per_min": round(rate, 1), "ratio_to_serial": round(rate / serial_rate, 2),
                  "machine_cpu_s_per_job": round(burst_cpu, 2),
                  "cpu_s_per_job_by_process": burst_kinds,
                  "machine_cpu_bound_jobs_per_min": round(
                      60 * (psutil.cpu_count() or 1) / burst_cpu, 1) if burst_cpu else None,
                  **check},
        "ray": {"peak_jobs_alive": watch.peak_alive,
                "median_jobs_alive": statistics.median(watch.alive_samples or [0]),
                "list_jobs_s_median": round(statistics.median(watch.list_s or [0]), 3),
                "list_jobs_s_max": round(max(watch.list_s or [0]), 3)},
        "gcs_health": {"polls": len(watch.health_s), "failures": len(watch.health_failures),
                       "first_failures": watch.health_failures[:5],
                       "max_s": round(max(watch.health_s or [0]), 3),
                       "median_s": round(statistics.median(watch.health_s or [0]), 4)},
        "running_job_rss_mib": {
            "samples": len(rss),
            "supervisor": round(statistics.median(r["supervisor_mib"] for r in rss), 1)
            if rss else None,
            "driver": round(statistics.median(r["driver_mib"] for r in rss), 1)
            if rss else None},
    }
    r = result["running_job_rss_mib"]
    if r["supervisor"] is not None:
        r["total"] = round(r["supervisor"] + r["driver"], 1)
    out = ROOT / "benchmarks" / "results" / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
