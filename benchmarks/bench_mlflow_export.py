"""MLflow export: what Railyard's exporter costs per job against a plain MLflow log of the same
model, in one run.

    .venv/bin/python benchmarks/bench_mlflow_export.py [--jobs 8] [--rounds 50]

Starts an S3-compatible server and a real `mlflow server` (tests/servers.py; artifacts to the
S3 server, SQLite backend; scripts/mlflow_venv.sh builds its virtualenv). Trains one XGBoost
booster (``--rounds`` rounds on 20,000 rows x 8 features). ``--jobs`` SUCCEEDED jobs are made
on a SQLite job store (tests/fakes.py) and registered; then, alternating so both see the same
load:

- **exporter**: ``MlflowExporter.attempt`` of one job (railyard.control.mlflow_export): find the
  experiment, create the run, tags + params + metrics in one batch, the model saved in its
  flavour and uploaded, the registered version created, the aliases mirrored, the state
  written;
- **baseline**: what a user's script does for the same model with MLflow's fluent API:
  ``start_run``, ``log_params``, ``log_metrics``, ``mlflow.xgboost.log_model(...,
  registered_model_name=...)``.

Prints the medians and their ratio; writes benchmarks/results/mlflow_export.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import xgboost as xgb  # noqa: E402

from railyard.control.mlflow_export import MlflowExporter  # noqa: E402
from railyard.jobstore import jobs, mlflow_exports, registry  # noqa: E402
from railyard.jobstore.tables import JobStatus  # noqa: E402
from tests.fakes import TEAM_A, ApiPlatform  # noqa: E402
from tests.servers import mlflow_server, s3_server  # noqa: E402

FEATURES = [f"f{i}" for i in range(8)]


def train(rounds: int) -> xgb.Booster:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, len(FEATURES)))
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=len(x)) > 0).astype(int)
    return xgb.train({"objective": "binary:logistic", "max_depth": 6, "nthread": 1},
                     xgb.DMatrix(x, label=y, feature_names=FEATURES), rounds)


def succeeded_job(plat: ApiPlatform) -> str:
    job_id = plat.submit(TEAM_A).json()["id"]
    engine = plat.service.engine
    jobs.update_job(engine, job_id=job_id, metrics={"holdout": {"auc": 0.9, "logloss": 0.3}},
                    artifacts={"model_dir": "memory://"})   # the loader below ignores it
    jobs.transition(engine, job_id=job_id, status=JobStatus.SUCCEEDED)
    registry.register_succeeded(engine, job=jobs.get_job(engine, job_id=job_id))
    return job_id


def baseline(booster: xgb.Booster, uri: str, index: int) -> float:
    import mlflow
    import mlflow.xgboost

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment("baseline/plain-mlflow")
    started = time.perf_counter()
    with mlflow.start_run(run_name=f"plain-{index}"):
        mlflow.log_params({"objective": "binary:logistic", "max_depth": 6, "nthread": 1})
        mlflow.log_metrics({"auc": 0.9, "logloss": 0.3})
        mlflow.xgboost.log_model(booster, name="model", registered_model_name="baseline.model",
                                 pip_requirements=[f"xgboost=={xgb.__version__}"])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    booster = train(args.rounds)
    published = SimpleNamespace(
        model={"booster": booster, "encoding": {f: {"kind": "numeric"} for f in FEATURES},
               "objective": "binary:logistic"},
        manifest={"framework": "xgboost", "workflow": "xgboost", "features": FEATURES},
        workflow=None)
    with s3_server() as s3, mlflow_server(s3) as server, \
            tempfile.TemporaryDirectory() as tmp:
        plat = ApiPlatform(Path(tmp), mlflow_tracking_uri=server.url)
        engine = plat.service.engine
        exporter = MlflowExporter(engine, plat.settings,
                                  load_model=lambda uri, artifacts: published)
        job_ids = [succeeded_job(plat) for _ in range(args.jobs + 1)]
        mlflow_exports.enqueue_new(engine)
        # Warm both paths once (imports, the first experiment and registered model).
        exporter.attempt(mlflow_exports.get(engine, job_id=job_ids[0]))
        baseline(booster, server.url, -1)
        timings: dict[str, list[float]] = {"exporter": [], "baseline": []}
        for index, job_id in enumerate(job_ids[1:]):
            row = mlflow_exports.get(engine, job_id=job_id)
            started = time.perf_counter()
            assert exporter.attempt(row), mlflow_exports.get(engine, job_id=job_id)
            timings["exporter"].append(time.perf_counter() - started)
            timings["baseline"].append(baseline(booster, server.url, index))
    medians = {k: statistics.median(v) * 1000 for k, v in timings.items()}
    ratio = medians["exporter"] / medians["baseline"]
    print(f"{args.jobs} jobs, XGBoost booster of {args.rounds} rounds, real mlflow server "
          "(S3 artifacts)")
    for name, value in medians.items():
        print(f"  {name:9s} median {value:8.1f} ms per job")
    print(f"  exporter / plain mlflow log: {ratio:.2f}x")
    out = ROOT / "benchmarks" / "results" / "mlflow_export.json"
    result: dict[str, Any] = {
        "jobs": args.jobs, "rounds": args.rounds,
        "median_ms": {k: round(v, 1) for k, v in medians.items()},
        "exporter_vs_plain_mlflow": round(ratio, 2),
        "samples_ms": {k: [round(x * 1000, 1) for x in v] for k, v in timings.items()},
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
