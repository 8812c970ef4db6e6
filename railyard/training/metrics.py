"""Holdout metrics by task, and the report files (curves, feature importance) of a model.

| task        | metrics                                                              |
| ----------- | -------------------------------------------------------------------- |
| binary      | auc, pr_auc, logloss, accuracy, precision, recall, f1 (at 0.5)       |
| multiclass  | accuracy, macro_f1, logloss                                          |
| regression  | rmse, mae, r2                                                        |
| forecasting | mape, smape (in %), rmse, mae                                        |
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import sklearn
from sklearn import metrics as skm

_EPS = 1e-7
THRESHOLD = 0.5
CHART_POINTS = 200      # points per curve kept in the manifest for interactive charts


def holdout_metrics(task: str, y_true: np.ndarray, y_score: np.ndarray,
                    *, regression_objective: bool = False) -> dict[str, float]:
    """Metrics of ``y_score`` against ``y_true`` for ``task`` (see the module table); rows with
    a NaN label are left out. Binary labels trained with a regression objective also get RMSE."""
    # The scores are checked here once, so scikit-learn's own argument validation is skipped:
    # it cost more than the metrics themselves on a small holdout (~18 ms of a tiny sweep
    # trial's 20 ms) and repeated finiteness passes over a large one.
    if not np.isfinite(y_score[~np.isnan(y_true)]).all():
        raise ValueError("the model's holdout predictions contain NaN or infinite values "
                         "(training diverged?); lower the learning rate or check the features")
    with sklearn.config_context(skip_parameter_validation=True, assume_finite=True):
        return _holdout_metrics(task, y_true, y_score,
                                regression_objective=regression_objective)


def _holdout_metrics(task: str, y_true: np.ndarray, y_score: np.ndarray,
                     *, regression_objective: bool) -> dict[str, float]:
    keep = ~np.isnan(y_true)
    y_true, y_score = y_true[keep], y_score[keep]
    out: dict[str, float] = {"rows": float(len(y_true))}
    if len(y_true) == 0:
        return out
    if task == "binary":
        scores = y_score if y_score.ndim == 1 else y_score[:, -1]
        out.update(binary_metrics(y_true, scores))
        if regression_objective:
            out["rmse"] = float(np.sqrt(np.mean((scores - y_true) ** 2)))
    elif task == "multiclass":
        probs = y_score if y_score.ndim == 2 else None
        predicted = probs.argmax(axis=1) if probs is not None else np.rint(y_score)
        out["accuracy"] = float(np.mean(predicted == y_true))
        out["macro_f1"] = float(skm.f1_score(y_true, predicted, average="macro"))
        if probs is not None:
            out["logloss"] = _multiclass_logloss(y_true, probs)
    elif task == "forecasting":
        out.update(forecast_errors(y_true, y_score))
    else:
        out["rmse"] = float(np.sqrt(np.mean((y_score - y_true) ** 2)))
        out["mae"] = float(np.mean(np.abs(y_score - y_true)))
        out["r2"] = float(skm.r2_score(y_true, y_score)) if len(y_true) > 1 else float("nan")
    return out


def binary_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """AUC and PR-AUC (when both classes occur), log loss, and accuracy, precision, recall and
    F1 at ``THRESHOLD``, for 0/1 labels; the same values as scikit-learn's ``roc_auc_score``,
    ``average_precision_score``, ``log_loss`` and ``precision/recall/f1_score`` (checked in
    tests/unit/training/test_metrics.py). Written out because scikit-learn's input checks cost
    ~15 ms per call set, most of a tiny sweep trial."""
    y = (y_true == 1).astype("float64")
    out: dict[str, float] = {}
    curves = binary_curves(y, scores)
    if curves is not None:
        out["auc"], out["pr_auc"] = curves["auc"], curves["pr_auc"]
    positives = float(y.sum())
    p = np.clip(scores, _EPS, 1 - _EPS)
    out["logloss"] = float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    predicted = scores >= THRESHOLD
    tp = float(np.sum(predicted & (y == 1)))
    fp, fn = float(np.sum(predicted)) - tp, positives - tp
    out["accuracy"] = float(np.mean(predicted == (y == 1)))
    out["precision"] = tp / (tp + fp) if tp + fp else 0.0
    out["recall"] = tp / positives if positives else 0.0
    out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    return out


def binary_curves(y: np.ndarray, scores: np.ndarray) -> dict[str, Any] | None:
    """ROC and precision-recall curves (one point per distinct score, highest first) with
    their areas, from one sort; None unless both classes occur. ``y`` holds 0/1."""
    positives = float(y.sum())
    negatives = float(len(y) - positives)
    if not positives or not negatives:
        return None
    order = np.argsort(-scores, kind="mergesort")
    ranked_scores, ranked = scores[order], y[order]
    # The last row of each run of tied scores: one point of the curves per threshold.
    ends = np.r_[np.flatnonzero(np.diff(ranked_scores)), len(ranked) - 1]
    true_pos = np.cumsum(ranked)[ends]
    false_pos = ends + 1 - true_pos
    tpr, fpr = np.r_[0.0, true_pos] / positives, np.r_[0.0, false_pos] / negatives
    precision, recall = true_pos / (true_pos + false_pos), true_pos / positives
    return {"fpr": fpr, "tpr": tpr, "precision": precision, "recall": recall,
            "auc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)),
            "pr_auc": float(np.sum(np.diff(np.r_[0.0, recall]) * precision))}


def forecast_errors(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAPE and sMAPE in percent, RMSE and MAE. MAPE skips rows whose actual value is 0."""
    error = y_pred - y_true
    nonzero = y_true != 0
    denominator = np.abs(y_true) + np.abs(y_pred)
    smape_terms = np.where(denominator == 0, 0.0,
                           2 * np.abs(error) / np.where(denominator == 0, 1.0, denominator))
    return {
        "mape": float(100 * np.mean(np.abs(error[nonzero] / y_true[nonzero])))
        if nonzero.any() else float("nan"),
        "smape": float(100 * np.mean(smape_terms)),
        "rmse": float(np.sqrt(np.mean(error ** 2))),
        "mae": float(np.mean(np.abs(error))),
    }


# --------------------------------------------------------------------------- reports

def permutation_importance(predict: Callable[[pa.Table], np.ndarray], table: pa.Table,
                           features: list[str], y_true: np.ndarray, task: str,
                           *, seed: int = 0) -> dict[str, float]:
    """How much the task's main error grows when each feature's values are shuffled
    (for models without a native importance); larger means more important."""
    keep = ~np.isnan(y_true)
    table, y_true = table.filter(pa.array(keep)), y_true[keep]
    if table.num_rows < 2:
        return {}
    rng = np.random.default_rng(seed)
    base = _loss(task, y_true, predict(table))
    importance = {}
    for name in features:
        column = table[name].combine_chunks().take(pa.array(rng.permutation(table.num_rows)))
        shuffled = table.set_column(table.schema.get_field_index(name), name, column)
        importance[name] = max(0.0, _loss(task, y_true, predict(shuffled)) - base)
    return importance


def _loss(task: str, y_true: np.ndarray, y_score: np.ndarray) -> float:
    if task == "binary":
        scores = y_score if y_score.ndim == 1 else y_score[:, -1]
        return float(skm.log_loss(y_true, np.clip(scores, _EPS, 1 - _EPS), labels=[0, 1]))
    if task == "multiclass" and y_score.ndim == 2:
        return _multiclass_logloss(y_true, y_score)
    return float(np.sqrt(np.mean((y_score - y_true) ** 2)))


def _multiclass_logloss(y_true: np.ndarray, probs: np.ndarray) -> float:
    clipped = np.clip(probs, _EPS, 1)
    return float(skm.log_loss(y_true, clipped / clipped.sum(axis=1, keepdims=True),
                              labels=list(range(probs.shape[1]))))


# the tasks whose holdout predictions the reports chart: ROC/PR curves for binary
# classifiers, predicted-vs-actual points for regression and forecasting
CHARTED_TASKS = ("binary", "regression", "forecasting")


def write_model_reports(directory: Path, *, task: str, y_true: np.ndarray | None = None,
                        y_score: np.ndarray | None = None,
                        importance: dict[str, float] | None = None,
                        importance_type: str = "gain", top: int = 30) -> dict[str, Any]:
    """Write ``feature_importance.json``/``.png`` and, for binary classifiers with both classes
    in the holdout, ``roc_curve.png`` and ``pr_curve.png`` into ``directory``; return the
    manifest's ``reports`` entry (file names, the top features, and the curves' points, at
    most CHART_POINTS each, for interactive charts). Given regression or forecasting labels and
    predictions, the entry gets a sample of predicted-vs-actual points."""
    reports: dict[str, Any] = {}
    if importance:
        ranked = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)
        (directory / "feature_importance.json").write_text(json.dumps(
            {"type": importance_type, "importance": dict(ranked)}, indent=2))
        _bar_chart(directory / "feature_importance.png", ranked[:top],
                   f"feature importance ({importance_type})")
        reports["feature_importance"] = {
            "type": importance_type, "file": "feature_importance.json",
            "plot": "feature_importance.png",
            "top": [{"feature": k, "importance": float(v)} for k, v in ranked[:10]]}
    if task == "binary" and y_true is not None and y_score is not None:
        keep = ~np.isnan(y_true)
        y, scores = y_true[keep], (y_score if y_score.ndim == 1 else y_score[:, -1])[keep]
        if len(np.unique(y)) == 2:
            reports["curves"] = _binary_curves(directory, y, scores)
    elif task in ("regression", "forecasting") and y_true is not None and y_score is not None \
            and y_score.ndim == 1:
        reports["predicted_vs_actual"] = predicted_vs_actual(y_true, y_score)
    return reports


def curve_points(x: np.ndarray, y: np.ndarray, points: int = CHART_POINTS) -> dict[str, list]:
    """A curve as at most ``points`` JSON-ready (x, y) pairs, its ends kept, rounded to 5
    digits: what the web UI draws (a few kB in the manifest, not a point per holdout row)."""
    x, y = _thin(np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64"), points)
    return {"x": [round(float(v), 5) for v in x], "y": [round(float(v), 5) for v in y]}


def predicted_vs_actual(y_true: np.ndarray, y_pred: np.ndarray, points: int = CHART_POINTS,
                        *, seed: int = 0) -> dict[str, list]:
    """At most ``points`` holdout rows (a seeded sample) as actual ``x`` and predicted ``y``
    values, rows with a NaN label left out: the data of a predicted-vs-actual chart."""
    keep = ~np.isnan(y_true)
    y_true, y_pred = y_true[keep], y_pred[keep]
    if len(y_true) > points:
        rows = np.sort(np.random.default_rng(seed).choice(len(y_true), points, replace=False))
        y_true, y_pred = y_true[rows], y_pred[rows]
    return {"x": [round(float(v), 5) for v in y_true],
            "y": [round(float(v), 5) for v in y_pred]}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _bar_chart(path: Path, ranked: list[tuple[str, float]], title: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(ranked) + 1.2))
    names = [name for name, _ in reversed(ranked)]
    ax.barh(names, [value for _, value in reversed(ranked)], color="#4c72b0")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _binary_curves(directory: Path, y_true: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    plt = _pyplot()
    curves = binary_curves((y_true == 1).astype("float64"), scores)
    assert curves is not None  # the caller checked that both classes occur
    auc, pr_auc = curves["auc"], curves["pr_auc"]
    for name, (x, y, xlabel, ylabel, label) in {
        "roc_curve.png": (curves["fpr"], curves["tpr"], "false positive rate",
                          "true positive rate", f"ROC (AUC {auc:.3f})"),
        "pr_curve.png": (np.r_[0.0, curves["recall"]], np.r_[1.0, curves["precision"]],
                         "recall", "precision", f"precision-recall (AP {pr_auc:.3f})"),
    }.items():
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.plot(*_thin(x, y), label=label)
        if name == "roc_curve.png":
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
        ax.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02), title=label)
        # Fixed margins: the labels are known, and tight_layout's text measuring was a third
        # of the plot's cost.
        fig.subplots_adjust(left=0.14, bottom=0.11, right=0.96, top=0.93)
        fig.savefig(directory / name, dpi=100)
        plt.close(fig)
    return {"roc": "roc_curve.png", "precision_recall": "pr_curve.png",
            "auc": float(auc), "pr_auc": float(pr_auc),
            # the curves' points, for interactive charts (the web UI reads them)
            "roc_points": curve_points(curves["fpr"], curves["tpr"]),
            "pr_points": curve_points(np.r_[0.0, curves["recall"]],
                                      np.r_[1.0, curves["precision"]])}


def _thin(x: np.ndarray, y: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most ``points`` evenly spaced points of a curve, its ends kept: a 500-pixel plot
    shows no more, and drawing a point per holdout row cost ~0.1 s at 100k rows."""
    if len(x) <= points:
        return x, y
    keep = np.linspace(0, len(x) - 1, points).astype(int)
    return x[keep], y[keep]
