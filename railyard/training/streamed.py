"""Streamed training: the filtered, split rows go from Ray Data's read tasks straight to the
Ray Train workers, and the job's driver never holds them.

Used for jobs that train on several workers (``train.resources.num_workers > 1``) with a
workflow that can consume Ray Datasets (``Workflow.streams_ray_datasets``). What comes back
to the driver is bounded by the number of blocks and columns, not rows: per-block summaries
(row, null and label counts, category sets) and, to score the holdout, its labels and
predictions (two numbers per holdout row).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from railyard.data.fetch import DatasetStats, add_read_facts, read_ray
from railyard.data.holdout import split_dataset
from railyard.data.read_plan import ReadPlan
from railyard.training.encoding import column_kind
from railyard.training.workflow import Task, Workflow, infer_task

MAX_LABEL_VALUES = 51       # enough to tell binary and multiclass (≤ 50) from regression


@dataclass
class Summary:
    """What one pass over a dataset learned, merged over its blocks."""

    rows: int = 0
    null_counts: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    label_values: set[Any] = field(default_factory=set)
    categories: dict[str, set[str]] = field(default_factory=dict)

    def merge(self, part: dict[str, Any]) -> None:
        self.rows += part["rows"]
        for name, count in part["nulls"].items():
            self.null_counts[name] = self.null_counts.get(name, 0) + count
        for value, count in part["labels"].items():
            self.label_counts[value] = self.label_counts.get(value, 0) + count
        if len(self.label_values) <= MAX_LABEL_VALUES:
            self.label_values.update(part["label_values"])
        for name, values in part["categories"].items():
            self.categories.setdefault(name, set()).update(values)


def _summarise_block(batch: pa.Table, *, label: str, categorical: list[str]) -> pa.Table:
    """One block's summary as a one-row table (a JSON string: blocks differ in shape)."""
    import pyarrow.compute as pc

    labels: dict[str, int] = {}
    values: list[Any] = []
    if label in batch.column_names:
        counts = pc.value_counts(batch[label]).to_pylist()
        if len(counts) <= MAX_LABEL_VALUES:
            labels = {str(item["values"]): int(item["counts"]) for item in counts}
        values = [item["values"] for item in counts[:MAX_LABEL_VALUES + 1]
                  if item["values"] is not None]
    part = {"rows": batch.num_rows,
            "nulls": {name: batch[name].null_count for name in batch.column_names},
            "labels": labels, "label_values": values,
            "categories": {name: pc.unique(batch[name].cast(pa.string())).drop_null()
                           .to_pylist() for name in categorical}}
    return pa.table({"summary": [json.dumps(part, default=str)]})


def summarise(ds: Any, *, label: str, categorical: list[str]) -> Summary:
    """One pass over ``ds`` in Ray tasks; only the per-block summaries come back."""
    summary = Summary()
    rows = ds.map_batches(_summarise_block, batch_format="pyarrow", batch_size=None,
                          fn_kwargs={"label": label, "categorical": categorical}).take_all()
    for row in rows:
        summary.merge(json.loads(row["summary"]))
    return summary


@dataclass
class StreamedData:
    """Train and holdout as lazy Ray Datasets, with what the summary passes learned."""

    train: Any
    holdout: Any
    features: list[str]
    label: str
    schema: pa.Schema
    train_summary: Summary
    holdout_summary: Summary

    def task(self) -> Task:
        """The label's task, inferred from its values as for an in-memory table."""
        label_type = self.schema.field(self.label).type
        values = sorted(self.train_summary.label_values, key=str)
        return infer_task(pa.chunked_array([pa.array(values, type=label_type)]))

    def encoding(self) -> dict[str, Any]:
        """The feature encoding ``railyard.training.encoding.fit_encoding`` would learn from the
        training rows (categories: every value seen in the training set, sorted)."""
        encoding: dict[str, Any] = {}
        for name in self.features:
            arrow_type = self.schema.field(name).type
            entry: dict[str, Any] = {"kind": column_kind(arrow_type),
                                     "arrow_type": str(arrow_type)}
            if entry["kind"] == "categorical":
                entry["categories"] = sorted(self.train_summary.categories.get(name, set()))
            encoding[name] = entry
        return encoding

    def stats(self, plan: ReadPlan) -> DatasetStats:
        """The job's dataset statistics, from the summaries and the read plan."""
        nulls = {name: self.train_summary.null_counts.get(name, 0)
                 + self.holdout_summary.null_counts.get(name, 0) for name in self.schema.names}
        labels = {value: self.train_summary.label_counts.get(value, 0)
                  + self.holdout_summary.label_counts.get(value, 0)
                  for value in {*self.train_summary.label_counts,
                                *self.holdout_summary.label_counts}}
        stats = DatasetStats(
            rows_after_filters=self.train_summary.rows + self.holdout_summary.rows,
            train_rows=self.train_summary.rows, holdout_rows=self.holdout_summary.rows,
            columns=list(self.schema.names), null_counts=nulls,
            label_balance=labels if 0 < len(labels) <= 20 else None)
        stats.read_engine = "ray.data (streamed to training)"
        add_read_facts(stats, plan)
        return stats


def read_streamed(plan: ReadPlan, workflow: Workflow, *, features: list[str], label: str,
                  ray_remote_args: dict[str, Any] | None = None) -> StreamedData:
    """Read with the spec's filters, derive the workflow's columns block by block, split off
    the holdout, and summarise both sides (two passes in Ray tasks over the blocks)."""
    ds = read_ray(plan, ray_remote_args=ray_remote_args)
    if type(workflow).prepare is not Workflow.prepare:
        ds = ds.map_batches(workflow.prepare, batch_format="pyarrow", batch_size=None,
                            **(ray_remote_args or {}))
    train, holdout = split_dataset(ds, plan.data, plan.output_schema)
    # Run the read now, into the cluster's object store (spilled to disk past its memory), not
    # lazily under the trainer: Ray Data's read tasks need CPUs that the training workers
    # would hold, which on a small pool deadlocks the two. Later passes read these blocks.
    train, holdout = train.materialize(), holdout.materialize()
    schema = train.schema().base_schema       # pyarrow blocks: a pyarrow.Schema
    categorical = [name for name in features
                   if column_kind(schema.field(name).type) == "categorical"]
    return StreamedData(train=train, holdout=holdout, features=features, label=label,
                        schema=schema,
                        train_summary=summarise(train, label=label, categorical=categorical),
                        holdout_summary=summarise(holdout, label=label, categorical=[]))


def holdout_scores(ds: Any, predict: Any, *, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels, predictions) of every holdout row, scored block by block in Ray tasks."""
    def score(batch: pa.Table) -> pa.Table:
        return pa.table({"y": batch[label].cast(pa.float64()),
                         "p": pa.array(np.asarray(predict(batch), dtype=np.float64))})

    scored = ds.map_batches(score, batch_format="pyarrow", batch_size=None)
    parts = list(scored.iter_batches(batch_format="pyarrow", batch_size=None))
    if not parts:
        return np.empty(0), np.empty(0)
    table = pa.concat_tables(parts)
    return (table["y"].to_numpy(zero_copy_only=False),
            table["p"].to_numpy(zero_copy_only=False))
