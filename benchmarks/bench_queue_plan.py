"""The admission path of a submission burst: how long the queue takes to plan with many active
jobs, and what that costs a burst of submits, with the queue's light rows (the job columns and
the spec's ``train.resources`` read in the database, pool estimates shared by jobs that ask
alike) vs the baseline of whole job rows (every spec loaded and validated per plan: what
railyard.control.team_limits read before).

    .venv/bin/python benchmarks/bench_queue_plan.py [--jobs 1000] [--teams 4] [--max-jobs 5]
                                                    [--plans 20]

Starts a throwaway Postgres (tests/servers.py). Each variant runs on a fresh database:
``--jobs`` submits through ``JobService.create`` (spec and data checks, the store, admission
under the team's lock) from ``--teams`` teams with a quota of ``--max-jobs`` jobs on Ray per
team, so nearly all wait QUEUED and every submit plans a queue that grows by one; the
execution backend is in memory (no Ray: what is measured is the control plane). Then
``--plans`` plans of the full queue. Prints the submits per second, submit p50/p99, plan
p50/p99 and the ratios; writes benchmarks/results/queue_plan.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from railyard.config import Settings  # noqa: E402
from railyard.control import team_limits  # noqa: E402
from railyard.control.access import Caller  # noqa: E402
from railyard.control.service import JobService  # noqa: E402
from railyard.data.demo import sample_spec, write_fraud_dataset  # noqa: E402
from railyard.jobstore import jobs  # noqa: E402
from railyard.jobstore.engine import get_engine, migrate  # noqa: E402
from tests.fakes import InMemoryBackend, fresh_database  # noqa: E402
from tests.servers import postgres_server  # noqa: E402


@contextmanager
def whole_rows() -> Iterator[None]:
    """The baseline: the queue planned from whole job rows, each job's resources validated."""
    light, estimate = jobs.list_active_work, team_limits._pool_estimate
    jobs.list_active_work = lambda engine: [  # type: ignore[assignment]
        jobs.QueuedWork.of(j) for j in jobs.list_active_jobs(engine)]
    team_limits._pool_estimate = (  # type: ignore[assignment]
        lambda job, pools, memo=None: estimate(job, pools, None))
    try:
        yield
    finally:
        jobs.list_active_work, team_limits._pool_estimate = light, estimate  # type: ignore


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(url: str, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    migrate(url)
    engine = get_engine(url)
    settings = Settings(max_concurrent_jobs_per_team=args.max_jobs)
    service = JobService(engine=engine, backend=InMemoryBackend(), settings=settings)
    submits = []
    started = time.perf_counter()
    for i in range(args.jobs):
        team = f"team-{i % args.teams}"
        spec = sample_spec(str(data))
        spec.update(owner=team, model_name=f"burst-{i}")
        t = time.perf_counter()
        service.create(spec, caller=Caller(team=team))
        submits.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    plans = []
    for _ in range(args.plans):
        t = time.perf_counter()
        team_limits.current_plan(engine, settings)
        plans.append(time.perf_counter() - t)
    counts = Counter(j.status for j in jobs.list_active_work(engine))
    engine.dispose()
    return {"submits_per_s": args.jobs / wall, "wall_s": wall,
            "submit_p50_ms": 1000 * statistics.median(submits),
            "submit_p99_ms": 1000 * percentile(submits, 0.99),
            "plan_p50_ms": 1000 * statistics.median(plans),
            "plan_p99_ms": 1000 * percentile(plans, 0.99), "statuses": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--teams", type=int, default=4)
    parser.add_argument("--max-jobs", type=int, default=5)
    parser.add_argument("--plans", type=int, default=20)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="railyard-bench-queue-")) / "fraud"
    write_fraud_dataset(data, rows=2_000)
    results: dict[str, Any] = {"jobs": args.jobs, "teams": args.teams,
                               "max_jobs_per_team": args.max_jobs}
    with postgres_server() as pg:
        with whole_rows():
            results["whole rows (baseline)"] = run(fresh_database(pg, "plan_base"), data, args)
        results["light rows"] = run(fresh_database(pg, "plan_light"), data, args)
    base, light = results["whole rows (baseline)"], results["light rows"]
    print(f"\n{args.jobs} submits from {args.teams} teams, {args.max_jobs} jobs on Ray per "
          "team (Postgres, in-memory backend)")
    print(f"{'variant':24} {'submits/s':>10} {'submit p50':>11} {'submit p99':>11} "
          f"{'plan p50':>9} {'plan p99':>9}")
    for name in ("whole rows (baseline)", "light rows"):
        r = results[name]
        print(f"{name:24} {r['submits_per_s']:10.1f} {r['submit_p50_ms']:9.1f}ms "
              f"{r['submit_p99_ms']:9.1f}ms {r['plan_p50_ms']:7.1f}ms {r['plan_p99_ms']:7.1f}ms")
    results["ratios"] = {"submits_per_s": light["submits_per_s"] / base["submits_per_s"],
                         "plan_p50": light["plan_p50_ms"] / base["plan_p50_ms"]}
    print(f"light/baseline: submits/s {results['ratios']['submits_per_s']:.2f}x, "
          f"plan p50 {results['ratios']['plan_p50']:.2f}x")
    out = ROOT / "benchmarks" / "results" / "queue_plan.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
