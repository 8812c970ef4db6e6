"""The holdout split, row by row, so that it gives the same answer in one process or streamed.

Every sampling function decides a row from the row alone (plus, for LATEST, one threshold):

- DATE_RANGE: the date lies in [start_date, end_date] (both inclusive; a null date trains).
- LATEST: the date is at or above the k-th largest date, k = round(rows × fraction) (ties are
  held out together; nulls sort lowest). The threshold is exact in both engines: in one process
  by ``np.partition``; streamed by ``kth_largest``, which narrows a histogram over the date
  column in a few passes and collects only the last bucket.
- RANDOM: a seeded hash of the row's fetched columns falls below the fraction — deterministic,
  independent of row order and of how the data is split into blocks (identical rows go to the
  same side).
- HASH: a hash of the key column falls below the fraction, so a key never straddles both sets.

``split_holdout`` splits an Arrow table; ``split_dataset`` splits a Ray Dataset lazily (DATE_RANGE
and LATEST as Ray expressions Ray can push into the read, RANDOM and HASH as ``map_batches``), so
a distributed trainer can consume both sides without the driver collecting the rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from railyard.data.filters import coerce_scalar
from railyard.spec import DataSpec, SamplingFunction

if TYPE_CHECKING:
    import ray.data

INT64_MIN = int(np.iinfo(np.int64).min)
NULL_STRING = "\x00railyard-null\x00"
_STRING_KEY = "railyard-holdout"        # pandas' hash_array key: 16 characters

Scan = Callable[[Callable[[pa.Table], np.ndarray]], list[np.ndarray]]


# --------------------------------------------------------------------------- hashing

def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit flips about half of the output bits."""
    h = h.astype(np.uint64, copy=True)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def as_int64(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Integers, booleans, dates and timestamps as int64 (nulls kept)."""
    dtype = column.type
    if pa.types.is_date32(dtype):
        return column.cast(pa.int32()).cast(pa.int64())
    if pa.types.is_boolean(dtype):
        return column.cast(pa.int8()).cast(pa.int64())
    return column.cast(pa.int64())


def column_hash(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A uint64 per value that depends on the value only (not on chunking or row order)."""
    dtype = column.type
    if pa.types.is_dictionary(dtype):
        column, dtype = column.cast(dtype.value_type), dtype.value_type
    if pa.types.is_integer(dtype) or pa.types.is_boolean(dtype) or pa.types.is_temporal(dtype):
        values = pc.fill_null(as_int64(column), INT64_MIN + 1).to_numpy()
        return _mix(values.view(np.uint64))
    if pa.types.is_floating(dtype) or pa.types.is_decimal(dtype):
        values = pc.fill_null(column.cast(pa.float64()), np.nan).to_numpy() + 0.0  # -0.0 → 0.0
        return _mix(values.view(np.uint64))
    if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
        values = pc.fill_null(column, NULL_STRING).to_numpy(zero_copy_only=False)
    else:
        values = np.array([repr(v) for v in column.to_pylist()], dtype=object)
    return pd.util.hash_array(values, hash_key=_STRING_KEY, categorize=False)


def row_hash(table: pa.Table, columns: list[str], seed: int = 0) -> np.ndarray:
    """A seeded uint64 hash of each row's values in ``columns``."""
    seed_bits = int.from_bytes(hashlib.sha256(str(seed).encode()).digest()[:8], "little")
    h = np.full(table.num_rows, seed_bits, dtype=np.uint64)
    for name in columns:
        h = _mix(h ^ column_hash(table[name]))
    return h


def unit_interval(h: np.ndarray) -> np.ndarray:
    """Hashes mapped uniformly onto [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def random_columns(table: pa.Table, data: DataSpec) -> list[str]:
    """The columns RANDOM hashes: the fetched ones present (all columns if none is)."""
    present = [c for c in data.fetched_columns if c in table.column_names]
    return present or list(table.column_names)


# --------------------------------------------------------------------------- LATEST threshold

def date_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The date column as int64 with nulls as the smallest value."""
    return pc.fill_null(as_int64(column), INT64_MIN).to_numpy()


def latest_threshold(table: pa.Table, data: DataSpec) -> int | None:
    """The k-th largest date (None when k rounds to 0: nothing is held out)."""
    latest = data.holdout_sampling.latest_sampling
    assert latest is not None, "LATEST sampling has its latest_sampling block"
    n = table.num_rows
    k = int(round(n * latest.fraction))
    if k == 0:
        return None
    values = date_values(table[data.holdout_date_column])
    return int(np.partition(values, n - k)[n - k])


def _summary(column: str, batch: pa.Table) -> np.ndarray:
    values = as_int64(batch[column]).drop_null().to_numpy()
    if len(values) == 0:
        return np.array([batch.num_rows, 0, np.iinfo(np.int64).max, INT64_MIN], dtype=np.int64)
    return np.array([batch.num_rows, len(values), values.min(), values.max()], dtype=np.int64)


def _in_range(column: str, lo: int, hi: int, batch: pa.Table) -> np.ndarray:
    values = as_int64(batch[column]).drop_null().to_numpy()
    return values[(values >= lo) & (values <= hi)]


def _histogram(column: str, lo: int, hi: int, width: int, bins: int,
               batch: pa.Table) -> np.ndarray:
    values = _in_range(column, lo, hi, batch)
    offsets = values.view(np.uint64) - np.uint64(lo % (1 << 64))     # wraps: exact for v >= lo
    return np.bincount((offsets // np.uint64(width)).astype(np.int64), minlength=bins)[:bins]


def kth_largest(scan: Scan, column: str, k: int, *, bins: int = 4096,
                collect_max: int = 1_000_000) -> int:
    """The exact k-th largest value of a date column (nulls lowest), without collecting it.

    ``scan(fn)`` applies ``fn`` to every batch of the data and returns the results; each pass
    narrows the range to the histogram bucket holding the answer, and once a bucket has at most
    ``collect_max`` values they are collected and the answer picked exactly.
    """
    parts = np.stack(scan(partial(_summary, column)))
    nonnull = int(parts[:, 1].sum())
    if k > nonnull:
        return INT64_MIN
    lo, hi = int(parts[:, 2].min()), int(parts[:, 3].max())
    above = 0                                             # values known to be larger than hi
    while True:
        width = -(-(hi - lo + 1) // bins)
        counts = np.sum(np.stack(scan(partial(_histogram, column, lo, hi, width, bins))), axis=0)
        need, cum = k - above, 0
        bucket = len(counts) - 1
        while cum + int(counts[bucket]) < need:
            cum += int(counts[bucket])
            bucket -= 1
        above += cum
        lo, hi = lo + bucket * width, min(hi, lo + bucket * width + width - 1)
        if width == 1:
            return lo
        if int(counts[bucket]) <= collect_max:
            values = np.concatenate(scan(partial(_in_range, column, lo, hi)))
            need = k - above
            return int(np.partition(values, len(values) - need)[len(values) - need])


# --------------------------------------------------------------------------- masks

def holdout_mask(table: pa.Table, data: DataSpec, *,
                 threshold: int | None = None) -> np.ndarray:
    """Boolean mask of holdout rows. For LATEST, ``threshold`` (from ``latest_threshold`` or
    ``kth_largest``) is computed from ``table`` when not given."""
    h = data.holdout_sampling
    n = table.num_rows
    fn = h.sampling_function
    if fn is SamplingFunction.NONE or n == 0:
        return np.zeros(n, dtype=bool)
    # HoldoutSampling's validator sets the block of ``fn``: the asserts below only narrow types.
    if fn is SamplingFunction.DATE_RANGE:
        r = h.date_range_sampling
        assert r is not None
        column = table[data.holdout_date_column]
        lo = coerce_scalar(r.start_date, column.type, "data.holdout_sampling")
        hi = coerce_scalar(r.end_date, column.type, "data.holdout_sampling")
        mask = pc.and_(pc.greater_equal(column, lo), pc.less_equal(column, hi))
        return pc.fill_null(mask, False).to_numpy(zero_copy_only=False)
    if fn is SamplingFunction.LATEST:
        if threshold is None:
            threshold = latest_threshold(table, data)
            if threshold is None:
                return np.zeros(n, dtype=bool)
        return date_values(table[data.holdout_date_column]) >= threshold
    if fn is SamplingFunction.RANDOM:
        rs = h.random_sampling
        assert rs is not None
        return unit_interval(row_hash(table, random_columns(table, data), rs.seed)) < rs.fraction
    if fn is SamplingFunction.HASH:
        hs = h.hash_sampling
        assert hs is not None
        return unit_interval(row_hash(table, [hs.column])) < hs.fraction
    raise AssertionError(fn)


def split_holdout(table: pa.Table, data: DataSpec) -> tuple[pa.Table, pa.Table]:
    """(train, holdout) per the spec's holdout sampling."""
    mask = pa.array(holdout_mask(table, data))
    return table.filter(pc.invert(mask)), table.filter(mask)


def keep_side(batch: pa.Table, data: DataSpec, holdout: bool,
              threshold: int | None = None) -> pa.Table:
    """The rows of ``batch`` on one side of the split (the map_batches function)."""
    mask = holdout_mask(batch, data, threshold=threshold)
    return batch.filter(pa.array(mask if holdout else ~mask))


# --------------------------------------------------------------------------- Ray Datasets

def _from_int64(value: int, dtype: pa.DataType) -> pa.Scalar:
    if pa.types.is_date32(dtype):
        return pa.scalar(value, pa.int32()).cast(dtype)
    return pa.scalar(value, pa.int64()).cast(dtype)


def ray_scan(ds: ray.data.Dataset) -> Scan:
    """A ``Scan`` over a Ray Dataset: ``fn`` runs in Ray tasks, only its results come back."""
    def scan(fn: Callable[[pa.Table], np.ndarray]) -> list[np.ndarray]:
        def apply(batch: pa.Table) -> pa.Table:
            out = np.asarray(fn(batch), dtype=np.int64)
            return pa.table({"r": pa.array([out], type=pa.list_(pa.int64()))})
        rows = ds.map_batches(apply, batch_format="pyarrow").take_all()
        return [np.asarray(row["r"], dtype=np.int64) for row in rows]
    return scan


def split_dataset(ds: ray.data.Dataset, data: DataSpec,
                  schema: pa.Schema) -> tuple[ray.data.Dataset, ray.data.Dataset]:
    """(train, holdout) as lazy Ray Datasets; nothing is collected on the driver (LATEST runs a
    few passes over the date column alone to find its threshold)."""
    from ray.data.expressions import col, lit

    h = data.holdout_sampling
    fn = h.sampling_function
    if fn is SamplingFunction.NONE:
        return ds, ds.limit(0)
    if fn in (SamplingFunction.DATE_RANGE, SamplingFunction.LATEST):
        # DataSpec's and HoldoutSampling's validators set these: the asserts only narrow types.
        name = data.holdout_date_column
        assert name is not None
        dtype = schema.field(name).type
        c = col(name)
        if fn is SamplingFunction.DATE_RANGE:
            r = h.date_range_sampling
            assert r is not None
            lo = lit(coerce_scalar(r.start_date, dtype, "data.holdout_sampling"))
            hi = lit(coerce_scalar(r.end_date, dtype, "data.holdout_sampling"))
            inside = (c >= lo) & (c <= hi)
            return ds.filter(expr=c.is_null() | (c < lo) | (c > hi)), ds.filter(expr=inside)
        latest = h.latest_sampling
        assert latest is not None
        dates = ds.select_columns([name]).materialize()
        k = int(round(dates.count() * latest.fraction))
        if k == 0:
            return ds, ds.limit(0)
        threshold = kth_largest(ray_scan(dates), name, k)
        if threshold == INT64_MIN:
            return ds.limit(0), ds
        t = lit(_from_int64(threshold, dtype))
        return ds.filter(expr=c.is_null() | (c < t)), ds.filter(expr=c >= t)
    # Ray's typing of map_batches has fn take only the batch (no fn_args/fn_kwargs)
    side = partial(ds.map_batches, keep_side, batch_format="pyarrow")  # type: ignore[arg-type]
    return (side(fn_kwargs={"data": data, "holdout": False}),
            side(fn_kwargs={"data": data, "holdout": True}))
