"""Webhooks: delivery latency (job finished -> first delivery) and what they cost the
reconciler, on Postgres, in one run.

    .venv/bin/python benchmarks/bench_webhooks.py [--endpoints 50] [--jobs 150] [--rounds 12]
                                                  [--per-round 10] [--fanout-all]

Starts a throwaway Postgres (tests/servers.py) and one real HTTP receiver on loopback (a
ThreadingHTTPServer answering 200, in a process of its own; the registered webhooks point at
its paths). Each condition gets a fresh database with ``--jobs`` jobs spread over
``--endpoints`` teams, submitted to the in-memory execution backend (tests/fakes.py); each of
``--rounds`` rounds marks ``--per-round`` jobs STOPPED on "Ray" and times one
``JobService.reconcile_all()`` tick (wall clock, and the thread's CPU time), which moves them
to CANCELLED, each move writing its outbox row in the same transaction:

1. the **baseline** (no webhook) and **outbox only** (``--endpoints`` webhooks registered, no
   dispatcher), tick for tick, so that both see the same load on the machine;
2. **dispatching**: the webhooks and the dispatcher (railyard.control.webhooks) delivering in
   this process's threads, as in the API replica, competing with the ticks for the CPU and the
   GIL; latency is the receiver's arrival time minus the job's ``finished_at``;
3. the baseline **again**, after: the drift of the machine's load meanwhile.

One webhook per team by default (each event goes to one endpoint); ``--fanout-all`` makes every
webhook an admin's for every team's jobs (each event goes to all). Prints the tick medians and
their ratios to the baseline, the latency percentiles; writes
benchmarks/results/webhooks.json (webhooks_fanout_all.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from railyard.config import Settings  # noqa: E402
from railyard.control import capacity, webhooks_endpoints  # noqa: E402
from railyard.control.access import SYSTEM  # noqa: E402
from railyard.control.backend import BackendStatus  # noqa: E402
from railyard.control.service import JobService  # noqa: E402
from railyard.control.webhooks import WebhookDispatcher  # noqa: E402
from railyard.data.demo import sample_spec, write_fraud_dataset  # noqa: E402
from railyard.jobstore import jobs  # noqa: E402
from railyard.jobstore.engine import get_engine, migrate  # noqa: E402
from tests.fakes import InMemoryBackend, fresh_database  # noqa: E402
from tests.servers import free_port, postgres_server  # noqa: E402

RECEIVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

out = open(sys.argv[1], "a", buffering=1)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        out.write(f"{time.time()} {len(body)} {body.decode()}\\n")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
"""


class Arrivals:
    """What the receiver (a process of its own, so that it takes no CPU from this one's
    threads) got: per event id, the wall-clock arrival times, read from its log file."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.at: dict[str, list[float]] = {}
        self.jobs: dict[str, str] = {}

    def count(self) -> int:
        return sum(1 for _ in self.log.open()) if self.log.exists() else 0

    def read(self) -> None:
        for line in self.log.read_text().splitlines():
            moment, _, body = line.split(" ", 2)
            event = json.loads(body)
            self.at.setdefault(event["id"], []).append(float(moment))
            self.jobs[event["id"]] = event["job"]["id"]


def start_receiver(log: Path) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER, str(log), str(port)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, port


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass
class Setup:
    """One condition: its store with ``--jobs`` jobs on the in-memory backend, and its ticks."""

    name: str
    service: JobService
    backend: InMemoryBackend
    made: list[Any]
    settings: Settings
    wall_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)

    def tick(self, r: int, per_round: int) -> None:
        """Mark round ``r``'s jobs STOPPED on "Ray" and time one reconcile tick (wall clock,
        and this thread's CPU time)."""
        batch = self.made[r * per_round:(r + 1) * per_round]
        for job in batch:
            self.backend.statuses[job.ray_submission_id] = BackendStatus("STOPPED")
        wall, cpu = time.perf_counter(), time.thread_time()
        self.service.reconcile_all()
        self.cpu_ms.append((time.thread_time() - cpu) * 1000)
        self.wall_ms.append((time.perf_counter() - wall) * 1000)
        self.ended += [j.id for j in batch]

    def summary(self) -> dict[str, Any]:
        return {"wall_p50_ms": round(statistics.median(self.wall_ms), 2),
                "cpu_p50_ms": round(statistics.median(self.cpu_ms), 2),
                "wall_ms": [round(t, 2) for t in self.wall_ms],
                "cpu_ms": [round(t, 2) for t in self.cpu_ms]}


def setup(name: str, url: str, data: Path, home: Path, *, endpoints: int, teams: int,
          port: int, n_jobs: int, fanout_all: bool) -> Setup:
    """A fresh store: ``n_jobs`` jobs spread over ``teams`` teams, submitted (PENDING), and
    ``endpoints`` webhooks for CANCELLED: one per team, or (``fanout_all``) an admin's for
    every team's jobs each."""
    capacity.forget()
    settings = Settings(home=home, database_url=url, max_concurrent_jobs_per_team=0,
                        webhook_allowed_hosts=["127.0.0.1"], webhook_poll_interval_s=0.2)
    migrate(url)
    engine = get_engine(url)
    backend = InMemoryBackend()
    service = JobService(engine=engine, backend=backend, settings=settings)
    made = []
    for i in range(n_jobs):
        spec = sample_spec(str(data))
        spec["owner"] = f"team-{i % teams}"
        made.append(service.create(spec, caller=SYSTEM).job)
    for i in range(endpoints):
        webhooks_endpoints.register(engine, settings, caller=SYSTEM,
                                    url=f"http://127.0.0.1:{port}/hook/{i}",
                                    events=["CANCELLED"], secret=f"bench-secret-{i:08d}",
                                    owner=None if fanout_all else f"team-{i % teams}")
    service.reconcile_all()                     # warm up: every job listed once
    return Setup(name=name, service=service, backend=backend, made=made, settings=settings)


def latency(arrivals: Arrivals, finished: dict[str, datetime], endpoints: int) -> dict:
    first: list[float] = []
    every: list[float] = []
    arrivals.read()
    for event_id, times in arrivals.at.items():
        done = finished.get(arrivals.jobs[event_id])
        if done is None:
            continue
        start = done.timestamp()
        first.append((min(times) - start) * 1000)
        every += [(t - start) * 1000 for t in times]
    return {"events": len(first), "deliveries": len(every),
            "expected_deliveries": len(finished) * endpoints,
            "first_delivery_ms": {"p50": round(percentile(first, 0.5), 1),
                                  "p90": round(percentile(first, 0.9), 1),
                                  "max": round(max(first, default=float("nan")), 1)},
            "every_delivery_ms": {"p50": round(percentile(every, 0.5), 1),
                                  "p99": round(percentile(every, 0.99), 1),
                                  "max": round(max(every, default=float("nan")), 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--fanout-all", action="store_true",
                        help="every endpoint an admin's, for every team's jobs (each event "
                             "goes to all of them); default: one endpoint per team")
    args = parser.parse_args()
    if args.rounds * args.per_round > args.jobs:
        raise SystemExit("--rounds x --per-round must not exceed --jobs")
    pause = 0.3                                  # ticks are seconds apart in the API
    with tempfile.TemporaryDirectory() as tmp, postgres_server() as postgres:
        arrivals = Arrivals(Path(tmp) / "arrivals.log")
        receiver, port = start_receiver(arrivals.log)
        data = write_fraud_dataset(Path(tmp) / "fraud", 500, files=1)

        def make(name: str, endpoints: int) -> Setup:
            return setup(name, fresh_database(postgres, f"bench_wh_{name}"), data,
                         Path(tmp) / name, endpoints=endpoints, teams=max(args.endpoints, 1),
                         port=port, n_jobs=args.jobs, fanout_all=args.fanout_all)

        # 1. the baseline and the outbox alone, tick for tick (the same load on both).
        base, outbox = make("base", 0), make("outbox", args.endpoints)
        for r in range(args.rounds):
            base.tick(r, args.per_round)
            outbox.tick(r, args.per_round)
            time.sleep(pause)
        # 2. with the dispatcher delivering, in this process.
        hooked = make("hooked", args.endpoints)
        stop = threading.Event()
        dispatcher = WebhookDispatcher(hooked.service.engine, hooked.settings)
        threading.Thread(target=dispatcher.run, args=(stop,), daemon=True).start()
        for r in range(args.rounds):
            hooked.tick(r, args.per_round)
            time.sleep(pause)
        finished = {job_id: jobs.get_job(hooked.service.engine, job_id=job_id).finished_at
                    for job_id in hooked.ended}
        per_event = args.endpoints if args.fanout_all else 1
        expected = len(finished) * per_event
        deadline = time.monotonic() + 300
        while arrivals.count() < expected and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        dispatcher.close()
        # 3. the baseline again, after: how much the load on the machine drifted meanwhile.
        after = make("base_after", 0)
        for r in range(args.rounds):
            after.tick(r, args.per_round)
            time.sleep(pause)
        receiver.terminate()
        lat = latency(arrivals, finished, per_event)
    results = {s.name: s.summary() for s in (base, outbox, hooked, after)}
    baseline_wall = (results["base"]["wall_p50_ms"] + results["base_after"]["wall_p50_ms"]) / 2
    baseline_cpu = (results["base"]["cpu_p50_ms"] + results["base_after"]["cpu_p50_ms"]) / 2
    ratios = {
        "outbox_vs_base_wall": round(results["outbox"]["wall_p50_ms"]
                                     / results["base"]["wall_p50_ms"], 2),
        "outbox_vs_base_cpu": round(results["outbox"]["cpu_p50_ms"]
                                    / results["base"]["cpu_p50_ms"], 2),
        "dispatching_vs_base_wall": round(results["hooked"]["wall_p50_ms"] / baseline_wall, 2),
        "dispatching_vs_base_cpu": round(results["hooked"]["cpu_p50_ms"] / baseline_cpu, 2),
    }
    print(f"\n{args.jobs} active jobs, {args.per_round} end per tick, {args.endpoints} endpoints"
          f" ({'all for every team' if args.fanout_all else 'one per team'})")
    print(f"{'condition':<40} {'tick wall p50':>14} {'tick CPU p50':>13}")
    for name, label in (("base", "no webhooks"), ("outbox", "endpoints, dispatcher stopped"),
                        ("hooked", "endpoints, dispatcher delivering"),
                        ("base_after", "no webhooks (again, after)")):
        row = results[name]
        print(f"{label:<40} {row['wall_p50_ms']:>11} ms {row['cpu_p50_ms']:>10} ms")
    print(f"ratios to the baseline: outbox alone {ratios['outbox_vs_base_wall']}x wall, "
          f"{ratios['outbox_vs_base_cpu']}x CPU; dispatcher delivering "
          f"{ratios['dispatching_vs_base_wall']}x wall, {ratios['dispatching_vs_base_cpu']}x CPU")
    print(f"latency job finished -> first delivery: p50 {lat['first_delivery_ms']['p50']} ms, "
          f"p90 {lat['first_delivery_ms']['p90']} ms, max {lat['first_delivery_ms']['max']} ms")
    print(f"latency job finished -> every delivery ({lat['deliveries']} of "
          f"{lat['expected_deliveries']}): p50 {lat['every_delivery_ms']['p50']} ms, "
          f"p99 {lat['every_delivery_ms']['p99']} ms")
    name = "webhooks_fanout_all.json" if args.fanout_all else "webhooks.json"
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args),
        "database": "postgres (tests/servers.py)",
        "receiver": "ThreadingHTTPServer on loopback, own process", "ticks": results,
        "ratios": ratios, "latency": lat}, indent=2))
    print(f"wrote {out}")
    if lat["deliveries"] < lat["expected_deliveries"]:
        raise SystemExit(f"only {lat['deliveries']} of {lat['expected_deliveries']} "
                         "deliveries arrived")


if __name__ == "__main__":
    main()
