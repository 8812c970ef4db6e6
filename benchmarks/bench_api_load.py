"""Load: POST /v1/jobs from many concurrent clients against Postgres, under Ray Serve (as
deployed) and under plain uvicorn (the same FastAPI app, one worker) as the baseline.

    .venv/bin/python benchmarks/bench_api_load.py [--requests 1000] [--clients 50]
                                                  [--mode serve|uvicorn|both]

Both servers run with RAILYARD_SUBMISSION_PAUSED=true: every accepted job is stored QUEUED and
nothing goes to Ray, so what is measured is the API (auth, spec validation, the Postgres
writes), not training. Each request is a valid spec (the blog's, on a generated dataset) with
its own Idempotency-Key; about 5% are deliberate retries of an earlier key with the same body,
which must come back 200 with the first job's id. Afterwards the job table is checked: one row
per accepted key, no key twice, every 201 job id exactly once, no 5xx.

A warm-up round (``--warmup`` requests, checked the same way, not timed) comes first in each
mode. Serve mode starts its own Ray head and ends with ``ray stop --force``, which stops
every Ray cluster on the machine: it refuses to start while another one runs. Prints a table
and the serve/uvicorn ratios; writes benchmarks/results/api_load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from railyard.cluster import local_cluster  # noqa: E402
from railyard.config import Settings  # noqa: E402
from railyard.data.demo import sample_spec, write_fraud_dataset  # noqa: E402
from railyard.jobstore import tokens  # noqa: E402
from railyard.jobstore.engine import get_engine, migrate  # noqa: E402
from tests.servers import Postgres, free_port, postgres_server  # noqa: E402

TEAM = "load"


@dataclass
class Sent:
    """One request and its answer."""

    key: str
    retry: bool
    status: int
    seconds: float
    job_id: str | None


@dataclass
class Round:
    """What one mode's clients sent and got."""

    sent: list[Sent] = field(default_factory=list)
    wall_s: float = 0.0


def plan(requests: int, retry_fraction: float, prefix: str, seed: int) -> list[str | None]:
    """The request sequence: a fresh key, or None for "retry an earlier, answered key"."""
    rng = random.Random(seed)
    retries = round(requests * retry_fraction)
    # no retry among the first tenth: there must be answered keys to repeat
    slots = set(rng.sample(range(max(1, requests // 10), requests), retries)) if retries else set()
    return [None if i in slots else f"{prefix}-{i:06d}" for i in range(requests)]


async def load(url: str, token: str, spec: dict, keys: list[str | None], clients: int,
               seed: int) -> Round:
    """``clients`` concurrent clients work through ``keys``; each POSTs the spec with its key
    (its own model_name, so bodies differ) or repeats an earlier answered key's request."""
    rng = random.Random(seed)
    queue: asyncio.Queue = asyncio.Queue()
    for key in keys:
        queue.put_nowait(key)
    answered: list[tuple[str, dict]] = []          # (key, body) of keys with a 2xx answer
    result = Round()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        while True:
            try:
                key = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            retry = key is None
            if retry:
                waited = time.monotonic()
                while not answered:                  # all earlier keys still in flight
                    if time.monotonic() - waited > 60:
                        raise RuntimeError("no request was accepted within 60 s")
                    await asyncio.sleep(0.005)
                key, body = rng.choice(answered)
            else:
                body = dict(spec, model_name=f"load-{key}")
            started = time.perf_counter()
            try:
                response = await http.post("/v1/jobs", json=body,
                                           headers={"Idempotency-Key": key})
                status = response.status_code
                job_id = response.json().get("id") if status in (200, 201) else None
            except httpx.HTTPError:
                status, job_id = 599, None              # no answer at all counts as a 5xx
            result.sent.append(Sent(key, retry, status, time.perf_counter() - started, job_id))
            if status in (200, 201) and not retry:
                answered.append((key, body))

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {token}"}) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        result.wall_s = time.perf_counter() - started
    return result


def check_database(database_url: str, rounds: list[Round], token: str) -> dict:
    """The job table against what the clients were told: one row per accepted key, no key
    twice, every 201 id exactly once, every 200 replay the first job's id, all QUEUED. (Keys
    are stored scoped by the sending token: railyard.control.service.scoped_idempotency_key.)"""
    from railyard.control.access import Caller
    from railyard.control.service import scoped_idempotency_key

    caller = Caller.from_token(tokens.authenticate(get_engine(database_url), token))
    sent = [dataclasses.replace(s, key=scoped_idempotency_key(caller, s.key) if s.key else None)
            for r in rounds for s in r.sent]
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT id, idempotency_key, status FROM job "
                            "WHERE submitted_by = %s", (TEAM,)).fetchall()
    by_key = Counter(key for _, key, _ in rows)
    ids = Counter(job_id for job_id, _, _ in rows)
    key_of = {job_id: key for job_id, key, _ in rows}
    accepted = {s.key for s in sent if s.status in (200, 201)}
    created = [s for s in sent if s.status == 201]
    problems = []
    if len(rows) != len(accepted):
        problems.append(f"{len(rows)} job rows for {len(accepted)} accepted keys")
    if dupes := [k for k, n in by_key.items() if n > 1]:
        problems.append(f"{len(dupes)} keys with more than one job, e.g. {dupes[:3]}")
    if missing := [s.job_id for s in created if ids[s.job_id] != 1]:
        problems.append(f"{len(missing)} 201 job ids not in the table exactly once")
    if len({s.job_id for s in created}) != len(created):
        problems.append("the same job id came back 201 twice")
    answers: dict[str, set] = {}
    for s in sent:
        if s.status in (200, 201):
            answers.setdefault(s.key, set()).add(s.job_id)
    if split := [k for k, job_ids in answers.items() if len(job_ids) > 1]:
        problems.append(f"{len(split)} keys answered with different job ids, e.g. {split[:3]}")
    if wrong := [s for s in sent if s.status in (200, 201) and key_of.get(s.job_id) != s.key]:
        problems.append(f"{len(wrong)} answers name a job stored under another key")
    if server_errors := [s for s in sent if s.status >= 500]:
        problems.append(f"{len(server_errors)} answers were 5xx")
    return {"job_rows": len(rows), "accepted_keys": len(accepted),
            "statuses": dict(Counter(status for _, _, status in rows)), "problems": problems}


def summarise(mode: str, measured: Round, check: dict) -> dict:
    codes = Counter(s.status for s in measured.sent)
    ms = sorted(s.seconds * 1000 for s in measured.sent)

    def pct(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 1)

    return {"mode": mode, "requests": len(measured.sent),
            "ok": codes[200] + codes[201], "created_201": codes[201], "replayed_200": codes[200],
            "retries_sent": sum(s.retry for s in measured.sent),
            "4xx": sum(n for c, n in codes.items() if 400 <= c < 500),
            "5xx": sum(n for c, n in codes.items() if c >= 500),
            "wall_s": round(measured.wall_s, 3),
            "throughput_rps": round(len(measured.sent) / measured.wall_s, 1),
            "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": round(ms[-1], 1),
            "mean_ms": round(statistics.fmean(ms), 1), "database": check}


def fresh_database(pg: Postgres, name: str) -> str:
    with psycopg.connect(pg.dsn(),
                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return pg.url(name)


def prepare(pg: Postgres, work: Path, mode: str) -> tuple[Settings, str]:
    """A fresh database for ``mode``, migrated, with a token for the load team."""
    database_url = fresh_database(pg, f"load_{mode}")
    settings = Settings(home=work / f"home-{mode}", database_url=database_url,
                        artifact_root=str(work / f"artifacts-{mode}"),
                        ray_address=f"http://127.0.0.1:{free_port()}",
                        submission_paused=True)
    migrate(database_url)
    token, _ = tokens.issue(get_engine(database_url), team=TEAM)
    return settings, token


def start_uvicorn(settings: Settings, work: Path) -> tuple[str, subprocess.Popen]:
    """``uvicorn --factory serve_app.app:create_app``, one worker, settings from env."""
    port = free_port()
    env = dict(os.environ, **settings.runtime_env_vars(), RAILYARD_SUBMISSION_PAUSED="true",
               PYTHONPATH=str(ROOT))
    log = open(work / "uvicorn.log", "w")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "serve_app.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--log-level", "warning", "--no-access-log"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if not local_cluster.wait_for_http_ok(f"{url}/healthz", timeout=60):
        process.kill()
        raise RuntimeError("uvicorn did not answer:\n"
                           + (work / "uvicorn.log").read_text()[-4000:])
    return url, process


def other_ray_running() -> bool:
    return any(p.info["name"] == "gcs_server" for p in psutil.process_iter(["name"]))


def run_mode(mode: str, pg: Postgres, work: Path, spec: dict, args: argparse.Namespace) -> dict:
    settings, token = prepare(pg, work, mode)
    process = None
    try:
        if mode == "uvicorn":
            url, process = start_uvicorn(settings, work)
        else:
            dashboard = free_port()
            settings = settings.model_copy(
                update={"ray_address": f"http://127.0.0.1:{dashboard}"})
            address = local_cluster.start_head(
                settings, num_cpus=2, gcs_port=free_port(), dashboard_port=dashboard,
                extra_args=[f"--temp-dir={Path('/tmp') / f'ray-bench-api-{os.getpid()}'}"])
            url = local_cluster.deploy_api(settings, address=address, port=free_port())
        warm = asyncio.run(load(url, token, spec,
                                plan(args.warmup, args.retry_fraction, f"warm-{mode}", 1),
                                args.clients, seed=1))
        measured = asyncio.run(load(url, token, spec,
                                    plan(args.requests, args.retry_fraction, mode, 2),
                                    args.clients, seed=2))
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
        if mode == "serve":
            local_cluster.stop_local_cluster(settings)
    return summarise(mode, measured,
                     check_database(settings.resolved_database_url, [warm, measured], token))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--mode", choices=["serve", "uvicorn", "both"], default="both")
    parser.add_argument("--retry-fraction", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=100, help="untimed requests first")
    parser.add_argument("--out", default="api_load.json")
    args = parser.parse_args()
    modes = ["uvicorn", "serve"] if args.mode == "both" else [args.mode]
    if "serve" in modes and other_ray_running():
        raise SystemExit("another Ray cluster runs on this machine, and serve mode ends with "
                         "`ray stop --force`, which would stop it too: stop it first, or run "
                         "--mode uvicorn")

    work = Path(tempfile.mkdtemp(prefix="railyard-bench-api-"))
    spec = sample_spec(str(write_fraud_dataset(work / "fraud", 2000, files=2)))
    spec["owner"] = TEAM
    results = []
    try:
        with postgres_server() as pg:
            for mode in modes:
                row = run_mode(mode, pg, work, spec, args)
                results.append(row)
                db = row["database"]
                print(f"{mode}: {row['requests']} requests in {row['wall_s']}s; database: "
                      f"{db['job_rows']} rows for {db['accepted_keys']} accepted keys, "
                      f"{db['statuses']}, problems: {db['problems'] or 'none'}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'mode':8} {'requests':>8} {'ok':>6} {'4xx':>5} {'5xx':>5} {'req/s':>8} "
          f"{'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(f"{r['mode']:8} {r['requests']:>8} {r['ok']:>6} {r['4xx']:>5} {r['5xx']:>5} "
              f"{r['throughput_rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8}")
    ratios = {}
    by_mode = {r["mode"]: r for r in results}
    if {"serve", "uvicorn"} <= by_mode.keys():
        serve, plain = by_mode["serve"], by_mode["uvicorn"]
        ratios = {key: round(serve[key] / plain[key], 2)
                  for key in ("throughput_rps", "p50_ms", "p99_ms")}
        print(f"serve/uvicorn: throughput {ratios['throughput_rps']}x, "
              f"p50 {ratios['p50_ms']}x, p99 {ratios['p99_ms']}x")
    out = ROOT / "benchmarks" / "results" / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "measured_at": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "requests": args.requests,
        "clients": args.clients, "retry_fraction": args.retry_fraction,
        "warmup": args.warmup, "results": results, "serve_over_uvicorn": ratios}, indent=2))
    print(f"wrote {out}")
    if any(r["database"]["problems"] for r in results):
        raise SystemExit("the job table does not match what the clients were told")


if __name__ == "__main__":
    main()
