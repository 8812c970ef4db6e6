"""Many models from one spec: a sweep of tiny trials and a fan-out over many partitions.

    .venv/bin/python benchmarks/bench_many_models.py [--trials 64] [--partitions 1000]

(a) ``--trials`` XGBoost trials on 1k rows: Railyard's sweep (the job's train phase, and the
    job end to end) vs the same trials in plain Ray Tune vs a plain sequential loop.
(b) ``--partitions`` partitions of 1k rows: Railyard's fan-out (train phase) vs a joblib loop
    over the same cores, as models per second.
All run on one local Ray cluster started here (2 CPUs); writes results/many_models.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import xgboost as xgb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from railyard.client.sdk import RailyardClient  # noqa: E402
from railyard.cluster import local_cluster  # noqa: E402
from railyard.config import Settings  # noqa: E402
from railyard.data.demo import fraud_table  # noqa: E402
from railyard.jobstore.engine import migrate  # noqa: E402
from railyard.training.encoding import encode, fit_encoding  # noqa: E402
from tests.servers import free_port  # noqa: E402

FEATURES = ["charge_type", "charge_amount", "charge_country"]
LABEL = "has_fraud_dispute"
ROUNDS = 20


def spec(path: str, train: dict) -> dict:
    return {"model_name": "bench", "owner": "bench",
            "data": {"features": [{"names": [*FEATURES, LABEL, "segment"], "source": "local",
                                   "path": path}],
                     "holdout_sampling": {"sampling_function": "RANDOM",
                                          "random_sampling": {"fraction": 0.2, "seed": 1}}},
            "train": {"workflow_name": "xgboost", "classifier_features": FEATURES,
                      "label": LABEL, **train}}


def dataset(work: Path, partitions: int, rows_each: int) -> Path:
    table = fraud_table(partitions * rows_each, seed=3)
    segment = pa.array(np.repeat(np.arange(partitions), rows_each).astype(str))
    path = work / f"data-{partitions}"
    path.mkdir()
    pq.write_table(table.append_column("segment", segment), path / "part-0.parquet")
    return path


def xy(table: pa.Table, encoding: dict):
    return encode(table, encoding), table[LABEL].to_numpy(zero_copy_only=False).astype(float)


def fit_one(table: pa.Table, params: dict) -> float:
    """One tiny model, written plainly (the baselines' unit of work)."""
    n = table.num_rows
    train, holdout = table.slice(0, int(n * 0.8)), table.slice(int(n * 0.8))
    encoding = fit_encoding(train, FEATURES)
    x, y = xy(train, encoding)
    booster = xgb.train({**params, "objective": "binary:logistic", "nthread": 1},
                        xgb.DMatrix(x, label=y, enable_categorical=True), ROUNDS)
    hx, _ = xy(holdout, encoding)
    return float(booster.predict(xgb.DMatrix(hx, enable_categorical=True)).mean())


def hoisted_loop(table: pa.Table, configs: list[dict]) -> float:
    """The same trials with the split, encoding and DMatrices built once, outside the loop:
    the fastest a plain sequential loop gets. Returns seconds."""
    started = time.perf_counter()
    n = table.num_rows
    train, holdout = table.slice(0, int(n * 0.8)), table.slice(int(n * 0.8))
    encoding = fit_encoding(train, FEATURES)
    x, y = xy(train, encoding)
    dtrain = xgb.DMatrix(x, label=y, enable_categorical=True)
    dholdout = xgb.DMatrix(xy(holdout, encoding)[0], enable_categorical=True)
    for params in configs:
        booster = xgb.train({**params, "objective": "binary:logistic", "nthread": 1}, dtrain,
                            ROUNDS)
        float(booster.predict(dholdout).mean())
    return time.perf_counter() - started


def sampled_configs(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"max_depth": int(rng.integers(2, 8)),
             "learning_rate": float(np.exp(rng.uniform(np.log(0.01), np.log(0.5))))}
            for _ in range(n)]


def plain_tune(table: pa.Table, trials: int) -> float:
    import ray
    from ray import tune

    ray.init(address="auto", log_to_driver=False)

    def trainable(config):
        tune.report({"score": fit_one(table, config)})

    started = time.perf_counter()
    tune.Tuner(tune.with_resources(trainable, {"CPU": 0.5}),
               param_space={"max_depth": tune.randint(2, 8),
                            "learning_rate": tune.loguniform(0.01, 0.5)},
               tune_config=tune.TuneConfig(num_samples=trials, metric="score", mode="max"),
               run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(), verbose=0)).fit()
    seconds = time.perf_counter() - started
    ray.shutdown()
    return seconds


def railyard_job(client: RailyardClient, body: dict) -> tuple[float, float]:
    started = time.perf_counter()
    job = client.wait(client.submit(body)["id"], poll=0.1, timeout=3600)
    total = time.perf_counter() - started
    if job["status"] != "SUCCEEDED":
        raise RuntimeError(job["error"])
    train = next(p["duration_s"] for p in job["phases"] if p["name"] == "train")
    return train, total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--partitions", type=int, default=1000)
    parser.add_argument("--only", choices=["sweep", "fanout"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="railyard-many-"))
    dashboard = free_port()
    settings = Settings(home=work / "home", ray_address=f"http://127.0.0.1:{dashboard}")
    migrate(settings.resolved_database_url)
    address = local_cluster.start_head(settings, num_cpus=2, gcs_port=free_port(),
                                       dashboard_port=dashboard)
    results: dict = {}
    try:
        from railyard.jobstore import tokens
        from railyard.jobstore.engine import get_engine

        token, _ = tokens.issue(get_engine(settings.resolved_database_url), team="bench",
                                admin=True)
        client = RailyardClient(local_cluster.deploy_api(settings, address=address,
                                                         port=free_port()), token=token)
        small = dataset(work, 1, 1000)
        tiny = pq.read_table(small)
        if args.only != "fanout":
            results["sweep"] = bench_sweep(client, small, tiny, args.trials)
        if args.only != "sweep":
            results["fanout"] = bench_fanout(client, work, args.partitions)
    finally:
        local_cluster.stop_local_cluster(settings)
    out = ROOT / "benchmarks" / "results" / "many_models.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous,
                               "measured_at": dt.datetime.now().isoformat(timespec="seconds"),
                               "machine": "2 cores", **results}, indent=2))
    print(f"wrote {out}")


def bench_sweep(client: RailyardClient, small: Path, tiny: pa.Table, trials: int) -> dict:
    """(a) the same tiny trials: Railyard's sweep (engine auto, which picks the driver for
    this size, and engine ray_tune), plain Ray Tune, a sequential loop."""
    def sweep(engine: str, samples: int) -> dict:
        return spec(str(small), {"custom_params": {"n_estimators": ROUNDS},
                                 "tune": {"search_space": {
                                     "max_depth": {"randint": [2, 8]},
                                     "learning_rate": {"loguniform": [0.01, 0.5]}},
                                     "num_samples": samples, "cpus_per_trial": 0.5,
                                     "engine": engine}})

    railyard_job(client, sweep("auto", 2))  # warm-up
    ry_train, ry_total = railyard_job(client, sweep("auto", trials))
    railyard_job(client, sweep("ray_tune", 2))
    ry_tune_train, ry_tune_total = railyard_job(client, sweep("ray_tune", trials))
    tune_s = plain_tune(tiny, trials)
    started = time.perf_counter()
    for config in sampled_configs(trials):
        fit_one(tiny, config)
    loop_s = time.perf_counter() - started
    hoisted_s = hoisted_loop(tiny, sampled_configs(trials))
    result = {"trials": trials, "hoisted_loop_s": hoisted_s,
              "ratio_vs_hoisted_loop": ry_train / hoisted_s, "railyard_train_phase_s": ry_train,
              "railyard_end_to_end_s": ry_total, "railyard_engine": "driver (auto)",
              "railyard_ray_tune_train_phase_s": ry_tune_train,
              "railyard_ray_tune_end_to_end_s": ry_tune_total,
              "plain_ray_tune_s": tune_s, "sequential_loop_s": loop_s,
              "ratio_vs_ray_tune": ry_train / tune_s, "ratio_vs_loop": ry_train / loop_s}
    print(f"(a) {trials} trials: railyard sweep {ry_train:.2f}s (job {ry_total:.2f}s; "
          f"engine ray_tune {ry_tune_train:.1f}s, job {ry_tune_total:.1f}s)  plain Ray Tune "
          f"{tune_s:.1f}s  loop {loop_s:.2f}s (DMatrix built once: {hoisted_s:.2f}s)  → "
          f"{ry_train / tune_s:.3f}x Ray Tune, {ry_train / loop_s:.2f}x loop, "
          f"{ry_train / hoisted_s:.2f}x the hoisted loop", flush=True)
    return result


def bench_fanout(client: RailyardClient, work: Path, partitions: int) -> dict:
    """(b) one model per partition: Railyard's fan-out vs a joblib loop, models per second."""
    many = dataset(work, partitions, 1000)
    body = spec(str(many), {"custom_params": {"n_estimators": ROUNDS, "max_depth": 4},
                            "partition_by": "segment",
                            "resources": {"cpus_per_worker": 0.5}})
    ry_train, ry_total = railyard_job(client, body)
    table = pq.read_table(many)
    from joblib import Parallel, delayed

    from railyard.training.partitioned import split_by

    parts = list(split_by(table, "segment").values())
    started = time.perf_counter()
    Parallel(n_jobs=2)(delayed(fit_one)(p, {"max_depth": 4}) for p in parts)
    joblib_s = time.perf_counter() - started
    result = {"partitions": partitions, "railyard_train_phase_s": ry_train,
              "railyard_end_to_end_s": ry_total, "joblib_s": joblib_s,
              "railyard_models_per_s": partitions / ry_train,
              "joblib_models_per_s": partitions / joblib_s,
              "ratio_models_per_s": joblib_s / ry_train}
    print(f"(b) {partitions} partitions: railyard {partitions / ry_train:.1f} "
          f"models/s (train phase {ry_train:.1f}s, job {ry_total:.1f}s)  joblib "
          f"{partitions / joblib_s:.1f} models/s → {joblib_s / ry_train:.2f}x",
          flush=True)
    return result


if __name__ == "__main__":
    main()
