"""The UI's data shaping (serve_app.ui.views) and the curve points the runner records for its
charts (railyard.training.metrics)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from railyard.jobstore.tables import JobEvent, utcnow
from railyard.training.metrics import (
    CHART_POINTS,
    curve_points,
    predicted_vs_actual,
    write_model_reports,
)
from serve_app.ui import views


def event(at, kind, phase=None, message=None):
    return JobEvent(job_id="j", at=at, kind=kind, phase=phase, message=message)


def test_gantt_has_one_bar_per_phase_per_attempt():
    t0 = utcnow() - timedelta(seconds=60)
    evs = [event(t0, "attempt_started"),
           event(t0 + timedelta(seconds=1), "phase_started", "fetch"),
           event(t0 + timedelta(seconds=3), "phase_finished", "fetch"),
           event(t0 + timedelta(seconds=3), "phase_started", "train"),
           event(t0 + timedelta(seconds=4), "attempt_started"),
           event(t0 + timedelta(seconds=5), "phase_started", "fetch"),
           event(t0 + timedelta(seconds=6), "phase_finished", "fetch")]
    bars = views.attempt_phases(evs, t0)
    assert [(b["attempt"], b["phase"], b["start"]) for b in bars] == \
        [(1, "fetch", 1.0), (1, "train", 3.0), (2, "fetch", 5.0)]
    assert bars[0]["end"] == 3.0 and bars[2]["end"] == 6.0
    assert bars[1].get("running") and bars[1]["end"] >= 3.0   # never finished: runs to now


def test_trials_best_so_far_skips_stopped_and_failed_trials():
    trials = [{"trial_id": "a", "status": "SUCCEEDED", "metrics": {"auc": 0.7},
               "params": {"max_depth": 2}},
              {"trial_id": "b", "status": "STOPPED", "metrics": {"auc": 0.9},
               "params": {"max_depth": 3}},
              {"trial_id": "c", "status": "FAILED", "metrics": {}, "params": {"max_depth": 4}},
              {"trial_id": "d", "status": "SUCCEEDED", "metrics": {"auc": 0.8},
               "params": {"max_depth": 5, "eta": 0.1}}]
    view = views.trial_view(trials, "auc", "max")
    assert view["values"] == [0.7, 0.9, None, 0.8]
    assert view["best_so_far"] == [0.7, 0.7, 0.7, 0.8]
    assert view["status"] == ["SUCCEEDED", "STOPPED", "FAILED", "SUCCEEDED"]
    assert view["params"] == {"eta": [None, None, None, 0.1], "max_depth": [2, 3, 4, 5]}
    assert views.trial_view(trials, "auc", "min")["best_so_far"] == [0.7, 0.7, 0.7, 0.7]


def test_compare_marks_the_fields_that_differ():
    rows = views.compare_rows([{"train": {"workflow_name": "xgboost", "label": "y"}},
                               {"train": {"workflow_name": "lightgbm", "label": "y"}}])
    assert {r["field"]: r["differs"] for r in rows} == \
        {"train.label": False, "train.workflow_name": True}


def test_filters_match_model_name_and_every_word():
    from railyard.jobstore.tables import Job

    job = Job(id="abc123", owner="t", project="p", trainer="me", model_name="Fraud_Model",
              workflow_name="xgboost", spec={}, status="FAILED", error="out of memory")
    assert views.Filters(model="fraud").matches(job)
    assert not views.Filters(model="churn").matches(job)
    assert views.Filters(q="xgboost memory").matches(job)
    assert not views.Filters(q="xgboost lightgbm").matches(job)


def test_progress_reads_json_rounds_and_ignores_text():
    t0 = utcnow()
    evs = [event(t0, "progress", "train", "waiting, 3s left"),
           event(t0, "progress", "train", '{"round": 1, "train_logloss": 0.6}'),
           event(t0, "progress", "train", '{"round": 2, "train_logloss": 0.5}')]
    assert views.progress_points(evs) == {"round": [1.0, 2.0], "train_logloss": [0.6, 0.5]}
    assert views.progress_points(evs[:1]) == {}


def test_progress_reads_the_builtin_workflows_round_lines():
    """What xgboost/lightgbm (`iteration N/M {json}`) and torch (`epoch N/M k=v`) report."""
    t0 = utcnow()
    boosted = [event(t0, "progress", "train", f'iteration {n}/3 {{"holdout-auc": 0.{n}}}')
               for n in (1, 2, 3)]
    assert views.progress_points(boosted) == {"round": [1.0, 2.0, 3.0],
                                              "holdout-auc": [0.1, 0.2, 0.3]}
    epochs = [event(t0, "progress", "train", "epoch 1/20 train_loss=0.50000 val_loss=4e-01"),
              event(t0, "progress", "train", "early stop at epoch 9; best epoch 7")]
    assert views.progress_points(epochs) == {"round": [1.0], "train_loss": [0.5],
                                             "val_loss": [0.4]}


def test_main_metric_picks_the_task_metric():
    assert views.main_metric({"holdout": {"rows": 9, "logloss": 0.3, "auc": 0.8}}) == \
        ("auc", 0.8)
    assert views.main_metric({"holdout": {"rmse": 2}}) == ("rmse", 2.0)
    assert views.main_metric({}) is None


def test_curve_points_are_capped_and_keep_the_ends():
    x = np.linspace(0, 1, 10_000)
    points = curve_points(x, x ** 2)
    assert len(points["x"]) == CHART_POINTS == len(points["y"])
    assert points["x"][0] == 0.0 and points["x"][-1] == 1.0 and points["y"][-1] == 1.0
    assert len(curve_points(x[:5], x[:5])["x"]) == 5


def test_binary_reports_carry_roc_and_pr_points(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 5000).astype(float)
    scores = np.clip(y * 0.3 + rng.random(5000) * 0.7, 0, 1)
    reports = write_model_reports(tmp_path, task="binary", y_true=y, y_score=scores,
                                  importance={"a": 2.0, "b": 1.0})
    curves = reports["curves"]
    assert 2 < len(curves["roc_points"]["x"]) <= CHART_POINTS
    assert curves["roc_points"]["x"][0] == 0.0 and curves["roc_points"]["y"][-1] == 1.0
    assert curves["pr_points"]["x"][0] == 0.0 and curves["pr_points"]["y"][0] == 1.0
    assert (tmp_path / "roc_curve.png").exists()


def test_regression_reports_carry_a_predicted_vs_actual_sample(tmp_path):
    y = np.arange(1000, dtype=float)
    y[3] = np.nan
    reports = write_model_reports(tmp_path, task="regression", y_true=y, y_score=y * 1.1)
    pva = reports["predicted_vs_actual"]
    assert len(pva["x"]) == CHART_POINTS and not any(np.isnan(pva["x"]))
    assert all(abs(p - 1.1 * a) < 1e-3 for a, p in zip(pva["x"], pva["y"], strict=True))
    assert predicted_vs_actual(y[:10], y[:10])["x"] == [0.0, 1.0, 2.0, 4.0, 5.0, 6.0, 7.0, 8.0,
                                                        9.0]


def test_a_missing_chromium_fails_the_browser_tests_naming_the_install_step(monkeypatch):
    import pytest

    from tests.integration import browser

    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(browser.shutil, "which", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y chromium"):
        browser.require_chromium()
