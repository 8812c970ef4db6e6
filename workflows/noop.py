"""NoOp: a workflow that trains nothing, for platform checks and load tests.

It predicts the training label's mean for every row and can wait a given number of seconds in
each phase, so an operator (or a test) can hold a job in a known phase: cancel it there, kill
its driver, restart a database under it. The job is still tracked, split and published like
any other::

    "train": {"workflow_name": "NoOp", "label": "is_fraud", "classifier_features": [...],
              "custom_params": {"train_s": 30}}
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from railyard.training.registry import register_workflow
from railyard.training.workflow import TrainContext, TrainingData, Workflow, WorkflowParams

Seconds = Field(default=0.0, ge=0, le=3600)
MODEL_FILE = "noop.json"


class NoOpParams(WorkflowParams):
    """Seconds to wait in each phase (fetch waits in ``prepare``)."""

    fetch_s: float = Seconds
    train_s: float = Seconds
    evaluate_s: float = Seconds
    publish_s: float = Seconds


@register_workflow
class NoOpWorkflow(Workflow):
    """Predicts the training label's mean; waits where asked."""

    name = "NoOp"
    framework = "python"
    Params = NoOpParams

    def prepare(self, table: pa.Table) -> pa.Table:
        time.sleep(self.params.fetch_s)
        return table

    def fit(self, data: TrainingData, context: TrainContext) -> dict[str, Any]:
        deadline = time.monotonic() + self.params.train_s
        while time.monotonic() < deadline:
            context.report(f"waiting, {deadline - time.monotonic():.0f}s left")
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        label = data.train[data.label]
        mean = pc.mean(label.cast(pa.float64())).as_py() if len(label) else 0.0
        return {"mean": float(mean or 0.0)}

    def predict(self, model: dict[str, Any], table: pa.Table) -> np.ndarray:
        return np.full(table.num_rows, model["mean"], dtype=float)

    def evaluate(self, model: dict[str, Any], data: TrainingData) -> dict[str, float]:
        time.sleep(self.params.evaluate_s)
        return {"train_label_mean": model["mean"], "holdout_rows": float(data.holdout.num_rows)}

    def save(self, model: dict[str, Any], directory: Path) -> str:
        time.sleep(self.params.publish_s)
        (directory / MODEL_FILE).write_text(json.dumps(model))
        return MODEL_FILE

    def load(self, directory: Path) -> dict[str, Any]:
        return json.loads((directory / MODEL_FILE).read_text())
