"""Data-source cases shared by the unit tests (local Parquet files) and the integration tests
(the S3 server, Postgres).

- ``TABLE``: every column type, with nulls; ``FILTER_CASES``: every predicate × value type, with
  the rows each keeps (``expected_rows``, from a row-by-row reference); ``HOLDOUTS`` and
  ``SCHEMA_CHECKS``. Read by tests/unit/data/test_sources.py (written out by the ``table_dir`` and
  ``hive_dir`` fixtures of tests/conftest.py), tests/integration/test_sql_source.py and
  tests/integration/test_data_s3.py.
- ``RANDOM_TABLE`` and ``any_filter``: random filter combinations (hypothesis), in
  tests/unit/data/test_fetch.py and tests/integration/test_data_s3.py.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import strategies as st

from railyard.errors import DataSourceError, SpecError

# ------------------------------------------------------------------ every type, every predicate

N = 240
_rng = np.random.default_rng(11)
BASE = dt.datetime(2018, 1, 1)
STRINGS = ["US", "USA", "CA", "a", "B", "b", "Zz", "u", "a%b", "a_b", "ab"]
TABLE = pa.table({
    "row": pa.array(np.arange(N), type=pa.int64()),
    "i": pa.array([None if k % 11 == 0 else int(v) for k, v in
                   enumerate(_rng.integers(-10, 10, N))], type=pa.int64()),
    "f": pa.array([None if k % 13 == 0 else float(v) / 4 for k, v in
                   enumerate(_rng.integers(-20, 20, N))], type=pa.float64()),
    "s": pa.array([None if k % 7 == 0 else str(v) for k, v in
                   enumerate(_rng.choice(STRINGS, N))], type=pa.string()),
    "b": pa.array([None if k % 17 == 0 else bool(v) for k, v in
                   enumerate(_rng.random(N) < 0.4)], type=pa.bool_()),
    "ts": pa.array([None if k % 19 == 0 else BASE + dt.timedelta(days=int(v)) for k, v in
                    enumerate(_rng.integers(0, 365, N))], type=pa.timestamp("us")),
    "d": pa.array([None if k % 23 == 0 else (BASE + dt.timedelta(days=int(v))).date()
                   for k, v in enumerate(_rng.integers(0, 365, N))], type=pa.date32()),
    "y": pa.array(_rng.random(N) < 0.3),
})
ROWS = TABLE.to_pylist()
PRESENT_TS = sorted({r["ts"] for r in ROWS if r["ts"]})[:3]
PRESENT_D = sorted({r["d"] for r in ROWS if r["d"]})[:3]


def _case(column: str, predicate: str, **value) -> dict:
    flt = {"feature_name": column, "predicate": predicate}
    if value:
        flt["feature_value"] = value
    return flt


SCALARS = [("i", {"int_val": 3}), ("i", {"float_val": 2.5}), ("f", {"float_val": 0.5}),
           ("f", {"int_val": 1}), ("s", {"string_val": "US"}), ("s", {"string_val": "a_b"}),
           ("ts", {"string_val": PRESENT_TS[1].date().isoformat()}),
           ("ts", {"string_val": "2018-06-01T12:00:00"}),
           ("d", {"string_val": PRESENT_D[1].isoformat()}), ("b", {"bool_val": True})]
LISTS = [("i", {"int_vals": [1, 2, 3]}), ("f", {"float_vals": [0.5, -1.25, 3.0]}),
         ("s", {"string_vals": ["US", "CA", "a%b"]}),
         ("ts", {"string_vals": [t.isoformat() for t in PRESENT_TS]}),
         ("d", {"string_vals": [d.isoformat() for d in PRESENT_D]})]
BETWEENS = [("i", {"int_vals": [-3, 4]}), ("f", {"float_vals": [-1.0, 2.0]}),
            ("s", {"string_vals": ["B", "a"]}), ("ts", {"string_vals": ["2018-03-01",
                                                                        "2018-09-01"]}),
            ("d", {"string_vals": ["2018-03-01", "2018-09-01"]})]
FILTER_CASES = (
    [_case(c, p, **v) for c, v in SCALARS for p in ("Eq", "NotEq", "Gt", "GtEq", "Lt", "LtEq")]
    + [_case(c, p, **v) for c, v in LISTS for p in ("IsIn", "NotIn")]
    + [_case(c, "Between", **v) for c, v in BETWEENS]
    + [_case(c, p) for c in ("i", "f", "s", "b", "ts", "d") for p in ("IsNull", "IsNotNull")]
    + [_case("s", "StartsWith", string_val=v) for v in ("U", "a%", "a_", "")]
)


def case_id(flt: dict) -> str:
    value = "".join(f"{k}={v}" for k, v in flt.get("feature_value", {}).items())
    return f"{flt['feature_name']}-{flt['predicate']}-{value}"


def _convert(column: str, value):
    if column == "ts":
        return dt.datetime.fromisoformat(value)
    if column == "d":
        return dt.date.fromisoformat(value)
    return value


def reference(row: dict, flt: dict) -> bool:
    """The filter's meaning written out row by row (SQL-like: a null never matches)."""
    v, p = row[flt["feature_name"]], flt["predicate"]
    if p == "IsNull":
        return v is None
    if p == "IsNotNull":
        return v is not None
    if v is None:
        return False
    (kind, raw), = flt["feature_value"].items()
    if kind.endswith("_vals"):
        values = [_convert(flt["feature_name"], x) for x in raw]
        return {"IsIn": v in values, "NotIn": v not in values,
                "Between": len(values) == 2 and values[0] <= v <= values[1]}[p]
    x = _convert(flt["feature_name"], raw)
    return {"Eq": v == x, "NotEq": v != x, "Gt": v > x, "GtEq": v >= x, "Lt": v < x,
            "LtEq": v <= x, "StartsWith": str(v).startswith(str(x))}[p]


def expected_rows(flt: dict) -> list[int]:
    return sorted(r["row"] for r in ROWS if reference(r, flt))


def make_spec(features: list[dict], *, filters=(), holdout=None, label="y",
              classifier=("i",), **data_fields) -> dict:
    data = {"features": features, "filters": list(filters), **data_fields}
    if holdout:
        data["holdout_sampling"] = holdout
    return {"model_name": "m", "owner": "team", "data": data,
            "train": {"workflow_name": "xgboost", "classifier_features": list(classifier),
                      "label": label}}


def region(row: int) -> str:
    return "eu" if row % 3 else "us"


def year(row: int) -> int:
    return 2017 + (row // 7) % 3


HOLDOUTS = {
    "DATE_RANGE": {"sampling_function": "DATE_RANGE", "date_range_sampling": {
        "start_date": "2018-06-01", "end_date": "2018-09-30"}},
    "RANDOM": {"sampling_function": "RANDOM", "random_sampling": {"fraction": 0.3, "seed": 5}},
    "LATEST": {"sampling_function": "LATEST", "latest_sampling": {"fraction": 0.25}},
    "HASH": {"sampling_function": "HASH", "hash_sampling": {"column": "s", "fraction": 0.5}},
    "NONE": {"sampling_function": "NONE"},
}

# (change to the spec, error, field): what the submit-time schema checks say of a spec
SCHEMA_CHECKS = [
    (lambda s: s["data"]["features"][0]["names"].append("ghost"), DataSourceError,
     "data.features.0.names.3"),
    (lambda s: s["train"].update(label="nope"), SpecError, "train.label"),
    (lambda s: s["data"].update(date_column="when"), DataSourceError, "data.date_column"),
    (lambda s: s["data"]["filters"].append({"feature_name": "zz", "predicate": "IsNull"}),
     DataSourceError, "data.filters.0.feature_name"),
    (lambda s: s["data"]["filters"].append(
        {"feature_name": "s", "predicate": "Gt", "feature_value": {"int_val": 1}}),
     SpecError, "data.filters.0 (s)"),
    (lambda s: s["data"].update(holdout_sampling={"sampling_function": "LATEST",
                                                  "latest_sampling": {"fraction": 0.1}},
                                date_column="i"), None, None),
    (lambda s: s["data"].update(holdout_sampling={"sampling_function": "LATEST",
                                                  "latest_sampling": {"fraction": 0.1}},
                                date_column="s"), SpecError, "data.holdout_sampling"),
]


# ------------------------------------------------------------------ random filter combinations

RANDOM_N = 400
RANDOM_BASE = dt.datetime(2018, 1, 1)


def _random_table(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "row": pa.array(np.arange(n)),
        "i": pa.array([None if k % 17 == 0 else int(v) for k, v in
                       enumerate(rng.integers(-50, 50, n))], type=pa.int64()),
        "f": pa.array(rng.normal(0, 10, n)),
        "s": pa.array([None if k % 13 == 0 else str(v) for k, v in
                       enumerate(rng.choice(["US", "CA", "UK", "USA", "MX"], n))]),
        "b": pa.array(rng.random(n) < 0.3),
        "ts": pa.array([RANDOM_BASE + dt.timedelta(hours=int(h))
                        for h in rng.integers(0, 24 * 400, n)], type=pa.timestamp("us")),
        "y": pa.array(rng.random(n) < 0.2),
    })


RANDOM_TABLE = _random_table(RANDOM_N, seed=3)


def random_table_spec(path: str, *, filters=(), holdout=None, date_column="ts") -> dict:
    data = {"features": [{"names": ["i", "f", "s", "b", "y"], "source": "local", "path": path}],
            "date_column": date_column, "filters": list(filters)}
    if holdout:
        data["holdout_sampling"] = holdout
    return {"model_name": "m", "owner": "team", "data": data,
            "train": {"workflow_name": "xgboost", "classifier_features": ["i", "f"],
                      "label": "y"}}


SCALAR_PREDICATES = ["Eq", "NotEq", "Gt", "GtEq", "Lt", "LtEq"]
random_dates = st.datetimes(min_value=RANDOM_BASE,
                            max_value=RANDOM_BASE + dt.timedelta(days=400)).map(
    lambda d: d.replace(microsecond=0).isoformat())


def filters_for(column: str) -> st.SearchStrategy:
    if column == "i":
        value = st.integers(-60, 60)
        values, vkey = st.lists(st.integers(-60, 60), min_size=1, max_size=5), "int"
    elif column == "f":
        value = st.floats(-30, 30, allow_nan=False)
        values = st.lists(st.floats(-30, 30, allow_nan=False), min_size=1, max_size=5)
        vkey = "float"
    elif column == "s":
        value, values, vkey = st.sampled_from(["US", "CA", "U", "M", "ZZ"]), \
            st.lists(st.sampled_from(["US", "CA", "UK", "ZZ"]), min_size=1, max_size=4), "string"
    else:
        value, values, vkey = random_dates, st.lists(random_dates, min_size=1, max_size=3), "string"
    scalar = st.builds(lambda p, v: {"feature_name": column, "predicate": p,
                                     "feature_value": {f"{vkey}_val": v}},
                       st.sampled_from(SCALAR_PREDICATES), value)
    listy = st.builds(lambda p, v: {"feature_name": column, "predicate": p,
                                    "feature_value": {f"{vkey}_vals": v}},
                      st.sampled_from(["IsIn", "NotIn"]), values)
    between = st.builds(lambda a, b: {"feature_name": column, "predicate": "Between",
                                      "feature_value": {f"{vkey}_vals": sorted([a, b])}},
                        value, value)
    nulls = st.builds(lambda p: {"feature_name": column, "predicate": p},
                      st.sampled_from(["IsNull", "IsNotNull"]))
    options = [scalar, listy, between, nulls]
    if column == "s":
        options.append(st.builds(lambda v: {"feature_name": "s", "predicate": "StartsWith",
                                            "feature_value": {"string_val": v}},
                                 st.sampled_from(["U", "US", "C", ""])))
    return st.one_of(options)


any_filter = st.sampled_from(["i", "f", "s", "ts"]).flatmap(filters_for)


def check_schema_change(spec: dict, change, error, field) -> None:
    """Apply one of ``SCHEMA_CHECKS`` to ``spec`` and check what validate_spec says: nothing
    (``error`` None), or a 422 of ``error`` naming ``field``."""
    from railyard.spec import parse_spec
    from railyard.training.submit_checks import validate_spec

    change(spec)
    if error is None:
        validate_spec(parse_spec(spec))
        return
    with pytest.raises(error) as info:
        validate_spec(parse_spec(spec))
    assert info.value.status_code == 422
    assert info.value.details[0]["field"] == field
    assert field.removesuffix(".feature_name") in info.value.message
