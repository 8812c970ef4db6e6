"""The web UI's jobs page (``GET /``, the first page, rendered on the server) on a store of
100,000 jobs in Postgres, against ``GET /v1/jobs?limit=50`` in the same run (the baseline: the
API's JSON of the same page).

    .venv/bin/python benchmarks/bench_ui_jobs_page.py [--jobs 100000] [--requests 200]

Reuses benchmarks/bench_list_latency.py: a throwaway Postgres, migrated, filled with plain SQL
(``fill``), and the real FastAPI app in process (Starlette's TestClient: routing, the session
or token check, the SQL, the template or the JSON; no network hop) with an execution backend
that refuses every call (the list path makes none). The UI is signed in through ``POST
/signin`` with an admin token (every team's jobs). Also measured: the jobs page with a status
filter, the ``/ui/rows`` partial the page polls, and a model-name filter (a filter the store
has no index for, read page by page). Prints p50/p99 and the ratios; writes
benchmarks/results/ui_jobs_page.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_list_latency import filled_store, timed  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from serve_app.app import create_app, freeze_startup_objects  # noqa: E402
from tests.servers import postgres_server  # noqa: E402


def check_html(response, marker: str = "job-row") -> None:
    response.raise_for_status()
    if response.text.count(f'class="{marker}"') == 0:
        raise RuntimeError(f"no job rows in the page: {response.text[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    with postgres_server() as pg:
        store = filled_store(pg, "railyard_ui_jobs_page", args.jobs)
        filled, backend, service, admin = store.filled, store.backend, store.service, store.admin
        app = create_app(lambda: service)
        freeze_startup_objects()     # as the Serve replica does once it has started
        api = TestClient(app, headers={"Authorization": f"Bearer {admin}"})
        ui = TestClient(app, follow_redirects=False)
        signed = ui.post("/signin", data={"token": admin})
        if signed.status_code != 303:
            raise SystemExit(f"sign-in failed: {signed.status_code} {signed.text[:300]}")

        def api_page() -> None:
            r = api.get("/v1/jobs", params={"limit": 50})
            r.raise_for_status()
            if len(r.json()["jobs"]) != 50:
                raise RuntimeError("the API page is not 50 jobs")

        cases = {
            "GET /v1/jobs?limit=50 (baseline)": api_page,
            "GET / (UI jobs page)": lambda: check_html(ui.get("/")),
            "GET /?status=FAILED": lambda: check_html(ui.get("/", params={"status": "FAILED"})),
            "GET /ui/rows (poll partial)": lambda: check_html(ui.get("/ui/rows")),
            "GET /?model=model-7 (scanned filter)":
                lambda: check_html(ui.get("/", params={"model": "model-7"})),
        }
        results = {}
        for name, call in cases.items():
            results[name] = timed(call, args.requests)
            print(f"{name:<40} p50 {results[name]['p50_ms']:>7} ms  "
                  f"p99 {results[name]['p99_ms']:>7} ms", flush=True)

    base = results["GET /v1/jobs?limit=50 (baseline)"]
    ui_first = results["GET / (UI jobs page)"]
    ratio_p50 = round(ui_first["p50_ms"] / base["p50_ms"], 2)
    ratio_p99 = round(ui_first["p99_ms"] / base["p99_ms"], 2)
    print(f"\nUI first page / API page: p50 {ratio_p50}x, p99 {ratio_p99}x "
          f"(goal: UI p99 well under 300 ms: {ui_first['p99_ms']} ms)")
    print(f"execution backend calls: {len(backend.calls)}")
    out = ROOT / "benchmarks" / "results" / "ui_jobs_page.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "when": time.strftime("%Y-%m-%d %H:%M:%S"), "jobs": args.jobs,
        "requests": args.requests, "fill": filled,
        "client": "in-process TestClient (no network hop)", "results": results,
        "ui_over_api_p50": ratio_p50, "ui_over_api_p99": ratio_p99,
        "goal_ui_p99_under_300ms": ui_first["p99_ms"] < 300,
        "backend_calls": len(backend.calls)}, indent=2))
    print(f"wrote {out}")
    if backend.calls:
        raise SystemExit(f"the measured requests called the backend: {backend.calls[:5]}")


if __name__ == "__main__":
    main()
