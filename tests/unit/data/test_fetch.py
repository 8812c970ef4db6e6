"""Filters, value conversion and holdout sampling on real Parquet files (no Ray)."""

from __future__ import annotations

import datetime as dt

import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from railyard.data.fetch import filters_to_expr, plan_read, read_table_arrow, split_holdout
from railyard.errors import DataSourceError, SpecError
from railyard.spec import DataSpec, Filter, parse_spec
from tests.data_cases import RANDOM_N, RANDOM_TABLE, any_filter, random_table_spec, reference

ROWS = RANDOM_TABLE.to_pylist()


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    pq.write_table(RANDOM_TABLE.slice(0, 200), d / "a.parquet")
    pq.write_table(RANDOM_TABLE.slice(200), d / "b.parquet")
    return str(d)


@given(st.lists(any_filter, min_size=1, max_size=3))
def test_filtered_rows_equal_the_reference(filter_dicts):
    filters = [Filter.model_validate(f) for f in filter_dicts]
    expr = filters_to_expr(filters, RANDOM_TABLE.schema)
    got = sorted(RANDOM_TABLE.filter(expr.to_pyarrow())["row"].to_pylist())
    want = sorted(r["row"] for r in ROWS if all(reference(r, f) for f in filter_dicts))
    assert got == want


def test_read_prunes_columns_and_pushes_filters(parquet_dir):
    spec = parse_spec(random_table_spec(parquet_dir, filters=[
        {"feature_name": "ts", "predicate": "GtEq", "feature_value": {"string_val": "2018-06-01"}},
        {"feature_name": "s", "predicate": "IsIn", "feature_value": {"string_vals": ["US"]}}]))
    plan = plan_read(spec)
    assert plan.columns == ["i", "f", "s", "b", "y", "ts"]
    table = read_table_arrow(plan)
    want = [r for r in ROWS if r["s"] == "US" and r["ts"] >= dt.datetime(2018, 6, 1)]
    assert table.num_rows == len(want) and table.column_names == plan.columns


@pytest.mark.parametrize("flt, words", [
    ({"feature_name": "f", "predicate": "Gt", "feature_value": {"string_val": "x"}},
     "data.filters.0 (f): column has type double"),
    ({"feature_name": "s", "predicate": "Eq", "feature_value": {"int_val": 3}},
     "data.filters.0 (s): column has type string"),
    ({"feature_name": "ts", "predicate": "Gt", "feature_value": {"string_val": "soon"}},
     "not a date"),
    ({"feature_name": "b", "predicate": "Eq", "feature_value": {"int_val": 1}}, "bool_val"),
    ({"feature_name": "i", "predicate": "StartsWith", "feature_value": {"string_val": "1"}},
     "StartsWith needs a string column"),
])
def test_type_mismatches_name_filter_and_column(parquet_dir, flt, words):
    with pytest.raises(SpecError) as info:
        plan_read(parse_spec(random_table_spec(parquet_dir, filters=[flt])))
    assert words in info.value.message


def test_missing_columns_and_paths_are_data_source_errors(parquet_dir, tmp_path):
    bad = random_table_spec(parquet_dir, filters=[{"feature_name": "nope", "predicate": "IsNull"}])
    with pytest.raises(DataSourceError, match="no column 'nope'"):
        plan_read(parse_spec(bad))
    fetched = random_table_spec(parquet_dir)
    fetched["data"]["features"][0]["names"].append("ghost")
    with pytest.raises(DataSourceError, match="ghost"):
        plan_read(parse_spec(fetched))
    with pytest.raises(DataSourceError, match="cannot read Parquet"):
        plan_read(parse_spec(random_table_spec(str(tmp_path / "missing"))))
    unlabeled = random_table_spec(parquet_dir)
    unlabeled["train"]["label"] = "z"
    with pytest.raises(SpecError, match="train.label"):
        plan_read(parse_spec(unlabeled))


HOLDOUTS = {
    "DATE_RANGE": {"sampling_function": "DATE_RANGE", "date_range_sampling": {
        "start_date": "2018-10-01", "end_date": "2019-01-01"}},
    "RANDOM": {"sampling_function": "RANDOM", "random_sampling": {"fraction": 0.25, "seed": 4}},
    "LATEST": {"sampling_function": "LATEST", "latest_sampling": {"fraction": 0.2}},
    "HASH": {"sampling_function": "HASH", "hash_sampling": {"column": "s", "fraction": 0.4}},
    "NONE": {"sampling_function": "NONE"},
}


@pytest.mark.parametrize("name", list(HOLDOUTS))
def test_holdout_split_is_deterministic_and_partitions_rows(name):
    data = DataSpec.model_validate(random_table_spec("/x", holdout=HOLDOUTS[name])["data"])
    train, holdout = split_holdout(RANDOM_TABLE, data)
    train2, holdout2 = split_holdout(RANDOM_TABLE, data)
    assert train.num_rows + holdout.num_rows == RANDOM_N
    assert holdout["row"].to_pylist() == holdout2["row"].to_pylist()
    rows = {r: k for k, r in enumerate(holdout["row"].to_pylist())}
    if name == "DATE_RANGE":
        assert all(dt.datetime(2018, 10, 1) <= ROWS[r]["ts"] <= dt.datetime(2019, 1, 1)
                   for r in rows)
        assert holdout.num_rows == sum(dt.datetime(2018, 10, 1) <= r["ts"] <=
                                       dt.datetime(2019, 1, 1) for r in ROWS)
    elif name == "LATEST":
        assert holdout.num_rows == 80
        assert min(holdout["ts"].to_pylist()) >= max(train["ts"].to_pylist())
    elif name == "HASH":
        assert not set(holdout["s"].to_pylist()) & set(train["s"].to_pylist())
    elif name == "RANDOM":
        assert 50 < holdout.num_rows < 150
    else:
        assert holdout.num_rows == 0
