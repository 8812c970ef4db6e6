"""Training builders shared by the unit tests and their integration counterparts: small
generated tables (tabular, daily sales, a text corpus), workflows made from them, and a model
published into a directory shaped like the artifact store's ``<job>/model``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from railyard.data.fetch import split_holdout
from railyard.spec import DataSpec, TrainSpec
from railyard.training.registry import get_workflow
from railyard.training.workflow import TrainContext, TrainingData, Workflow

FEATURES = ["x1", "c", "x2", "flag"]
# Small and single-threaded: the test machine has two busy cores.
FAST = {"lightgbm": {"n_estimators": 40, "n_jobs": 1},
        "sklearn": {"max_iter": 50},
        "torch": {"max_epochs": 30, "hidden_sizes": [32], "batch_size": 128,
                  "learning_rate": 0.01},
        "xgboost": {"n_estimators": 40, "nthread": 1}}


# --------------------------------------------------------------------------- tabular

def tabular_table(rows: int = 1500, seed: int = 0) -> pa.Table:
    """Numeric, string and bool features with a null or two; binary, 3-class and real labels."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=rows)
    c = rng.choice(["red", "green", "blue"], rows)
    x2 = rng.uniform(size=rows)
    x2[rng.random(rows) < 0.05] = np.nan
    flag = rng.random(rows) < 0.3
    logit = 2.0 * x1 + 1.5 * (c == "red") - 1.0 * flag
    return pa.table({
        "x1": x1, "c": pa.array(c.tolist()), "x2": x2, "flag": flag,
        "y_binary": (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype("int64"),
        "y_multi": np.where(x1 > 0.5, 2, np.where(c == "red", 1, 0)).astype("int64"),
        "y_reg": 3 * x1 + 2 * (c == "blue") + np.nan_to_num(x2) + rng.normal(0, .1, rows),
    })


def make(name: str, label: str, features: list[str] | None = None,
         **params: Any) -> Workflow:
    """An instance of a registered workflow."""
    return get_workflow(name)(TrainSpec(workflow_name=name, label=label,
                                        classifier_features=features or FEATURES,
                                        custom_params=params))


def split(table: pa.Table, label: str, features: list[str] | None = None,
          holdout: int = 400) -> TrainingData:
    return TrainingData(train=table.slice(0, table.num_rows - holdout),
                        holdout=table.slice(table.num_rows - holdout),
                        features=features or FEATURES, label=label)


def publish(workflow: Workflow, model: Any, data: TrainingData, directory: Path,
            job_id: str = "job-1") -> Path:
    """What JobRun's publish phase writes: the workflow's files, reports and manifest.json."""
    directory.mkdir(parents=True, exist_ok=True)
    metrics = workflow.evaluate(model, data)
    main_file = workflow.save(model, directory)
    reports = workflow.write_reports(model, data, directory)
    manifest = {
        "job_id": job_id, "workflow": workflow.name, "framework": workflow.framework,
        "model_file": main_file, "features": list(data.features),
        "feature_types": {f: str(data.train.schema.field(f).type) for f in data.features},
        "label": data.label, "task": workflow.task(data),
        "metrics": {"holdout": metrics}, "spec_hash": "0" * 64, "reports": reports,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return directory


def trained(name: str, task: str) -> tuple[Workflow, Any, TrainingData]:
    label = {"binary": "y_binary", "multiclass": "y_multi", "regression": "y_reg"}[task]
    workflow = make(name, label, **FAST[name])
    data = split(tabular_table(900), label, holdout=200)
    return workflow, workflow.fit(data, TrainContext()), data


# --------------------------------------------------------------------------- forecaster

def sales_table(days: int = 500, stores: int = 3, seed: int = 0) -> pa.Table:
    """Daily sales of a few stores with weekly seasonality and promotions, rows shuffled."""
    rng = np.random.default_rng(seed)
    day = np.arange(days)
    date = np.tile(np.datetime64("2023-01-01") + day, stores).astype("datetime64[us]")
    store = np.repeat([f"s{i}" for i in range(stores)], days)
    t = np.tile(day, stores)
    promo = (rng.random(days * stores) < 0.15).astype("int64")
    sales = (np.repeat(50 + 20 * np.arange(stores), days) + 10 * ((t + 5) % 7 >= 5)
             + 0.05 * t + 12 * promo + rng.normal(0, 1.5, days * stores))
    order = rng.permutation(days * stores)
    return pa.table({"date": pa.array(date[order]), "store": store[order].tolist(),
                     "promo": promo[order], "sales": sales[order]})


FORECAST = {"lags": 7, "horizon": 1, "group_column": "store", "rolling_windows": [7],
            "n_estimators": 60, "n_jobs": 1}


def forecast_data(workflow: Workflow, table: pa.Table) -> TrainingData:
    prepared = workflow.prepare(table)
    data = DataSpec.model_validate({
        "features": [{"names": ["sales"], "source": "local", "path": "/unused"}],
        "date_column": "date",
        "holdout_sampling": {"sampling_function": "LATEST", "latest_sampling": {"fraction": .2}}})
    train, holdout = split_holdout(prepared, data)
    return TrainingData(train=train, holdout=holdout, features=["promo", "day_of_week"],
                        label="sales")


# --------------------------------------------------------------------------- word2vec

ANIMALS = ["cat", "dog", "horse", "cow", "sheep", "goat"]
FRUITS = ["apple", "pear", "banana", "cherry", "plum", "grape"]


def corpus(rows: int = 3000, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(rows):
        if rng.random() < 0.5:
            words = [rng.choice(ANIMALS), rng.choice(["runs", "sleeps", "eats"]), "in the",
                     rng.choice(["field", "barn"]), rng.choice(ANIMALS)]
        else:
            words = [rng.choice(FRUITS), rng.choice(["ripens", "falls", "rots"]), "on the",
                     rng.choice(["tree", "table"]), rng.choice(FRUITS)]
        texts.append(" ".join(words))
    return pa.table({"text": texts})
