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

Nothing is loaded that the job database does not vouch for (railyard.artifacts.integrity): the
job's ``artifacts.manifest_sha256`` (given as ``trusted``, else looked up in the job database
this process is configured with) checks ``manifest.json``, whose ``digests`` check every other
file; the checked files are copied into a private directory and loaded from there. A file that
does not match is an ArtifactIntegrityError naming it. Without a recorded digest (a model
published before digests were, or no job database to ask) a pickle (a scikit-learn model) is
refused and the other files load unchecked.
"""

from __future__ import annotations

import json
import logging
import shutil
import weakref
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa

from railyard.artifacts.integrity import check_digest, checked_copy, read_files
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
log = logging.getLogger(__name__)

TableLike: TypeAlias = (pa.Table | pd.DataFrame | Sequence[Mapping[str, Any]]
                        | Mapping[str, Sequence[Any]])

# Rows sent for prediction (``check_records``): the JSON values a column of each trained type
# accepts; null is always accepted (a missing value).
KIND_TEXT = {"string": "a string", "integer": "an integer", "number": "a number",
             "bool": "true or false", "temporal": "a date/time string (or epoch number)",
             "scalar": "a string, number or boolean", "": "any value"}
MAX_RECORD_PROBLEMS = 50  # details listed in the error (the message gives the count)


@dataclass(frozen=True)
class RecordSchema:
    """What a JSON record sent for prediction must hold: every ``required`` column (with the
    JSON kind its value must be, None: not checked); no other key unless ``closed`` is false
    (a workflow that derives columns may read more, e.g. a forecaster's date and history);
    ``ignored`` keys (the label) are accepted and not used."""

    required: dict[str, str | None]
    types: dict[str, str]
    ignored: frozenset[str] = frozenset()
    closed: bool = True


def json_kind(type_name: str | None) -> str | None:
    """The kind of JSON value a column of trained Arrow type ``type_name`` (as the manifest's
    ``feature_types`` writes it) accepts: string, integer, number, bool or temporal; None
    when unknown (any value is tried)."""
    if not type_name:
        return None
    name = type_name
    if name.startswith("dictionary<values="):
        name = name[len("dictionary<values="):].split(",", 1)[0]
    try:
        arrow_type = pa.type_for_alias(name)
    except ValueError:
        return "temporal" if name.startswith(("timestamp", "date", "time")) else None
    checks = (("string", (pa.types.is_string, pa.types.is_large_string)),
              ("bool", (pa.types.is_boolean,)),
              ("integer", (pa.types.is_integer,)),
              ("number", (pa.types.is_floating, pa.types.is_decimal)),
              ("temporal", (pa.types.is_temporal,)))
    for kind, predicates in checks:
        if any(predicate(arrow_type) for predicate in predicates):
            return kind
    return None


def _accepts(kind: str | None, value: Any) -> bool:
    if value is None or kind is None:
        return True
    if kind == "string":
        return isinstance(value, str)
    if isinstance(value, bool):
        return kind in ("bool", "scalar")
    if kind == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float)
    if kind == "temporal":
        return isinstance(value, str | int | float)
    if kind == "scalar":
        return isinstance(value, str | int | float)
    return False  # bool, given something else


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list | tuple) else "an object"


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


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

    @abstractmethod
    def record_schema(self) -> RecordSchema:
        """What a JSON record sent for prediction must hold."""

    def check_records(self, records: Sequence[Any]) -> None:
        """A DataSourceError (422) naming the row index and the column of every record that
        lacks an input column, has a key the model does not know, or a value of the wrong
        JSON type for the trained column type (``"charge_type": 5`` for a string feature)."""
        schema = self.record_schema()
        problems: list[dict[str, Any]] = []
        count = 0

        def add(row: int, field: str, message: str) -> None:
            nonlocal count
            count += 1
            if len(problems) < MAX_RECORD_PROBLEMS:
                problems.append({"row": row, "field": field, "message": message})

        for i, record in enumerate(records):
            if not isinstance(record, Mapping):
                add(i, "(row)", f"row {i} is {_json_type(record)}, not an object of columns")
                continue
            for name, kind in schema.required.items():
                if name not in record:
                    add(i, name, f"row {i}: feature {name!r} is missing")
                elif not _accepts(kind, record[name]):
                    trained = (f" (the model was trained on {schema.types[name]})"
                               if name in schema.types else "")
                    add(i, name, f"row {i}: feature {name!r} must be {KIND_TEXT[kind or '']}"
                                 f"{trained}, got {_json_type(record[name])} "
                                 f"{_short(record[name])}")
            if schema.closed:
                for key in record:
                    if key not in schema.required and key not in schema.ignored:
                        add(i, str(key), f"row {i}: {key!r} is not a feature of this model "
                                         f"(its features: {', '.join(schema.required)})")
        if count:
            shown = "; ".join(p["message"] for p in problems[:5])
            more = f"; and {count - 5} more" if count > 5 else ""
            raise DataSourceError(f"{count} problem(s) in the rows: {shown}{more}",
                                  details=problems)

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One dict of prediction columns per input record (the serving endpoint's answer),
        after :meth:`check_records`; a value Arrow still cannot convert is a DataSourceError."""
        self.check_records(records)
        try:
            return self.predict_table(list(records), keep_input=False).to_pylist()
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
            raise DataSourceError(f"the rows do not convert to the model's input: {exc}",
                                  details=[{"field": "rows", "message": str(exc)}]) from None


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

    def record_schema(self) -> RecordSchema:
        """Every input column, typed by the manifest's ``feature_types``; the label may be
        sent and is ignored; other keys are refused unless the workflow derives columns."""
        types = dict(self.manifest.get("feature_types") or {})
        label = self.manifest.get("label")
        return RecordSchema(required={c: json_kind(types.get(c)) for c in self.input_columns},
                            types=types, ignored=frozenset([label] if label else []),
                            closed=not self.workflow.derived_columns)

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


def model_files(uri: str | Path) -> dict[str, bytes]:
    """Every file of the model directory at ``uri`` (a local path or e.g. ``s3://…/model``), by
    name; a NotFoundError when it has no manifest."""
    files = read_files(str(uri))
    if MANIFEST_FILE not in files:
        raise NotFoundError(f"no published model at {uri}: {MANIFEST_FILE} is missing")
    return files


def fetch_model_dir(uri: str | Path, into: Path | None = None, *,
                    expected: Mapping[str, str] | None = None) -> Path:
    """A private local directory (``into`` or a new temporary one) holding the files of the
    model directory at ``uri``, checked against ``expected`` (file name → SHA-256; without it
    a pickle is refused: railyard.artifacts.integrity.checked_copy)."""
    return checked_copy(str(uri), model_files(uri), expected, into)


def recorded_artifacts(job_id: str | None) -> Mapping[str, Any] | None:
    """The job's ``artifacts`` in the job database this process is configured with
    (RAILYARD_DATABASE_URL); None when there is no such job or no database to ask."""
    if not job_id:
        return None
    from railyard.config import get_settings
    from railyard.jobstore import jobs
    from railyard.jobstore.engine import get_engine

    url = get_settings().resolved_database_url
    if url.startswith("sqlite") and not Path(url.split("///", 1)[-1]).is_file():
        return None        # the default SQLite file of a machine that has no job database
    try:
        return dict(jobs.get_job(get_engine(url), job_id=str(job_id)).artifacts or {})
    except NotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - no database here: nothing vouches for the files
        log.warning("could not look up job %s in the job database: %s", job_id,
                    str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
        return None


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

    def record_schema(self) -> RecordSchema:
        """The partition column (any scalar) and every partition's input columns."""
        required: dict[str, str | None] = {self.column: "scalar"}
        types: dict[str, str] = {}
        ignored: set[str] = set()
        closed = True
        for model in self.models.values():
            schema = model.record_schema()
            for name, kind in schema.required.items():
                required.setdefault(name, kind)
            types = schema.types | types
            ignored |= schema.ignored
            closed = closed and schema.closed
        return RecordSchema(required=required, types=types, ignored=frozenset(ignored),
                            closed=closed)

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


def load_published(model_dir: str | Path, *, into: Path | None = None,
                   trusted: Mapping[str, Any] | None = None
                   ) -> PublishedModel | PartitionedModel:
    """Load the model published at ``model_dir`` (local path, ``file://`` or ``s3://``) into
    ``into`` (empty, or a new temporary directory); a fan-out job's manifest loads every
    partition's model. ``trusted``: the job's ``artifacts`` as the job database holds them
    (what the API returns); without it they are looked up by the manifest's job id (see the
    module docstring). A file that does not match its digest is an ArtifactIntegrityError."""
    files = model_files(model_dir)
    if trusted is None:
        try:
            job_id = json.loads(files[MANIFEST_FILE]).get("job_id")
        except (ValueError, AttributeError):
            job_id = None
        trusted = recorded_artifacts(job_id)
    digest = (trusted or {}).get("manifest_sha256")
    if not digest:
        log.warning("no manifest digest is recorded for the model at %s: its files are not "
                    "checked, and a pickle among them is refused", model_dir)
    return _load(str(model_dir), files, {MANIFEST_FILE: str(digest)} if digest else None, into)


def _load(where: str, files: dict[str, bytes], expected: dict[str, str] | None,
          into: Path | None) -> PublishedModel | PartitionedModel:
    """The model in ``files`` (read from ``where``), checked against ``expected`` (trusted
    digests by file name, the manifest's among them) and the digests the checked manifest
    lists."""
    if expected is not None and MANIFEST_FILE in expected:
        check_digest(f"{where.rstrip('/')}/{MANIFEST_FILE}", files[MANIFEST_FILE],
                     expected[MANIFEST_FILE])
    raw = json.loads(files[MANIFEST_FILE])
    manifest = read_manifest(raw)
    if isinstance(manifest, PartitionedManifest):
        # Each partition's files are checked against the digests this manifest lists for it.
        models = {value: _load(entry.model_dir, model_files(entry.model_dir),
                               dict(entry.digests) if expected and entry.digests else None,
                               None)
                  for value, entry in sorted(manifest.partitions.items())
                  if entry.status == "SUCCEEDED" and entry.model_dir}
        return PartitionedModel(manifest=raw, column=manifest.partitioned_by, models=models)
    if expected is not None:
        expected = {**(manifest.digests or {}), **expected}
        if set(expected) == {MANIFEST_FILE}:
            expected = None   # a checked manifest that vouches for no file
    directory = checked_copy(where, files, expected, into)
    try:
        workflow = workflow_for(manifest)
        published = PublishedModel(manifest=raw, workflow=workflow,
                                   model=workflow.load(directory), directory=directory)
    except BaseException:
        if into is None:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    if into is None:  # the temporary copy goes with the model (a server reloads many)
        weakref.finalize(published, shutil.rmtree, directory, ignore_errors=True)
    return published
