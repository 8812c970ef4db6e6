"""Railyard's data step and fit without the platform around them (no Ray, no API, no job
store) vs the plain script of bench_end_to_end.py, on the same generated data.

    .venv/bin/python benchmarks/bench_train_phase.py [--rows 2000000] [--rounds 100]

It separates what the fit costs from what the platform adds: the end-to-end benchmark's
train phase is this fit plus sharing 2 cores with the Ray head, the Serve replica and the
benchmark's poller.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_end_to_end as e2e  # noqa: E402

from railyard.data import fetch as data_plane  # noqa: E402
from railyard.data.demo import sample_spec, write_fraud_dataset  # noqa: E402
from railyard.spec import parse_spec  # noqa: E402
from railyard.training.registry import get_workflow  # noqa: E402
from railyard.training.workflow import TrainContext, TrainingData  # noqa: E402


def railyard_in_process(path: Path, rounds: int) -> dict[str, float]:
    """Plan, read, derive, split, fit and evaluate as the runner does, timed per step."""
    body = sample_spec(str(path))
    body["train"]["custom_params"]["n_estimators"] = rounds
    spec = parse_spec(body)
    workflow = get_workflow(spec.train.workflow_name)(spec.train)
    t0 = time.perf_counter()
    plan = data_plane.plan_read(spec, derived=workflow.derived_columns)
    table, _ = data_plane.read_table(plan, in_process_max_bytes=1 << 40)
    table = workflow.prepare(table)
    t1 = time.perf_counter()
    train, holdout = data_plane.split_holdout(table, spec.data)
    t2 = time.perf_counter()
    data = TrainingData(train=train, holdout=holdout,
                        features=list(spec.train.classifier_features), label=spec.train.label)
    model = workflow.fit(data, TrainContext(resources=spec.train.resources.model_dump()))
    t3 = time.perf_counter()
    workflow.evaluate(model, data)
    t4 = time.perf_counter()
    return {"read": t1 - t0, "split": t2 - t1, "fit": t3 - t2, "evaluate": t4 - t3,
            "total": t4 - t0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--forked", action="store_true",
                        help="run Railyard's steps in a child forked from this process after "
                             "it preloaded like a warm runner (railyard.execution.warm_runner), "
                             "as jobs do")
    parser.add_argument("--background-load", type=float, default=0.0,
                        help="keep one core this busy (0-1) in another process meanwhile, "
                             "as Ray's own processes are during a job")
    args = parser.parse_args()
    e2e.ROUNDS = args.rounds
    work = Path(tempfile.mkdtemp(prefix="railyard-bench-"))
    path = write_fraud_dataset(work / "fraud", args.rows, files=8)
    # Forked: both sides run in children of a parent that only imported (as a warm runner
    # does). A parent that had trained would hang its children: libgomp's thread pool does
    # not survive fork.
    if args.forked:
        from railyard.execution.warm_runner import preload

        preload()
    run = _in_child if args.forked else (lambda f, *a: f(*a))
    run(e2e.plain_script, path, work)
    run(railyard_in_process, path, args.rounds)  # warm-up: imports, page cache
    load = _busy(args.background_load) if args.background_load > 0 else None
    plain, ours = [], []
    try:
        for _ in range(args.repeat):
            plain.append(run(e2e.plain_script, path, work)[0])
            ours.append(run(railyard_in_process, path, args.rounds))
    finally:
        if load is not None:
            load.terminate()
    p = statistics.median(plain)
    r = {k: round(statistics.median(x[k] for x in ours), 3) for k in ours[0]}
    where = "in a forked child" if args.forked else "in-process"
    print(f"{args.rows:,} rows, {args.rounds} rounds, background load "
          f"{args.background_load:.0%}: plain {p:.3f}s, railyard's steps {where} "
          f"{r['total']:.3f}s ({r['total'] / p:.2f}x)  {r}")


def _in_child(function, *args):
    """``function(*args)`` in a forked child, as a warm runner's driver runs a job; its
    JSON-ready result."""
    import json
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os.write(write, json.dumps(function(*args)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result = json.loads(pipe.read())
    os.waitpid(pid, 0)
    return result


def _busy(duty: float):
    """A process that keeps one core ``duty`` busy in 10 ms slices."""
    import subprocess

    code = ("import time\nwhile True:\n    t = time.perf_counter()\n"
            f"    while time.perf_counter() - t < {0.01 * duty}: pass\n"
            f"    time.sleep({0.01 * (1 - duty)})\n")
    return subprocess.Popen([sys.executable, "-c", code])


if __name__ == "__main__":
    main()
