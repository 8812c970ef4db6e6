"""End to end: the blog's sample spec through Railyard vs the same work as a plain script.

    .venv/bin/python benchmarks/bench_end_to_end.py [--rows 40000 1000000] [--repeat 3]

Railyard: POST /v1/jobs → SUCCEEDED on a warm local cluster (SQLite, local artifacts), timed
from the client. Baseline, in this process: pyarrow.dataset read with the same filters, the
DATE_RANGE split, xgboost.train with the same parameters, holdout predictions and AUC, model
saved. Prints both times and their ratio; writes benchmarks/results/end_to_end.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import xgboost as xgb
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from railyard.client.sdk import RailyardClient  # noqa: E402
from railyard.cluster import local_cluster  # noqa: E402
from railyard.config import Settings  # noqa: E402
from railyard.data.demo import sample_spec, write_fraud_dataset  # noqa: E402
from railyard.jobstore import tokens  # noqa: E402
from railyard.jobstore.engine import get_engine, migrate  # noqa: E402
from tests.servers import free_port  # noqa: E402

ROUNDS = 500  # the blog's n_estimators; --rounds overrides it for both sides


def plain_script(path: Path, workdir: Path, *, threads: int | None = None,
                 steps: dict[str, float] | None = None) -> tuple[float, int, int]:
    """The blog's spec written by hand with pyarrow + xgboost; returns (seconds, train, holdout).
    ``threads`` fixes xgboost's nthread (else its default); ``steps`` receives each step's
    seconds (read and split, train, evaluate, save)."""
    started = time.perf_counter()
    mark = started

    def step(name: str) -> None:
        nonlocal mark
        now = time.perf_counter()
        if steps is not None:
            steps[name] = round(now - mark, 3)
        mark = now

    ts = pads.field("created_at")
    ts_type = pa.timestamp("us")
    flt = ((ts >= pa.scalar(dt.datetime(2018, 1, 1), ts_type))
           & (ts <= pa.scalar(dt.datetime(2019, 1, 1), ts_type))
           & (pads.field("charge_amount") > 10.0)
           & pads.field("charge_country").isin(["US", "CA"]))
    table = pads.dataset(str(path), format="parquet").to_table(
        columns=["created_at", "charge_type", "charge_amount", "charge_country",
                 "has_fraud_dispute"], filter=flt)
    col = table["created_at"]
    hold = pc.and_(pc.greater_equal(col, pa.scalar(dt.datetime(2018, 10, 1), ts_type)),
                   pc.less_equal(col, pa.scalar(dt.datetime(2019, 1, 1), ts_type)))
    train, holdout = table.filter(pc.invert(hold)), table.filter(hold)

    def frame(t: pa.Table):
        df = t.select(["charge_type", "charge_amount", "charge_country"]).to_pandas()
        for c in ("charge_type", "charge_country"):
            df[c] = df[c].astype("category")
        return df, t["has_fraud_dispute"].to_numpy(zero_copy_only=False).astype("float64")

    x_train, y_train = frame(train)
    x_hold, y_hold = frame(holdout)
    step("read_split")
    params = {"objective": "reg:squarederror", "max_depth": 6, "min_child_weight": 50,
              "eta": 0.02}
    if threads is not None:
        params["nthread"] = threads
    booster = xgb.train(params, xgb.DMatrix(x_train, label=y_train, enable_categorical=True),
                        num_boost_round=ROUNDS)
    step("train")
    scores = booster.predict(xgb.DMatrix(x_hold, enable_categorical=True))
    roc_auc_score(y_hold, scores)
    step("evaluate")
    booster.save_model(str(workdir / "plain-model.json"))
    step("save")
    return time.perf_counter() - started, train.num_rows, holdout.num_rows


def railyard_run(client: RailyardClient, path: Path, workers: int = 1) -> tuple[float, dict]:
    body = sample_spec(str(path), source="local")
    body["train"]["custom_params"]["n_estimators"] = ROUNDS
    body["train"]["resources"] = {"num_workers": workers}
    started = time.perf_counter()
    job = client.wait(client.submit(body)["id"], poll=0.25)
    elapsed = time.perf_counter() - started
    if job["status"] != "SUCCEEDED":
        raise RuntimeError(f"job failed: {job['error']}")
    job["timeline"] = timeline(job)
    return elapsed, job


def timeline(job: dict) -> dict[str, float]:
    """Where a job's wall time went: API → Ray accepted → driver running → phases → done."""
    def at(text: str | None) -> float:
        return dt.datetime.fromisoformat(text).timestamp() if text else float("nan")

    created, started, finished = (at(job[k]) for k in ("created_at", "started_at",
                                                        "finished_at"))
    first_phase = at(job["phases"][0]["started_at"]) if job["phases"] else float("nan")
    return {"submit_to_driver_running_s": round(started - created, 3),
            "driver_imports_to_first_phase_s": round(first_phase - started, 3),
            "phases_s": round(sum(p["duration_s"] or 0 for p in job["phases"]), 3),
            "created_to_finished_s": round(finished - created, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[40_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="Railyard runs with these train.resources.num_workers")
    parser.add_argument("--out", default="end_to_end.json")
    args = parser.parse_args()
    global ROUNDS
    ROUNDS = args.rounds

    work = Path(tempfile.mkdtemp(prefix="railyard-bench-"))
    dashboard = free_port()
    settings = Settings(home=work / "home", ray_address=f"http://127.0.0.1:{dashboard}")
    migrate(settings.resolved_database_url)
    address = local_cluster.start_head(settings, num_cpus=2, gcs_port=free_port(),
                                       dashboard_port=dashboard)
    results = []
    try:
        api = local_cluster.deploy_api(settings, address=address, port=free_port())
        token, _ = tokens.issue(get_engine(settings.resolved_database_url), team="bench",
                                admin=True)
        client = RailyardClient(api, token=token)
        for rows in args.rows:
            data = write_fraud_dataset(work / f"fraud-{rows}", rows, files=8)
            plain_script(data, work)
            plain_times, train_rows, holdout_rows = [], 0, 0
            for workers in args.workers:
                railyard_run(client, data, workers)  # warm-up: workers, imports, page cache
                ry_times, phases, breakdown = [], None, None
                for _ in range(args.repeat):
                    time.sleep(3)  # let the cluster settle (worker teardown) before timing
                    seconds, job = railyard_run(client, data, workers)
                    ry_times.append(seconds)
                    phases = {p["name"]: p["duration_s"] for p in job["phases"]}
                    breakdown = job["timeline"]
                    if len(plain_times) < args.repeat:
                        time.sleep(3)
                        seconds, train_rows, holdout_rows = plain_script(data, work)
                        plain_times.append(seconds)
                    assert (train_rows, holdout_rows) == (job["dataset"]["train_rows"],
                                                          job["dataset"]["holdout_rows"])
                ry, plain = statistics.median(ry_times), statistics.median(plain_times)
                row = {"rows": rows, "rounds": ROUNDS, "num_workers": workers,
                       "train_rows": train_rows, "holdout_rows": holdout_rows,
                       "railyard_s": round(ry, 3), "plain_s": round(plain, 3),
                       "ratio": round(ry / plain, 2), "overhead_s": round(ry - plain, 3),
                       "railyard_phases_s": phases, "railyard_timeline_s": breakdown,
                       "driver_peak_rss_mb": job["metrics"].get("driver", {}).get("peak_rss_mb"),
                       "read_engine": job["dataset"]["stats"].get("read_engine"),
                       "repeat": args.repeat}
                results.append(row)
                print(f"{rows:>9,} rows, {ROUNDS} rounds, {workers} worker(s): railyard "
                      f"{ry:7.2f}s  plain {plain:7.2f}s  ratio {ry / plain:5.2f}x  overhead "
                      f"{ry - plain:5.2f}s  driver peak RSS "
                      f"{row['driver_peak_rss_mb']} MiB ({row['read_engine']})"
                      f"\n    phases {phases}\n    timeline {breakdown}",
                      flush=True)
    finally:
        local_cluster.stop_local_cluster(settings)
    out = ROOT / "benchmarks" / "results" / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"measured_at": dt.datetime.now().isoformat(timespec="seconds"),
                               "machine": "2 cores, 24 GiB", "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
