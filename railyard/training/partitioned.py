"""Many models from one spec: ``train.partition_by`` trains one model per distinct value of a
column (a country, a merchant), in parallel Ray tasks packed onto the pool's CPUs
(``train.resources.cpus_per_worker`` may be fractional for tiny models).

Each partition's model, manifest and metrics go to ``<job>/models/<value>/``; a failed
partition is recorded with its error and fails the job only when every partition fails. A job
whose column has more distinct values than RAILYARD_MAX_PARTITIONS fails before any is trained.
"""

from __future__ import annotations

import logging
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from railyard.artifacts.artifact_store import ArtifactStore
from railyard.config import get_settings
from railyard.errors import SpecError
from railyard.spec import TrainSpec
from railyard.training.manifest import MANIFEST_FILE, ModelManifest
from railyard.training.registry import get_workflow
from railyard.training.workflow import TrainContext, TrainingData

log = logging.getLogger(__name__)


@dataclass
class PartitionModel:
    """One partition's outcome."""

    partition: str
    status: str                  # SUCCEEDED | FAILED
    train_rows: int
    holdout_rows: int
    metrics: dict[str, float]
    model_dir: str | None
    duration_s: float
    error: str | None = None


def partition_key(value: Any) -> str:
    """A partition value as a path-safe artifact folder name."""
    return urllib.parse.quote(str(value), safe="")


def split_by(table: pa.Table, column: str) -> dict[str, pa.Table]:
    """The table's rows grouped by ``column`` (one sort, then zero-copy slices)."""
    if table.num_rows == 0:
        return {}
    keys = table[column].cast(pa.string()) if not pa.types.is_string(table[column].type) \
        else table[column]
    order = pc.sort_indices(keys)
    ordered = table.take(order)
    sorted_keys = keys.take(order).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], len(sorted_keys)]
    return {str(sorted_keys[s]): ordered.slice(s, e - s) for s, e in zip(starts, ends,
                                                                         strict=True)}


def check_partition_count(table: pa.Table, column: str, max_partitions: int) -> int:
    """The number of partitions ``table`` splits into by ``column`` (nulls are one); a
    SpecError naming train.partition_by and RAILYARD_MAX_PARTITIONS when over the cap."""
    count = pc.count_distinct(table[column], mode="all").as_py() if table.num_rows else 0
    if count > max_partitions:
        raise SpecError(
            f"train.partition_by: column {column!r} has {count} distinct values in the training "
            f"rows, and this server trains at most {max_partitions} partitions per job "
            "(RAILYARD_MAX_PARTITIONS); partition by a coarser column, or narrow the rows "
            "with data.filters",
            details=[{"field": "train.partition_by",
                      "message": f"{count} partitions; at most {max_partitions} "
                                 "(RAILYARD_MAX_PARTITIONS)"}])
    return count


def _fit_partition(value: str, train: pa.Table, holdout: pa.Table, train_spec: dict[str, Any],
                   features: list[str], label: str, artifact_root: str,
                   job_id: str) -> dict[str, Any]:
    """A Ray task: fit, evaluate and publish one partition's model."""
    started = time.perf_counter()
    try:
        spec = TrainSpec.model_validate(train_spec)
        workflow = get_workflow(spec.workflow_name)(spec)
        data = TrainingData(train=train, holdout=holdout, features=features, label=label)
        model = workflow.fit(data, TrainContext(resources={"num_workers": 1}))
        metrics = workflow.evaluate(model, data)
        store = ArtifactStore(artifact_root)
        with tempfile.TemporaryDirectory() as directory:
            folder = Path(directory)
            main_file = workflow.save(model, folder)
            manifest = ModelManifest(
                job_id=job_id, workflow=workflow.name, framework=workflow.framework,
                model_file=main_file, features=features,
                feature_types={f: str(train.schema.field(f).type) for f in features},
                label=label, task=workflow.task(data), partition=value,
                metrics={"holdout": metrics}, custom_params=dict(spec.custom_params))
            (folder / MANIFEST_FILE).write_text(manifest.to_json())
            for path in sorted(folder.iterdir()):
                store.put_file(path, job_id, "models", partition_key(value), path.name)
        record = PartitionModel(value, "SUCCEEDED", train.num_rows, holdout.num_rows, metrics,
                                store.uri(job_id, "models", partition_key(value)),
                                round(time.perf_counter() - started, 4))
    except Exception as exc:  # noqa: BLE001 - one bad partition is a record, not a crash
        record = PartitionModel(value, "FAILED", train.num_rows, holdout.num_rows, {}, None,
                                round(time.perf_counter() - started, 4),
                                f"{type(exc).__name__}: {exc}"[:2000])
    return asdict(record)


def run_fanout(data: TrainingData, train: TrainSpec, *, column: str, artifact_root: str,
               job_id: str, on_model: Callable[[PartitionModel], None],
               placement: dict[str, Any] | None = None,
               max_partitions: int | None = None) -> list[PartitionModel]:
    """Train every partition in parallel Ray tasks; return their records (sorted by value).
    Over ``max_partitions`` (default RAILYARD_MAX_PARTITIONS) partitions, a SpecError before
    any is split or trained."""
    import ray

    from railyard.data.fetch import ensure_ray

    check_partition_count(data.train, column, max_partitions or get_settings().max_partitions)
    ensure_ray()
    trains, holdouts = split_by(data.train, column), split_by(data.holdout, column)
    cpus = float(train.resources.cpus_per_worker or 1)
    task = ray.remote(_fit_partition).options(num_cpus=cpus, max_retries=0,
                                             **(placement or {}))
    spec = train.model_dump(mode="json")
    shared = ray.put(spec)
    pending = []
    for value, part in trains.items():
        holdout = holdouts.get(value, part.schema.empty_table())
        pending.append(task.remote(value, part, holdout, shared, list(data.features),
                                   data.label, artifact_root, job_id))
    log.info("fan-out: %d partitions of %s on %.2f CPUs each", len(pending), column, cpus)
    records: list[PartitionModel] = []
    while pending:
        done, pending = ray.wait(pending, num_returns=min(len(pending), 64), timeout=2.0)
        for ref in done:
            record = PartitionModel(**ray.get(ref))
            records.append(record)
            on_model(record)
    if records and all(r.status == "FAILED" for r in records):
        raise RuntimeError(f"all {len(records)} partitions failed; first error: "
                           f"{records[0].error}")
    return sorted(records, key=lambda r: r.partition)


def summarise(records: list[PartitionModel]) -> dict[str, Any]:
    """Job-level view of a fan-out: counts and the mean of each holdout metric."""
    ok = [r for r in records if r.status == "SUCCEEDED"]
    names = sorted({k for r in ok for k in r.metrics})
    means = {}
    for name in names:
        values = [r.metrics[name] for r in ok if name in r.metrics
                  and not np.isnan(r.metrics[name])]
        if values:
            means[f"mean_{name}"] = float(np.mean(values))
    return {"partitions": len(records), "succeeded": len(ok),
            "failed": len(records) - len(ok), **means}
