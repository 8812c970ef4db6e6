"""Throughput and latency of the API under Ray Serve against a bare FastAPI handler, with wrk.

    .venv/bin/python benchmarks/bench_api_wrk.py [--duration 15] [--connections 50]
                                                 [--ray-env RAY_X=1]... [--out api_wrk.json]

Needs ``wrk`` on the PATH (``apt-get install -y wrk``); without it the script prints that
command and exits. In one run it starts a throwaway Postgres, then

1. a bare FastAPI app (GET /healthz and POST /v1/jobs each return a small JSON object, nothing
   else) under plain uvicorn, one worker: the ceiling for this machine;
2. Railyard's API under Ray Serve on a local Ray head (``start_head`` + ``deploy_api``, as
   deployed), with ``submission_paused`` so every accepted job stays QUEUED and nothing
   reaches Ray: what is measured is the API (auth, spec checks, the Postgres writes);

and measures ``wrk -t1 -c50 -d15s`` GET /healthz on both and POST /v1/jobs on both (the blog's
spec, a valid token, a fresh Idempotency-Key per request, from a Lua script). Afterwards the
job table is checked: every job id answered 201 is stored exactly once, no key twice, no 5xx
and no socket error; rows beyond the 201s are only the requests still in flight when wrk
stopped (at most one per connection). Prints req/s, p50 and p99 and the Serve/bare ratios;
writes benchmarks/results/api_wrk.json. Ends with ``ray stop --force``, which stops every Ray
cluster on the machine: it refuses to start while another one runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

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

TEAM = "wrk"

BARE_APP = textwrap.dedent('''
    from fastapi import FastAPI, Request

    app = FastAPI()


    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}


    @app.post("/v1/jobs", status_code=201)
    async def create_job(request: Request) -> dict:
        await request.body()
        return {"id": "bare", "status": "QUEUED"}
''')

# wrk's Lua: a fresh Idempotency-Key per request (one thread: the counter is unique), the
# status of every answer and the id of every 201 kept, and a JSON summary printed at the end.
LUA = textwrap.dedent('''
    local method, path, body, token, prefix = %(method)s, %(path)s, %(body)s, %(token)s, %(prefix)s
    counter = 0
    statuses = {}
    created = {}

    request = function()
      counter = counter + 1
      local headers = {["Authorization"] = "Bearer " .. token}
      if method == "POST" then
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = prefix .. "-" .. counter
        return wrk.format("POST", path, headers, body)
      end
      return wrk.format("GET", path, headers)
    end

    response = function(status, headers, body)
      local key = tostring(status)
      statuses[key] = (statuses[key] or 0) + 1
      if status == 201 then
        local id = string.match(body, '"id"%%s*:%%s*"([^"]+)"')
        if id then created[#created + 1] = id end
      end
    end

    local threads = {}
    setup = function(thread) threads[#threads + 1] = thread end

    local function quote(s) return '"' .. tostring(s) .. '"' end

    done = function(summary, latency, requests)
      local codes, ids = {}, {}
      for _, thread in ipairs(threads) do
        for k, v in pairs(thread:get("statuses")) do codes[k] = (codes[k] or 0) + v end
        for _, id in ipairs(thread:get("created")) do ids[#ids + 1] = quote(id) end
      end
      local parts = {}
      for k, v in pairs(codes) do parts[#parts + 1] = quote(k) .. ":" .. v end
      local e = summary.errors
      io.write("WRK_JSON " .. string.format(
        '{"requests":%%d,"duration_us":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,' ..
        '"max_us":%%d,"mean_us":%%f,"errors":{"connect":%%d,"read":%%d,"write":%%d,' ..
        '"status":%%d,"timeout":%%d},"statuses":{%%s},"created":[%%s]}',
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
        latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write,
        e.status, e.timeout, table.concat(parts, ","), table.concat(ids, ",")) .. "\\n")
    end
''')


def lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal here


def run_wrk(url: str, *, method: str, path: str, body: str, token: str, prefix: str,
            args: argparse.Namespace, work: Path) -> dict:
    """One wrk run; its summary (req/s, p50/p99 in ms, statuses, the 201 ids)."""
    script = work / f"{prefix}.lua"
    script.write_text(LUA % {"method": lua_string(method), "path": lua_string(path),
                             "body": lua_string(body), "token": lua_string(token),
                             "prefix": lua_string(prefix)})
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s",
               f"--timeout={args.timeout}s", "-s", str(script), f"{url}{path}"]
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(x for x in result.stdout.splitlines() if x.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds = raw["duration_us"] / 1e6
    statuses = {int(k): v for k, v in raw["statuses"].items()}
    errors = raw["errors"]
    return {"method": method, "path": path, "requests": raw["requests"],
            "rps": round(raw["requests"] / seconds, 1),
            "p50_ms": round(raw["p50_us"] / 1000, 1), "p90_ms": round(raw["p90_us"] / 1000, 1),
            "p99_ms": round(raw["p99_us"] / 1000, 1), "max_ms": round(raw["max_us"] / 1000, 1),
            "mean_ms": round(raw["mean_us"] / 1000, 1), "statuses": statuses,
            "5xx": sum(n for code, n in statuses.items() if code >= 500),
            "socket_errors": {k: v for k, v in errors.items() if k != "status" and v},
            "created": raw["created"]}


def start_bare(work: Path) -> tuple[str, subprocess.Popen]:
    (work / "bare_app.py").write_text(BARE_APP)
    port = free_port()
    log = open(work / "bare.log", "w")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bare_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--log-level", "warning", "--no-access-log"],
        cwd=work, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    if not local_cluster.wait_for_http_ok(f"{url}/healthz", timeout=60):
        process.kill()
        raise RuntimeError("the bare app did not answer:\n" + (work / "bare.log").read_text())
    return url, process


def prepare(pg: Postgres, work: Path) -> tuple[Settings, str]:
    """A fresh, migrated database with a token for the benchmark's team."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS wrk WITH (FORCE)")
        conn.execute("CREATE DATABASE wrk")
    database_url = pg.url("wrk")
    settings = Settings(home=work / "home", database_url=database_url,
                        artifact_root=str(work / "artifacts"),
                        ray_address=f"http://127.0.0.1:{free_port()}", submission_paused=True)
    migrate(database_url)
    token, _ = tokens.issue(get_engine(database_url), team=TEAM)
    return settings, token


def check_database(database_url: str, runs: list[dict], connections: int) -> dict:
    """Every 201 id stored exactly once, no key twice, no 5xx, few rows past the 201s."""
    conninfo = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute("SELECT id, idempotency_key, status FROM job "
                            "WHERE submitted_by = %s", (TEAM,)).fetchall()
    ids = [job_id for job_id, _, _ in rows]
    keys = [key for _, key, _ in rows]
    created = [job_id for run in runs for job_id in run["created"]]
    problems = []
    stored = set(ids)
    if missing := [job_id for job_id in created if job_id not in stored]:
        problems.append(f"{len(missing)} job ids answered 201 are not stored")
    if len(set(created)) != len(created):
        problems.append("the same job id was answered 201 twice")
    if len(stored) != len(ids) or len(set(keys)) != len(keys):
        problems.append("a job id or an idempotency key is stored twice")
    extra = len(rows) - len(created)
    if extra < 0 or extra > connections * len(runs):
        problems.append(f"{len(rows)} job rows for {len(created)} answers 201 (in flight at "
                        f"the end: at most {connections * len(runs)})")
    for run in runs:
        if run["5xx"]:
            problems.append(f"{run['method']} {run['path']}: {run['5xx']} answers 5xx")
        if run["socket_errors"]:
            problems.append(f"{run['method']} {run['path']}: socket errors "
                            f"{run['socket_errors']}")
    statuses: dict[str, int] = {}
    for _, _, status in rows:
        statuses[status] = statuses.get(status, 0) + 1
    return {"job_rows": len(rows), "created_201": len(created),
            "in_flight_at_end": max(extra, 0), "statuses": statuses, "problems": problems}


def other_ray_running() -> bool:
    return any(p.info["name"] == "gcs_server" for p in psutil.process_iter(["name"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=30, help="wrk's per-request timeout")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of untimed POSTs first")
    parser.add_argument("--label", default="", help="stored in the JSON (e.g. before/after)")
    parser.add_argument("--ray-env", action="append", default=[], metavar="NAME=VALUE",
                        help="a RAY_* variable for the local Ray node (its proxy, controller and "
                             "replicas inherit it), e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=1")
    parser.add_argument("--out", default="api_wrk.json")
    args = parser.parse_args()
    if args.threads != 1:
        raise SystemExit("--threads must be 1: the Lua script's key counter is per thread")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install -y wrk` (or build it from "
                         "https://github.com/wg/wrk), then run this again")
    for item in args.ray_env:
        name, _, value = item.partition("=")
        if not name.startswith("RAY_"):
            raise SystemExit(f"--ray-env {item!r}: only RAY_* variables reach the Ray node")
        os.environ[name] = value
    if other_ray_running():
        raise SystemExit("another Ray cluster runs on this machine, and this benchmark ends with "
                         "`ray stop --force`, which would stop it too: stop it first")

    work = Path(tempfile.mkdtemp(prefix="railyard-bench-wrk-"))
    spec = sample_spec(str(write_fraud_dataset(work / "fraud", 2000, files=2)))
    spec["owner"] = TEAM
    body = json.dumps(spec)
    run_id = uuid.uuid4().hex[:8]
    results: dict[str, dict] = {}
    bare = None
    settings = None
    try:
        with postgres_server() as pg:
            settings, token = prepare(pg, work)
            url, bare = start_bare(work)
            for method, path in (("GET", "/healthz"), ("POST", "/v1/jobs")):
                results[f"bare {method} {path}"] = run_wrk(
                    url, method=method, path=path, body=body, token="bare",
                    prefix=f"bare-{run_id}-{method}", args=args, work=work)
            bare.terminate()
            bare.wait(timeout=30)
            bare = None

            dashboard = free_port()
            settings = settings.model_copy(update={"ray_address": f"http://127.0.0.1:{dashboard}"})
            started = time.perf_counter()
            address = local_cluster.start_head(
                settings, num_cpus=2, gcs_port=free_port(), dashboard_port=dashboard,
                extra_args=[f"--temp-dir={Path('/tmp') / f'ray-bench-wrk-{os.getpid()}'}"])
            url = local_cluster.deploy_api(settings, address=address, port=free_port())
            print(f"Serve up in {time.perf_counter() - started:.1f}s", flush=True)
            if args.warmup:
                warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
                results["serve warm-up POST /v1/jobs"] = run_wrk(
                    url, method="POST", path="/v1/jobs", body=body, token=token,
                    prefix=f"warm-{run_id}", args=warm, work=work)
            for method, path in (("GET", "/healthz"), ("POST", "/v1/jobs")):
                results[f"serve {method} {path}"] = run_wrk(
                    url, method=method, path=path, body=body, token=token,
                    prefix=f"serve-{run_id}-{method}", args=args, work=work)
            time.sleep(2)  # the requests in flight when wrk stopped finish
            posts = [r for name, r in results.items() if name.startswith("serve")
                     and r["method"] == "POST"]
            check = check_database(settings.resolved_database_url, posts, args.connections)
            check["problems"] += [f"{name}: {r['5xx']} answers 5xx"
                                  for name, r in results.items() if r["5xx"]
                                  and not (name.startswith("serve") and r["method"] == "POST")]
    finally:
        if bare is not None:
            bare.terminate()
        if settings is not None:
            local_cluster.stop_local_cluster(settings)
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'run':28} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'5xx':>5}  statuses")
    for name, r in results.items():
        print(f"{name:28} {r['requests']:>8} {r['rps']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8} "
              f"{r['5xx']:>5}  {r['statuses']}")
    ratios = {}
    for method, path in (("GET", "/healthz"), ("POST", "/v1/jobs")):
        serve, plain = results[f"serve {method} {path}"], results[f"bare {method} {path}"]
        ratios[f"{method} {path}"] = {
            "throughput": round(serve["rps"] / plain["rps"], 3),
            "p50": round(serve["p50_ms"] / max(plain["p50_ms"], 0.1), 2),
            "p99": round(serve["p99_ms"] / max(plain["p99_ms"], 0.1), 2)}
    bare_get = results["bare GET /healthz"]
    serve_post = results["serve POST /v1/jobs"]
    ratios["serve POST vs bare GET"] = {
        "throughput": round(serve_post["rps"] / bare_get["rps"], 3),
        "p99": round(serve_post["p99_ms"] / max(bare_get["p99_ms"], 0.1), 2)}
    for name, ratio in ratios.items():
        print(f"serve/bare {name}: throughput {ratio['throughput']}x, p99 {ratio['p99']}x"
              + (f", p50 {ratio['p50']}x" if "p50" in ratio else ""))
    db = check
    print(f"database: {db['job_rows']} rows for {db['created_201']} answers 201 "
          f"({db['in_flight_at_end']} in flight at the end), {db['statuses']}, problems: "
          f"{db['problems'] or 'none'}")
    out = ROOT / "benchmarks" / "results" / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    for r in results.values():
        r["created"] = len(r["created"])
    out.write_text(json.dumps({
        "measured_at": dt.datetime.now().isoformat(timespec="seconds"), "label": args.label,
        "machine": f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB",
        "wrk": f"-t{args.threads} -c{args.connections} -d{args.duration}s",
        "ray_env": args.ray_env,
        "results": results, "serve_over_bare": ratios, "database": db}, indent=2))
    print(f"wrote {out}")
    if db["problems"]:
        raise SystemExit("the job table or the answers do not match (see problems)")


if __name__ == "__main__":
    main()
