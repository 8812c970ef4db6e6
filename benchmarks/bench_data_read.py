"""The data step: Railyard's plan + read + split vs plain pyarrow.dataset, on S3.

    .venv/bin/python benchmarks/bench_data_read.py [--rows 20000000] [--files 40] [--repeat 3]
                                                   [--skip-ray]

Data: the fraud table (railyard.data.demo.fraud_table) as ``--files`` Parquet files, generated
once under benchmarks/data/ (git-ignored) and uploaded to an S3-compatible server started here
(moto, as the tests do), so every variant reads over the same S3 code path.

Variants, each in a fresh Python process (so each peak RSS is its own), ``--repeat`` times:

- ``pyarrow``: the baseline, written by hand: pyarrow.dataset with the blog spec's filters and
  columns, then the DATE_RANGE split with pyarrow.compute.
- ``railyard-arrow``: plan_read + read_table(in_process_max_bytes=big) + split_holdout.
- ``railyard-ray``: plan_read + read_table(in_process_max_bytes=0) (Ray Data's read tasks,
  blocks gathered in the driver) + split_holdout.
- ``railyard-ray-stream``: plan_read + read_split_ray, both sides consumed batch by batch with
  iter_batches (what a distributed trainer does); the driver never holds the table.

The Ray variants connect to a running cluster (``ray.init(address="auto")``; set RAY_ADDRESS to
pick one); ``--skip-ray`` leaves them out. Prints the median time, rows scanned per second, the
ratio against the baseline and the peak RSS of each variant's process; writes
benchmarks/results/data_read.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BUCKET = "railyard-bench"
COLUMNS = ["created_at", "charge_type", "charge_amount", "charge_country", "has_fraud_dispute"]
VARIANTS = ["pyarrow", "railyard-arrow", "railyard-ray", "railyard-ray-stream"]


# --------------------------------------------------------------------------- data

def dataset_dir(rows: int, files: int) -> Path:
    """Write the fraud table as ``files`` Parquet files (once; reused by later runs)."""
    import pyarrow.parquet as pq

    from railyard.data.demo import fraud_table

    directory = ROOT / "benchmarks" / "data" / f"fraud-{rows}-{files}"
    done = directory / "_COMPLETE"
    if done.exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    step = -(-rows // files)
    for i in range(files):
        n = min(step, rows - i * step)
        if n > 0:   # one file at a time keeps generation's memory to one file's worth
            pq.write_table(fraud_table(n, seed=i), directory / f"part-{i:04d}.parquet",
                           row_group_size=1 << 20)
    done.write_text("")
    return directory


def upload(directory: Path, prefix: str) -> str:
    """Copy the Parquet files to the S3 server with boto3; return the dataset's URI."""
    import boto3

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(directory.glob("*.parquet")):
        s3.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
    return f"s3://{BUCKET}/{prefix}"


# --------------------------------------------------------------------------- variants

def blog_spec(uri: str):
    """The blog's sample request pointed at ``uri``."""
    from railyard.data.demo import sample_spec
    from railyard.spec import parse_spec

    return parse_spec(sample_spec(uri, source="s3"))


def run_pyarrow(uri: str) -> dict:
    """The baseline: what a person would write with pyarrow alone."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pads

    from railyard.artifacts.artifact_store import resolve

    fs, path = resolve(uri)
    ts, ts_type = pads.field("created_at"), pa.timestamp("us")
    flt = ((ts >= pa.scalar(dt.datetime(2018, 1, 1), ts_type))
           & (ts <= pa.scalar(dt.datetime(2019, 1, 1), ts_type))
           & (pads.field("charge_amount") > 10.0)
           & pads.field("charge_country").isin(["US", "CA"]))
    table = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=COLUMNS,
                                                                         filter=flt)
    column = table["created_at"]
    hold = pc.and_(pc.greater_equal(column, pa.scalar(dt.datetime(2018, 10, 1), ts_type)),
                   pc.less_equal(column, pa.scalar(dt.datetime(2019, 1, 1), ts_type)))
    hold = pc.fill_null(hold, False)
    train, holdout = table.filter(pc.invert(hold)), table.filter(hold)
    return {"rows": table.num_rows, "train_rows": train.num_rows,
            "holdout_rows": holdout.num_rows}


def run_railyard(uri: str, engine: str, derived: dict[str, list[str]]) -> dict:
    """plan + read + split through Railyard's data plane."""
    from railyard.data import fetch as data_plane

    spec = blog_spec(uri)
    plan = data_plane.plan_read(spec, derived=derived)
    if engine == "ray-stream":
        train_ds, holdout_ds = data_plane.read_split_ray(plan)
        counts = [sum(b.num_rows for b in ds.iter_batches(batch_format="pyarrow",
                                                          batch_size=None))
                  for ds in (train_ds, holdout_ds)]
        return {"rows": sum(counts), "train_rows": counts[0], "holdout_rows": counts[1]}
    table, used = data_plane.read_table(
        plan, in_process_max_bytes=(1 << 62) if engine == "arrow" else 0)
    train, holdout = data_plane.split_holdout(table, spec.data)
    return {"rows": table.num_rows, "train_rows": train.num_rows,
            "holdout_rows": holdout.num_rows, "engine": used}


def _rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def worker(variant: str, uri: str) -> None:
    """Run one variant in this process; print its result as one JSON line.

    Modules are imported before the clock starts (a Railyard job's driver has them loaded
    already), and the RSS after the imports is reported beside the peak.
    """
    import pyarrow.compute
    import pyarrow.dataset  # noqa: F401

    derived: dict[str, list[str]] = {}
    if variant != "pyarrow":
        import railyard.data.fetch  # noqa: F401
        from railyard.training.registry import get_workflow

        # Finding the workflow (it says which columns it derives) is the runner's job, not the
        # data step's: done before the clock, like the imports.
        derived = get_workflow(blog_spec(uri).train.workflow_name).derived_columns
        if "ray" in variant:
            import ray.data  # noqa: F401
    rss_before = _rss_mib()
    started = time.perf_counter()
    if variant == "pyarrow":
        result = run_pyarrow(uri)
    else:
        result = run_railyard(uri, variant.removeprefix("railyard-"), derived)
    result["seconds"] = time.perf_counter() - started
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["rss_after_imports_mib"] = rss_before
    print("RESULT " + json.dumps(result), flush=True)


def measure(variant: str, uri: str, env: dict[str, str]) -> dict:
    """One fresh process per measurement (imports are not timed: the clock starts inside)."""
    proc = subprocess.run([sys.executable, __file__, "--worker", variant, "--uri", uri],
                          env=env, capture_output=True, text=True, timeout=3600)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{variant} failed:\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1].removeprefix("RESULT "))


# --------------------------------------------------------------------------- main

def start_ray_cluster() -> str:
    """A local Ray head whose workers see the S3 server's AWS variables; its GCS address."""
    import tempfile

    from railyard.cluster import local_cluster
    from railyard.config import Settings
    from tests.servers import free_port

    gcs = free_port()
    cluster_settings = Settings(home=Path(tempfile.mkdtemp()), warm_runners=False)
    local_cluster.start_head(cluster_settings, num_cpus=2, gcs_port=gcs,
                             dashboard_port=free_port())
    return f"127.0.0.1:{gcs}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-ray", action="store_true", help="leave out the Ray variants")
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--uri", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.uri)
        return

    from tests.servers import s3_server

    variants = [v for v in VARIANTS if not (args.skip_ray and "ray" in v)]
    started = time.perf_counter()
    directory = dataset_dir(args.rows, args.files)
    data_bytes = sum(p.stat().st_size for p in directory.glob("*.parquet"))
    print(f"data: {args.rows:,} rows in {args.files} files, {data_bytes / 2**20:.0f} MiB "
          f"({time.perf_counter() - started:.1f}s to prepare)", flush=True)
    with s3_server() as server:
        os.environ.update(server.env())
        uri = upload(directory, f"fraud-{args.rows}-{args.files}")
        env = {**os.environ, **server.env()}
        cluster = None if args.skip_ray or os.environ.get("RAY_ADDRESS") else \
            start_ray_cluster()
        if cluster:
            env["RAY_ADDRESS"] = cluster
        try:
            results: dict[str, list[dict]] = {v: [] for v in variants}
            for _ in range(args.repeat):    # interleaved, so drift hits every variant alike
                for variant in variants:
                    results[variant].append(measure(variant, uri, env))
        finally:
            if cluster:
                from railyard.cluster import local_cluster

                subprocess.run([local_cluster.ray_executable(), "stop", "--force"],
                               capture_output=True)

    summary = {}
    base = statistics.median(r["seconds"] for r in results["pyarrow"])
    print(f"\n{'variant':<22}{'median s':>10}{'Mrows/s':>10}{'× pyarrow':>11}"
          f"{'peak RSS MiB':>14}{'(imports)':>11}{'rows':>12}{'train':>12}{'holdout':>10}")
    for variant, runs in results.items():
        seconds = statistics.median(r["seconds"] for r in runs)
        last = runs[-1]
        summary[variant] = {
            "median_seconds": seconds, "seconds": [r["seconds"] for r in runs],
            "rows_scanned_per_second": args.rows / seconds,
            "ratio_vs_pyarrow": seconds / base,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "rss_after_imports_mib": max(r["rss_after_imports_mib"] for r in runs),
            **{k: last[k] for k in ("rows", "train_rows", "holdout_rows")}}
        print(f"{variant:<22}{seconds:>10.2f}{args.rows / seconds / 1e6:>10.2f}"
              f"{seconds / base:>11.2f}{summary[variant]['peak_rss_mib']:>14.0f}"
              f"{summary[variant]['rss_after_imports_mib']:>11.0f}"
              f"{last['rows']:>12,}{last['train_rows']:>12,}{last['holdout_rows']:>10,}")
    counts = {(s["rows"], s["train_rows"], s["holdout_rows"]) for s in summary.values()}
    if len(counts) != 1:
        raise SystemExit(f"variants disagree on the rows: {summary}")

    out = ROOT / "benchmarks" / "results" / "data_read.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "data_read", "rows": args.rows, "files": args.files,
        "data_mib": data_bytes / 2**20, "repeat": args.repeat, "storage": "moto S3 server",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "variants": summary}, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
