"""Arrow table → model-ready pandas frame, with the same encoding at train and predict time."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def column_kind(dtype: pa.DataType) -> str:
    """numeric | bool | datetime | categorical, for a feature column's Arrow type."""
    if pa.types.is_dictionary(dtype) or pa.types.is_string(dtype) \
            or pa.types.is_large_string(dtype):
        return "categorical"
    if pa.types.is_boolean(dtype):
        return "bool"
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
        return "datetime"
    return "numeric"


def fit_encoding(table: pa.Table, features: list[str]) -> dict[str, Any]:
    """Learn how to encode each feature (categories come from the training rows, sorted)."""
    encoding: dict[str, Any] = {}
    for name in features:
        column = table[name]
        kind = column_kind(column.type)
        entry: dict[str, Any] = {"kind": kind, "arrow_type": str(column.type)}
        if kind == "categorical":
            values = pc.unique(column.cast(pa.string()) if pa.types.is_dictionary(column.type)
                               else column).drop_null().to_pylist()
            entry["categories"] = sorted(values)
        encoding[name] = entry
    return encoding


def encode(table: pa.Table, encoding: dict[str, Any]) -> pd.DataFrame:
    """A pandas frame of the features, encoded as ``fit_encoding`` decided."""
    frame = {}
    for name, entry in encoding.items():
        column = table[name]
        kind = entry["kind"]
        if kind == "categorical":
            values = column.cast(pa.string()) if pa.types.is_dictionary(column.type) else column
            dtype = pd.CategoricalDtype(entry["categories"])
            series = pd.Series(values.to_pandas(), dtype="object")
            # Categories never seen in training become missing values.
            frame[name] = series.where(series.isin(entry["categories"])).astype(dtype)
        elif kind == "bool":
            frame[name] = column.cast(pa.float32()).to_pandas()
        elif kind == "datetime":
            frame[name] = column.cast(pa.timestamp("s")).cast(pa.int64()).to_pandas()\
                .astype("float64")
        else:
            frame[name] = column.to_pandas().astype("float64")
    return pd.DataFrame(frame)
