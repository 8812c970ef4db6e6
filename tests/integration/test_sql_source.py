"""SQL sources against a real Postgres (no Ray): every predicate × value type pushed into SQL,
tables and queries, types from the database, joins with Parquet, the read-only fences, the
sharded ``ray.data.read_sql`` arguments (run through Ray's own SQL datasource read tasks, in
this process), submit-time checks and statistics."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from ray.data._internal.datasource.sql_datasource import SQLDatasource

from railyard.config import Settings
from railyard.data import sql_sources
from railyard.data.fetch import describe, plan_read, read_table_arrow, split_holdout
from railyard.errors import BackendUnavailableError, DataSourceError, SpecError
from railyard.spec import parse_spec
from railyard.training.submit_checks import validate_spec
from tests.data_cases import FILTER_CASES, ROWS, TABLE, N, case_id, expected_rows, make_spec
from tests.servers import free_port

DATABASE = "railyard_sources"
START, END = dt.datetime(2018, 6, 1), dt.datetime(2018, 12, 31)


@pytest.fixture(scope="module")
def warehouse(postgres) -> str:
    """A database holding TABLE as ``facts`` and a ``merchants`` table; returns its URL."""
    with psycopg.connect(postgres.dsn(),
                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
        conn.execute(f"CREATE DATABASE {DATABASE}")
    url = f"postgresql://postgres:{postgres.password}@127.0.0.1:{postgres.port}/{DATABASE}"
    engine = sa.create_engine(sql_sources.normalize_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE facts (row bigint PRIMARY KEY, i bigint, f double precision, s text, "
            "b boolean, ts timestamp, d date, y boolean)")
        conn.execute(sa.text("INSERT INTO facts VALUES (:row, :i, :f, :s, :b, :ts, :d, :y)"),
                     ROWS)
        conn.exec_driver_sql(
            "CREATE TABLE merchants (merchant_id integer PRIMARY KEY, mcc varchar(20), "
            "risk numeric(6, 3), since timestamptz, small smallint)")
        conn.execute(sa.text("INSERT INTO merchants VALUES (:m, :mcc, :risk, :since, :small)"), [
            {"m": m, "mcc": None if m % 5 == 0 else ("food" if m % 3 else "travel"),
             "risk": m / 8, "since": f"2016-01-{1 + m % 28:02d} 10:00:00+02", "small": m % 7}
            for m in range(0, 60, 2)])
    engine.dispose()
    return url


@pytest.fixture()
def settings(warehouse) -> Settings:
    return Settings(sql_connections={"wh": warehouse})


def sql(names=("row", "i", "y"), **where) -> dict:
    return {"names": list(names), "source": "sql", "connection": "wh", **where}


# ------------------------------------------------------------------ predicates × value types

@pytest.mark.parametrize("flt", FILTER_CASES, ids=case_id)
def test_every_predicate_and_value_type_on_a_postgres_table(settings, flt):
    spec = parse_spec(make_spec([sql(table="facts")], filters=[flt]))
    plan = plan_read(spec, settings=settings)
    got = read_table_arrow(plan)
    assert sorted(got["row"].to_pylist()) == expected_rows(flt)
    assert got.column_names == ["row", "i", "y"]
    assert "\nWHERE " in str(plan.sources[0].statement)        # filtered in the database


@pytest.mark.parametrize("flt", [c for c in FILTER_CASES if c["predicate"] in
                                 ("Gt", "IsIn", "NotIn", "StartsWith", "Between", "IsNull")],
                         ids=case_id)
def test_filters_apply_to_a_query_as_a_subquery(settings, flt):
    query = "SELECT f.*, 'x:%' AS tag FROM facts AS f WHERE f.row >= 0 -- trailing comment"
    spec = parse_spec(make_spec([sql(query=query)], filters=[flt]))
    got = read_table_arrow(plan_read(spec, settings=settings))
    assert sorted(got["row"].to_pylist()) == expected_rows(flt)


def test_types_come_from_the_database(settings):
    spec = parse_spec(make_spec([sql(names=("merchant_id", "mcc", "risk", "since", "small"),
                                     table="merchants")], label="mcc", classifier=("risk",)))
    plan = plan_read(spec, settings=settings)
    assert dict(zip(plan.sources[0].schema.names, plan.sources[0].schema.types,
                    strict=True)) == {
        "merchant_id": pa.int32(), "mcc": pa.string(), "risk": pa.float64(),
        "since": pa.timestamp("us", tz="UTC"), "small": pa.int16()}
    table = read_table_arrow(plan)
    assert table.schema == plan.output_schema
    row = next(r for r in table.to_pylist() if r["merchant_id"] == 4)
    assert row["risk"] == 0.5 and row["since"].hour == 8          # 10:00+02 is 08:00 UTC
    since = {"feature_name": "since", "predicate": "Lt",
             "feature_value": {"string_val": "2016-01-05T09:00:00+00:00"}}
    early = read_table_arrow(plan_read(parse_spec({**spec.model_dump(), "data": {
        **spec.data.model_dump(), "filters": [since]}}), settings=settings))
    assert sorted(early["merchant_id"].to_pylist()) == sorted(
        m for m in range(0, 60, 2) if (1 + m % 28, 8) < (5, 9))


# ------------------------------------------------------------------ joins with Parquet

@pytest.fixture()
def charges(tmp_path):
    table = pa.table({"charge_id": pa.array(range(200)),
                      "merchant_id": pa.array([k % 40 for k in range(200)], type=pa.int64()),
                      "amount": pa.array([float(k % 13) for k in range(200)]),
                      "fraud": pa.array([k % 7 == 0 for k in range(200)])})
    pq.write_table(table, tmp_path / "charges.parquet")
    return tmp_path / "charges.parquet", table.to_pandas()


@pytest.mark.parametrize("join_type", ["inner", "left"])
def test_parquet_charges_joined_with_sql_merchant_features(settings, warehouse, charges,
                                                           join_type):
    path, frame = charges
    filters = [{"feature_name": "mcc", "predicate": "Eq", "feature_value": {"string_val": "food"}},
               {"feature_name": "amount", "predicate": "GtEq", "feature_value": {"int_val": 2}}]
    spec = parse_spec(make_spec(
        [{"names": ["charge_id", "merchant_id", "amount", "fraud"], "source": "local",
          "path": str(path)}, sql(names=("mcc", "risk"), table="merchants")],
        filters=filters, label="fraud", classifier=("amount", "risk"),
        join_key="merchant_id", join_type=join_type))
    plan = plan_read(spec, settings=settings)
    assert "WHERE merchants.mcc = " in str(plan.sources[1].statement)
    got = read_table_arrow(plan)
    merchants = pd.read_sql("SELECT merchant_id, mcc, risk::float8 AS risk FROM merchants",
                            sa.create_engine(sql_sources.normalize_url(warehouse)))
    df = frame.merge(merchants, on="merchant_id", how=join_type)
    want = df[(df.mcc == "food") & (df.amount >= 2)]
    assert sorted(got["charge_id"].to_pylist()) == sorted(want["charge_id"])
    assert got.schema.field("merchant_id").type == pa.int64()     # the first source's key type


# ------------------------------------------------------------------ read-only, Ray read args

def test_reads_run_in_read_only_transactions(warehouse):
    with sql_sources.read_only(warehouse) as conn, pytest.raises(sa.exc.InternalError,
                                                               match="read-only"):
        conn.exec_driver_sql("CREATE TABLE evil (x int)")
    connection = sql_sources.ConnectionFactory(warehouse)()
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            connection.cursor().execute("DELETE FROM facts")
    finally:
        connection.close()
    assert "postgres:" not in repr(sql_sources.ConnectionFactory(warehouse))
    with pytest.raises(SpecError, match="only SELECT"):
        parse_spec(make_spec([sql(query="DELETE FROM facts RETURNING *")]))


def test_ray_read_sql_arguments_shard_the_same_rows(settings, warehouse):
    flt = {"feature_name": "s", "predicate": "NotIn", "feature_value": {"string_vals": ["a%b"]}}
    query = "SELECT *, 'x%' AS tag FROM facts"       # a '%' in the SQL, and bound parameters
    spec = parse_spec(make_spec([sql(names=("row", "i", "s", "y", "tag"), query=query)],
                                filters=[flt]))
    source = plan_read(spec, settings=settings).sources[0]
    args = sql_sources.ray_read_args(source.statement, warehouse, shard_key="row", parallelism=3)
    datasource = SQLDatasource(sql=args["sql"], connection_factory=args["connection_factory"],
                               shard_keys=args["shard_keys"], shard_hash_fn=args["shard_hash_fn"],
                               sql_params=args["sql_params"])
    tasks = datasource.get_read_tasks(args["override_num_blocks"])
    cast = sql_sources.CastToSchema(source.read_schema)
    blocks = [cast(block) for task in tasks for block in task()]
    assert len(tasks) == 3 and all(b.num_rows for b in blocks)
    table = pa.concat_tables(blocks)
    assert table.schema == source.read_schema
    assert sorted(table["row"].to_pylist()) == expected_rows(flt)
    assert set(table["tag"].to_pylist()) == {"x%"}


# ------------------------------------------------------------------ submit-time checks, stats

def test_submit_time_checks_on_sql_sources(settings, postgres):
    with pytest.raises(DataSourceError, match='relation "nope" does not exist') as info:
        validate_spec(parse_spec(make_spec([sql(table="nope")])), settings=settings)
    assert info.value.details[0]["field"] == "data.features.0"
    with pytest.raises(DataSourceError, match="no column 'ghost'"):
        validate_spec(parse_spec(make_spec([sql(names=("row", "ghost", "y"), table="facts")])),
                      settings=settings)
    with pytest.raises(SpecError, match="could not be parsed"):      # the guard's parser
        parse_spec(make_spec([sql(query="SELECT FROM WHERE")]))
    with pytest.raises(DataSourceError, match="syntax error"):        # the database's
        validate_spec(parse_spec(make_spec([sql(query="SELECT row, i, y FROM facts QUALIFY "
                                                      "true")])), settings=settings)
    with pytest.raises(DataSourceError, match="more than once"):
        validate_spec(parse_spec(make_spec([sql(query="SELECT row, i, y, i FROM facts")])),
                      settings=settings)
    with pytest.raises(DataSourceError, match="no SQL connection named 'other'"):
        validate_spec(parse_spec(make_spec([{**sql(table="facts"), "connection": "other"}])),
                      settings=settings)
    down = Settings(sql_connections={"wh": f"postgresql://postgres@127.0.0.1:{free_port()}/x"})
    with pytest.raises(BackendUnavailableError) as info:
        validate_spec(parse_spec(make_spec([sql(table="facts")])), settings=down)
    assert info.value.status_code == 503 and "postgres@" not in info.value.message
    workflow, plan = validate_spec(parse_spec(make_spec([sql(table="facts")])), settings=settings)
    assert plan.columns == ["row", "i", "y"]


def test_stats_and_split_on_sql_data(settings):
    flt = {"feature_name": "i", "predicate": "Gt", "feature_value": {"int_val": 0}}
    spec = parse_spec(make_spec(
        [sql(table="facts")], filters=[flt], date_column="ts",
        holdout={"sampling_function": "DATE_RANGE",
                 "date_range_sampling": {"start_date": "2018-06-01", "end_date": "2018-12-31"}}))
    plan = plan_read(spec, settings=settings)
    table = read_table_arrow(plan)
    train, holdout = split_holdout(table, spec.data)
    stats = describe(table, train, holdout, "y", plan=plan)
    assert stats.rows_read == N                       # count(*) before the filter
    assert stats.rows_after_filters == len(expected_rows(flt)) == table.num_rows
    assert stats.holdout_rows == sum(1 for r in ROWS if r["i"] is not None and r["i"] > 0
                                     and r["ts"] is not None
                                     and START <= r["ts"] <= END)
    assert stats.files_read is None and stats.sources[0]["kind"] == "sql"
    assert plan.estimated_bytes() > 0
    assert TABLE.num_rows == N
