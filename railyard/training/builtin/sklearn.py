"""The built-in scikit-learn workflow: one estimator from an allowlist, picked by ``estimator``.

Every other ``train.custom_params`` entry is passed to that estimator and checked against its
own parameters when the spec is submitted::

    "custom_params": {"estimator": "RandomForestClassifier", "n_estimators": 200,
                      "max_depth": 8, "categorical_encoding": "one_hot"}
"""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path
from typing import Any, Literal, cast

import joblib
import numpy as np
import pyarrow as pa
from pydantic import ConfigDict
from sklearn.base import BaseEstimator, is_classifier
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from railyard.errors import SpecError
from railyard.training.encoding import encode, fit_encoding, to_matrix
from railyard.training.metrics import permutation_importance
from railyard.training.registry import register_workflow
from railyard.training.workflow import TrainContext, TrainingData, Workflow, WorkflowParams

EstimatorName = Literal[
    "auto", "LogisticRegression", "RandomForestClassifier", "RandomForestRegressor",
    "GradientBoostingClassifier", "GradientBoostingRegressor", "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor", "Ridge", "LinearRegression"]
ESTIMATORS: dict[str, type[BaseEstimator]] = {
    cls.__name__: cls for cls in (
        LogisticRegression, RandomForestClassifier, RandomForestRegressor,
        GradientBoostingClassifier, GradientBoostingRegressor, HistGradientBoostingClassifier,
        HistGradientBoostingRegressor, Ridge, LinearRegression)}
LINEAR = {"LogisticRegression", "Ridge", "LinearRegression"}
# Estimators that take missing values as they are; the others get a median imputer.
NATIVE_MISSING = {"HistGradientBoostingClassifier", "HistGradientBoostingRegressor"}
# HistGradientBoosting handles a categorical column natively up to this many categories.
MAX_NATIVE_CATEGORIES = 255


class SklearnParams(WorkflowParams):
    """``estimator`` and the encoding of strings; any other entry is an estimator parameter."""

    model_config = ConfigDict(extra="allow")

    estimator: EstimatorName = "auto"
    categorical_encoding: Literal["auto", "one_hot", "ordinal"] = "auto"

    def estimator_name(self, task: str) -> str:
        """The estimator's class name; ``auto`` is HistGradientBoosting for the task."""
        if self.estimator != "auto":
            return self.estimator
        return ("HistGradientBoostingRegressor" if task == "regression"
                else "HistGradientBoostingClassifier")

    def candidates(self) -> list[type[BaseEstimator]]:
        """The estimator classes the spec may end up with (both, for ``auto``)."""
        return [ESTIMATORS[self.estimator_name(task)] for task in ("binary", "regression")
                ] if self.estimator == "auto" else [ESTIMATORS[self.estimator]]

    def estimator_params(self) -> dict[str, Any]:
        """The entries passed to the estimator."""
        return dict(self.model_extra or {})


@register_workflow
class SklearnWorkflow(Workflow):
    """A scikit-learn estimator in a Pipeline (imputer and scaler where needed), saved with
    joblib: a pickle, which ``load`` must only be given once its digest was checked
    (railyard.artifacts.integrity; railyard.serving.published and the sweeps do)."""

    name = "sklearn"
    framework = "sklearn"
    Params = SklearnParams

    @classmethod
    def parse_params(cls, custom_params: dict[str, Any]) -> SklearnParams:
        """Validate the workflow's own fields, then the rest against the estimator's."""
        params = cast(SklearnParams, super().parse_params(custom_params))
        candidates = params.candidates()
        label = " or ".join(c.__name__ for c in candidates)
        extra = params.estimator_params()
        valid = sorted({n for c in candidates for n in c().get_params()}
                       | set(cls.Params.model_fields))
        unknown = [name for name in extra if name not in valid]
        if unknown:
            problems = []
            for name in unknown:
                close = difflib.get_close_matches(name, valid, n=1)
                problems.append({"field": f"train.custom_params.{name}", "message": (
                    f"unknown parameter {name!r} for {label}"
                    + (f"; did you mean {close[0]!r}?" if close else "")
                    + f" Valid names: {', '.join(valid)}")})
            raise SpecError("; ".join(f"{p['field']}: {p['message']}" for p in problems),
                            details=problems)
        errors = []
        for estimator_cls in candidates:
            accepted = set(estimator_cls().get_params())
            try:
                estimator_cls(**{k: v for k, v in extra.items() if k in accepted}
                              )._validate_params()
                return params
            except (TypeError, ValueError) as exc:  # sklearn's InvalidParameterError is both
                errors.append(exc)
        match = re.search(r"The '(\w+)' parameter", str(errors[0]))
        name = match.group(1) if match else next(iter(extra), "estimator")
        raise SpecError(f"train.custom_params.{name}: {errors[0]}", details=[
            {"field": f"train.custom_params.{name}", "message": str(errors[0])}])

    def _categorical(self, estimator: str) -> Literal["one_hot", "ordinal"]:
        p = cast(SklearnParams, self.params)
        choice = p.categorical_encoding
        if choice == "auto":
            return "one_hot" if estimator in LINEAR else "ordinal"
        return choice

    def fit(self, data: TrainingData, context: TrainContext) -> dict[str, Any]:
        p = cast(SklearnParams, self.params)
        task = self.task(data)
        name = p.estimator_name(task)
        estimator_cls = ESTIMATORS[name]
        if is_classifier(estimator_cls()) != (task in ("binary", "multiclass")):
            raise ValueError(f"estimator {name} does not fit a {task} label; pick a "
                             f"{'classifier' if task != 'regression' else 'regressor'} in "
                             "train.custom_params.estimator")
        encoding = fit_encoding(data.train, data.features)
        categorical = self._categorical(name)
        frame = to_matrix(encode(data.train, encoding), categorical=categorical)
        kwargs = p.estimator_params()
        accepted = estimator_cls().get_params()
        if unknown := sorted(set(kwargs) - set(accepted)):
            raise ValueError(f"{name} takes no parameter {', '.join(unknown)} (train."
                             "custom_params); set train.custom_params.estimator explicitly")
        if "random_state" in accepted:
            kwargs.setdefault("random_state", 0)
        if name in NATIVE_MISSING and categorical == "ordinal":
            kwargs.setdefault("categorical_features", [
                encoding.get(c, {}).get("kind") == "categorical"
                and len(encoding[c]["categories"]) <= MAX_NATIVE_CATEGORIES
                for c in frame.columns])
        steps: list[tuple[str, Any]] = []
        if name not in NATIVE_MISSING:
            steps.append(("impute", SimpleImputer(strategy="median", keep_empty_features=True)))
        if name in LINEAR:
            steps.append(("scale", StandardScaler()))
        steps.append(("model", estimator_cls(**kwargs)))
        pipeline = Pipeline(steps)
        label = data.label_array("train")
        keep = ~np.isnan(label)
        target = label[keep].astype("int64") if task != "regression" else label[keep]
        context.report(f"fitting {name} on {int(keep.sum())} rows", force=True)
        with threadpool_limits(limits=context.threads):  # OpenMP/BLAS threads
            pipeline.fit(frame.to_numpy()[keep], target)
        num_class = int(np.nanmax(label)) + 1 if task == "multiclass" else None
        return {"pipeline": pipeline, "encoding": encoding, "categorical": categorical,
                "columns": list(frame.columns), "task": task, "estimator": name,
                "num_class": num_class}

    def predict(self, model: dict[str, Any], table: pa.Table) -> np.ndarray:
        matrix = to_matrix(encode(table, model["encoding"]),
                           categorical=model["categorical"]).to_numpy()
        pipeline: Pipeline = model["pipeline"]
        if model["task"] == "regression":
            return pipeline.predict(matrix)
        proba = pipeline.predict_proba(matrix)
        classes = pipeline.classes_.astype("int64")
        if model["task"] == "binary":
            return proba[:, list(classes).index(1)] if 1 in classes else np.zeros(len(matrix))
        full = np.zeros((len(matrix), model["num_class"]))
        full[:, classes] = proba
        return full

    def write_reports(self, model: dict[str, Any], data: TrainingData,
                      directory: Path) -> dict[str, Any]:
        """Impurity importance, |coefficients| or holdout permutation importance; curves."""
        estimator = model["pipeline"][-1]
        native = getattr(estimator, "feature_importances_", None)
        if native is None and hasattr(estimator, "coef_"):
            native = np.abs(np.atleast_2d(estimator.coef_)).mean(axis=0)
        if native is not None:
            importance = dict.fromkeys(data.features, 0.0)
            for column, value in zip(model["columns"], native, strict=True):
                importance[column.split("=", 1)[0]] += float(value)
            kind = "impurity" if hasattr(estimator, "feature_importances_") else "abs_coef"
        else:
            importance = permutation_importance(
                lambda t: self.predict(model, t), data.holdout, data.features,
                data.label_array("holdout"), model["task"])
            kind = "permutation"
        return self.holdout_reports(model, data, directory, importance, kind)

    def save(self, model: dict[str, Any], directory: Path) -> str:
        joblib.dump(model, directory / "model.joblib")
        (directory / "encoding.json").write_text(json.dumps(
            {k: model[k] for k in ("encoding", "categorical", "columns", "task", "estimator",
                                   "num_class")}, indent=2))
        return "model.joblib"

    def load(self, directory: Path) -> dict[str, Any]:
        return joblib.load(directory / "model.joblib")
