"""Built-in workflows (lightgbm, sklearn, torch) and the examples (TimeSeriesForecaster,
Word2Vec) on small generated data, in-process: fit, evaluate, reports, save/load, parameter
errors; metrics by task; TrainingData's batch helpers. The data and workflows are built by
tests/builders.py."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from railyard.data.fetch import plan_read
from railyard.errors import SpecError
from railyard.spec import TrainingSpec
from railyard.training.metrics import forecast_errors, holdout_metrics, write_model_reports
from railyard.training.registry import get_workflow
from railyard.training.workflow import TrainContext
from tests.builders import (
    FAST,
    FEATURES,
    FORECAST,
    FRUITS,
    corpus,
    forecast_data,
    make,
    sales_table,
    split,
    tabular_table,
)

PNG = b"\x89PNG\r\n\x1a\n"
LABELS = {"binary": "y_binary", "multiclass": "y_multi", "regression": "y_reg"}


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- registry, params

def test_builtins_and_examples_are_registered_with_their_framework():
    frameworks = {name: get_workflow(name).framework for name in
                  ("lightgbm", "sklearn", "torch", "TimeSeriesForecaster", "Word2Vec")}
    assert frameworks == {"lightgbm": "lightgbm", "sklearn": "sklearn", "torch": "torch",
                          "TimeSeriesForecaster": "lightgbm", "Word2Vec": "torch"}
    assert make("TimeSeriesForecaster", "y_reg", ["x1"], booster="xgboost").framework \
        == "xgboost"


@pytest.mark.parametrize("name, typo, suggestion", [
    ("lightgbm", "num_leave", "num_leaves"),
    ("torch", "hidden_size", "hidden_sizes"),
    ("TimeSeriesForecaster", "lag", "lags"),
    ("Word2Vec", "embeding_dim", "embedding_dim"),
    ("sklearn", "n_estimator", "n_estimators"),
])
def test_unknown_parameters_get_a_did_you_mean(name, typo, suggestion):
    params = {"estimator": "RandomForestClassifier"} if name == "sklearn" else {}
    with pytest.raises(SpecError) as info:
        get_workflow(name).parse_params({**params, typo: 1})
    assert f"did you mean {suggestion!r}" in info.value.message
    assert info.value.details[0]["field"] == f"train.custom_params.{typo}"


def test_native_names_are_aliases():
    lgbm = get_workflow("lightgbm").parse_params(
        {"num_iterations": 7, "lambda_l2": 2.0, "feature_fraction": 0.5, "eta": 0.2})
    assert lgbm.n_estimators == 7
    assert lgbm.booster_params() == {"lambda_l2": 2.0, "feature_fraction": 0.5,
                                     "learning_rate": 0.2, "verbosity": -1}
    assert get_workflow("torch").parse_params({"epochs": 3, "lr": 0.1}).max_epochs == 3
    assert get_workflow("Word2Vec").parse_params({"vector_size": 8}).embedding_dim == 8


def test_sklearn_checks_estimator_parameters_against_the_estimator():
    parse = get_workflow("sklearn").parse_params
    assert parse({"estimator": "Ridge", "alpha": 2.0}).estimator_params() == {"alpha": 2.0}
    with pytest.raises(SpecError) as info:  # valid for forests, not for logistic regression
        parse({"estimator": "LogisticRegression", "max_depth": 3})
    assert info.value.details[0]["field"] == "train.custom_params.max_depth"
    assert "for LogisticRegression" in info.value.message
    assert "Valid names: C, categorical_encoding, class_weight" in info.value.message
    with pytest.raises(SpecError) as info:
        parse({"estimator": "RandomForestClassifier", "n_estimators": -1})
    assert info.value.details[0]["field"] == "train.custom_params.n_estimators"
    assert "range [1, inf)" in info.value.message
    with pytest.raises(SpecError) as info:
        parse({"estimator": "SVC"})
    assert info.value.details[0]["field"] == "train.custom_params.estimator"
    # auto may become either HistGradientBoosting estimator: a regressor-only value is fine
    assert parse({"loss": "absolute_error"}).estimator == "auto"


# --------------------------------------------------------------------------- tabular built-ins

EXPECTED = {"binary": ({"auc", "pr_auc", "logloss", "precision", "recall", "f1", "accuracy"},
                       "auc", 0.75),
            "multiclass": ({"accuracy", "macro_f1", "logloss"}, "accuracy", 0.85),
            "regression": ({"rmse", "mae", "r2"}, "r2", 0.85)}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("name", ["lightgbm", "sklearn", "torch"])
def test_tabular_builtin_fits_evaluates_reports_saves_and_loads(name, task, tmp_path):
    table = tabular_table()
    data = split(table, LABELS[task])
    workflow = make(name, LABELS[task], **FAST[name])
    progress: list[str] = []
    model = workflow.fit(data, TrainContext(on_progress=progress.append, min_interval_s=0))
    assert progress
    metrics = workflow.evaluate(model, data)
    keys, headline, floor = EXPECTED[task]
    assert keys <= set(metrics) and metrics["rows"] == 400
    assert metrics[headline] > floor, metrics
    main = workflow.save(model, tmp_path)
    reports = workflow.write_reports(model, data, tmp_path)
    assert (tmp_path / main).is_file()
    assert (tmp_path / "feature_importance.png").read_bytes().startswith(PNG)
    importance = json.loads((tmp_path / "feature_importance.json").read_text())["importance"]
    assert set(importance) == set(FEATURES) and max(importance, key=importance.get) in {"x1", "c"}
    assert ("curves" in reports) == (task == "binary")
    assert ("predicted_vs_actual" in reports) == (task == "regression")
    if task == "regression":   # the UI's chart: a sample of holdout rows, actual vs predicted
        points = reports["predicted_vs_actual"]
        assert len(points["x"]) == len(points["y"]) == 200
    if task == "binary":
        assert (tmp_path / "roc_curve.png").read_bytes().startswith(PNG)
        assert (tmp_path / "pr_curve.png").read_bytes().startswith(PNG)
    json.dumps(reports)  # goes into the manifest
    loaded = workflow.load(tmp_path)
    scores = workflow.predict(model, data.holdout)
    assert np.array_equal(workflow.predict(loaded, data.holdout), scores)
    assert scores.shape == ((400, 3) if task == "multiclass" else (400,))


@pytest.mark.parametrize("name", ["lightgbm", "sklearn", "torch"])
def test_unseen_categories_and_nulls_at_predict_time(name):
    workflow = make(name, "y_binary", **FAST[name])
    model = workflow.fit(split(tabular_table(600), "y_binary"), TrainContext())
    odd = pa.table({"x1": [0.1, None], "c": ["purple", None], "x2": [None, 0.5],
                    "flag": [True, None]})
    scores = workflow.predict(model, odd)
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("params", [
    {"estimator": "LogisticRegression", "C": 0.5},
    {"estimator": "RandomForestClassifier", "n_estimators": 20, "max_depth": 6},
    {"estimator": "GradientBoostingClassifier", "n_estimators": 20,
     "categorical_encoding": "one_hot"},
    {"estimator": "HistGradientBoostingClassifier", "max_iter": 30},
])
def test_sklearn_estimators_and_encodings(params):
    workflow = make("sklearn", "y_binary", **params)
    data = split(tabular_table(), "y_binary")
    model = workflow.fit(data, TrainContext())
    expected = "one_hot" if params["estimator"] == "LogisticRegression" \
        or params.get("categorical_encoding") == "one_hot" else "ordinal"
    assert model["categorical"] == expected
    assert ("c=red" in model["columns"]) == (expected == "one_hot")
    assert model["pipeline"][-1].get_params()["random_state"] == 0
    assert workflow.evaluate(model, data)["auc"] > 0.75


def test_sklearn_estimator_must_fit_the_task():
    workflow = make("sklearn", "y_reg", estimator="LogisticRegression")
    with pytest.raises(ValueError, match="pick a regressor"):
        workflow.fit(split(tabular_table(300), "y_reg", holdout=50), TrainContext())


def test_torch_early_stopping_one_hot_and_device():
    workflow = make("torch", "y_reg", categorical_encoding="one_hot", max_epochs=200,
                    patience=2, learning_rate=0.05, hidden_sizes=[16], batch_size=256)
    model = workflow.fit(split(tabular_table(), "y_reg"), TrainContext())
    assert model["config"]["one_hot"] and model["config"]["best_epoch"] < 200
    assert model["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            make("torch", "y_reg", device="cuda").fit(
                split(tabular_table(100), "y_reg", holdout=20), TrainContext())


# --------------------------------------------------------------------------- forecaster

def test_forecaster_prepare_builds_lags_over_the_whole_sorted_table():
    workflow = make("TimeSeriesForecaster", "sales", ["promo", "lag_14"], **FORECAST)
    table = sales_table(days=60)
    prepared = workflow.prepare(table)
    assert prepared.num_rows == table.num_rows
    frame = prepared.to_pandas().sort_values(["store", "date"])
    for _, series in frame.groupby("store"):
        assert series["lag_1"].iloc[1:].tolist() == series["sales"].iloc[:-1].tolist()
        assert series["lag_14"].iloc[14:].tolist() == series["sales"].iloc[:-14].tolist()
        assert np.isnan(series["lag_7"].iloc[:7]).all()
        expected = series["sales"].shift(1).rolling(7, min_periods=1).mean()
        assert np.allclose(series["rolling_mean_7"], expected, equal_nan=True)
        assert (series["day_of_week"] == series["date"].dt.day_of_week).all()
    assert workflow.prepare(prepared) is prepared  # already built: unchanged


def test_forecaster_derived_columns_pass_spec_validation():
    spec = TrainingSpec.model_validate({
        "model_name": "f", "owner": "me",
        "data": {"features": [{"names": ["sales", "promo"], "source": "local", "path": "/x"}],
                 "date_column": "date"},
        "train": {"workflow_name": "TimeSeriesForecaster", "label": "sales",
                  "classifier_features": ["promo", "lag_7", "rolling_mean_28", "day_of_week"]}})
    schema = pa.schema([("date", pa.timestamp("us")), ("sales", pa.float64()),
                        ("promo", pa.int64())])
    cls = get_workflow("TimeSeriesForecaster")
    plan = plan_read(spec, derived=cls.derived_columns, schema=schema)
    assert set(plan.columns) == {"sales", "promo", "date"}


def test_forecaster_rejects_lags_shorter_than_the_horizon_and_the_label_as_feature():
    with pytest.raises(ValueError, match="at least the horizon"):
        make("TimeSeriesForecaster", "sales", ["lag_2"], horizon=3).prepare(sales_table(30))
    with pytest.raises(ValueError, match="lists the label"):
        make("TimeSeriesForecaster", "sales", ["sales"]).prepare(sales_table(30))


@pytest.mark.parametrize("booster", ["lightgbm", "xgboost"])
def test_forecaster_beats_the_naive_forecast_and_round_trips(booster, tmp_path):
    workflow = make("TimeSeriesForecaster", "sales", ["promo", "day_of_week"],
                    **FORECAST, booster=booster)
    table = sales_table()
    data = forecast_data(workflow, table)
    assert workflow.task(data) == "forecasting"
    model = workflow.fit(data, TrainContext())
    metrics = workflow.evaluate(model, data)
    assert {"mape", "smape", "rmse", "mae", "naive_mape", "naive_mae"} <= set(metrics)
    assert metrics["mae"] < 0.6 * metrics["naive_mae"], metrics
    assert metrics["mape"] < 5
    workflow.save(model, tmp_path)
    assert "feature_importance" in workflow.write_reports(model, data, tmp_path)
    loaded = workflow.load(tmp_path)
    # From raw history (no lag columns) the loaded model builds the same features.
    raw = workflow.predict(loaded, table)
    assert np.allclose(raw, workflow.predict(model, workflow.prepare(table)))


def test_forecaster_forecasts_appended_future_rows():
    workflow = make("TimeSeriesForecaster", "sales", ["promo"], **FORECAST)
    table = sales_table(200, stores=1)
    model = workflow.fit(forecast_data(workflow, table), TrainContext())
    last = table["date"].to_numpy().max()
    future = pa.table({"date": pa.array([last + np.timedelta64(1, "D")]), "store": ["s0"],
                       "promo": [0], "sales": pa.array([None], pa.float64())})
    scores = workflow.predict(model, pa.concat_tables([table, future]))
    assert np.isfinite(scores[-1]) and 40 < scores[-1] < 90


# --------------------------------------------------------------------------- word2vec

def test_word2vec_learns_related_words_and_round_trips(tmp_path):
    workflow = make("Word2Vec", "text", ["text"], epochs=3, embedding_dim=16, batch_size=512,
                    learning_rate=0.02)
    data = split(corpus(), "text", ["text"], holdout=300)
    model = workflow.fit(data, TrainContext())
    metrics = workflow.evaluate(model, data)
    assert metrics["vocab_size"] == 25 and metrics["holdout_coverage"] == 1.0
    assert metrics["final_loss"] < 2.8 and metrics["holdout_loss"] < 2.8
    assert workflow.task(data) == "embedding"
    assert workflow.save(model, tmp_path) == "embeddings.parquet"
    reports = workflow.write_reports(model, data, tmp_path)
    neighbours = json.loads((tmp_path / reports["neighbours"]).read_text())
    same_kind = sum(n["token"] in FRUITS for n in neighbours["apple"][:4])
    assert same_kind >= 3, neighbours["apple"]
    loaded = workflow.load(tmp_path)
    rows = pa.table({"text": ["cat", "apple pear", "zebra", None]})
    vectors = workflow.predict(loaded, rows)
    assert vectors.shape == (4, 16) and vectors.dtype == np.float32
    assert np.isnan(vectors[2:]).all() and np.isfinite(vectors[:2]).all()
    assert np.array_equal(vectors, workflow.predict(model, rows), equal_nan=True)
    pear = workflow.predict(loaded, pa.table({"text": ["apple", "pear"]}))
    assert np.allclose(vectors[1], pear.mean(axis=0))


def test_word2vec_token_mode_and_min_count():
    tokens = pa.table({"token": ["a", "b", "c", "d"] * 200 + ["rare"]})
    workflow = make("Word2Vec", "token", ["token"], epochs=1, embedding_dim=4)
    model = workflow.fit(split(tokens, "token", ["token"], holdout=100), TrainContext())
    assert model["config"]["mode"] == "tokens" and sorted(model["vocab"]) == list("abcd")
    with pytest.raises(ValueError, match="min_count"):
        make("Word2Vec", "token", ["token"], min_count=10_000).fit(
            split(tokens, "token", ["token"], holdout=100), TrainContext())


# --------------------------------------------------------------------------- metrics

def test_metrics_by_task():
    y = np.array([0, 0, 1, 1, np.nan])
    binary = holdout_metrics("binary", y, np.array([0.1, 0.6, 0.4, 0.9, 0.5]))
    assert binary["rows"] == 4 and binary["auc"] == 0.75
    assert binary["precision"] == 0.5 and binary["recall"] == 0.5 and binary["accuracy"] == 0.5
    multi = holdout_metrics("multiclass", np.array([0, 1, 2, 2.]),
                            np.array([[.8, .1, .1], [.2, .7, .1], [.1, .1, .8], [.6, .3, .1]]))
    assert multi["accuracy"] == 0.75 and set(multi) == {"rows", "accuracy", "macro_f1",
                                                        "logloss"}
    regression = holdout_metrics("regression", np.array([1., 2., 3.]), np.array([1., 2., 4.]))
    assert regression["mae"] == pytest.approx(1 / 3) and regression["r2"] == pytest.approx(0.5)
    forecast = holdout_metrics("forecasting", np.array([100., 200., 0.]),
                               np.array([110., 180., 0.]))
    assert forecast["mape"] == pytest.approx(10.0)  # the zero actual is left out of MAPE
    assert forecast["smape"] == pytest.approx(100 * (20 / 210 + 40 / 380 + 0) / 3)
    assert forecast["rmse"] == pytest.approx(np.sqrt(500 / 3))
    assert forecast_errors(np.array([0.]), np.array([0.]))["smape"] == 0.0


def test_model_reports_write_pngs_and_facts(tmp_path):
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.5).astype(float)
    reports = write_model_reports(tmp_path, task="binary", y_true=y,
                                  y_score=np.clip(y * 0.6 + rng.random(200) * 0.4, 0, 1),
                                  importance={"a": 1.0, "b": 3.0})
    assert reports["feature_importance"]["top"][0] == {"feature": "b", "importance": 3.0}
    assert reports["curves"]["auc"] > 0.9
    assert {p.name for p in tmp_path.iterdir()} == {
        "feature_importance.json", "feature_importance.png", "roc_curve.png", "pr_curve.png"}
    assert write_model_reports(tmp_path, task="regression") == {}


# --------------------------------------------------------------------------- TrainingData

def test_training_data_batch_helpers():
    data = split(tabular_table(100), "y_reg", holdout=20)
    frame, label = data.to_pandas("train")
    assert list(frame.columns) == FEATURES and label.shape == (80,)
    assert str(frame["c"].dtype) == "category"
    matrix, _ = data.to_numpy("holdout", categorical="one_hot")
    assert matrix.shape == (20, 3 + 3)  # x1, x2, flag + one column per colour
    x, y = data.to_torch("train")
    assert x.dtype == torch.float32 and tuple(x.shape) == (80, 6) and not torch.isnan(x).any()
    assert [b.num_rows for b in data.iter_batches("train", 30)] == [30, 30, 20]
