"""railyard.training.metrics' binary metrics equal scikit-learn's, ties and edge cases included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from railyard.training.metrics import _EPS, THRESHOLD, binary_metrics, holdout_metrics


def sklearn_binary(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    out = {}
    if len(np.unique(y)) == 2:
        out["auc"] = skm.roc_auc_score(y, scores)
        out["pr_auc"] = skm.average_precision_score(y, scores)
    out["logloss"] = skm.log_loss(y, np.clip(scores, _EPS, 1 - _EPS), labels=[0, 1])
    predicted = (scores >= THRESHOLD).astype("float64")
    out["accuracy"] = float(np.mean(predicted == y))
    out["precision"] = skm.precision_score(y, predicted, zero_division=0)
    out["recall"] = skm.recall_score(y, predicted, zero_division=0)
    out["f1"] = skm.f1_score(y, predicted, zero_division=0)
    return out


@pytest.mark.parametrize("seed", range(12))
def test_binary_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    y = (rng.random(n) < rng.uniform(0.05, 0.95)).astype("float64")
    scores = rng.random(n)
    if seed % 3 == 0:
        scores = np.round(scores, 1)          # many tied scores
    if seed % 4 == 1:
        scores = np.clip(scores + 0.4 * y - 0.2, 0, 1)   # informative scores
    ours, theirs = binary_metrics(y, scores), sklearn_binary(y, scores)
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("y, scores", [
    (np.array([1.0, 1.0, 1.0]), np.array([0.2, 0.7, 0.9])),      # one class only: no AUC
    (np.array([0.0, 0.0]), np.array([0.1, 0.9])),
    (np.array([0.0, 1.0]), np.array([0.5, 0.5])),                # all tied
    (np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 1.0])),  # perfect, clipped
])
def test_binary_metrics_edge_cases_equal_sklearn(y: np.ndarray, scores: np.ndarray) -> None:
    ours, theirs = binary_metrics(y, scores), sklearn_binary(y, scores)
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        assert ours[name] == pytest.approx(value, abs=1e-12), name


def test_non_finite_predictions_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        holdout_metrics("binary", np.array([0.0, 1.0]), np.array([0.1, np.nan]))
    # A NaN label's row is left out, whatever its prediction.
    assert holdout_metrics("regression", np.array([1.0, np.nan]),
                           np.array([1.5, np.inf]))["rmse"] == pytest.approx(0.5)
