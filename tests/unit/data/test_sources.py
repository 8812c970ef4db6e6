"""Data sources without Ray: every predicate × value type on Parquet files, globs and Hive
partition pruning, joins of several features entries, the holdout split in one piece vs streamed
batch by batch, allowed path prefixes, SQL connection names and queries, submit-time schema
checks and dataset statistics.

FILTER_CASES and TABLE (tests/data_cases.py) are shared with tests/integration/test_sql_source.py,
which runs the same cases against a real Postgres table and requires the same rows; the
table_dir and hive_dir fixtures that write TABLE out are in tests/conftest.py.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from railyard.config import Settings
from railyard.data.allowed_paths import is_allowed
from railyard.data.fetch import describe, plan_read, read_table_arrow, split_holdout
from railyard.data.holdout import INT64_MIN, keep_side, kth_largest, latest_threshold
from railyard.errors import DataSourceError, ForbiddenError, SpecError
from railyard.spec import DataSpec, parse_spec
from railyard.spec.sql_guard import check_select_only
from railyard.training.submit_checks import validate_spec
from tests.data_cases import (
    FILTER_CASES,
    HOLDOUTS,
    ROWS,
    SCHEMA_CHECKS,
    TABLE,
    N,
    case_id,
    check_schema_change,
    expected_rows,
    make_spec,
    region,
    year,
)


def local(path, names=("row", "i", "y")) -> dict:
    return {"names": list(names), "source": "local", "path": str(path)}


@pytest.fixture()
def settings():
    return Settings(sql_connections={"warehouse": "postgresql://u@127.0.0.1:1/db"})


# ------------------------------------------------------------------ predicates × value types

@pytest.mark.parametrize("flt", FILTER_CASES, ids=case_id)
def test_every_predicate_and_value_type_on_parquet(table_dir, flt):
    spec = parse_spec(make_spec([local(table_dir)], filters=[flt]))
    got = read_table_arrow(plan_read(spec))
    assert sorted(got["row"].to_pylist()) == expected_rows(flt)
    assert got.column_names == ["row", "i", "y"]        # filtered on, never fetched


# ------------------------------------------------------------------ globs and partitions

def test_partition_filter_reads_fewer_files(hive_dir):
    everything = plan_read(parse_spec(make_spec([local(hive_dir)])))
    assert everything.sources[0].scan.files_read == everything.sources[0].scan.files_total == 6
    flt = [{"feature_name": "year", "predicate": "Eq", "feature_value": {"int_val": 2018}},
           {"feature_name": "region", "predicate": "IsIn",
            "feature_value": {"string_vals": ["us"]}}]
    plan = plan_read(parse_spec(make_spec([local(hive_dir)], filters=flt)))
    scan = plan.sources[0].scan
    assert (scan.files_total, scan.files_read) == (6, 1)
    assert scan.bytes_read < everything.sources[0].scan.bytes_read
    want = sorted(r for r in range(N) if region(r) == "us" and year(r) == 2018)
    assert sorted(read_table_arrow(plan)["row"].to_pylist()) == want
    assert plan.sources[0].rows_before_filters() == len(want)    # footers of the file read
    # A filter on an ordinary column prunes no files.
    plain = plan_read(parse_spec(make_spec([local(hive_dir)], filters=[
        {"feature_name": "i", "predicate": "Gt", "feature_value": {"int_val": 0}}])))
    assert plain.sources[0].scan.files_read == 6


def test_partition_columns_can_be_fetched(hive_dir):
    spec = make_spec([local(hive_dir, names=("row", "i", "y", "region", "year"))])
    table = read_table_arrow(plan_read(parse_spec(spec)))
    assert table.num_rows == N
    assert dict(zip(table["row"].to_pylist(), table["region"].to_pylist(),
                    strict=True))[4] == "eu"


def test_globs_match_files_and_directories(table_dir, hive_dir):
    one = parse_spec(make_spec([local(f"{table_dir}/a.parq*")]))
    assert read_table_arrow(plan_read(one)).num_rows == 100
    both = parse_spec(make_spec([local(f"{table_dir}/[ab].parquet")]))
    assert plan_read(both).sources[0].scan.files_read == 2
    deep = plan_read(parse_spec(make_spec([local(f"{hive_dir}/**/*.parquet")], filters=[
        {"feature_name": "year", "predicate": "Eq", "feature_value": {"int_val": 2019}}])))
    assert (deep.sources[0].scan.files_total, deep.sources[0].scan.files_read) == (6, 2)
    shallow = parse_spec(make_spec([local(f"{hive_dir}/*.parquet")]))
    with pytest.raises(DataSourceError, match="no files match"):
        plan_read(shallow)


def test_missing_paths_are_422(tmp_path):
    with pytest.raises(DataSourceError, match="cannot read Parquet") as info:
        plan_read(parse_spec(make_spec([local(tmp_path / "nope")])))
    assert info.value.status_code == 422
    assert info.value.details[0]["field"] == "data.features.0.path"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataSourceError, match="no Parquet files"):
        plan_read(parse_spec(make_spec([local(tmp_path / "empty")])))


# ------------------------------------------------------------------ joins

@pytest.fixture(scope="module")
def join_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("join")
    charges = pa.table({"charge_id": pa.array(range(300)),
                        "merchant_id": pa.array([k % 40 for k in range(300)], type=pa.int64()),
                        "amount": pa.array([float(k % 17) for k in range(300)]),
                        "fraud": pa.array([k % 9 == 0 for k in range(300)])})
    merchants = pa.table({"merchant_id": pa.array(range(0, 60, 2), type=pa.int32()),
                          "mcc": pa.array([None if m % 5 == 0 else ["food", "travel"][m % 2 == 0
                                           and m % 3 == 0] for m in range(0, 60, 2)]),
                          "risk": pa.array([m / 10 for m in range(0, 60, 2)])})
    pq.write_table(charges, root / "charges.parquet")
    pq.write_table(merchants, root / "merchants.parquet")
    return root, charges.to_pandas(), merchants.to_pandas()


def _join_spec(root, *, join_type="inner", filters=()):
    return parse_spec(make_spec(
        [local(root / "charges.parquet", names=("charge_id", "amount", "fraud", "merchant_id")),
         local(root / "merchants.parquet", names=("mcc", "risk"))],
        filters=filters, label="fraud", classifier=("amount", "risk"),
        join_key="merchant_id", join_type=join_type))


@pytest.mark.parametrize("join_type", ["inner", "left"])
def test_join_matches_a_pandas_merge(join_dirs, join_type):
    root, charges, merchants = join_dirs
    plan = plan_read(_join_spec(root, join_type=join_type))
    got = read_table_arrow(plan).to_pandas().sort_values("charge_id").reset_index(drop=True)
    want = charges.merge(merchants, on="merchant_id", how=join_type).sort_values("charge_id")
    assert list(got.columns) == ["charge_id", "amount", "fraud", "merchant_id", "mcc", "risk"]
    assert got["charge_id"].tolist() == want["charge_id"].tolist()
    assert got["risk"].fillna(-1).tolist() == want["risk"].fillna(-1).tolist()


def test_join_filters_go_to_the_source_that_has_the_column(join_dirs):
    root, charges, merchants = join_dirs
    filters = [{"feature_name": "mcc", "predicate": "Eq", "feature_value": {"string_val": "food"}},
               {"feature_name": "amount", "predicate": "Gt", "feature_value": {"int_val": 3}},
               {"feature_name": "merchant_id", "predicate": "Lt", "feature_value": {"int_val": 30}}]
    plan = plan_read(_join_spec(root, filters=filters))
    assert [[n for n, _ in sp.filters] for sp in plan.sources] == [[1, 2], [0, 2]]
    got = read_table_arrow(plan)
    df = charges.merge(merchants, on="merchant_id")
    want = df[(df.mcc == "food") & (df.amount > 3) & (df.merchant_id < 30)]
    assert sorted(got["charge_id"].to_pylist()) == sorted(want["charge_id"])


def test_left_join_filters_on_the_right_apply_after_the_join(join_dirs):
    root, charges, merchants = join_dirs
    df = charges.merge(merchants, on="merchant_id", how="left")
    null_mcc = {"feature_name": "mcc", "predicate": "IsNull"}
    plan = plan_read(_join_spec(root, join_type="left", filters=[null_mcc]))
    assert plan.sources[1].filters == [] and len(plan.post_filters) == 1
    got = read_table_arrow(plan)
    assert sorted(got["charge_id"].to_pylist()) == sorted(df[df.mcc.isna()]["charge_id"])
    food = {"feature_name": "mcc", "predicate": "Eq", "feature_value": {"string_val": "food"}}
    plan = plan_read(_join_spec(root, join_type="left", filters=[food]))
    assert len(plan.sources[1].filters) == 1 and len(plan.post_filters) == 1
    got = read_table_arrow(plan)
    assert sorted(got["charge_id"].to_pylist()) == sorted(df[df.mcc == "food"]["charge_id"])
    assert "mcc" in got.column_names


def test_join_spec_errors(join_dirs, tmp_path):
    root, _, _ = join_dirs
    two = make_spec([local(root / "charges.parquet", names=("charge_id", "merchant_id")),
                     local(root / "merchants.parquet", names=("mcc",))], classifier=("mcc",),
                    label="charge_id")
    with pytest.raises(SpecError, match="set data.join_key"):
        parse_spec(two)
    twice = make_spec([local(root / "charges.parquet", names=("charge_id", "risk")),
                       local(root / "merchants.parquet", names=("risk",))],
                      join_key="merchant_id", classifier=("risk",), label="charge_id")
    with pytest.raises(SpecError, match="also fetched by data.features.0"):
        parse_spec(twice)
    bad_key = make_spec([local(root / "charges.parquet", names=("charge_id",)),
                         local(root / "merchants.parquet", names=("mcc",))],
                        join_key="charge_id", classifier=("mcc",), label="charge_id")
    with pytest.raises(DataSourceError, match="data.join_key: no column 'charge_id'"):
        plan_read(parse_spec(bad_key))
    nine = make_spec([local(root / "charges.parquet", names=("charge_id",))] * 9,
                     join_key="charge_id", classifier=("charge_id",), label="charge_id")
    with pytest.raises(SpecError, match="at most 8"):
        parse_spec(nine)
    pq.write_table(pa.table({"merchant_id": ["x"], "risk": [1.0]}), tmp_path / "m.parquet")
    wrong_type = make_spec([local(root / "charges.parquet", names=("charge_id", "merchant_id")),
                            local(tmp_path / "m.parquet", names=("risk",))],
                           join_key="merchant_id", classifier=("risk",), label="charge_id")
    with pytest.raises(SpecError, match="join on columns of the same kind"):
        plan_read(parse_spec(wrong_type))


def test_a_column_in_two_sources_must_be_picked(join_dirs, tmp_path):
    root, _, _ = join_dirs
    pq.write_table(pa.table({"merchant_id": [1], "amount": [2.0]}), tmp_path / "m.parquet")
    spec = make_spec([local(root / "charges.parquet", names=("charge_id", "fraud")),
                      local(tmp_path / "m.parquet", names=("merchant_id",))],
                     join_key="merchant_id", classifier=("charge_id",), label="fraud",
                     filters=[{"feature_name": "amount", "predicate": "IsNotNull"}])
    with pytest.raises(SpecError, match="'amount' is in data.features.0 and data.features.1"):
        plan_read(parse_spec(spec))


# ------------------------------------------------------------------ holdout sampling

def _data(holdout) -> DataSpec:
    return DataSpec.model_validate(make_spec([local("/x", names=("row", "i", "s", "f"))],
                                             holdout=holdout, date_column="ts")["data"])


def _batch_scan(table: pa.Table, size: int):
    return lambda fn: [fn(pa.Table.from_batches([b])) for b in table.to_batches(size)]


@pytest.mark.parametrize("name", list(HOLDOUTS))
def test_streamed_split_equals_the_in_process_split(name):
    """keep_side on batches (what Ray's map_batches runs) gives the in-process split."""
    data = _data(HOLDOUTS[name])
    train, holdout = split_holdout(TABLE, data)
    assert train.num_rows + holdout.num_rows == N
    threshold = None
    if name == "LATEST":
        k = int(round(N * 0.25))
        threshold = kth_largest(_batch_scan(TABLE, 17), "ts", k, bins=8, collect_max=5)
        assert threshold == latest_threshold(TABLE, data)
    batches = [pa.Table.from_batches([b]) for b in TABLE.to_batches(31)]
    for side, want in ((True, holdout), (False, train)):
        got = [r for b in batches
               for r in keep_side(b, data, side, threshold=threshold)["row"].to_pylist()]
        assert sorted(got) == sorted(want["row"].to_pylist())


@pytest.mark.parametrize("name", ["RANDOM", "HASH", "DATE_RANGE", "LATEST"])
def test_split_ignores_row_order_and_chunking(name):
    data = _data(HOLDOUTS[name])
    shuffled = TABLE.take(pa.array(np.random.default_rng(2).permutation(N)))
    rechunked = pa.Table.from_batches(shuffled.to_batches(13))
    holdouts = [sorted(split_holdout(t, data)[1]["row"].to_pylist())
                for t in (TABLE, shuffled, rechunked)]
    assert holdouts[0] == holdouts[1] == holdouts[2]


def test_random_split_depends_on_the_seed_and_fraction():
    def held(seed, fraction):
        data = _data({"sampling_function": "RANDOM",
                      "random_sampling": {"fraction": fraction, "seed": seed}})
        return set(split_holdout(TABLE, data)[1]["row"].to_pylist())
    assert held(1, 0.3) != held(2, 0.3)
    assert 0.2 * N < len(held(1, 0.3)) < 0.4 * N
    assert held(1, 0.1) <= held(1, 0.3)            # same hash, larger fraction: a superset


def test_hash_split_keeps_each_key_on_one_side():
    train, holdout = split_holdout(TABLE, _data(HOLDOUTS["HASH"]))
    assert not set(train["s"].to_pylist()) & set(holdout["s"].to_pylist())


def test_kth_largest_is_exact_with_ties_and_nulls():
    values = np.array([5, 5, 5, 9, 1, 1, -3, 2 ** 40, -(2 ** 40)] * 7, dtype=np.int64)
    column = pa.array([None if k % 4 == 0 else int(v) for k, v in enumerate(values)],
                      type=pa.int64())
    table = pa.table({"t": column})
    nonnull = np.sort(column.drop_null().to_numpy())[::-1]
    for k in range(1, len(nonnull) + 1):
        got = kth_largest(_batch_scan(table, 5), "t", k, bins=4, collect_max=2)
        assert got == nonnull[k - 1], k
    assert kth_largest(_batch_scan(table, 5), "t", len(nonnull) + 1) == INT64_MIN


# ------------------------------------------------------------------ allowed prefixes

@pytest.mark.parametrize("path, prefixes, allowed", [
    ("/srv/data/x.parquet", [], True),
    ("/srv/data/x.parquet", ["/srv/data"], True),
    ("/srv/data", ["/srv/data/"], True),
    ("/srv/database/x.parquet", ["/srv/data"], False),
    ("/srv/data/../etc/passwd", ["/srv/data"], False),
    ("file:///srv/data/a", ["/srv/data"], True),
    ("s3://bucket/datasets/a/*.parquet", ["s3://bucket/datasets"], True),
    ("s3://bucket/datasets-private/a", ["s3://bucket/datasets"], False),
    ("s3://bucket/datasets/../secret/a", ["s3://bucket/datasets"], False),
    ("s3://other/datasets/a", ["s3://bucket/datasets", "/srv/data"], False),
    ("s3://any/thing", ["s3://"], True),
])
def test_allowed_prefixes(path, prefixes, allowed):
    assert is_allowed(path, prefixes) is allowed


def test_a_path_outside_the_prefixes_is_403_before_it_is_touched(tmp_path, table_dir):
    settings = Settings(allowed_data_prefixes=f"{table_dir},s3://bucket/ok")
    inside = parse_spec(make_spec([local(table_dir)]))
    validate_spec(inside, settings=settings)
    outside = parse_spec(make_spec([local(tmp_path / "does-not-exist")]))
    with pytest.raises(ForbiddenError) as info:
        validate_spec(outside, settings=settings)
    assert info.value.status_code == 403
    assert str(tmp_path / "does-not-exist") in info.value.message
    assert str(table_dir) in info.value.message and "s3://bucket/ok" in info.value.message
    assert info.value.details[0]["field"] == "data.features.0.path"


# ------------------------------------------------------------------ SQL names and queries

def test_sql_sources_name_a_connection(settings, table_dir):
    sql = {"names": ["i"], "source": "sql", "connection": "warehouse", "table": "charges"}
    spec = parse_spec(make_spec([sql]))
    assert spec.data.features[0].table == "charges"
    unknown = parse_spec(make_spec([{**sql, "connection": "lake"}]))
    with pytest.raises(DataSourceError, match="no SQL connection named 'lake'.*ask your "
                       "operator") as info:
        validate_spec(unknown, settings=settings)
    assert info.value.details[0]["field"] == "data.features.0.connection"
    assert "warehouse" not in info.value.message + repr(info.value.details)   # no other names
    with pytest.raises(DataSourceError, match="set RAILYARD_SQL_CONNECTIONS"):
        plan_read(unknown, settings=Settings())
    for bad in ({**sql, "connection": "postgresql://u:p@host/db"},
                {**sql, "table": "charges; DROP TABLE x"},
                {**sql, "query": "SELECT 1"},
                {k: v for k, v in sql.items() if k != "table"},
                {**sql, "path": "/x"}):
        with pytest.raises(SpecError):
            parse_spec(make_spec([bad]))


@pytest.mark.parametrize("query", [
    "SELECT * FROM charges",
    "  select a, b from t where c = 'DELETE FROM x; --' ;",
    "WITH m AS (SELECT 1 AS x) SELECT * FROM m",
    "(SELECT 1) UNION (SELECT 2)",
    'SELECT "update", "into" FROM t /* INSERT */ -- DROP\n',
    "SELECT $$; DELETE $$ AS body",
])
def test_select_queries_pass(query):
    check_select_only(query)


@pytest.mark.parametrize("query, words", [
    ("DELETE FROM charges", "only SELECT"),
    ("SELECT 1; DROP TABLE charges", "one statement"),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "'DELETE'"),
    ("SELECT * INTO copy FROM charges", "'INTO'"),
    ("SELECT * FROM t FOR UPDATE", "FOR UPDATE"),
    ("SELECT * FROM t FOR KEY SHARE", "FOR KEY SHARE"),
    ("SELECT 'unterminated", "unterminated"),
    ("UPDATE t SET a = 1", "only SELECT"),
    ("COPY t TO '/tmp/x'", "only SELECT"),
])
def test_other_statements_are_refused(query, words):
    with pytest.raises(ValueError, match=words):
        check_select_only(query)


def test_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RAILYARD_HOME", str(tmp_path))
    monkeypatch.setenv("RAILYARD_SQL_CONNECTIONS", json.dumps({"wh": "postgresql://h/db"}))
    monkeypatch.setenv("RAILYARD_ALLOWED_DATA_PREFIXES", "s3://b/data, /srv/data")
    settings = Settings()
    assert settings.sql_connections == {"wh": "postgresql://h/db"}
    assert settings.allowed_data_prefixes == ["s3://b/data", "/srv/data"]
    env = settings.runtime_env_vars()
    # The connections reach the job through the secrets directory, never its runtime env.
    assert "RAILYARD_SQL_CONNECTIONS" not in env
    shared = tmp_path / "secrets" / "RAILYARD_SQL_CONNECTIONS"
    assert json.loads(shared.read_text()) == {"wh": "postgresql://h/db"}
    assert env["RAILYARD_SECRETS_DIR"] == str(tmp_path / "secrets")
    assert env["RAILYARD_ALLOWED_DATA_PREFIXES"] == "s3://b/data,/srv/data"
    assert "postgresql://h/db" not in repr(settings)


# ------------------------------------------------------------------ submit-time schema checks

@pytest.mark.parametrize("change, error, field", SCHEMA_CHECKS)
def test_submit_time_schema_checks(table_dir, change, error, field):
    check_schema_change(make_spec([local(table_dir)]), change, error, field)


def test_schema_lookups_are_cached(tmp_path):
    d = tmp_path / "cached"
    d.mkdir()
    pq.write_table(TABLE, d / "t.parquet")
    spec = parse_spec(make_spec([local(d)]))
    validate_spec(spec)
    os.remove(d / "t.parquet")
    validate_spec(spec)                 # the schema comes from the cache (TTL 60 s)


# ------------------------------------------------------------------ statistics

def test_describe_reports_what_the_read_touched(hive_dir):
    spec = parse_spec(make_spec(
        [local(hive_dir, names=("row", "i", "s", "y"))], label="y",
        filters=[{"feature_name": "year", "predicate": "GtEq", "feature_value": {"int_val": 2018}},
                 {"feature_name": "i", "predicate": "IsNotNull"}],
        holdout=HOLDOUTS["DATE_RANGE"], date_column="ts"))
    plan = plan_read(spec)
    table = read_table_arrow(plan)
    train, holdout = split_holdout(table, spec.data)
    stats = describe(table, train, holdout, "y", plan=plan).to_dict()
    in_years = [r for r in range(N) if year(r) >= 2018]
    want = [r for r in in_years if ROWS[r]["i"] is not None]
    assert stats["rows_read"] == len(in_years)           # Parquet footers, before row filters
    assert stats["rows_after_filters"] == len(want)
    assert stats["train_rows"] + stats["holdout_rows"] == len(want) and stats["holdout_rows"]
    assert (stats["files_total"], stats["files_read"]) == (6, 4)
    assert stats["bytes_read"] > 0
    assert stats["null_counts"]["i"] == 0
    assert stats["null_counts"]["s"] == sum(ROWS[r]["s"] is None for r in want)
    assert stats["label_balance"] == {
        str(v).replace("True", "True"): c for v, c in
        pd.Series([ROWS[r]["y"] for r in want]).value_counts().items()}
    assert stats["sources"][0]["filters"] == [0, 1]
    json.dumps(stats)


def test_ray_reads_get_the_partition_types_pyarrow_found(hive_dir):
    from railyard.data.parquet_sources import open_dataset, partition_types

    source = parse_spec(make_spec([local(hive_dir)])).data.features[0]
    assert partition_types(open_dataset(source)) == {"region": str, "year": int}
