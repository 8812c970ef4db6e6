"""The built-in LightGBM workflow (classification and regression, categorical features)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import pyarrow as pa
from pydantic import AliasChoices, Field

from railyard.artifacts.checkpoints import Checkpoint
from railyard.training.encoding import encode, fit_encoding
from railyard.training.metrics import holdout_metrics
from railyard.training.registry import register_workflow
from railyard.training.resume import resume_rounds, training_fingerprint
from railyard.training.workflow import Split, TrainContext, TrainingData, Workflow, WorkflowParams

log = logging.getLogger(__name__)
# The booster's file in a checkpoint (LightGBM's text model format).
BOOSTER_FILE = "booster.txt"


def _alias(*names: str) -> Any:
    return Field(default=None, validation_alias=AliasChoices(*names))


class LightGBMParams(WorkflowParams):
    """LightGBM hyperparameters; scikit-learn names and LightGBM's own names both work."""

    objective: str | None = None
    n_estimators: int = Field(default=100, ge=1, le=100_000, validation_alias=AliasChoices(
        "n_estimators", "num_boost_round", "num_iterations", "num_trees"))
    learning_rate: float | None = Field(default=None, gt=0, validation_alias=AliasChoices(
        "learning_rate", "eta", "shrinkage_rate"))
    num_leaves: int | None = Field(default=None, ge=2)
    max_depth: int | None = None
    min_child_samples: int | None = _alias("min_child_samples", "min_data_in_leaf")
    min_child_weight: float | None = _alias("min_child_weight", "min_sum_hessian_in_leaf")
    subsample: float | None = _alias("subsample", "bagging_fraction")
    subsample_freq: int | None = _alias("subsample_freq", "bagging_freq")
    colsample_bytree: float | None = _alias("colsample_bytree", "feature_fraction")
    reg_alpha: float | None = _alias("reg_alpha", "lambda_l1")
    reg_lambda: float | None = _alias("reg_lambda", "lambda_l2")
    min_split_gain: float | None = _alias("min_split_gain", "min_gain_to_split")
    max_bin: int | None = None
    max_cat_to_onehot: int | None = None
    scale_pos_weight: float | None = None
    is_unbalance: bool | None = None
    num_class: int | None = None
    metric: str | list[str] | None = None
    seed: int | None = _alias("seed", "random_state")
    n_jobs: int | None = _alias("n_jobs", "num_threads", "nthread")
    early_stopping_rounds: int | None = Field(default=None, ge=1)

    def booster_params(self) -> dict[str, Any]:
        """The parameters in lightgbm.train's canonical names."""
        renames = {"min_child_samples": "min_data_in_leaf",
                   "min_child_weight": "min_sum_hessian_in_leaf",
                   "subsample": "bagging_fraction", "subsample_freq": "bagging_freq",
                   "colsample_bytree": "feature_fraction", "reg_alpha": "lambda_l1",
                   "reg_lambda": "lambda_l2", "min_split_gain": "min_gain_to_split",
                   "n_jobs": "num_threads"}
        skip = {"n_estimators", "early_stopping_rounds"}
        params = {renames.get(k, k): v for k, v in self.model_dump().items()
                  if v is not None and k not in skip}
        params.setdefault("verbosity", -1)
        return params


@register_workflow
class LightGBMWorkflow(Workflow):
    """Gradient-boosted trees with lightgbm.train; strings become pandas categoricals."""

    name = "lightgbm"
    framework = "lightgbm"
    Params = LightGBMParams

    def _objective(self, data: TrainingData) -> str:
        p = cast(LightGBMParams, self.params)
        objective = p.booster_params().get("objective")
        if objective:
            return objective
        return {"binary": "binary", "multiclass": "multiclass",
                "regression": "regression"}[self.task(data)]

    def fit(self, data: TrainingData, context: TrainContext) -> dict[str, Any]:
        p = cast(LightGBMParams, self.params)
        params = p.booster_params()
        params["objective"] = self._objective(data)
        if "num_threads" not in params:  # spec's CPUs, else the node's (Ray sets OMP to 1)
            params["num_threads"] = context.threads
        if params["objective"] in ("multiclass", "softmax", "multiclassova") \
                and "num_class" not in params:
            params["num_class"] = int(np.nanmax(data.label_array("train"))) + 1
        encoding = fit_encoding(data.train, data.features)
        train = _dataset(data, "train", encoding)
        valid_sets, names = [train], ["train"]
        if data.holdout.num_rows:
            valid_sets.append(_dataset(data, "holdout", encoding, reference=train))
            names.append("holdout")
        rounds = p.n_estimators
        # A retried attempt continues the last attempt's booster (init_model). With early
        # stopping, the resumed part starts its own best-so-far (patience counts from the
        # resumed round; the trees already built stay). Bagging's random draws restart too.
        fingerprint = training_fingerprint(self, data) if context.checkpoints else None
        start = _resume(context.resume_checkpoint(fingerprint), context, rounds) \
            if fingerprint else None
        done = start.current_iteration() if start is not None else 0
        callbacks = [_progress(context, rounds)]
        if context.checkpoints is not None:
            callbacks.append(_checkpoint(context, rounds, fingerprint))
        if p.early_stopping_rounds and len(valid_sets) > 1:
            callbacks.append(lgb.early_stopping(p.early_stopping_rounds,
                                                first_metric_only=True, verbose=False))
        booster = lgb.train(params, train, num_boost_round=rounds - done,
                            valid_sets=valid_sets, valid_names=names, callbacks=callbacks,
                            init_model=start)
        return {"booster": booster, "encoding": encoding, "objective": params["objective"]}

    def predict(self, model: dict[str, Any], table: pa.Table) -> np.ndarray:
        booster: lgb.Booster = model["booster"]
        # an ndarray: predict returns a list or sparse matrix only for pred_contrib
        return cast(np.ndarray, booster.predict(encode(table, model["encoding"]),
                                                num_iteration=booster.best_iteration or None))

    def evaluate(self, model: dict[str, Any], data: TrainingData) -> dict[str, float]:
        p = cast(LightGBMParams, self.params)
        if data.holdout.num_rows == 0:
            return {}
        metrics = holdout_metrics(self.task(data), data.label_array("holdout"),
                                  self.holdout_predictions(model, data),
                                  regression_objective=self.task(data) == "binary"
                                  and not model["objective"].startswith(("binary", "cross")))
        if p.early_stopping_rounds:
            metrics["best_iteration"] = float(model["booster"].best_iteration)
        return metrics

    def write_reports(self, model: dict[str, Any], data: TrainingData,
                      directory: Path) -> dict[str, Any]:
        """Gain importance per feature (JSON + PNG); ROC and PR curves for binary labels."""
        booster: lgb.Booster = model["booster"]
        gains = booster.feature_importance(importance_type="gain")
        importance = dict(zip(booster.feature_name(), map(float, gains), strict=True))
        return self.holdout_reports(model, data, directory, importance, "total_gain")

    def save(self, model: dict[str, Any], directory: Path) -> str:
        model["booster"].save_model(str(directory / "model.txt"))
        (directory / "encoding.json").write_text(json.dumps(
            {"encoding": model["encoding"], "objective": model["objective"]}, indent=2))
        return "model.txt"

    def load(self, directory: Path) -> dict[str, Any]:
        booster = lgb.Booster(model_file=str(directory / "model.txt"))
        meta = json.loads((directory / "encoding.json").read_text())
        return {"booster": booster, "encoding": meta["encoding"], "objective": meta["objective"]}


def _dataset(data: TrainingData, which: Split, encoding: dict[str, Any],
             reference: lgb.Dataset | None = None) -> lgb.Dataset:
    frame = encode(data.table(which), encoding)
    return lgb.Dataset(frame, label=data.label_array(which), reference=reference,
                       categorical_feature="auto", free_raw_data=False)


def _progress(context: TrainContext, rounds: int) -> Any:
    """A LightGBM callback reporting boosting progress (throttled by TrainContext)."""

    def callback(env: lgb.callback.CallbackEnv) -> None:
        assert env.evaluation_result_list is not None  # None only before an iteration
        last = {f"{d}-{m}": round(float(v), 6) for d, m, v, *_ in env.evaluation_result_list}
        done = env.iteration + 1
        context.report(f"iteration {done}/{rounds} {json.dumps(last)}", force=done == rounds)

    # after early stopping's bookkeeping (LightGBM reads the order from the function)
    callback.order = 30  # type: ignore[attr-defined]
    return callback


def _resume(checkpoint: Checkpoint | None, context: TrainContext,
            rounds: int) -> lgb.Booster | None:
    """The booster of the job's last checkpoint, or None (none, unreadable, or finished)."""
    return resume_rounds(checkpoint, context, rounds, file=BOOSTER_FILE,
                         load=lambda raw: lgb.Booster(model_str=raw.decode()),
                         done=lambda booster: booster.current_iteration())


def _checkpoint(context: TrainContext, rounds: int, fingerprint: str | None) -> Any:
    """A LightGBM callback saving the booster when TrainContext says it is time."""

    def callback(env: lgb.callback.CallbackEnv) -> None:
        done = env.iteration + 1  # absolute: lgb.train counts on from an init_model
        if done < rounds and context.should_checkpoint(done):
            model = env.model.model_to_string(num_iteration=-1).encode()
            context.save_checkpoint(done, {BOOSTER_FILE: model},
                                    meta={"round": done, "rounds": rounds},
                                    fingerprint=fingerprint)

    # after early stopping, which ends the training by raising
    callback.order = 40  # type: ignore[attr-defined]  # as above
    return callback
