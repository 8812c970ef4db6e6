"""SQL sources as a privilege of the token, and the SQL guard, against the real Postgres: the API
in-process (tests.fakes.ApiPlatform, its job store on SQLite) whose server names two connections
to a Postgres database; submits check the grants, the query and the schema against it. Then the
reads' fences on that database: the read-only transaction, the quoting the guard assumes, and the
statement timeout in the driver's reads and in Ray Data's connection factory (no Ray cluster)."""

from __future__ import annotations

import psycopg
import pytest
import sqlalchemy as sa

from railyard.config import Settings, get_settings
from railyard.data import sql_sources
from railyard.data.fetch import plan_read, read_table_arrow
from railyard.errors import DataSourceError
from railyard.jobstore import tokens
from railyard.spec import parse_spec
from tests.data_cases import make_spec
from tests.fakes import TEAM_A, ApiPlatform, fresh_database

DATABASE = "railyard_sql_privileges"
ROWS = 40
# Long enough to outlast any statement timeout below by far; allowed by the guard.
SLOW_QUERY = ("SELECT count(*) AS row, 1 AS i, true AS y "
              "FROM generate_series(1, 20000) AS a(x) CROSS JOIN generate_series(1, 20000) AS b(x)")


@pytest.fixture(scope="module")
def warehouse(postgres) -> str:
    """A database with a ``charges`` table of ROWS rows; returns its URL."""
    url = fresh_database(postgres, DATABASE)
    engine = sa.create_engine(sql_sources.normalize_url(url))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE charges (row bigint PRIMARY KEY, i bigint, y boolean)")
        conn.execute(sa.text("INSERT INTO charges VALUES (:row, :i, :y)"),
                     [{"row": k, "i": k % 7, "y": k % 2 == 0} for k in range(ROWS)])
    engine.dispose()
    return url


@pytest.fixture()
def plat(tmp_path, warehouse) -> ApiPlatform:
    return ApiPlatform(tmp_path, sql_connections={"warehouse_main": warehouse,
                                                  "finance_ledger": warehouse},
                       allowed_data_prefixes=[str(tmp_path)])


def sql_job(owner: str, connection: str = "warehouse_main", **where) -> dict:
    spec = make_spec([{"names": ["row", "i", "y"], "source": "sql", "connection": connection,
                       **(where or {"table": "charges"})}])
    spec["owner"] = owner
    return spec


def post(plat: ApiPlatform, token: str, spec: dict):
    return plat.http.post("/v1/jobs", json=spec, headers={"Authorization": f"Bearer {token}"})


def rows_in_charges(url: str) -> int:
    with sql_sources.read_only(url) as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM charges").scalar_one())


# ------------------------------------------------------------------ grants

def test_a_token_with_data_prefixes_reads_sql_only_through_its_grants(plat, tmp_path):
    engine = plat.service.engine
    narrowed, _ = tokens.issue(engine, team="team-c", data_prefixes=[str(tmp_path / "c")])
    r = post(plat, narrowed, sql_job("team-c"))
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["type"] == "ForbiddenError"
    assert error["details"][0]["field"] == "data.features.0.connection"
    assert "--sql-connection warehouse_main" in error["message"]

    granted, row = tokens.issue(engine, team="team-c", data_prefixes=[str(tmp_path / "c")],
                                sql_connections=["warehouse_main"])
    assert row.sql_connections == ["warehouse_main"]
    r = post(plat, granted, sql_job("team-c"))
    assert r.status_code == 201, r.text
    assert r.json()["status"] in ("PENDING", "QUEUED")
    r = post(plat, granted, sql_job("team-c", "finance_ledger"))
    assert r.status_code == 403 and "'warehouse_main'" in r.json()["error"]["message"]
    # A token with neither prefixes nor grants reads every connection the server defines.
    assert post(plat, plat.tokens[TEAM_A], sql_job(TEAM_A, "finance_ledger")).status_code == 201
    assert len(plat.backend.submitted) == 2


def test_an_unknown_connection_is_a_422_that_names_no_other_connection(plat):
    r = post(plat, plat.tokens[TEAM_A], sql_job(TEAM_A, "ledger"))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["details"][0]["field"] == "data.features.0.connection"
    assert "no SQL connection named 'ledger'" in error["message"]
    assert "ask your operator" in error["message"]
    assert "warehouse_main" not in r.text and "finance_ledger" not in r.text
    assert plat.backend.submitted == []


# ------------------------------------------------------------------ the guard

@pytest.mark.parametrize("query, named", [
    ("SELECT row, i, y, pg_read_file('/etc/passwd') AS f FROM charges", "pg_read_file()"),
    ("SELECT row, i, y FROM charges WHERE pg_terminate_backend(pg_backend_pid())",
     "pg_terminate_backend()"),
    ("SELECT row, i, y, set_config('default_transaction_read_only', 'off', false) AS s "
     "FROM charges", "set_config()"),
    ("SELECT row, i, y FROM charges, LATERAL pg_sleep(86400) AS s(v)", "pg_sleep()"),
    ("SELECT row, i, y FROM charges WHERE row IN (SELECT oid FROM pg_authid)", "pg_authid"),
])
def test_dangerous_queries_are_a_422_naming_the_function(plat, warehouse, query, named):
    r = post(plat, plat.tokens[TEAM_A], sql_job(TEAM_A, query=query))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["details"][0]["field"] == "data.features.0.query"
    assert named in error["message"]
    assert plat.backend.submitted == []


def test_the_e_string_trick_is_refused_and_postgres_reads_it_as_the_guard_does(plat, warehouse):
    trick = ("SELECT E'\\'' AS x) q0; COMMIT; DELETE FROM charges; SELECT * FROM "
             "(SELECT 1 AS row, 1 AS i, true AS y --'")
    r = post(plat, plat.tokens[TEAM_A], sql_job(TEAM_A, query=trick))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["field"] == "data.features.0.query"
    assert plat.backend.submitted == [] and rows_in_charges(warehouse) == ROWS
    # Postgres reads E'\'' as one quote (so the rest was code), and '\' as a backslash: the
    # reading the guard's parser makes, with standard_conforming_strings as reads pin it.
    with sql_sources.read_only(warehouse) as conn:
        assert conn.exec_driver_sql("SELECT E'\\'' AS q, '\\' AS b").one() == ("'", "\\")
        assert conn.exec_driver_sql("SHOW standard_conforming_strings").scalar_one() == "on"
        assert conn.exec_driver_sql("SHOW transaction_read_only").scalar_one() == "on"
    # An ordinary analytic query on the same connection is accepted and planned.
    ok = ("WITH w AS (SELECT row, i, y, row_number() OVER (PARTITION BY i ORDER BY row) AS rn "
          "FROM charges) SELECT row, coalesce(i, 0) AS i, y FROM w WHERE rn <= 3")
    assert post(plat, plat.tokens[TEAM_A], sql_job(TEAM_A, query=ok)).status_code == 201


# ------------------------------------------------------------------ the statement timeout

def test_reads_stop_at_the_statement_timeout(warehouse):
    with sql_sources.read_only(warehouse) as conn:       # the default, from the settings
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar_one() == "10min"
    with sql_sources.read_only(warehouse, timeout_s=0.2) as conn, \
            pytest.raises(sa.exc.OperationalError, match="statement timeout"):
        conn.exec_driver_sql(SLOW_QUERY)
    # Ray Data's read tasks connect through the factory: the same limit, per session.
    spec = parse_spec(make_spec([{"names": ["row", "i", "y"], "source": "sql",
                                  "connection": "wh", "query": SLOW_QUERY}]))
    plan = plan_read(spec, settings=Settings(sql_connections={"wh": warehouse}))
    args = sql_sources.ray_read_args(plan.sources[0].statement, warehouse, timeout_s=0.2)
    connection = args["connection_factory"]()
    try:
        cursor = connection.cursor()
        with pytest.raises(psycopg.errors.QueryCanceled, match="statement timeout"):
            cursor.execute(args["sql"], args["sql_params"])
    finally:
        connection.close()


def test_a_read_past_the_statement_timeout_fails_with_the_reason(warehouse, monkeypatch):
    monkeypatch.setenv("RAILYARD_SQL_STATEMENT_TIMEOUT_S", "0.3")
    get_settings.cache_clear()
    try:
        spec = parse_spec(make_spec([{"names": ["row", "i", "y"], "source": "sql",
                                      "connection": "wh", "query": SLOW_QUERY}]))
        plan = plan_read(spec, settings=Settings(sql_connections={"wh": warehouse}))
        with pytest.raises(DataSourceError, match="statement timeout") as info:
            read_table_arrow(plan)                      # what a job's driver runs
    finally:
        get_settings.cache_clear()
    assert info.value.status_code == 422
    assert "RAILYARD_SQL_STATEMENT_TIMEOUT_S" in info.value.message
    assert info.value.details[0]["field"] == "data.features.0"
