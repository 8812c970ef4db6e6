"""The reconciler's tick with a deep queue: what releasing a few jobs costs when a thousand wait.

    .venv/bin/python benchmarks/bench_reconcile_tick.py [--jobs 1000] [--teams 4]
                                                        [--max-jobs 5] [--pool-cpus 6]
                                                        [--ticks 10]

Starts a throwaway Postgres (tests/servers.py). The execution backend is in memory: the
control plane is measured, not Ray. Two scenarios, each variant on a fresh database with
``--jobs`` submits through ``JobService.create``:

- team quota: ``--teams`` teams at a quota of ``--max-jobs`` jobs on Ray each, no pool limit;
- pool capacity: 5 teams with no team limit and one ``cpu`` pool of ``--pool-cpus`` CPUs (a
  burst as bench_burst.py sends it: the queue releases every job, the pool admits a few).

Then, ``--ticks`` times: every job on Ray is marked SUCCEEDED (and ended on Ray) and one
``reconcile_all()`` is timed; it releases the next jobs and moves every job behind them up in
the queue, whose ``status_reason`` says its place.

- baseline (the tick before this change): every active job loaded as a whole row (its spec
  included) though the queued ones are not asked about; every job the queue releases offered
  to its pool, each offer re-planning the whole queue under its team's lock, even after the
  pool was found full; each queued job whose place changed re-read and updated in its own
  transaction;
- now: the queued jobs are read only as the queue's light rows; a released job's team quota
  re-checked from the team's jobs on Ray alone (railyard.control.team_limits.has_room); a pool
  found full is not offered the jobs behind; the new places stored by one statement run for
  every moved row (railyard.jobstore.jobs.refresh_queue_reasons).

Prints the tick p50/p99 and the ratio; writes benchmarks/results/reconcile_tick.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_queue_plan import percentile  # noqa: E402

from railyard.config import Settings  # noqa: E402
from railyard.control import capacity, team_limits  # noqa: E402
from railyard.control.access import Caller  # noqa: E402
from railyard.control.backend import BackendStatus  # noqa: E402
from railyard.control.service import JobService  # noqa: E402
from railyard.data.demo import sample_spec, write_fraud_dataset  # noqa: E402
from railyard.jobstore import jobs  # noqa: E402
from railyard.jobstore.engine import get_engine, migrate  # noqa: E402
from railyard.jobstore.tables import Job, JobStatus  # noqa: E402
from tests.fakes import InMemoryBackend, fresh_database  # noqa: E402
from tests.servers import postgres_server  # noqa: E402


@contextmanager
def tick_before() -> Iterator[None]:
    """The baseline tick: whole rows for every active job, every released job offered, one
    transaction per moved place."""
    light, refresh = jobs.list_jobs_to_reconcile, jobs.refresh_queue_reasons
    known_pool, has_room = capacity.known_pool, team_limits.has_room

    def whole_rows(engine: Any) -> list[Job]:
        return [j for j in jobs.list_active_jobs(engine)
                if not (j.status == JobStatus.QUEUED.value and j.ray_submission_id is None)]

    def one_by_one(engine: Any, reasons: Mapping[str, str]) -> int:
        for job_id, reason in reasons.items():
            job = jobs.get_job(engine, job_id=job_id)
            if job.status == JobStatus.QUEUED.value and job.ray_submission_id is None:
                jobs.set_status_reason(engine, job_id=job_id, reason=reason)
        return len(reasons)

    jobs.list_jobs_to_reconcile, jobs.refresh_queue_reasons = whole_rows, one_by_one
    capacity.known_pool = lambda job_id: None   # type: ignore[assignment]
    team_limits.has_room = lambda engine, settings, job: False   # type: ignore[assignment]
    try:
        yield
    finally:
        jobs.list_jobs_to_reconcile, jobs.refresh_queue_reasons = light, refresh
        capacity.known_pool, team_limits.has_room = known_pool, has_room  # type: ignore


def run(url: str, data: Path, args: argparse.Namespace, scenario: str) -> dict[str, Any]:
    migrate(url)
    engine = get_engine(url)
    capacity.forget()
    backend = InMemoryBackend()
    if scenario == "pool capacity":
        settings, teams = Settings(max_concurrent_jobs_per_team=0), 5
        backend.pools, backend.cpus = {"cpu": 1}, {"cpu": float(args.pool_cpus)}
    else:
        settings, teams = Settings(max_concurrent_jobs_per_team=args.max_jobs), args.teams
    service = JobService(engine=engine, backend=backend, settings=settings)
    for i in range(args.jobs):
        team = f"team-{i % teams}"
        spec = sample_spec(str(data))
        spec.update(owner=team, model_name=f"burst-{i}")
        service.create(spec, caller=Caller(team=team))
    ticks, released = [], []
    for _ in range(args.ticks):
        on_ray = [w for w in jobs.list_active_work(engine) if w.status == JobStatus.PENDING.value]
        for work in on_ray:
            jobs.transition(engine, job_id=work.id, status=JobStatus.SUCCEEDED)
            backend.statuses[work.ray_submission_id or ""] = BackendStatus("SUCCEEDED")
        t = time.perf_counter()
        service.reconcile_all()
        ticks.append(time.perf_counter() - t)
        released.append(sum(w.status == JobStatus.PENDING.value
                            for w in jobs.list_active_work(engine)))
    queued = [w for w in jobs.list_active_work(engine) if w.status == JobStatus.QUEUED.value]
    if scenario == "team quota":   # every queued job's reason names its place, 1..n
        places = sorted(int((w.status_reason or "queued: position 0").split()[2])
                        for w in queued)
        consistent = places == list(range(1, len(queued) + 1))
    else:                          # every queued job waits for the full pool
        consistent = all((w.status_reason or "").startswith("queued: pool cpu is full")
                         for w in queued)
    engine.dispose()
    return {"tick_p50_ms": 1000 * statistics.median(ticks),
            "tick_p99_ms": 1000 * percentile(ticks, 0.99),
            "released_per_tick": released, "queued_after": len(queued),
            "reasons_consistent": consistent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--teams", type=int, default=4)
    parser.add_argument("--max-jobs", type=int, default=5)
    parser.add_argument("--pool-cpus", type=int, default=6)
    parser.add_argument("--ticks", type=int, default=10)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="railyard-bench-tick-")) / "fraud"
    write_fraud_dataset(data, rows=2_000)
    results: dict[str, Any] = {"jobs": args.jobs, "teams": args.teams,
                               "max_jobs_per_team": args.max_jobs, "pool_cpus": args.pool_cpus,
                               "ticks": args.ticks}
    scenarios = ("team quota", "pool capacity")
    with postgres_server() as pg:
        for n, scenario in enumerate(scenarios):
            with tick_before():
                before = run(fresh_database(pg, f"tick_base_{n}"), data, args, scenario)
            now = run(fresh_database(pg, f"tick_now_{n}"), data, args, scenario)
            results[scenario] = {"before": before, "now": now,
                                 "ratio_tick_p50": now["tick_p50_ms"] / before["tick_p50_ms"]}
    print(f"\nreconcile tick with {args.jobs} jobs queued (Postgres, in-memory backend)")
    for scenario in scenarios:
        for name in ("before", "now"):
            r = results[scenario][name]
            print(f"{scenario:14} {name:7} tick p50 {r['tick_p50_ms']:8.1f}ms  p99 "
                  f"{r['tick_p99_ms']:8.1f}ms  released per tick {r['released_per_tick'][0]}"
                  f"  reasons consistent {r['reasons_consistent']}")
        print(f"{scenario:14} now/before: tick p50 {results[scenario]['ratio_tick_p50']:.2f}x")
    out = ROOT / "benchmarks" / "results" / "reconcile_tick.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
