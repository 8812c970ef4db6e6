"""TimeSeriesForecaster: gradient boosting on lag features of a value column.

The label is the value to forecast (e.g. ``sales``); the spec fetches it with the date column
(``data.date_column``) and, for several series, a series key (``custom_params.group_column``).
``prepare`` sorts the whole table by date, before the runner splits it, and adds for every row

* ``lag_K``: the value K rows earlier in the same series, for K = horizon … horizon+lags-1;
* ``rolling_mean_W``: the mean of the W values ending ``horizon`` rows earlier;
* ``day_of_week``, ``day_of_month``, ``month``, ``day_of_year`` (with ``calendar_features``).

so a row's prediction only uses values at least ``horizon`` steps old. ``train.
classifier_features`` adds inputs: other fetched columns known ahead of time (a promotion
flag, a store type) or more of the derived names above (e.g. ``lag_364``). Use a time-based
holdout (``DATE_RANGE`` or ``LATEST``) so that the metrics measure forecasts of the future::

    "train": {"workflow_name": "TimeSeriesForecaster", "label": "sales",
              "classifier_features": ["promo", "day_of_week"],
              "custom_params": {"lags": 14, "horizon": 1, "rolling_windows": [7, 28]}}

Predicting on new rows (``railyard predict``) takes the history with the rows to forecast
appended (their value may be null); lag features are built from it the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from railyard.errors import DataSourceError
from railyard.spec import TrainSpec
from railyard.training.builtin.lightgbm import LightGBMWorkflow
from railyard.training.builtin.xgboost import XGBoostWorkflow
from railyard.training.registry import register_workflow
from railyard.training.workflow import Task, TrainContext, TrainingData, Workflow, WorkflowParams

MAX_LAG = 400
# Derived names a spec may list in classifier_features (``lags`` reaches up to MAX_LAG).
DECLARED_LAGS = (*range(1, 61), 90, 168, 180, 364, 365)
CALENDAR = ("day_of_week", "day_of_month", "month", "day_of_year")
DECLARED_WINDOWS = (3, 7, 14, 28, 30, 90, 365)
LAG_NAME = re.compile(r"^lag_(\d+)$")
WINDOW_NAME = re.compile(r"^rolling_mean_(\d+)$")
CONFIG_FILE = "forecaster.json"


class ForecasterParams(WorkflowParams):
    """Feature construction and the booster's main knobs."""

    date_column: str | None = Field(default=None, description="default: the table's only "
                                    "date or timestamp column")
    group_column: str | None = None
    horizon: int = Field(default=1, ge=1, le=MAX_LAG)
    lags: int = Field(default=7, ge=0, le=MAX_LAG)
    rolling_windows: list[int] = Field(default=[7], max_length=8)
    calendar_features: bool = True
    booster: Literal["lightgbm", "xgboost"] = "lightgbm"
    n_estimators: int = Field(default=200, ge=1, le=100_000)
    learning_rate: float = Field(default=0.05, gt=0, le=1)
    max_depth: int | None = None
    num_leaves: int = Field(default=31, ge=2)
    seed: int = 0
    n_jobs: int | None = Field(default=None, ge=1)


@register_workflow
class TimeSeriesForecaster(Workflow):
    """Direct multi-step forecasting with LightGBM or XGBoost on lag and calendar features."""

    name = "TimeSeriesForecaster"
    framework = "lightgbm"
    Params = ForecasterParams
    derived_columns = ({f"lag_{k}": [] for k in DECLARED_LAGS}
                       | {f"rolling_mean_{w}": [] for w in DECLARED_WINDOWS}
                       | {name: [] for name in CALENDAR})

    def __init__(self, train: TrainSpec) -> None:
        super().__init__(train)
        self.framework = self.params.booster  # type: ignore[attr-defined,misc]

    def task(self, data: TrainingData) -> Task:
        return "forecasting"

    def feature_config(self, table: pa.Table | None = None) -> dict[str, Any]:
        """Which lag, rolling and calendar columns to build, and from which columns."""
        p: ForecasterParams = self.params  # type: ignore[assignment]
        label, listed = self.train_spec.label, list(self.train_spec.classifier_features)
        if label in listed:
            raise ValueError(f"train.classifier_features lists the label {label!r}; its past "
                             "values enter as lag_K features (custom_params.lags)")
        lags = set(range(p.horizon, p.horizon + p.lags))
        windows = set(p.rolling_windows)
        for name in listed:
            if m := LAG_NAME.match(name):
                lags.add(int(m.group(1)))
            elif m := WINDOW_NAME.match(name):
                windows.add(int(m.group(1)))
        if early := sorted(k for k in lags if k < p.horizon):
            raise ValueError(f"train.classifier_features: lag_{early[0]} looks {early[0]} "
                             f"step(s) back but custom_params.horizon is {p.horizon}; "
                             f"a lag must be at least the horizon")
        derived = ([f"lag_{k}" for k in sorted(lags)]
                   + [f"rolling_mean_{w}" for w in sorted(windows)]
                   + (list(CALENDAR) if p.calendar_features else []))
        features = list(dict.fromkeys(derived + listed))
        return {"value": label, "date": p.date_column or _date_column(table),
                "group": p.group_column, "horizon": p.horizon, "lags": sorted(lags),
                "windows": sorted(windows), "features": features,
                "booster": p.booster}

    def prepare(self, table: pa.Table) -> pa.Table:
        """Add the lag, rolling and calendar columns, computed over the whole table."""
        return add_lag_features(table, self.feature_config(table))

    def _inner(self, config: dict[str, Any]) -> Workflow:
        p: ForecasterParams = self.params  # type: ignore[assignment]
        cls: type[Workflow] = LightGBMWorkflow if config["booster"] == "lightgbm" \
            else XGBoostWorkflow
        params: dict[str, Any] = {"n_estimators": p.n_estimators,
                                  "learning_rate": p.learning_rate, "seed": p.seed}
        if cls is LightGBMWorkflow:
            params |= {"objective": "regression", "num_leaves": p.num_leaves}
        else:
            params["objective"] = "reg:squarederror"
        if p.max_depth is not None:
            params["max_depth"] = p.max_depth
        if p.n_jobs is not None:
            params["n_jobs"] = p.n_jobs
        return cls(TrainSpec(workflow_name=cls.name, classifier_features=config["features"],
                             label=config["value"], custom_params=params))

    def _inner_data(self, data: TrainingData, config: dict[str, Any]) -> TrainingData:
        def usable(table: pa.Table) -> pa.Table:
            table = add_lag_features(table, config)
            value = table[config["value"]].cast(pa.float64())
            table = table.set_column(table.schema.get_field_index(config["value"]),
                                     config["value"], value)
            return table.filter(value.is_valid())

        return TrainingData(train=usable(data.train), holdout=usable(data.holdout),
                            features=config["features"], label=config["value"])

    def fit(self, data: TrainingData, context: TrainContext) -> dict[str, Any]:
        config = self.feature_config(data.train)
        inner = self._inner(config)
        return {"config": config, "inner": inner.fit(self._inner_data(data, config), context)}

    def predict(self, model: dict[str, Any], table: pa.Table) -> np.ndarray:
        config = model["config"]
        return self._inner(config).predict(model["inner"], add_lag_features(table, config))

    def evaluate(self, model: dict[str, Any], data: TrainingData) -> dict[str, float]:
        """MAPE, sMAPE, RMSE and MAE, and the same errors of the naive forecast (the value
        ``horizon`` steps earlier) to compare against."""
        from railyard.training.metrics import forecast_errors

        metrics = super().evaluate(model, data)
        if metrics.get("rows"):
            config = model["config"]
            holdout = add_lag_features(data.holdout, config)
            naive = holdout[f"lag_{config['horizon']}"].to_numpy(zero_copy_only=False)\
                if f"lag_{config['horizon']}" in holdout.column_names else None
            if naive is not None:
                actual = data.label_array("holdout")
                keep = ~np.isnan(actual) & ~np.isnan(naive.astype("float64"))
                if keep.any():
                    naive_errors = forecast_errors(actual[keep], naive[keep].astype("float64"))
                    metrics |= {f"naive_{k}": v for k, v in naive_errors.items()}
        return metrics

    def write_reports(self, model: dict[str, Any], data: TrainingData,
                      directory: Path) -> dict[str, Any]:
        """The booster's feature importance over the lag, rolling and calendar features."""
        config = model["config"]
        return self._inner(config).write_reports(model["inner"],
                                                 self._inner_data(data, config), directory)

    def save(self, model: dict[str, Any], directory: Path) -> str:
        main = self._inner(model["config"]).save(model["inner"], directory)
        (directory / CONFIG_FILE).write_text(json.dumps(model["config"], indent=2))
        return main

    def load(self, directory: Path) -> dict[str, Any]:
        config = json.loads((directory / CONFIG_FILE).read_text())
        return {"config": config, "inner": self._inner(config).load(directory)}


def _date_column(table: pa.Table | None) -> str:
    if table is None:
        raise ValueError("set train.custom_params.date_column")
    dates = [f.name for f in table.schema
             if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
    if len(dates) != 1:
        raise ValueError(
            "TimeSeriesForecaster needs the date column: set train.custom_params.date_column "
            f"(the table has {len(dates)} date/timestamp columns: {', '.join(dates) or 'none'})")
    return dates[0]


def add_lag_features(table: pa.Table, config: dict[str, Any]) -> pa.Table:
    """``table`` with the lag, rolling-mean and calendar columns of ``config`` (re)computed;
    rows are ordered by series and date to compute them and come back in their own order.
    Returns ``table`` unchanged when every feature column is already there."""
    if all(name in table.column_names for name in config["features"]):
        return table
    value, date, group = config["value"], config["date"], config["group"]
    missing = [c for c in (value, date, group) if c and c not in table.column_names]
    if missing:
        raise DataSourceError(
            f"forecasting needs column(s) {', '.join(missing)}: the history that lag features "
            "are built from", details=[{"field": c, "message": "column not found"}
                                       for c in missing])
    frame = pd.DataFrame({
        "value": table[value].cast(pa.float64()).to_pandas(),
        "date": table[date].to_pandas(),
        "group": table[group].to_pandas() if group else 0,
    })
    ordered = frame.sort_values(["group", "date"], kind="stable")
    series = ordered.groupby("group", sort=False)["value"]
    built: dict[str, pd.Series] = {}
    for k in config["lags"]:
        built[f"lag_{k}"] = series.shift(k)
    horizon = config["horizon"]
    for w in config["windows"]:
        built[f"rolling_mean_{w}"] = series.transform(
            lambda s, w=w: s.shift(horizon).rolling(w, min_periods=1).mean())
    when = pd.to_datetime(ordered["date"])
    calendar = {"day_of_week": when.dt.day_of_week, "day_of_month": when.dt.day,
                "month": when.dt.month, "day_of_year": when.dt.day_of_year}
    for name in config["features"]:
        if name in calendar:
            built[name] = calendar[name].astype("float64")
    for name, column in built.items():
        values = pa.array(column.sort_index().to_numpy(dtype="float64"), pa.float64())
        if name in table.column_names:
            table = table.set_column(table.schema.get_field_index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table
