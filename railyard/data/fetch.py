"""The data plane's front door: spec → read plan → Arrow table or Ray Datasets → split → stats.

    plan = plan_read(spec, derived=workflow.derived_columns)      # schema checks, 422/403
    table, engine = read_table(plan, in_process_max_bytes=...)    # pyarrow here, or Ray Data
    train, holdout = split_holdout(table, spec.data)
    stats = describe(table, train, holdout, label, plan=plan)
    train_ds, holdout_ds = read_split_ray(plan)                   # streamed (distributed trainers)

Behind it, one job per module: railyard.data.read_plan (what each source reads and filters),
railyard.data.filters (spec filters as Ray Data / pyarrow expressions),
railyard.data.parquet_sources (files, directories, globs, Hive partition pruning),
railyard.data.sql_sources (named SQL connections, read-only SELECTs), railyard.data.joins
(joining features entries on data.join_key), railyard.data.holdout (the split, in one process
or streamed) and railyard.data.allowed_paths (allowed path prefixes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from railyard.config import get_settings
from railyard.data import parquet_sources, sql_sources
from railyard.data.filters import coerce_scalar, filter_to_expr, filters_to_expr  # noqa: F401
from railyard.data.holdout import holdout_mask, split_dataset, split_holdout  # noqa: F401
from railyard.data.joins import join_datasets, join_tables
from railyard.data.parquet_sources import open_dataset
from railyard.data.read_plan import ReadPlan, SourcePlan, plan_read, plan_summary, source_schema  # noqa: F401
from railyard.spec import ParquetSource

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- read

def source_bytes(source: ParquetSource) -> int:
    """Total size of a Parquet source's files."""
    dataset = open_dataset(source)
    return sum(info.size or 0 for info in dataset.filesystem.get_file_info(dataset.files))


def read_source_arrow(sp: SourcePlan) -> pa.Table:
    """One source's column-pruned, filtered table, read in this process."""
    if sp.kind == "sql":
        return sql_sources.read_arrow(sp.statement, sp.sql_url, sp.read_schema,
                                      sp.sql_source, sp.index)
    return parquet_sources.read_arrow(sp.dataset, sp.columns, sp.pyarrow_filter)


def finish(plan: ReadPlan, table: pa.Table) -> pa.Table:
    """After the join: the post-join filters, then the output columns in order."""
    if plan.post_filter_expr is not None:
        table = table.filter(plan.post_filter_expr.to_pyarrow())
    return table.select(plan.columns)


def read_table_arrow(plan: ReadPlan) -> pa.Table:
    """The whole read with pyarrow (and SQLAlchemy for SQL sources) in this process; the
    baseline benchmarks compare against."""
    tables = [read_source_arrow(sp) for sp in plan.sources]
    return finish(plan, join_tables(tables, plan.join_key, plan.join_type))


def ensure_ray() -> None:
    """Connect this process to the job's Ray cluster (once). Workers' stdout and stderr are
    forwarded to this driver's, so the job's durable log has them too."""
    import ray

    if not ray.is_initialized():
        ray.init(address="auto", log_to_driver=True, logging_level=logging.WARNING,
                 runtime_env=_worker_secrets_hook() or None)


def _worker_secrets_hook() -> dict[str, str]:
    """Ray's ``worker_process_setup_hook`` that loads the secrets directory in every worker
    of this job (railyard.secrets), unless the job's runtime env names one already (the API
    sets it; a job sent with `ray job submit` may not, and Ray refuses to merge the two)."""
    import json
    import os

    job_config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR") or "{}")
    if "worker_process_setup_hook" in (job_config.get("runtime_env") or {}):
        return {}
    return {"worker_process_setup_hook": "railyard.secrets.load_in_worker"}


def read_ray(plan: ReadPlan, *, ray_remote_args: dict[str, Any] | None = None,
             broadcast_max_bytes: int | None = None) -> ray.data.Dataset:
    """The filtered, column-pruned, joined Ray Dataset (lazy; filters are pushed into each
    source's read).

    ``ray_remote_args`` (e.g. a pool's ``label_selector``) place the read tasks.
    """
    remote = dict(ray_remote_args or {})
    datasets = []
    for sp in plan.sources:
        if sp.kind == "sql":
            datasets.append(sql_sources.read_ray(
                sp.statement, sp.sql_url, sp.read_schema,
                shard_key=plan.join_key if plan.join_key in sp.columns else None,
                ray_remote_args=remote))
        else:
            # the plan's dataset: the files it lists were checked against the job's prefixes
            datasets.append(parquet_sources.read_ray(sp.parquet_source, sp.columns,
                                                     sp.filter_expr, sp.index,
                                                     ray_remote_args=remote, opened=sp.parquet))
    ds = datasets[0]
    if len(datasets) > 1:
        limit = (get_settings().broadcast_join_max_bytes if broadcast_max_bytes is None
                 else broadcast_max_bytes)
        ds = join_datasets(datasets, plan.join_key, plan.join_type,
                           key_type=plan.sources[0].schema.field(plan.join_key).type,
                           right_bytes=[sp.estimated_bytes() for sp in plan.sources[1:]],
                           broadcast_max_bytes=limit)
    if plan.post_filter_expr is not None:
        ds = ds.filter(expr=plan.post_filter_expr, **remote)
    if plan.sources[0].columns != plan.columns or len(datasets) > 1:
        ds = ds.select_columns(plan.columns)
    return ds


def read_split_ray(plan: ReadPlan, *, ray_remote_args: dict[str, Any] | None = None
                   ) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """(train, holdout) as lazy Ray Datasets, for a trainer that consumes them where they are
    (e.g. Ray Train's ``datasets=``); the driver never holds the rows."""
    ensure_ray()
    ds = read_ray(plan, ray_remote_args=ray_remote_args)
    return split_dataset(ds, plan.data, plan.output_schema)


def read_table(plan: ReadPlan, *, in_process_max_bytes: int = 0,
               ray_remote_args: dict[str, Any] | None = None) -> tuple[pa.Table, str]:
    """The filtered table, and which engine read it.

    Reads up to ``in_process_max_bytes`` (Parquet bytes left after partition pruning; the
    database's estimate for SQL) run in this process, because starting Ray Data's read tasks
    costs seconds that small data never earns back; larger ones stream through Ray Data's
    parallel read tasks.
    """
    if in_process_max_bytes and plan.estimated_bytes() <= in_process_max_bytes:
        return read_table_arrow(plan), "pyarrow"
    return read_table_ray(plan, ray_remote_args=ray_remote_args), "ray.data"


def read_table_ray(plan: ReadPlan, *, ray_remote_args: dict[str, Any] | None = None) -> pa.Table:
    """Run the Ray Data read and gather its blocks into one Arrow table for single-node training."""
    import ray

    ensure_ray()
    ds = read_ray(plan, ray_remote_args=ray_remote_args)
    blocks = ray.get(ds.to_arrow_refs())
    blocks = [b for b in blocks if b.num_rows] or blocks[:1]
    if not blocks:
        return plan.output_schema.empty_table()
    table = pa.concat_tables(blocks, promote_options="permissive")
    return table.select(plan.columns)


# --------------------------------------------------------------------------- statistics

@dataclass
class DatasetStats:
    """What the fetch and split produced, and what the read touched."""

    rows_read: int | None = None         # before row filters: footer counts of the files read
    rows_after_filters: int = 0          # (and joins)
    train_rows: int = 0
    holdout_rows: int = 0
    columns: list[str] = field(default_factory=list)
    null_counts: dict[str, int] = field(default_factory=dict)
    label_balance: dict[str, int] | None = None
    read_engine: str | None = None
    files_total: int | None = None       # Parquet files in the sources
    files_read: int | None = None        # ... left after partition pruning
    bytes_read: int | None = None        # their size on disk
    sources: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: v for k, v in self.__dict__.items()}


def source_stats(plan: ReadPlan) -> list[dict[str, Any]]:
    """Per source: rows before filters, and for Parquet the files and bytes read."""
    out = []
    for sp, summary in zip(plan.sources, plan_summary(plan), strict=True):
        entry = {**summary, "rows_read": sp.rows_before_filters()}
        if sp.scan is not None:
            entry.update(files_total=sp.scan.files_total, files_read=sp.scan.files_read,
                         bytes_read=sp.scan.bytes_read)
        out.append(entry)
    return out


def describe(table: pa.Table, train: pa.Table, holdout: pa.Table, label: str | None, *,
             plan: ReadPlan | None = None) -> DatasetStats:
    """Row counts, null counts, label balance and (given the plan) what the read touched."""
    stats = DatasetStats(rows_after_filters=table.num_rows, train_rows=train.num_rows,
                         holdout_rows=holdout.num_rows, columns=list(table.column_names),
                         null_counts={c: table[c].null_count for c in table.column_names})
    if label and label in table.column_names:
        counts = pc.value_counts(table[label])
        if len(counts) <= 20:
            stats.label_balance = {str(item["values"]): int(item["counts"])
                                   for item in counts.to_pylist()}
    if plan is not None:
        add_read_facts(stats, plan)
    return stats


def add_read_facts(stats: DatasetStats, plan: ReadPlan) -> None:
    """What the read touched: rows read per source and, for Parquet, files and bytes."""
    stats.sources = source_stats(plan)
    stats.rows_read = sum(s["rows_read"] for s in stats.sources)
    parquet = [s for s in stats.sources if s["kind"] == "parquet"]
    if parquet:
        stats.files_total = sum(s["files_total"] for s in parquet)
        stats.files_read = sum(s["files_read"] for s in parquet)
        stats.bytes_read = sum(s["bytes_read"] for s in parquet)
