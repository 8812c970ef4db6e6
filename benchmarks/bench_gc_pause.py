"""The garbage collector's full collections in the API process: GET /v1/jobs latency and the
duration of every generation-2 collection, with the process as it is after startup vs after
``serve_app.app.freeze_startup_objects()`` (what the Serve replica does once started).

    .venv/bin/python benchmarks/bench_gc_pause.py [--jobs 50000] [--requests 1500]

Starts a throwaway Postgres, fills ``--jobs`` jobs (bench_list_latency's fill), and sends
``--requests`` owner-filtered list requests through the real FastAPI app in process
(Starlette's TestClient), first as is, then after the freeze. Prints p50/p99/max latency, the
number of full collections and how long each took, and the ratios; writes
benchmarks/results/gc_pause.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_list_latency import filled_store  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from serve_app.app import create_app, freeze_startup_objects  # noqa: E402
from tests.servers import postgres_server  # noqa: E402


class FullCollections:
    """Records how long each generation-2 collection takes (gc.callbacks)."""

    def __init__(self) -> None:
        self.durations_ms: list[float] = []
        self._started = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.durations_ms.append((time.perf_counter() - self._started) * 1000)


def measure(http: TestClient, requests: int, collections: FullCollections) -> dict[str, Any]:
    collections.durations_ms.clear()
    latencies = []
    for _ in range(requests):
        started = time.perf_counter()
        response = http.get("/v1/jobs", params={"limit": 50, "owner": "team-3"})
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    latencies.sort()
    full = list(collections.durations_ms)
    return {"p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[int(len(latencies) * 0.99)], "max_ms": latencies[-1],
            "full_collections": len(full), "full_collection_ms": [round(d, 1) for d in full],
            "tracked_objects": len(gc.get_objects()), "frozen_objects": gc.get_freeze_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()
    collections = FullCollections()
    with postgres_server() as pg:
        store = filled_store(pg, "railyard_gc_pause", args.jobs)
        http = TestClient(create_app(lambda: store.service),
                          headers={"Authorization": f"Bearer {store.admin}"})
        http.get("/v1/jobs", params={"limit": 50})            # the app's lazy setup
        results = {"as started": measure(http, args.requests, collections)}
        freeze_startup_objects()
        results["frozen"] = measure(http, args.requests, collections)
    for name, r in results.items():
        full = r["full_collection_ms"]
        print(f"{name:11} p50 {r['p50_ms']:6.1f} ms  p99 {r['p99_ms']:6.1f} ms  max "
              f"{r['max_ms']:6.1f} ms  full collections {len(full)}, median "
              f"{sorted(full)[len(full) // 2] if full else 0:.1f} ms; tracked objects "
              f"{r['tracked_objects']}")
    before, after = results["as started"], results["frozen"]
    results["ratios"] = {"p99": after["p99_ms"] / before["p99_ms"],
                         "max": after["max_ms"] / before["max_ms"]}
    print(f"frozen/as started: p99 {results['ratios']['p99']:.2f}x, "
          f"max {results['ratios']['max']:.2f}x")
    out = ROOT / "benchmarks" / "results" / "gc_pause.json"
    out.write_text(json.dumps({"jobs": args.jobs, "requests": args.requests, **results},
                              indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
