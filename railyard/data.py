"""From a spec to prepared data: schema checks, filters as Ray Data expressions, the read, the
holdout split and dataset statistics.

Filters are built once as Ray Data expressions (``ray.data.expressions.col``); Ray pushes them
into the Parquet read, and ``Expr.to_pyarrow()`` gives the identical pyarrow expression for
in-memory checks. Values are converted to the column's Arrow type first, so a date string
compared with a timestamp column compares timestamps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import timezone
from functools import reduce
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from ray.data.expressions import Expr, col, lit

from railyard.errors import DataSourceError, SpecError
from railyard.spec import (DataSpec, FeatureSource, Filter, Predicate, SamplingFunction,
                           TrainingSpec, parse_datetime)
from railyard.storage import resolve

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- sources and schema

def open_dataset(source: FeatureSource) -> pads.Dataset:
    """A pyarrow dataset over a Parquet file, directory or Hive-partitioned tree."""
    fs, path = resolve(source.path)
    try:
        return pads.dataset(path, filesystem=fs, format="parquet", partitioning="hive")
    except (FileNotFoundError, OSError) as exc:
        raise DataSourceError(
            f"data.features: cannot read Parquet at {source.path!r}: {exc}. Check the path "
            "and that the server can reach it.",
            details=[{"field": "data.features.path", "message": str(exc)}]) from None


def source_schema(source: FeatureSource) -> pa.Schema:
    """The schema of a source (Parquet footers and partition columns)."""
    return open_dataset(source).schema


# --------------------------------------------------------------------------- value conversion

def _type_word(dtype: pa.DataType) -> str:
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype):
        return "date"
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        return "numeric"
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) \
            or pa.types.is_dictionary(dtype):
        return "string"
    if pa.types.is_boolean(dtype):
        return "bool"
    return str(dtype)


def coerce_scalar(value: Any, dtype: pa.DataType, where: str) -> pa.Scalar:
    """Convert a spec value to a scalar of the column's type, or raise SpecError naming ``where``."""
    kind = _type_word(dtype)
    if pa.types.is_dictionary(dtype):
        dtype = dtype.value_type

    def wrong(expected: str) -> SpecError:
        return SpecError(
            f"{where}: column has type {dtype} but the value is {value!r}; use {expected}",
            details=[{"field": where, "message": f"type mismatch with {dtype}"}])

    if kind == "date":
        if isinstance(value, str):
            try:
                moment = parse_datetime(value)
            except ValueError as exc:
                raise SpecError(f"{where}: {exc}", details=[{"field": where,
                                                              "message": str(exc)}]) from None
            if pa.types.is_date(dtype):
                return pa.scalar(moment.date(), type=dtype)
            if dtype.tz is not None and moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            elif dtype.tz is None and moment.tzinfo is not None:
                moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
            return pa.scalar(moment, type=dtype)
        raise wrong("a string_val date such as '2018-01-01'")
    if kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("float_val or int_val")
        if pa.types.is_integer(dtype) and isinstance(value, float) and not value.is_integer():
            return pa.scalar(value, type=pa.float64())
        return pa.scalar(value, type=pa.float64() if isinstance(value, float) else dtype)
    if kind == "string":
        if not isinstance(value, str):
            raise wrong("string_val or string_vals")
        return pa.scalar(value, type=pa.string())
    if kind == "bool":
        if not isinstance(value, bool):
            raise wrong("bool_val")
        return pa.scalar(value)
    raise SpecError(f"{where}: filters on columns of type {dtype} are not supported",
                    details=[{"field": where, "message": f"unsupported type {dtype}"}])


# --------------------------------------------------------------------------- filters

def filter_to_expr(flt: Filter, dtype: pa.DataType, where: str) -> Expr:
    """One spec filter as a Ray Data expression, with values converted to ``dtype``."""
    c = col(flt.feature_name)
    p = flt.predicate
    if p is Predicate.IsNull:
        return c.is_null()
    if p is Predicate.IsNotNull:
        return c.is_not_null()
    assert flt.feature_value is not None
    raw = flt.feature_value.value
    if p in (Predicate.IsIn, Predicate.NotIn):
        values = [coerce_scalar(v, dtype, where).as_py() for v in raw]
        # SQL semantics: NotIn keeps neither listed values nor nulls.
        return c.is_in(values) if p is Predicate.IsIn else (c.not_in(values) & c.is_not_null())
    if p is Predicate.Between:
        low, high = (lit(coerce_scalar(v, dtype, where)) for v in raw)
        return (c >= low) & (c <= high)
    if p is Predicate.StartsWith:
        if _type_word(dtype) != "string":
            raise SpecError(f"{where}: StartsWith needs a string column, not {dtype}",
                            details=[{"field": where, "message": "StartsWith on non-string"}])
        return c.str.starts_with(raw)
    value = lit(coerce_scalar(raw, dtype, where))
    return {
        Predicate.Eq: lambda: c == value, Predicate.NotEq: lambda: c != value,
        Predicate.Gt: lambda: c > value, Predicate.GtEq: lambda: c >= value,
        Predicate.Lt: lambda: c < value, Predicate.LtEq: lambda: c <= value,
    }[p]()


def filters_to_expr(filters: list[Filter], schema: pa.Schema) -> Expr | None:
    """All filters ANDed into one expression (None when there are none)."""
    exprs = []
    for i, flt in enumerate(filters):
        where = f"data.filters.{i} ({flt.feature_name})"
        if flt.feature_name not in schema.names:
            raise DataSourceError(
                f"{where}: no column {flt.feature_name!r} in the source; columns are "
                f"{', '.join(schema.names)}",
                details=[{"field": f"data.filters.{i}.feature_name",
                          "message": "column not found"}])
        exprs.append(filter_to_expr(flt, schema.field(flt.feature_name).type, where))
    return reduce(lambda a, b: a & b, exprs) if exprs else None


# --------------------------------------------------------------------------- plan

@dataclass(frozen=True)
class ReadPlan:
    """What to read from one source: the columns and the pushed-down filter."""

    source: FeatureSource
    schema: pa.Schema
    columns: list[str]
    filter_expr: Expr | None

    @property
    def pyarrow_filter(self) -> pc.Expression | None:
        """The same filter as a pyarrow compute expression."""
        return None if self.filter_expr is None else self.filter_expr.to_pyarrow()


def plan_read(spec: TrainingSpec, *, derived: dict[str, list[str]] | None = None,
              schema: pa.Schema | None = None) -> ReadPlan:
    """Check the spec against the source schema and decide what to read.

    ``derived`` maps columns a workflow derives to the source columns it needs; a label or
    feature that is neither in the source nor derived is a SpecError naming the field.
    """
    data = spec.data
    derived = derived or {}
    source = data.features[0]
    schema = schema if schema is not None else source_schema(source)
    have = set(schema.names)

    def must_exist(column: str, where: str) -> None:
        if column not in have:
            raise DataSourceError(
                f"{where}: column {column!r} is not in {source.path}; columns are "
                f"{', '.join(schema.names)}",
                details=[{"field": where, "message": f"column {column!r} not found"}])

    for i, name in enumerate(source.names):
        must_exist(name, f"data.features.0.names.{i}")
    fetched = set(data.fetched_columns)
    for i, name in enumerate(spec.train.classifier_features):
        if name not in fetched and name not in derived:
            raise SpecError(
                f"train.classifier_features.{i}: {name!r} is not fetched; add it to "
                "data.features[].names",
                details=[{"field": f"train.classifier_features.{i}", "message": "not fetched"}])
    label = spec.train.label
    if label not in fetched and label not in derived:
        raise SpecError(
            f"train.label: {label!r} is neither fetched (data.features[].names) nor derived by "
            f"workflow {spec.train.workflow_name!r}"
            + (f" (it derives {', '.join(sorted(derived))})" if derived else ""),
            details=[{"field": "train.label", "message": "label not fetched or derived"}])
    columns = list(data.fetched_columns)
    for needed in [c for name in derived for c in derived[name]]:
        must_exist(needed, "train.label")
        columns.append(needed)
    if data.date_column:
        must_exist(data.date_column, "data.date_column")
        columns.append(data.date_column)
    date_col = data.holdout_date_column
    if date_col:
        must_exist(date_col, "data.holdout_sampling")
        columns.append(date_col)
    if data.holdout_sampling.hash_sampling is not None:
        key = data.holdout_sampling.hash_sampling.column
        must_exist(key, "data.holdout_sampling.hash_sampling.column")
        columns.append(key)
    columns = [c for c in dict.fromkeys(columns) if c not in derived or c in have]
    return ReadPlan(source=source, schema=schema, columns=columns,
                    filter_expr=filters_to_expr(data.filters, schema))


# --------------------------------------------------------------------------- read

def read_ray(plan: ReadPlan):
    """The filtered, column-pruned Ray Dataset (lazy; Ray pushes the filter into the read)."""
    import ray.data

    fs, path = resolve(plan.source.path)
    ds = ray.data.read_parquet(path, filesystem=fs, columns=plan.columns)
    if plan.filter_expr is not None:
        ds = ds.filter(expr=plan.filter_expr)
    return ds


def source_bytes(source: FeatureSource) -> int:
    """Total size of the source's Parquet files."""
    dataset = open_dataset(source)
    return sum(info.size or 0 for info in dataset.filesystem.get_file_info(dataset.files))


def read_table(plan: ReadPlan, *, in_process_max_bytes: int = 0) -> tuple[pa.Table, str]:
    """The filtered table, and which engine read it.

    Sources up to ``in_process_max_bytes`` are read in this process by pyarrow.dataset (same
    expression, same pushdown) because starting Ray Data's read tasks costs seconds that small
    data never earns back; larger ones stream through Ray Data's parallel read tasks.
    """
    if in_process_max_bytes and source_bytes(plan.source) <= in_process_max_bytes:
        return read_table_arrow(plan), "pyarrow"
    return read_table_ray(plan), "ray.data"


def read_table_ray(plan: ReadPlan) -> pa.Table:
    """Run the Ray Data read and gather its blocks into one Arrow table for single-node training."""
    import ray

    if not ray.is_initialized():
        ray.init(address="auto", log_to_driver=False, logging_level=logging.WARNING)
    ds = read_ray(plan)
    blocks = ray.get(ds.to_arrow_refs())
    blocks = [b for b in blocks if b.num_rows] or blocks[:1]
    if not blocks:
        return plan.schema.empty_table().select(plan.columns)
    table = pa.concat_tables(blocks, promote_options="permissive")
    return table.select(plan.columns)


def read_table_arrow(plan: ReadPlan) -> pa.Table:
    """The same read with pyarrow.dataset in-process (the baseline benchmarks compare against)."""
    return open_dataset(plan.source).to_table(columns=plan.columns, filter=plan.pyarrow_filter)


# --------------------------------------------------------------------------- holdout

def _date_scalar(text: str, dtype: pa.DataType) -> pa.Scalar:
    return coerce_scalar(text, dtype, "data.holdout_sampling")


def holdout_mask(table: pa.Table, data: DataSpec) -> np.ndarray:
    """Boolean mask of holdout rows; deterministic for the same spec and rows."""
    h = data.holdout_sampling
    n = table.num_rows
    fn = h.sampling_function
    if fn is SamplingFunction.NONE:
        return np.zeros(n, dtype=bool)
    if fn is SamplingFunction.DATE_RANGE:
        r = h.date_range_sampling
        column = table[data.holdout_date_column]
        lo, hi = _date_scalar(r.start_date, column.type), _date_scalar(r.end_date, column.type)
        mask = pc.and_(pc.greater_equal(column, lo), pc.less_equal(column, hi))
        return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    if fn is SamplingFunction.RANDOM:
        rng = np.random.default_rng(h.random_sampling.seed)
        return rng.random(n) < h.random_sampling.fraction
    if fn is SamplingFunction.LATEST:
        column = table[data.holdout_date_column]
        k = int(round(n * h.latest_sampling.fraction))
        if k == 0:
            return np.zeros(n, dtype=bool)
        values = pc.fill_null(column.cast(pa.int64()), np.iinfo(np.int64).min).to_numpy()
        threshold = np.partition(values, n - k)[n - k]
        return values >= threshold
    if fn is SamplingFunction.HASH:
        keys = table[h.hash_sampling.column].to_pandas()
        hashed = pd.util.hash_pandas_object(keys, index=False).to_numpy()
        return (hashed % 1_000_000) < int(h.hash_sampling.fraction * 1_000_000)
    raise AssertionError(fn)


def split_holdout(table: pa.Table, data: DataSpec) -> tuple[pa.Table, pa.Table]:
    """(train, holdout) per the spec's holdout sampling."""
    mask = pa.array(holdout_mask(table, data))
    return table.filter(pc.invert(mask)), table.filter(mask)


# --------------------------------------------------------------------------- statistics

@dataclass
class DatasetStats:
    """What the fetch and split produced."""

    rows_after_filters: int = 0
    train_rows: int = 0
    holdout_rows: int = 0
    columns: list[str] = field(default_factory=list)
    null_counts: dict[str, int] = field(default_factory=dict)
    label_balance: dict[str, int] | None = None
    read_engine: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {k: v for k, v in self.__dict__.items()}


def describe(table: pa.Table, train: pa.Table, holdout: pa.Table,
             label: str | None) -> DatasetStats:
    """Row counts, null counts and label balance."""
    stats = DatasetStats(rows_after_filters=table.num_rows, train_rows=train.num_rows,
                         holdout_rows=holdout.num_rows, columns=list(table.column_names),
                         null_counts={c: table[c].null_count for c in table.column_names})
    if label and label in table.column_names:
        counts = pc.value_counts(table[label])
        if len(counts) <= 20:
            stats.label_balance = {str(item["values"]): int(item["counts"])
                                   for item in counts.to_pylist()}
    return stats


