"""The built-in XGBoost workflow (classification and regression, categorical features)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import xgboost as xgb
from pydantic import AliasChoices, Field

from railyard.artifacts.checkpoints import Checkpoint
from railyard.training.encoding import encode
from railyard.training.metrics import holdout_metrics
from railyard.training.registry import register_workflow
from railyard.training.resume import resume_rounds, training_fingerprint
from railyard.training.workflow import Split, TrainContext, TrainingData, Workflow, WorkflowParams

log = logging.getLogger(__name__)

# Objectives xgboost dropped, mapped to their current names.
LEGACY_OBJECTIVES = {"reg:linear": "reg:squarederror"}
# The booster's file in a checkpoint (UBJSON keeps every float exactly).
BOOSTER_FILE = "booster.ubj"


def _alias(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class XGBoostParams(WorkflowParams):
    """XGBoost hyperparameters; scikit-learn names and native names both work."""

    objective: str | None = None
    n_estimators: int = Field(default=100, ge=1, le=100_000,
                              validation_alias=AliasChoices("n_estimators", "num_boost_round"))
    learning_rate: float | None = _alias("learning_rate", "eta")
    max_depth: int | None = None
    min_child_weight: float | None = None
    subsample: float | None = None
    colsample_bytree: float | None = None
    colsample_bylevel: float | None = None
    colsample_bynode: float | None = None
    reg_lambda: float | None = _alias("reg_lambda", "lambda")
    reg_alpha: float | None = _alias("reg_alpha", "alpha")
    gamma: float | None = _alias("gamma", "min_split_loss")
    max_bin: int | None = None
    max_leaves: int | None = None
    max_delta_step: float | None = None
    grow_policy: str | None = None
    tree_method: str | None = None
    scale_pos_weight: float | None = None
    base_score: float | None = None
    num_class: int | None = None
    eval_metric: str | list[str] | None = None
    seed: int | None = _alias("seed", "random_state")
    nthread: int | None = _alias("nthread", "n_jobs")
    early_stopping_rounds: int | None = Field(default=None, ge=1)

    def booster_params(self) -> dict[str, Any]:
        """The parameters in xgboost.train's native names."""
        renames = {"learning_rate": "eta", "reg_lambda": "lambda", "reg_alpha": "alpha"}
        skip = {"n_estimators", "early_stopping_rounds"}
        params = {renames.get(k, k): v for k, v in self.model_dump().items()
                  if v is not None and k not in skip}
        if "objective" in params:
            params["objective"] = LEGACY_OBJECTIVES.get(params["objective"], params["objective"])
        return params


@register_workflow
class XGBoostWorkflow(Workflow):
    """Gradient-boosted trees with xgboost.train on the prepared features."""

    name = "xgboost"
    framework = "xgboost"
    streams_ray_datasets = True
    Params = XGBoostParams

    def _objective(self, data: TrainingData) -> str:
        p = cast(XGBoostParams, self.params)
        objective = p.booster_params().get("objective")
        if objective:
            return objective
        return {"binary": "binary:logistic", "multiclass": "multi:softprob",
                "regression": "reg:squarederror"}[self.task(data)]

    def fit(self, data: TrainingData, context: TrainContext) -> dict[str, Any]:
        p = cast(XGBoostParams, self.params)
        params = p.booster_params()
        params.setdefault("nthread", context.threads)
        params["objective"] = self._objective(data)
        if params["objective"].startswith("multi:") and "num_class" not in params:
            params["num_class"] = int(np.nanmax(data.label_array("train"))) + 1
        encoding = data.encoding()
        if context.num_workers > 1:
            from railyard.training.builtin.xgboost_distributed import fit_distributed

            booster = fit_distributed(data, context, params=params, encoding=encoding,
                                      rounds=p.n_estimators)
            return {"booster": booster, "encoding": encoding, "objective": params["objective"]}
        dtrain = _dmatrix(data, "train", encoding)
        # The holdout is scored every round only when something uses it (early stopping, a
        # sweep's intermediate reports): on 1M rows that scoring costs a quarter of the fit.
        evals = []
        wants_evals = bool(p.early_stopping_rounds) or context.on_iteration is not None
        if data.holdout.num_rows and wants_evals:
            dholdout = _dmatrix(data, "holdout", encoding)
            evals.append((dholdout, "holdout"))
        rounds = p.n_estimators
        # A retried attempt continues the last attempt's booster. With early stopping, the
        # resumed part starts its own best-so-far (patience counts from the resumed round; the
        # trees already built stay), which can only train longer than an uninterrupted run.
        fingerprint = training_fingerprint(self, data) if context.checkpoints else None
        start = _resume(context.resume_checkpoint(fingerprint), context, rounds) \
            if fingerprint else None
        done = start.num_boosted_rounds() if start is not None else 0
        callbacks: list[xgb.callback.TrainingCallback] = [_ProgressCallback(context, rounds)]
        if context.checkpoints is not None:
            callbacks.append(_CheckpointCallback(context, rounds, fingerprint))
        booster = xgb.train(
            params, dtrain, num_boost_round=rounds - done, evals=evals, verbose_eval=False,
            early_stopping_rounds=p.early_stopping_rounds if evals else None,
            callbacks=callbacks, xgb_model=start)
        return {"booster": booster, "encoding": encoding, "objective": params["objective"]}

    def fit_streamed(self, data: Any, context: TrainContext) -> dict[str, Any]:
        """Train on several Ray Train workers from Ray Datasets (railyard.training.streamed)."""
        from railyard.training.builtin.xgboost_distributed import fit_on_datasets

        p = cast(XGBoostParams, self.params)
        params = p.booster_params()
        task = data.task()
        objective = params.get("objective") or {
            "binary": "binary:logistic", "multiclass": "multi:softprob",
            "regression": "reg:squarederror"}[task]
        params["objective"] = objective
        if objective.startswith("multi:") and "num_class" not in params:
            params["num_class"] = int(max(float(v) for v in data.train_summary.label_values)) + 1
        encoding = data.encoding()
        # The materialized datasets as they are: another operator here (even a column
        # projection) would need CPUs that the training workers hold while they read.
        datasets = {"train": data.train}
        if data.holdout_summary.rows:
            datasets["holdout"] = data.holdout
        booster = fit_on_datasets(datasets, context, params=params, encoding=encoding,
                                  rounds=p.n_estimators, label=data.label)
        return {"booster": booster, "encoding": encoding, "objective": objective}

    def evaluate_streamed(self, model: dict[str, Any], data: Any,
                          directory: Path) -> tuple[dict[str, float], dict[str, Any]]:
        """Holdout metrics and reports, the holdout scored block by block in Ray tasks."""
        from railyard.training.metrics import CHARTED_TASKS, write_model_reports
        from railyard.training.streamed import holdout_scores

        if not data.holdout_summary.rows:
            return {}, {}
        y, scores = holdout_scores(data.holdout, lambda batch: self.predict(model, batch),
                                   label=data.label)
        task = data.task()
        metrics = holdout_metrics(task, y, scores,
                                  regression_objective=model["objective"].startswith("reg:"))
        gains = model["booster"].get_score(importance_type="total_gain")
        reports = write_model_reports(
            directory, task=task, importance={n: float(gains.get(n, 0.0))
                                              for n in model["encoding"]},
            importance_type="total_gain", y_true=y if task in CHARTED_TASKS else None,
            y_score=scores if task in CHARTED_TASKS else None)
        return metrics, reports

    def predict(self, model: dict[str, Any], table: pa.Table) -> np.ndarray:
        dmatrix = xgb.DMatrix(encode(table, model["encoding"]), enable_categorical=True)
        return model["booster"].predict(dmatrix)

    def predict_holdout(self, model: dict[str, Any], data: TrainingData) -> np.ndarray:
        """``predict`` on the holdout, from the DMatrix kept on ``data``."""
        return model["booster"].predict(_dmatrix(data, "holdout", model["encoding"]))

    def evaluate(self, model: dict[str, Any], data: TrainingData) -> dict[str, float]:
        p = cast(XGBoostParams, self.params)
        if data.holdout.num_rows == 0:
            return {}
        metrics = holdout_metrics(self.task(data), data.label_array("holdout"),
                                  self.holdout_predictions(model, data),
                                  regression_objective=model["objective"].startswith("reg:"))
        if p.early_stopping_rounds:
            metrics["best_iteration"] = float(model["booster"].best_iteration)
        return metrics

    def write_reports(self, model: dict[str, Any], data: TrainingData,
                      directory: Path) -> dict[str, Any]:
        """Gain importance per feature (JSON + PNG); ROC and PR curves for binary labels."""
        scores = model["booster"].get_score(importance_type="total_gain")
        importance = {name: float(scores.get(name, 0.0)) for name in model["encoding"]}
        return self.holdout_reports(model, data, directory, importance, "total_gain")

    def save(self, model: dict[str, Any], directory: Path) -> str:
        model["booster"].save_model(str(directory / "model.json"))
        (directory / "encoding.json").write_text(json.dumps(
            {"encoding": model["encoding"], "objective": model["objective"]}, indent=2))
        return "model.json"

    def load(self, directory: Path) -> dict[str, Any]:
        booster = xgb.Booster()
        booster.load_model(str(directory / "model.json"))
        meta = json.loads((directory / "encoding.json").read_text())
        return {"booster": booster, "encoding": meta["encoding"], "objective": meta["objective"]}


def _resume(checkpoint: Checkpoint | None, context: TrainContext,
            rounds: int) -> xgb.Booster | None:
    """The booster of the job's last checkpoint, or None (none, unreadable, or finished)."""
    def load(raw: bytes) -> xgb.Booster:
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        return booster

    return resume_rounds(checkpoint, context, rounds, file=BOOSTER_FILE, load=load,
                         done=lambda booster: booster.num_boosted_rounds())


class _ProgressCallback(xgb.callback.TrainingCallback):
    """Reports boosting progress to the job timeline (throttled by TrainContext)."""

    def __init__(self, context: TrainContext, rounds: int) -> None:
        super().__init__()
        self.context, self.rounds, self.start = context, rounds, 0

    def before_training(self, model: Any) -> Any:
        # xgb.train numbers a resumed booster's rounds from 0 again
        self.start = model.num_boosted_rounds()
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
        done = self.start + epoch + 1
        last = {f"{d}-{m}": round(v[-1], 6) for d, ms in evals_log.items()
                for m, v in ms.items() if v}
        self.context.report(f"iteration {done}/{self.rounds} {json.dumps(last)}",
                            force=done == self.rounds)
        holdout = {m: float(v[-1]) for m, v in evals_log.get("holdout", {}).items() if v}
        self.context.iteration(done, self.rounds, holdout)
        return False


class _CheckpointCallback(xgb.callback.TrainingCallback):
    """Saves the booster to the job's checkpoints when TrainContext says it is time."""

    def __init__(self, context: TrainContext, rounds: int, fingerprint: str | None) -> None:
        super().__init__()
        self.context, self.rounds, self.fingerprint = context, rounds, fingerprint

    def after_iteration(self, model: Any, epoch: int, evals_log: dict) -> bool:
        done = model.num_boosted_rounds()
        if done < self.rounds and self.context.should_checkpoint(done):
            self.context.save_checkpoint(
                done, {BOOSTER_FILE: bytes(model.save_raw("ubj"))},
                meta={"round": done, "rounds": self.rounds}, fingerprint=self.fingerprint)
        return False


def _dmatrix(data: TrainingData, which: Split, encoding: dict[str, Any]) -> xgb.DMatrix:
    """The split as a DMatrix with its label, built once per thread and kept on ``data``: a
    sweep's trials on the same data reuse it (a DMatrix is reusable across boosters, but its
    cached histogram index is not safe to build from two threads at once)."""
    return data.memo(("xgboost.DMatrix", which, json.dumps(encoding, sort_keys=True)),
                     lambda: xgb.DMatrix(data.encoded(which, encoding),
                                         label=data.label_array(which), enable_categorical=True),
                     per_thread=True)
