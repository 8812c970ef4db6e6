"""The Workflow interface: what a training workflow implements, and what it is given.

A workflow is a Python class registered under a name (``train.workflow_name`` in a spec). It
declares its hyperparameters as a pydantic model, may derive columns from fetched ones
(``derived_columns`` + ``prepare``), and knows how to fit, predict, save and load its model::

    from railyard.training.registry import register_workflow
    from railyard.training.workflow import Workflow, WorkflowParams

    @register_workflow
    class MyModel(Workflow):
        name = "MyModel"
        class Params(WorkflowParams):
            alpha: float = 1.0
        def fit(self, data, context): ...
        def predict(self, model, table): ...
        def save(self, model, directory): ...
        def load(self, directory): ...

Registering and finding workflows by name is ``railyard.training.registry``.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from railyard.errors import SpecError
from railyard.spec import TrainSpec

if TYPE_CHECKING:
    import pandas as pd

    from railyard.artifacts.checkpoints import Checkpoint, CheckpointStore

log = logging.getLogger(__name__)

Task = Literal["binary", "multiclass", "regression", "forecasting", "embedding"]
Split = Literal["train", "holdout"]


class WorkflowParams(BaseModel):
    """Base for a workflow's hyperparameters: unknown names are rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


@dataclass
class TrainingData:
    """The prepared data a workflow trains on."""

    train: pa.Table
    holdout: pa.Table
    features: list[str]
    label: str
    # Derived arrays (the encoding, encoded frames) kept for the next fit on the same data: a
    # sweep fits one TrainingData many times. Treat what comes out of it as read-only.
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def table(self, which: Split) -> pa.Table:
        """The train or holdout table."""
        return self.train if which == "train" else self.holdout

    def label_array(self, which: Split) -> np.ndarray:
        """The label column as float64 (nulls become NaN)."""
        return self.table(which)[self.label].to_numpy(zero_copy_only=False).astype("float64")

    def encoding(self) -> dict[str, Any]:
        """How to encode the features, learnt from the training rows
        (railyard.training.encoding)."""
        from railyard.training.encoding import fit_encoding

        if "encoding" not in self._memo:
            self._memo["encoding"] = fit_encoding(self.train, self.features)
        return self._memo["encoding"]

    def encoded(self, which: Split, encoding: dict[str, Any] | None = None) -> pd.DataFrame:
        """The split's features as a pandas frame (strings as categoricals), encoded once per
        encoding and kept; callers must not modify it."""
        from railyard.training.encoding import encode

        encoding = encoding or self.encoding()
        key = ("encoded", which, json.dumps(encoding, sort_keys=True))
        if key not in self._memo:
            self._memo[key] = encode(self.table(which), encoding)
        return self._memo[key]

    def __getstate__(self) -> dict[str, Any]:
        # What is kept is rebuilt where the data goes (and some of it, a DMatrix, cannot be
        # pickled): Ray Tune ships a sweep's data to its trial actors.
        return {**self.__dict__, "_memo": {}}

    def memo(self, key: Any, build: Callable[[], Any], *, per_thread: bool = False) -> Any:
        """``build()``, computed once per ``key`` for this data and kept: what a workflow
        derives from the data alone (a framework's matrix) and a sweep would otherwise rebuild
        for every trial. ``per_thread`` keeps one per thread, for objects that are not safe to
        share between concurrent fits (a sweep's trials may run on several threads)."""
        if per_thread:
            key = (key, threading.get_ident())
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def to_pandas(self, which: Split, encoding: dict[str, Any] | None = None
                  ) -> tuple[pd.DataFrame, np.ndarray]:
        """(features as a pandas frame, strings as categoricals; label) for one split. The
        frame is a copy the caller may change."""
        return self.encoded(which, encoding).copy(), self.label_array(which)

    def to_numpy(self, which: Split, encoding: dict[str, Any] | None = None, *,
                 categorical: Literal["ordinal", "one_hot"] = "ordinal"
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(float64 feature matrix, label); categories as codes or one-hot columns."""
        from railyard.training.encoding import to_matrix

        frame, label = self.to_pandas(which, encoding)
        return to_matrix(frame, categorical=categorical).to_numpy(), label

    def to_torch(self, which: Split, encoding: dict[str, Any] | None = None, *,
                 categorical: Literal["ordinal", "one_hot"] = "one_hot",
                 device: str = "cpu") -> tuple[Any, Any]:
        """(float32 feature tensor, float32 label tensor) on ``device``; NaN features are 0."""
        import torch

        features, label = self.to_numpy(which, encoding, categorical=categorical)
        x = torch.as_tensor(np.nan_to_num(features, nan=0.0), dtype=torch.float32)
        return x.to(device), torch.as_tensor(label, dtype=torch.float32).to(device)

    def iter_batches(self, which: Split, batch_size: int) -> Iterator[pa.Table]:
        """The split in slices of at most ``batch_size`` rows (zero-copy)."""
        table = self.table(which)
        for start in range(0, table.num_rows, batch_size):
            yield table.slice(start, batch_size)


@dataclass
class TrainContext:
    """What the runner hands a workflow besides data: resources and a throttled progress hook."""

    resources: dict[str, Any] = field(default_factory=dict)
    on_progress: Callable[[str], None] | None = None
    min_interval_s: float = 2.0
    # For distributed training: where Ray Train keeps its run state (artifact store) and the
    # Ray options that keep training workers on the job's pool.
    storage_path: str | None = None
    worker_placement: dict[str, Any] = field(default_factory=dict)
    # Intermediate holdout metrics for a sweep's early stopping (ASHA, median rule): an
    # iterative workflow calls iteration() each step; about ``iteration_reports`` get through.
    on_iteration: Callable[[dict[str, float]], None] | None = None
    iteration_reports: int = 20
    # Checkpoints (railyard.artifacts.checkpoints): the runner sets ``checkpoints`` to the job's
    # store, under the same prefix for every attempt of the job, so that a retried attempt finds
    # the last attempt's checkpoint and resumes from it. An iterative workflow asks
    # should_checkpoint() each step; a checkpoint is written at most every
    # ``checkpoint_interval_s`` (0: every step), so a job shorter than that writes none.
    checkpoints: CheckpointStore | None = None
    checkpoint_interval_s: float = 30.0
    _last: float = 0.0
    _checkpoint_clock: float | None = None

    def iteration(self, step: int, total: int, metrics: dict[str, float]) -> None:
        """Pass step ``step`` of ``total``'s holdout metrics to a sweep, evenly thinned."""
        if self.on_iteration is None or not metrics:
            return
        every = max(1, total // max(1, self.iteration_reports))
        if step % every == 0 and step < total:
            self.on_iteration(metrics)

    def should_checkpoint(self, step: int) -> bool:
        """True when step ``step`` should be saved: there is a store and at least
        ``checkpoint_interval_s`` passed since training began or since the last checkpoint.
        (The first call starts the clock.)"""
        if self.checkpoints is None:
            return False
        now = time.monotonic()
        if self._checkpoint_clock is None:
            self._checkpoint_clock = now
        return now - self._checkpoint_clock >= self.checkpoint_interval_s

    def save_checkpoint(self, step: int, files: dict[str, bytes] | str | Path, *,
                        meta: dict[str, Any] | None = None,
                        fingerprint: str | None = None) -> Checkpoint | None:
        """Save a checkpoint to the job's store (best effort; None when not saved) and restart
        the interval clock once it is written."""
        if self.checkpoints is None:
            return None
        saved = self.checkpoints.save(step, files, meta=meta, fingerprint=fingerprint)
        self._checkpoint_clock = time.monotonic()
        return saved

    def resume_checkpoint(self, fingerprint: str) -> Checkpoint | None:
        """The job's newest checkpoint saved by this same training (``fingerprint``, see
        railyard.training.resume.training_fingerprint), or None: start from scratch."""
        if self.checkpoints is None:
            return None
        try:
            return self.checkpoints.latest(fingerprint)
        except Exception:
            log.warning("could not read the checkpoints in %s", self.checkpoints, exc_info=True)
            return None

    @property
    def threads(self) -> int:
        """Threads for a framework training in this process: ``cpus_per_worker`` when the spec
        sets it, else every core of the node. (Ray sets OMP_NUM_THREADS=1 in a job's driver,
        so a framework left to its default would train on one core.)"""
        cpus = self.resources.get("cpus_per_worker")
        return max(1, int(cpus)) if cpus else node_cpus()

    @property
    def num_workers(self) -> int:
        """How many training workers the spec asks for (1: train in the driver)."""
        return int(self.resources.get("num_workers") or 1)

    def report(self, message: str, *, force: bool = False) -> None:
        """Record a progress line on the job's timeline, at most every ``min_interval_s``."""
        now = time.monotonic()
        if self.on_progress is None or (not force and now - self._last < self.min_interval_s):
            return
        self._last = now
        self.on_progress(message)


class Workflow(ABC):
    """Base class of every training workflow."""

    name: ClassVar[str]
    framework: ClassVar[str] = "python"
    Params: ClassVar[type[WorkflowParams]] = WorkflowParams
    # Columns the workflow creates in prepare(), mapped to the source columns it needs.
    derived_columns: ClassVar[dict[str, list[str]]] = {}
    # True when the workflow can train on Ray Datasets streamed to several workers
    # (fit_streamed/evaluate_streamed, railyard.training.streamed); its prepare() must then work
    # block by block (no sorting or look-back across rows).
    streams_ray_datasets: ClassVar[bool] = False

    def __init__(self, train: TrainSpec) -> None:
        self.train_spec = train
        self.params = self.parse_params(train.custom_params)

    @classmethod
    def parse_params(cls, custom_params: dict[str, Any]) -> WorkflowParams:
        """Validate ``train.custom_params``; unknown names get a did-you-mean."""
        try:
            return cls.Params.model_validate(custom_params)
        except ValidationError as exc:
            valid = sorted(cls.param_names())
            problems = []
            for err in exc.errors(include_url=False):
                name = str(err["loc"][0]) if err["loc"] else ""
                if err["type"] == "extra_forbidden":
                    close = difflib.get_close_matches(name, valid, n=1)
                    msg = (f"unknown parameter {name!r} for workflow {cls.name}"
                           + (f"; did you mean {close[0]!r}?" if close else "")
                           + f" Valid names: {', '.join(valid)}")
                else:
                    msg = err["msg"]
                problems.append({"field": f"train.custom_params.{name}", "message": msg})
            raise SpecError("; ".join(f"{p['field']}: {p['message']}" for p in problems),
                            details=problems) from None

    @classmethod
    def param_names(cls) -> set[str]:
        """Every accepted parameter name, aliases included."""
        names = set()
        for fname, finfo in cls.Params.model_fields.items():
            names.add(fname)
            alias = finfo.validation_alias
            if alias is not None:
                choices = getattr(alias, "choices", [alias])
                names.update(str(c) for c in choices)
        return names

    def prepare(self, table: pa.Table) -> pa.Table:
        """Derive columns (labels, features) from fetched ones. Default: unchanged."""
        return table

    def task(self, data: TrainingData) -> Task:
        """What kind of target this is; the default infers it from the label values."""
        return infer_task(data.train[data.label])

    @abstractmethod
    def fit(self, data: TrainingData, context: TrainContext) -> Any:
        """Train and return the model."""

    @abstractmethod
    def predict(self, model: Any, table: pa.Table) -> np.ndarray:
        """Scores for every row of ``table`` (probabilities for classifiers)."""

    def evaluate(self, model: Any, data: TrainingData) -> dict[str, float]:
        """Holdout metrics; the default picks them from the task."""
        from railyard.training.metrics import holdout_metrics

        if data.holdout.num_rows == 0:
            return {}
        return holdout_metrics(self.task(data), data.label_array("holdout"),
                               self.holdout_predictions(model, data))

    def holdout_predictions(self, model: Any, data: TrainingData) -> np.ndarray:
        """``predict`` on the holdout. The last model's predictions are kept on ``data``, so
        evaluate and the reports score the holdout once (only the last: a sweep evaluates many
        models, and keeping them all would keep every trial's model alive)."""
        slot = data._memo.get("holdout_predictions")
        if slot is not None and slot[0] is model:
            return slot[1]
        scores = self.predict_holdout(model, data)
        data._memo["holdout_predictions"] = (model, scores)
        return scores

    def predict_holdout(self, model: Any, data: TrainingData) -> np.ndarray:
        """Score the holdout (uncached); a workflow may reuse what it keeps on ``data``."""
        return self.predict(model, data.holdout)

    def write_reports(self, model: Any, data: TrainingData, directory: Path) -> dict[str, Any]:
        """Optional extra outputs (plots, feature importance) written into ``directory``;
        returns JSON-ready facts for the model manifest. Default: none."""
        return {}

    def holdout_reports(self, model: Any, data: TrainingData, directory: Path,
                        importance: dict[str, float] | None,
                        importance_type: str = "gain") -> dict[str, Any]:
        """The usual ``write_reports``: feature importance plus, for binary tasks, ROC and
        precision-recall curves of the holdout predictions, and for regression and forecasting
        a sample of predicted-vs-actual points (railyard.training.metrics)."""
        from railyard.training.metrics import CHARTED_TASKS, write_model_reports

        task = self.task(data)
        curves = task in CHARTED_TASKS and data.holdout.num_rows > 0
        return write_model_reports(
            directory, task=task, importance=importance, importance_type=importance_type,
            y_true=data.label_array("holdout") if curves else None,
            y_score=self.holdout_predictions(model, data) if curves else None)

    @abstractmethod
    def save(self, model: Any, directory: Path) -> str:
        """Write the model into ``directory``; return the main file's name."""

    @abstractmethod
    def load(self, directory: Path) -> Any:
        """Read back what ``save`` wrote."""


def node_cpus() -> int:
    """The CPUs this process may use: a container's CPU limit where there is one (as Ray
    counts them), not the host's core count, and never more than the cores the process is
    pinned to (``taskset``, a cpuset), which Ray's count does not see."""
    try:
        from ray._private.utils import get_num_cpus

        counted = max(1, int(get_num_cpus(override_docker_cpu_warning=True)))
    except Exception:  # noqa: BLE001 - a private helper; the host's count is the fallback
        counted = os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        counted = min(counted, max(1, len(os.sched_getaffinity(0))))
    return counted


def infer_task(label: pa.ChunkedArray) -> Task:
    """binary for labels in {0, 1} or bool, multiclass for few integer classes, else regression."""
    if pa.types.is_boolean(label.type):
        return "binary"
    unique = label.drop_null().unique()
    if len(unique) <= 2 and set(unique.to_pylist()) <= {0, 1}:
        return "binary"
    if pa.types.is_integer(label.type) and len(unique) <= 50:
        return "multiclass"
    return "regression"
