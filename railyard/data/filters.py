"""Spec filters as Ray Data expressions, with values converted to the column's Arrow type.

Filters are built once as Ray Data expressions (``ray.data.expressions.col``); Ray pushes them
into the Parquet read, and ``Expr.to_pyarrow()`` gives the identical pyarrow expression for
in-process reads. A date string compared with a timestamp column compares timestamps. SQL
sources translate the same filters to SQL (railyard.data.sql_sources) using ``coerce_scalar`` too,
so both kinds of source agree on types and null semantics (a null never matches, except for
IsNull; NotIn keeps no nulls).
"""

from __future__ import annotations

from datetime import UTC
from functools import reduce
from typing import Any

import pyarrow as pa
from ray.data.expressions import Expr, col, lit

from railyard.errors import DataSourceError, SpecError
from railyard.spec import Filter, Predicate, parse_datetime


def type_word(dtype: pa.DataType) -> str:
    """date | numeric | string | bool, or the type's own name for anything else."""
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
    """Convert a spec value to a scalar of the column's type, or raise SpecError naming
    ``where``."""
    kind = type_word(dtype)
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
                moment = moment.replace(tzinfo=UTC)
            elif dtype.tz is None and moment.tzinfo is not None:
                moment = moment.astimezone(UTC).replace(tzinfo=None)
            return pa.scalar(moment, type=dtype)
        raise wrong("a string_val date such as '2018-01-01'")
    if kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong("float_val or int_val")
        if pa.types.is_integer(dtype) and isinstance(value, int):
            try:
                return pa.scalar(value, type=dtype)
            except (pa.ArrowInvalid, OverflowError):   # outside the column's range
                pass
        return pa.scalar(float(value), type=pa.float64())
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


def null_rejecting(flt: Filter) -> bool:
    """True if the filter never keeps a row whose column is null."""
    return flt.predicate is not Predicate.IsNull


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
        if type_word(dtype) != "string":
            raise SpecError(f"{where}: StartsWith needs a string column, not {dtype}",
                            details=[{"field": where, "message": "StartsWith on non-string"}])
        return c.str.starts_with(raw)
    value = lit(coerce_scalar(raw, dtype, where))
    return {
        Predicate.Eq: lambda: c == value, Predicate.NotEq: lambda: c != value,
        Predicate.Gt: lambda: c > value, Predicate.GtEq: lambda: c >= value,
        Predicate.Lt: lambda: c < value, Predicate.LtEq: lambda: c <= value,
    }[p]()


def filter_where(index: int, flt: Filter) -> str:
    """How messages name filter ``index``."""
    return f"data.filters.{index} ({flt.feature_name})"


def filters_to_expr(filters: list[Filter], schema: pa.Schema,
                    indexes: list[int] | None = None) -> Expr | None:
    """All filters ANDed into one expression (None when there are none).

    ``indexes`` are the filters' positions in ``data.filters`` (for messages); by default 0..n-1.
    """
    indexes = list(range(len(filters))) if indexes is None else indexes
    exprs = []
    for i, flt in zip(indexes, filters, strict=True):
        where = filter_where(i, flt)
        if flt.feature_name not in schema.names:
            raise DataSourceError(
                f"{where}: no column {flt.feature_name!r} in the source; columns are "
                f"{', '.join(schema.names)}",
                details=[{"field": f"data.filters.{i}.feature_name",
                          "message": "column not found"}])
        exprs.append(filter_to_expr(flt, schema.field(flt.feature_name).type, where))
    return reduce(lambda a, b: a & b, exprs) if exprs else None
