"""Resuming a training from its checkpoints: what identifies a training (its fingerprint), and
the model a round-based workflow (xgboost, lightgbm) resumes from. Storage is
``railyard.artifacts.checkpoints``."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from railyard.artifacts.checkpoints import FORMAT, Checkpoint
from railyard.training.workflow import TrainingData

log = logging.getLogger(__name__)
Model = TypeVar("Model")


def training_fingerprint(workflow: Any, data: TrainingData, **extra: Any) -> str:
    """A hash of what makes one training continue another's checkpoint: the workflow and its
    parameters, features, label, the shape and schema of the data and the label's sum (a cheap
    check that the rows are the same), plus ``extra``. Thread counts and devices are left out:
    an attempt on another node may resume."""
    import pyarrow.compute as pc

    try:
        label_sum = pc.sum(data.train[data.label].cast("float64")).as_py()
    except Exception:  # noqa: BLE001 - a label that does not sum: rows and schema must do
        label_sum = None
    facts = {"format": FORMAT, "workflow": getattr(workflow, "name", type(workflow).__name__),
             "params": workflow.params.model_dump(mode="json"),
             "features": list(data.features), "label": data.label,
             "train_rows": data.train.num_rows, "holdout_rows": data.holdout.num_rows,
             "schema": [f"{f.name}:{f.type}" for f in data.train.schema],
             "label_sum": None if label_sum is None else round(float(label_sum), 6),
             "extra": extra}
    canonical = json.dumps(facts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def resume_rounds(checkpoint: Checkpoint | None, context: Any, rounds: int, *, file: str,
                  load: Callable[[bytes], Model], done: Callable[[Model], int]) -> Model | None:
    """The model saved in ``checkpoint``'s ``file`` when it has trained some but not all of
    ``rounds`` (reported on the job's timeline), else None: train from scratch."""
    if checkpoint is None:
        return None
    try:
        model = load(checkpoint.read(file))
    except Exception:
        log.warning("could not load the checkpoint at round %d; training from scratch",
                    checkpoint.step, exc_info=True)
        return None
    finished = done(model)
    if not 0 < finished < rounds:
        return None
    message = f"resumed from checkpoint at round {finished} of {rounds}"
    log.info(message)
    context.report(message, force=True)
    return model
