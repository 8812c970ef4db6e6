"""A job's published model, loaded from its artifacts and ready to predict.

The runner publishes ``<artifact root>/<job id>/model/``: the workflow's files and
``manifest.json`` (workflow, framework, features, feature types, label, task, metrics…). Loading
reads the manifest, finds the registered workflow class and calls its ``load``::

    from railyard.serving.published import load_published
    model = load_published("s3://bucket/railyard/<job id>/model")   # or a local directory
    scores = model.predict(table_or_dataframe)          # what the workflow's predict returns
    out = model.predict_table(table)                    # input columns + prediction columns

Prediction columns by task: ``prediction`` (probability of label 1 for binary; the value for
regression and forecasting; the vector for embeddings); multiclass adds ``probability_<k>`` per
class and makes ``prediction`` the most probable class. ``RailyardClient.load_model(job_id)``,
``railyard predict`` and ``railyard serve-model`` all go through here.
"""

from __future__ import annotations

import json
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from railyard.artifacts.artifact_store import resolve
from railyard.errors import DataSourceError, NotFoundError
from railyard.spec import TrainSpec
from railyard.training.manifest import (
    MANIFEST_FILE,
    ModelManifest,
    PartitionedManifest,
    read_manifest,
)
from railyard.training.registry import get_workflow
from railyard.training.workflow import Workflow

PREDICTION = "prediction"
PROBABILITY_PREFIX = "probability_"

TableLike: TypeAlias = (pa.Table | pd.DataFrame | Sequence[Mapping[str, Any]]
                        | Mapping[str, Sequence[Any]])


class _Predictions(ABC):
    """Prediction tables and records from ``self.predict`` and ``self.task``."""

    @property
    @abstractmethod
    def task(self) -> str:
        """binary | multiclass | regression | forecasting | embedding."""

    @abstractmethod
    def predict(self, data: TableLike) -> np.ndarray:
        """The predictions for every row (probabilities for classifiers)."""

    def predict_table(self, data: TableLike, *, keep_input: bool = True) -> pa.Table:
        """The prediction columns (see the module docstring), after the input's columns
        unless ``keep_input`` is false."""
        table = as_table(data)
        columns = prediction_columns(self.task, self.predict(table))
        if not keep_input:
            return pa.table(columns)
        for name, values in columns.items():
            if name in table.column_names:
                table = table.drop_columns([name])
            table = table.append_column(name, values)
        return table

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One dict of prediction columns per input record (the serving endpoint's answer)."""
        return self.predict_table(list(records), keep_input=False).to_pylist()


@dataclass
class PublishedModel(_Predictions):
    """A loaded model with the manifest it was published with."""

    manifest: dict[str, Any]
    workflow: Workflow
    model: Any
    directory: Path

    @property
    def job_id(self) -> str | None:
        """The job that trained the model."""
        return self.manifest.get("job_id")

    @property
    def task(self) -> str:
        """binary | multiclass | regression | forecasting | embedding."""
        return str(self.manifest.get("task", ""))

    @property
    def features(self) -> list[str]:
        """The spec's ``train.classifier_features``."""
        return list(self.manifest.get("features", []))

    @property
    def input_columns(self) -> list[str]:
        """Columns a prediction input must have (features the workflow does not derive)."""
        derived = self.workflow.derived_columns
        return [f for f in self.features if f not in derived]

    def describe(self) -> dict[str, Any]:
        """The manifest's facts about the model, for humans and the /info endpoint."""
        keys = ("job_id", "workflow", "framework", "task", "label", "features", "feature_types",
                "metrics", "spec_hash")
        return {k: self.manifest[k] for k in keys if k in self.manifest} | {
            "input_columns": self.input_columns}

    def prepare_input(self, data: TableLike) -> pa.Table:
        """``data`` as an Arrow table with the trained feature types; a missing column is a
        DataSourceError naming it."""
        table = as_table(data)
        missing = [c for c in self.input_columns if c not in table.column_names]
        if missing:
            raise DataSourceError(
                f"the input lacks column(s) {', '.join(missing)} that model "
                f"{self.job_id or self.directory} was trained on; it has "
                f"{', '.join(table.column_names) or 'none'}",
                details=[{"field": c, "message": "column not found"} for c in missing])
        return _cast_to_trained_types(table, self.manifest.get("feature_types", {}))

    def predict(self, data: TableLike) -> np.ndarray:
        """The workflow's predictions for every row (probabilities for classifiers)."""
        return self.workflow.predict(self.model, self.prepare_input(data))

def as_table(data: TableLike) -> pa.Table:
    """An Arrow table from a table, a pandas frame, a list of row dicts or a dict of columns."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, Mapping):
        return pa.table(dict(data))
    return pa.Table.from_pylist(list(data))


def _cast_to_trained_types(table: pa.Table, feature_types: Mapping[str, str]) -> pa.Table:
    for name, type_name in feature_types.items():
        if name not in table.column_names:
            continue
        try:
            wanted = pa.type_for_alias(type_name)
        except ValueError:  # e.g. dictionary or timezone types: leave as given
            continue
        column = table[name]
        if column.type == wanted:
            continue
        try:
            column = column.cast(wanted)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataSourceError(
                f"column {name!r} is {column.type} but the model was trained on {type_name} "
                f"and it does not convert: {exc}",
                details=[{"field": name, "message": f"expected {type_name}"}]) from None
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def prediction_columns(task: str, scores: np.ndarray) -> dict[str, pa.Array]:
    """The output columns for a task's predictions."""
    scores = np.asarray(scores)
    if scores.ndim == 1:
        return {PREDICTION: pa.array(scores.astype("float64"))}
    if task == "multiclass":
        columns = {PREDICTION: pa.array(scores.argmax(axis=1).astype("int64"))}
        for k in range(scores.shape[1]):
            columns[f"{PROBABILITY_PREFIX}{k}"] = pa.array(scores[:, k].astype("float64"))
        return columns
    flat = pa.array(scores.astype("float32").reshape(-1))
    return {PREDICTION: pa.FixedSizeListArray.from_arrays(flat, scores.shape[1])}


def fetch_model_dir(uri: str | Path, into: Path | None = None) -> Path:
    """A local directory holding the model files: the directory itself for a local path, else
    a copy of every file under ``uri`` (e.g. ``s3://…/model``) in ``into`` or a new temp dir."""
    fs, path = resolve(str(uri))
    if isinstance(fs, pafs.LocalFileSystem):
        local = Path(path)
        if not (local / MANIFEST_FILE).is_file():
            raise NotFoundError(f"no published model at {uri}: {MANIFEST_FILE} is missing")
        return local
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    files = [i for i in infos if i.type == pafs.FileType.File]
    if not any(i.base_name == MANIFEST_FILE for i in files):
        raise NotFoundError(f"no published model at {uri}: {MANIFEST_FILE} is missing")
    target = into or Path(tempfile.mkdtemp(prefix="railyard-model-"))
    target.mkdir(parents=True, exist_ok=True)
    for info in files:
        with fs.open_input_stream(info.path) as src:
            (target / info.base_name).write_bytes(src.read())
    return target


def workflow_for(manifest: ModelManifest | Mapping[str, Any]) -> Workflow:
    """An instance of the manifest's workflow, set up as it was trained when the manifest
    carries ``custom_params`` (otherwise with default parameters: a workflow's ``load`` must
    not need its training parameters)."""
    if not isinstance(manifest, ModelManifest):
        manifest = ModelManifest.model_validate(dict(manifest))
    cls = get_workflow(manifest.workflow)
    train = TrainSpec(workflow_name=cls.name,
                      classifier_features=list(manifest.features or ["_"]),
                      label=str(manifest.label or "_"),
                      custom_params=dict(manifest.custom_params or {}))
    return cls(train)


@dataclass
class PartitionedModel(_Predictions):
    """A fan-out job's models (``train.partition_by``): each row is scored by the model of
    its partition; rows of a partition that has no model get NaN."""

    manifest: dict[str, Any]
    column: str
    models: dict[str, PublishedModel | PartitionedModel]

    @property
    def job_id(self) -> str | None:
        """The job that trained the models."""
        return self.manifest.get("job_id")

    @property
    def task(self) -> str:
        """The partitions' task (they share the spec, so the first one's)."""
        return next(iter(self.models.values())).task if self.models else ""

    @property
    def input_columns(self) -> list[str]:
        """The partition column and every feature."""
        first = next(iter(self.models.values()), None)
        return [self.column, *(first.input_columns if first else [])]

    def describe(self) -> dict[str, Any]:
        """The manifest's facts about the models, for humans and the /info endpoint."""
        keys = ("job_id", "workflow", "partitioned_by", "spec_hash")
        return {k: self.manifest[k] for k in keys if k in self.manifest} | {
            "task": self.task, "partitions": list(self.models),
            "input_columns": self.input_columns}

    def predict(self, data: TableLike) -> np.ndarray:
        """Each row's prediction from its partition's model."""
        table = as_table(data)
        if self.column not in table.column_names:
            raise DataSourceError(f"the input lacks the partition column {self.column!r}",
                                  details=[{"field": self.column, "message": "column not found"}])
        keys = table[self.column].cast(pa.string()).to_numpy(zero_copy_only=False)
        out = np.full(table.num_rows, np.nan)
        for value, model in self.models.items():
            rows = np.flatnonzero(keys == value)
            if rows.size:
                out[rows] = model.predict(table.take(pa.array(rows)))
        return out


def load_published(model_dir: str | Path, *,
                   into: Path | None = None) -> PublishedModel | PartitionedModel:
    """Load the model published at ``model_dir`` (local path, ``file://`` or ``s3://``); a
    fan-out job's manifest loads every partition's model."""
    directory = fetch_model_dir(model_dir, into)
    raw = json.loads((directory / MANIFEST_FILE).read_text())
    manifest = read_manifest(raw)
    if isinstance(manifest, PartitionedManifest):
        models = {value: load_published(entry.model_dir)
                  for value, entry in sorted(manifest.partitions.items())
                  if entry.status == "SUCCEEDED" and entry.model_dir}
        return PartitionedModel(manifest=raw, column=manifest.partitioned_by, models=models)
    workflow = workflow_for(manifest)
    return PublishedModel(manifest=raw, workflow=workflow,
                          model=workflow.load(directory), directory=directory)
