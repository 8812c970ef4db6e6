"""GET /v1/jobs and GET /v1/jobs/{id} on a store of 1,000,000 jobs in Postgres: p50/p99 of every
list filter, with migration 0006's composite indexes and (the baseline) without them.

    .venv/bin/python benchmarks/bench_list_latency.py [--jobs 1000000] [--requests 200]
                                                      [--baseline-requests 30] [--limit 50]

Starts a throwaway Postgres (tests/servers.py), migrates, fills ``--jobs`` jobs with plain SQL
(INSERT … SELECT FROM generate_series: 20 owners, 50 projects, every status, a spec of a few
hundred bytes, a status event per job and four phase events for 30% of them; rows written in a
shuffled order, as a live store's rewritten rows are), VACUUM ANALYZE, then
sends the requests through the real FastAPI app (serve_app.app.create_app with a JobService on
that database) **in process** with Starlette's TestClient: what is measured is routing, auth (a
token lookup per request), the SQL and the JSON, not a network hop. The execution backend
counts its calls: the list path must make none (checked). The baseline is the same run after
``DROP INDEX`` of the 0006 indexes and ANALYZE again (the single-column indexes of 0001 stay):
the old code's other costs (one events query per listed job, one Ray status call per listed
job) are gone from the code, so they are not in the baseline. Prints a table and the ratios;
writes benchmarks/results/list_latency.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from railyard.config import Settings  # noqa: E402
from railyard.control.service import JobService  # noqa: E402
from railyard.jobstore import tokens  # noqa: E402
from railyard.jobstore.engine import get_engine, migrate  # noqa: E402
from serve_app.app import create_app, freeze_startup_objects  # noqa: E402
from tests.fakes import fresh_database  # noqa: E402
from tests.servers import postgres_server  # noqa: E402

OWNERS, PROJECTS = 20, 50
INDEXES_0006 = ("ix_job_created_id", "ix_job_owner_created_id", "ix_job_project_created_id",
                "ix_job_status_created_id", "ix_job_owner_status_created_id",
                "ix_job_owner_project_created_id", "ix_job_project_status_created_id",
                "ix_job_status_priority_created_id", "ix_job_event_job_id_id")

FILL_JOBS = """
INSERT INTO job (id, status, phase, owner, project, trainer, model_name, model_description,
                 workflow_name, spec, spec_hash, origin, created_at, started_at, finished_at,
                 dataset_stats, metrics, artifacts, ray_submission_id, pool_enforced,
                 submitted_by, attempt, priority, train_rows, holdout_rows)
SELECT 'job-' || lpad(to_hex(g), 20, '0'), status,
       CASE WHEN status = 'RUNNING' THEN 'train' END,
       'team-' || o, 'project-' || p, 'trainer-' || o, 'model-' || mod(g, 997),
       'a model of the benchmark', 'StripeFraudModel',
       json_build_object(
         'owner', 'team-' || o, 'project', 'project-' || p, 'trainer', 'trainer-' || o,
         'model_name', 'model-' || mod(g, 997), 'model_description', 'a model of the benchmark',
         'data', json_build_object(
           'source', 's3', 'path', 's3://data/fraud/' || mod(g, 97) || '/charges.parquet',
           'format', 'parquet', 'label', 'is_fraud',
           'filters', json_build_array(json_build_object('column', 'amount', 'op', '>',
                                                         'value', 0)),
           'holdout', json_build_object('kind', 'DATE_RANGE', 'column', 'created_at',
                                        'start', '2024-06-01', 'end', '2024-07-01')),
         'train', json_build_object('workflow_name', 'StripeFraudModel',
                                    'classifier', 'xgboost',
                                    'custom_params', json_build_object('n_estimators', 500,
                                                                       'max_depth', 6)),
         'features', json_build_array('amount', 'merchant_type', 'country', 'card_age_days',
                                      'hour_of_day', 'device_kind')),
       md5(g::text), 'api', created, created + interval '20 seconds',
       CASE WHEN status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
            THEN created + interval '5 minutes' END,
       '{"rows": 100000}',
       (CASE WHEN status = 'SUCCEEDED' THEN '{"auc": 0.91}' ELSE '{}' END)::json,
       '{}', CASE WHEN status <> 'QUEUED' THEN 'railyard-job-' || lpad(to_hex(g), 20, '0') END,
       false, 'team-' || o, 1, 50, 80000, 20000
FROM (SELECT g, floor(random() * %(owners)s)::int AS o, floor(random() * %(projects)s)::int AS p,
             now() - (%(jobs)s - g) * interval '30 seconds' AS created,
             CASE WHEN r < 0.85 THEN 'SUCCEEDED' WHEN r < 0.93 THEN 'FAILED'
                  WHEN r < 0.96 THEN 'CANCELLED' WHEN r < 0.98 THEN 'RUNNING'
                  WHEN r < 0.99 THEN 'PENDING' ELSE 'QUEUED' END AS status
      FROM (SELECT g, random() AS r
            FROM (SELECT g FROM generate_series(1, %(jobs)s) AS g ORDER BY md5(g::text))
                 AS shuffled) AS drawn) AS x
"""

FILL_STATUS_EVENTS = """
INSERT INTO job_event (job_id, at, kind, phase, message)
SELECT id, created_at, 'status', NULL, 'QUEUED' FROM job
"""

FILL_PHASE_EVENTS = """
INSERT INTO job_event (job_id, at, kind, phase, message)
SELECT j.id, j.created_at + e.after, e.kind, e.phase, NULL
FROM job AS j
CROSS JOIN (VALUES (interval '21 s', 'phase_started', 'fetch'),
                   (interval '30 s', 'phase_finished', 'fetch'),
                   (interval '31 s', 'phase_started', 'train'),
                   (interval '4 min', 'phase_finished', 'train')) AS e(after, kind, phase)
WHERE mod(abs(hashtext(j.id)), 10) < 3
"""


class RefusingBackend:
    """An execution backend that records and refuses every call: nothing measured may reach
    Ray (the list never does; GET /v1/jobs/{id} is measured on finished jobs, which
    reconciling leaves alone)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            raise RuntimeError(f"the benchmark's backend was asked to {name}")
        return refuse


def fill(conninfo: str, jobs: int) -> dict[str, float]:
    took = {}
    with psycopg.connect(conninfo, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("SELECT setseed(0.42)")
        conn.execute(FILL_JOBS, {"jobs": jobs, "owners": OWNERS, "projects": PROJECTS})
        took["fill_jobs_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute(FILL_STATUS_EVENTS)
        conn.execute(FILL_PHASE_EVENTS)
        took["fill_events_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE job")
        conn.execute("VACUUM ANALYZE job_event")
        took["analyze_s"] = time.perf_counter() - started
        took["events"] = conn.execute("SELECT count(*) FROM job_event").fetchone()[0]
    return {k: round(v, 1) for k, v in took.items()}


def scenarios(http: TestClient, limit: int) -> dict[str, dict[str, Any]]:
    """Query parameters of each measured request; the deep cursors are found by walking."""
    base = {"limit": limit}
    cases = {
        "none": {}, "owner": {"owner": "team-3"}, "project": {"project": "project-7"},
        "status": {"status": "FAILED"}, "status_rare": {"status": "QUEUED"},
        "owner+status": {"owner": "team-3", "status": "RUNNING"},
        "owner+project": {"owner": "team-3", "project": "project-7"},
        "project+status": {"project": "project-7", "status": "SUCCEEDED"},
        "owner+project+status": {"owner": "team-3", "project": "project-7",
                                 "status": "FAILED"},
    }
    out = {name: {**base, **params} for name, params in cases.items()}
    for name, params, pages in (("next page (from page 1)", {}, 1),
                                ("next page (from page 100)", {}, 100),
                                ("owner, page 101", {"owner": "team-3"}, 100)):
        cursor = None
        for _ in range(pages):
            page = http.get("/v1/jobs", params={**base, **params,
                                                **({"cursor": cursor} if cursor else {})})
            page.raise_for_status()
            cursor = page.json()["next_cursor"]
        out[name] = {**base, **params, "cursor": cursor}
    return out


def measure(http: TestClient, cases: dict[str, dict[str, Any]], job_ids: list[str],
            requests: int, limit: int) -> dict[str, dict[str, float]]:
    results = {}
    for name, params in cases.items():
        results[name] = timed(lambda p=params: check_page(http.get("/v1/jobs", params=p),
                                                           limit), requests)
    rng = random.Random(7)
    results["GET /v1/jobs/{id}"] = timed(
        lambda: http.get(f"/v1/jobs/{rng.choice(job_ids)}").raise_for_status(), requests)
    return results


def check_page(response: Any, limit: int) -> None:
    response.raise_for_status()
    page = response.json()
    if len(page["jobs"]) != limit and page["next_cursor"] is not None:
        raise RuntimeError(f"a page of {len(page['jobs'])} jobs, not {limit}, and more")
    if not page["jobs"]:
        raise RuntimeError("an empty page: the filter matched nothing")


def timed(call: Any, requests: int) -> dict[str, float]:
    for _ in range(min(5, requests)):            # warm the plan cache and the buffer pool
        call()
    ms = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        ms.append((time.perf_counter() - started) * 1000)
    ms.sort()

    def pct(p: float) -> float:
        return round(ms[min(len(ms) - 1, int(p / 100 * len(ms)))], 2)

    return {"requests": requests, "p50_ms": pct(50), "p99_ms": pct(99),
            "mean_ms": round(statistics.fmean(ms), 2), "max_ms": round(ms[-1], 2)}


def explain(conninfo: str) -> dict[str, str]:
    """The plan of the owner filter's first page and of a deep page, as Postgres picks it."""
    with psycopg.connect(conninfo) as conn:
        created, job_id = conn.execute(
            "SELECT created_at, id FROM job WHERE owner = 'team-3' "
            "ORDER BY created_at DESC, id DESC OFFSET 5000 LIMIT 1").fetchone()
        plans = {}
        for name, where, args in (
                ("owner, first page", "owner = %s", ("team-3",)),
                ("owner, deep page", "owner = %s AND (created_at, id) < (%s, %s)",
                 ("team-3", created, job_id))):
            rows = conn.execute(f"EXPLAIN ANALYZE SELECT * FROM job WHERE {where} "
                                "ORDER BY created_at DESC, id DESC LIMIT 51", args).fetchall()
            plans[name] = "\n".join(r[0] for r in rows)
    return plans


@dataclass
class FilledStore:
    """A throwaway Postgres database, migrated and filled by :func:`fill`, with the API's
    service over it (a backend that refuses every call) and an admin token."""

    conninfo: str
    filled: dict[str, float]
    service: JobService
    backend: RefusingBackend
    admin: str


def filled_store(pg: Any, database: str, jobs: int) -> FilledStore:
    """Create ``database`` on the Postgres server ``pg`` (tests/servers.py), migrate it and
    fill it with ``jobs`` jobs; what a benchmark of the read path needs."""
    url = fresh_database(pg, database)
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    migrate(url)
    filled = fill(conninfo, jobs)
    print(f"filled {jobs} jobs, {filled['events']} events: {filled}", flush=True)
    engine = get_engine(url)
    backend = RefusingBackend()
    service = JobService(engine=engine, backend=backend,  # type: ignore[arg-type]
                         settings=Settings(database_url=url))
    admin, _ = tokens.issue(engine, team="admin", admin=True)
    return FilledStore(conninfo=conninfo, filled=filled, service=service, backend=backend,
                       admin=admin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--baseline-requests", type=int, default=30)
    parser.add_argument("--limit", type=int, default=50)
    args = parser.parse_args()

    with postgres_server() as pg:
        store = filled_store(pg, "railyard_list_latency", args.jobs)
        conninfo, filled, backend = store.conninfo, store.filled, store.backend
        service, admin = store.service, store.admin
        with psycopg.connect(conninfo) as conn:
            job_ids = [r[0] for r in conn.execute(
                "SELECT id FROM job TABLESAMPLE SYSTEM (1) "
                "WHERE status IN ('SUCCEEDED', 'FAILED', 'CANCELLED') LIMIT 2000").fetchall()]
        http = TestClient(create_app(lambda: service),
                          headers={"Authorization": f"Bearer {admin}"})
        freeze_startup_objects()     # as the Serve replica does once it has started
        cases = scenarios(http, args.limit)
        started = time.perf_counter()
        indexed = measure(http, cases, job_ids, args.requests, args.limit)
        print(f"indexed: {time.perf_counter() - started:.0f} s", flush=True)
        plans = explain(conninfo)

        with psycopg.connect(conninfo, autocommit=True) as conn:
            for name in INDEXES_0006:
                conn.execute(f"DROP INDEX {name}")
            conn.execute("ANALYZE job")
            conn.execute("ANALYZE job_event")
        started = time.perf_counter()
        baseline = measure(http, cases, job_ids, args.baseline_requests, args.limit)
        print(f"baseline: {time.perf_counter() - started:.0f} s", flush=True)

    rows = []
    print(f"\n{'request':<28} {'p50 ms':>8} {'p99 ms':>8} {'base p50':>9} {'base p99':>9} "
          f"{'p99 ratio':>9}")
    for name, got in indexed.items():
        base = baseline[name]
        ratio = round(base["p99_ms"] / got["p99_ms"], 1)
        rows.append({"request": name, "indexed": got, "baseline_no_0006_indexes": base,
                     "p99_speedup": ratio, "goal_p99_le_50ms": got["p99_ms"] <= 50})
        print(f"{name:<28} {got['p50_ms']:>8} {got['p99_ms']:>8} {base['p50_ms']:>9} "
              f"{base['p99_ms']:>9} {ratio:>8}x")
    print(f"\nexecution backend calls: {len(backend.calls)}")
    for name, plan in plans.items():
        print(f"\nEXPLAIN ANALYZE, {name}:\n{plan}")
    out = ROOT / "benchmarks" / "results" / "list_latency.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "jobs": args.jobs, "limit": args.limit,
        "fill": filled, "client": "in-process TestClient (no network hop)",
        "results": rows, "backend_calls": len(backend.calls),
        "plans": plans}, indent=2))
    print(f"\nwrote {out}")
    if backend.calls:
        raise SystemExit(f"the measured requests called the backend: {backend.calls[:5]}")


if __name__ == "__main__":
    main()
