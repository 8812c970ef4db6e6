"""Holdout metrics by task."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

_EPS = 1e-7


def holdout_metrics(task: str, y_true: np.ndarray, y_score: np.ndarray,
                    *, regression_objective: bool = False) -> dict[str, float]:
    """AUC and log loss for binary labels; RMSE/MAE/R² for regression (and for binary labels
    trained with a regression objective); accuracy and log loss for multiclass."""
    keep = ~np.isnan(y_true)
    y_true, y_score = y_true[keep], y_score[keep]
    out: dict[str, float] = {"rows": float(len(y_true))}
    if len(y_true) == 0:
        return out
    if task == "binary":
        scores = y_score if y_score.ndim == 1 else y_score[:, -1]
        if len(np.unique(y_true)) == 2:
            out["auc"] = float(skm.roc_auc_score(y_true, scores))
            out["pr_auc"] = float(skm.average_precision_score(y_true, scores))
        out["logloss"] = float(skm.log_loss(y_true, np.clip(scores, _EPS, 1 - _EPS),
                                            labels=[0, 1]))
        if regression_objective:
            out["rmse"] = float(np.sqrt(np.mean((scores - y_true) ** 2)))
    elif task == "multiclass":
        probs = y_score if y_score.ndim == 2 else None
        predicted = probs.argmax(axis=1) if probs is not None else np.rint(y_score)
        out["accuracy"] = float(np.mean(predicted == y_true))
        out["macro_f1"] = float(skm.f1_score(y_true, predicted, average="macro"))
        if probs is not None:
            out["logloss"] = float(skm.log_loss(y_true, np.clip(probs, _EPS, 1),
                                                labels=list(range(probs.shape[1]))))
    else:
        out["rmse"] = float(np.sqrt(np.mean((y_score - y_true) ** 2)))
        out["mae"] = float(np.mean(np.abs(y_score - y_true)))
        out["r2"] = float(skm.r2_score(y_true, y_score)) if len(y_true) > 1 else float("nan")
    return out
