"""API tokens and what each team may do, through the real app on SQLite with the in-memory
execution backend; the token CLI through typer's CliRunner."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from railyard.cli.main import _ensure_admin_token
from railyard.cli.main import app as cli_app
from railyard.client import credentials
from railyard.client.sdk import RailyardClient
from railyard.config import get_settings
from railyard.control.service import JobService
from railyard.data.demo import sample_spec, write_fraud_dataset
from railyard.jobstore import jobs, tokens
from railyard.jobstore.engine import get_engine, migrate
from serve_app.app import create_app
from tests.fakes import TEAM_A, TEAM_B, ApiPlatform, InMemoryBackend


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    return ApiPlatform(tmp_path)


def test_no_token_or_a_bad_one_is_401_with_www_authenticate(plat):
    r = plat.http.get("/v1/jobs")
    assert r.status_code == 401 and r.json()["error"]["type"] == "AuthError"
    assert "Authorization: Bearer" in r.json()["error"]["message"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    for bad in ("Bearer nonsense", "Bearer ry_" + "x" * 43, "Basic dXNlcjpwdw==",
                "Bearer " + plat.tokens[TEAM_A][:-1] + "!"):
        r = plat.http.get("/v1/workflows", headers={"Authorization": bad})
        assert r.status_code == 401, bad
        assert "WWW-Authenticate" in r.headers
    r = plat.http.get("/v1/workflows", headers={"Authorization": "Bearer ry_nope"})
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    r = plat.http.post("/v1/jobs", json=plat.spec(TEAM_A))
    assert r.status_code == 401
    assert jobs.list_jobs(plat.service.engine)[0] == []
    # Open without a token: health and the API description.
    assert plat.http.get("/healthz").status_code == 200
    assert plat.http.get("/openapi.json").status_code == 200
    assert plat.http.get("/docs").status_code == 200


def test_revoked_token_stops_working(plat):
    assert plat.http.get("/v1/jobs", headers=plat.headers(TEAM_A)).status_code == 200
    tokens.revoke(plat.service.engine, prefix=tokens.prefix_of(plat.tokens[TEAM_A]))
    r = plat.http.get("/v1/jobs", headers=plat.headers(TEAM_A))
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_a_team_cannot_touch_another_teams_job(plat):
    created = plat.submit(TEAM_A)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    assert created.json()["submitted_by"] == TEAM_A
    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/events"),
                         ("GET", f"/v1/jobs/{job_id}/logs"),
                         ("GET", f"/v1/jobs/{job_id}/trials"),
                         ("POST", f"/v1/jobs/{job_id}/cancel")):
        r = plat.http.request(method, path, headers=plat.headers(TEAM_B))
        assert r.status_code == 403, (path, r.text)
        error = r.json()["error"]
        assert error["type"] == "ForbiddenError" and TEAM_B in error["message"]
        assert TEAM_A not in error["message"]           # nothing about the other team leaks
    assert jobs.get_job(plat.service.engine, job_id=job_id).status == "PENDING"
    assert plat.backend.stopped == []
    # The owner team can do all of it.
    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/events"),
                         ("GET", f"/v1/jobs/{job_id}/logs"),
                         ("POST", f"/v1/jobs/{job_id}/cancel")):
        r = plat.http.request(method, path, headers=plat.headers(TEAM_A))
        assert r.status_code == 200, (path, r.text)
    assert plat.http.get("/v1/jobs/job-nope", headers=plat.headers(TEAM_B)).status_code == 404


def test_listing_is_filtered_to_the_callers_team(plat):
    a_ids = {plat.submit(TEAM_A).json()["id"] for _ in range(2)}
    b_id = plat.submit(TEAM_B).json()["id"]
    listed = plat.http.get("/v1/jobs", headers=plat.headers(TEAM_B)).json()["jobs"]
    assert [j["id"] for j in listed] == [b_id]
    listed = plat.http.get("/v1/jobs", params={"owner": TEAM_B},
                           headers=plat.headers(TEAM_B)).json()["jobs"]
    assert [j["id"] for j in listed] == [b_id]
    r = plat.http.get("/v1/jobs", params={"owner": TEAM_A}, headers=plat.headers(TEAM_B))
    assert r.status_code == 403 and "owner='team-a'" in r.json()["error"]["message"]
    everything = plat.http.get("/v1/jobs", headers=plat.headers("admin")).json()["jobs"]
    assert {j["id"] for j in everything} == a_ids | {b_id}
    only_a = plat.http.get("/v1/jobs", params={"owner": TEAM_A},
                           headers=plat.headers("admin")).json()["jobs"]
    assert {j["id"] for j in only_a} == a_ids


def test_owner_spoofing_is_403_naming_the_team_and_stores_nothing(plat):
    r = plat.submit(TEAM_B, owner=TEAM_A)
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["type"] == "ForbiddenError" and error["details"][0]["field"] == "owner"
    assert f"team {TEAM_B!r}" in error["message"] and "set \"owner\"" in error["message"]
    assert jobs.list_jobs(plat.service.engine)[0] == [] and plat.backend.submitted == []


def test_admin_sees_every_job_and_submits_for_any_team(plat):
    job_id = plat.submit(TEAM_A).json()["id"]
    for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/events", f"/v1/jobs/{job_id}/logs"):
        assert plat.http.get(path, headers=plat.headers("admin")).status_code == 200
    r = plat.submit("admin", owner=TEAM_B)
    assert r.status_code == 201 and r.json()["owner"] == TEAM_B
    assert r.json()["submitted_by"] == "admin"
    # The job it submitted for team B is team B's to see.
    assert plat.http.get(f"/v1/jobs/{r.json()['id']}",
                         headers=plat.headers(TEAM_B)).status_code == 200
    assert plat.http.post(f"/v1/jobs/{job_id}/cancel",
                          headers=plat.headers("admin")).json()["status"] == "CANCELLED"


def test_team_data_prefixes_narrow_the_server_prefixes(tmp_path):
    allowed_root = tmp_path / "server-data"
    plat = ApiPlatform(tmp_path, allowed_data_prefixes=[str(allowed_root), str(tmp_path / "fraud")])
    team_dir = write_fraud_dataset(allowed_root / "team-c", 300, files=1)
    other_dir = write_fraud_dataset(allowed_root / "team-d", 300, files=1)
    outside = write_fraud_dataset(tmp_path / "elsewhere", 300, files=1)
    token, _ = tokens.issue(plat.service.engine, team="team-c",
                            data_prefixes=[str(allowed_root / "team-c"), str(outside)])
    headers = {"Authorization": f"Bearer {token}"}

    ok = plat.http.post("/v1/jobs", json=plat.spec("team-c", team_dir), headers=headers)
    assert ok.status_code == 201, ok.text
    r = plat.http.post("/v1/jobs", json=plat.spec("team-c", other_dir), headers=headers)
    assert r.status_code == 403
    message = r.json()["error"]["message"]
    assert "data.features.0.path" in message and "team 'team-c'" in message
    assert "railyard token create" in message
    # Inside the team's prefixes but outside the server's: the server's rule still holds.
    r = plat.http.post("/v1/jobs", json=plat.spec("team-c", outside), headers=headers)
    assert r.status_code == 403 and "RAILYARD_ALLOWED_DATA_PREFIXES" in \
        r.json()["error"]["message"]
    # A token without prefixes of its own gets the server's.
    r = plat.http.post("/v1/jobs", json=plat.spec(TEAM_A, other_dir), headers=plat.headers(TEAM_A))
    assert r.status_code == 201, r.text
    assert len(plat.backend.submitted) == 2


def _runner_env(tmp_path: Path) -> dict[str, str]:
    return {"RAILYARD_HOME": str(tmp_path / "home"),
            "RAILYARD_DATABASE_URL": f"sqlite:///{tmp_path}/cli.db"}


@pytest.fixture()
def cli_env(tmp_path, monkeypatch):
    """Settings from the environment, as the CLI reads them."""
    for key, value in _runner_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAILYARD_TOKEN", raising=False)
    get_settings.cache_clear()
    yield _runner_env(tmp_path)
    get_settings.cache_clear()


def test_token_cli_create_list_revoke(cli_env, tmp_path):
    runner = CliRunner()
    created = runner.invoke(cli_app, ["token", "create", "--team", "fraud",
                                      "--data-prefix", "s3://data/fraud",
                                      "--data-prefix", "s3://data/shared"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert token.startswith("ry_") and len(token) > 40 and "\n" not in token
    engine = get_engine(cli_env["RAILYARD_DATABASE_URL"])
    row = tokens.authenticate(engine, token)
    assert row.team == "fraud" and not row.is_admin
    assert row.data_prefixes == ["s3://data/fraud", "s3://data/shared"]

    admin = runner.invoke(cli_app, ["token", "create", "--team", "ops", "--admin"])
    assert admin.exit_code == 0 and tokens.authenticate(engine, admin.stdout.strip()).is_admin

    listed = runner.invoke(cli_app, ["token", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0
    assert tokens.prefix_of(token) in listed.stdout and "fraud" in listed.stdout
    assert token not in listed.stdout and admin.stdout.strip() not in listed.stdout

    revoked = runner.invoke(cli_app, ["token", "revoke", tokens.prefix_of(token)])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    assert tokens.authenticate(engine, token) is None
    again = runner.invoke(cli_app, ["token", "revoke", tokens.prefix_of(token)])
    assert again.exit_code == 1 and "already revoked" in again.stderr
    unknown = runner.invoke(cli_app, ["token", "revoke", "ry_nothing"])
    assert unknown.exit_code == 1 and "railyard token list" in unknown.stderr
    empty_team = runner.invoke(cli_app, ["token", "create", "--team", " "])
    assert empty_team.exit_code == 1 and "team" in empty_team.stderr

    saved = runner.invoke(cli_app, ["token", "create", "--team", "fraud", "--save"])
    path = Path(cli_env["RAILYARD_HOME"]) / "token"
    assert path.read_text().strip() == saved.stdout.strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_up_creates_an_admin_token_once_and_the_sdk_finds_it(cli_env, monkeypatch):
    settings = get_settings()
    migrate(settings.resolved_database_url)
    _ensure_admin_token(settings)
    path = credentials.token_file(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = path.read_text().strip()
    engine = get_engine(settings.resolved_database_url)
    assert tokens.authenticate(engine, token).is_admin
    _ensure_admin_token(settings)                         # a second `up` keeps it
    assert path.read_text().strip() == token and len(tokens.list_tokens(engine)) == 1

    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization"))
        return httpx.Response(200, json=[])

    with RailyardClient("http://api.test", transport=httpx.MockTransport(handler)) as client:
        client.workflows()
    monkeypatch.setenv("RAILYARD_TOKEN", "ry_fromtheenvironment")
    get_settings.cache_clear()
    with RailyardClient("http://api.test", transport=httpx.MockTransport(handler)) as client:
        client.workflows()
    with RailyardClient("http://api.test", token="ry_explicit",
                        transport=httpx.MockTransport(handler)) as client:
        client.workflows()
    assert seen == [f"Bearer {token}", "Bearer ry_fromtheenvironment", "Bearer ry_explicit"]


def test_sdk_without_a_token_gets_the_servers_auth_error(plat):
    transport = httpx.MockTransport(lambda request: httpx.Response(
        401, json={"error": {"type": "AuthError", "message": "no API token", "details": None}}))
    from railyard.errors import AuthError

    with RailyardClient("http://api.test", token="", transport=transport) as client:
        with pytest.raises(AuthError):
            client.list()


def test_tokens_are_never_stored_in_clear_nor_logged(cli_env, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)   # log every SQL statement
    try:
        runner = CliRunner()
        issued = [runner.invoke(cli_app, ["token", "create", "--team", team] + extra)
                  .stdout.strip() for team, extra in (("fraud", []), ("ops", ["--admin"]))]
        settings = get_settings()
        engine = get_engine(settings.resolved_database_url)
        service = JobService(engine=engine, backend=InMemoryBackend(), settings=settings)
        http = TestClient(create_app(lambda: service))
        data = write_fraud_dataset(tmp_path / "fraud", 300, files=1)
        spec = sample_spec(str(data))
        spec["owner"] = "fraud"
        for token in issued:
            headers = {"Authorization": f"Bearer {token}"}
            assert http.post("/v1/jobs", json=spec, headers=headers).status_code == 201
            assert http.get("/v1/jobs", headers=headers).status_code == 200
        bad = http.get("/v1/jobs", headers={"Authorization": f"Bearer {issued[0]}x"})
        assert bad.status_code == 401
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)

    assert all(t.startswith("ry_") for t in issued)
    assert caplog.records, "expected SQL statements in the captured log"
    for token in issued:
        assert token not in caplog.text
        assert token[len(tokens.TOKEN_SCHEME) + 8:] not in caplog.text   # not even the secret part

    # Every column of every table, and the raw database files.
    with engine.connect() as conn:
        cells = [str(value) for table in inspect(engine).get_table_names()
                 for row in conn.execute(text(f'SELECT * FROM "{table}"')) for value in row]
    assert any(tokens.hash_token(issued[0]) == cell for cell in cells)
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("cli.db*"))
    for token in issued:
        secret = token[len(tokens.TOKEN_SCHEME) + 8:]
        assert not any(secret in cell for cell in cells)
        assert secret.encode() not in raw


# ------------------------------------------------------------------ SQL connections: a privilege

def _sql_platform(tmp_path: Path) -> ApiPlatform:
    """An app whose server defines two SQL connections (one SQLite file holding ``facts``)."""
    import sqlite3

    path = tmp_path / "warehouse.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE facts (row integer, i integer, y integer)")
        conn.executemany("INSERT INTO facts VALUES (?, ?, ?)",
                         [(k, k % 7, k % 2) for k in range(50)])
    url = f"sqlite:///{path}"
    return ApiPlatform(tmp_path, sql_connections={"warehouse_main": url, "finance_ledger": url},
                       allowed_data_prefixes=[str(tmp_path)])


def _sql_job(owner: str, connection: str, **where) -> dict:
    from tests.data_cases import make_spec

    spec = make_spec([{"names": ["row", "i", "y"], "source": "sql", "connection": connection,
                       **(where or {"table": "facts"})}])
    spec["owner"] = owner
    return spec


def test_sql_connections_are_granted_per_token(tmp_path):
    plat = _sql_platform(tmp_path)
    engine = plat.service.engine

    def post(token: str, spec: dict) -> httpx.Response:
        return plat.http.post("/v1/jobs", json=spec, headers={"Authorization": f"Bearer {token}"})

    # A token without data prefixes nor grants reads every connection.
    for name in ("warehouse_main", "finance_ledger"):
        r = post(plat.tokens[TEAM_A], _sql_job(TEAM_A, name))
        assert r.status_code == 201, r.text
    # Data prefixes and no grant: no SQL at all (paths under its prefixes still work).
    narrowed, row = tokens.issue(engine, team="team-c", data_prefixes=[str(tmp_path)])
    assert row.sql_connections is None
    r = post(narrowed, _sql_job("team-c", "warehouse_main"))
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["details"][0]["field"] == "data.features.0.connection"
    assert "no SQL connection grants" in error["message"]
    assert "--sql-connection warehouse_main" in error["message"]
    assert post(narrowed, plat.spec("team-c")).status_code == 201
    # Data prefixes and a grant: that connection only.
    granted, row = tokens.issue(engine, team="team-c", data_prefixes=[str(tmp_path)],
                                sql_connections=["warehouse_main", " warehouse_main"])
    assert row.sql_connections == ["warehouse_main"]
    assert post(granted, _sql_job("team-c", "warehouse_main")).status_code == 201
    r = post(granted, _sql_job("team-c", "finance_ledger"))
    assert r.status_code == 403
    assert "may read SQL only through 'warehouse_main'" in r.json()["error"]["message"]
    # Grants on a token without prefixes narrow it too.
    only, _ = tokens.issue(engine, team=TEAM_B, sql_connections=["finance_ledger"])
    assert post(only, _sql_job(TEAM_B, "finance_ledger")).status_code == 201
    assert post(only, _sql_job(TEAM_B, "warehouse_main")).status_code == 403
    # Nothing was stored for the refused ones.
    assert len(plat.backend.submitted) == 5


def test_an_unknown_connection_does_not_list_the_others(tmp_path):
    plat = _sql_platform(tmp_path)
    r = plat.http.post("/v1/jobs", json=_sql_job(TEAM_A, "warehouse"),
                       headers=plat.headers(TEAM_A))
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["details"][0]["field"] == "data.features.0.connection"
    assert "no SQL connection named 'warehouse'" in error["message"]
    assert "ask your operator" in error["message"]
    assert "warehouse_main" not in r.text and "finance_ledger" not in r.text
    # A token narrowed to grants gets its own 403 first: nothing about what exists.
    granted, _ = tokens.issue(plat.service.engine, team=TEAM_A, sql_connections=["x"])
    r = plat.http.post("/v1/jobs", json=_sql_job(TEAM_A, "warehouse"),
                       headers={"Authorization": f"Bearer {granted}"})
    assert r.status_code == 403 and "finance_ledger" not in r.text


def test_queries_are_checked_in_the_connections_dialect(tmp_path):
    plat = _sql_platform(tmp_path)
    ok = _sql_job(TEAM_A, "warehouse_main",
                  query="SELECT row, ifnull(i, 0) AS i, y FROM facts WHERE row >= 0;")
    assert plat.http.post("/v1/jobs", json=ok, headers=plat.headers(TEAM_A)).status_code == 201
    # to_char is PostgreSQL's: on this SQLite connection it is refused, naming it.
    pg_only = _sql_job(TEAM_A, "warehouse_main",
                       query="SELECT row, i, y, to_char(row, '999') AS s FROM facts")
    r = plat.http.post("/v1/jobs", json=pg_only, headers=plat.headers(TEAM_A))
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["field"] == "data.features.0.query"
    assert "to_char()" in r.json()["error"]["message"]
    for query, named in (("SELECT row, i, y, pg_read_file('/etc/passwd') AS f FROM facts",
                          "pg_read_file()"),
                         ("SELECT row, i, y FROM facts WHERE load_extension('x') IS NULL",
                          "load_extension()")):
        r = plat.http.post("/v1/jobs", json=_sql_job(TEAM_A, "warehouse_main", query=query),
                           headers=plat.headers(TEAM_A))
        assert r.status_code == 422 and named in r.json()["error"]["message"], r.text


def test_token_cli_grants_sql_connections(cli_env):
    runner = CliRunner()
    created = runner.invoke(cli_app, ["token", "create", "--team", "fraud",
                                      "--data-prefix", "s3://data/fraud",
                                      "--sql-connection", "warehouse",
                                      "--sql-connection", "ledger"])
    assert created.exit_code == 0, created.output
    assert "SQL connections: warehouse, ledger" in " ".join(created.stderr.split())
    engine = get_engine(cli_env["RAILYARD_DATABASE_URL"])
    row = tokens.authenticate(engine, created.stdout.strip())
    assert row.sql_connections == ["warehouse", "ledger"]
    plain = runner.invoke(cli_app, ["token", "create", "--team", "ops"])
    assert tokens.authenticate(engine, plain.stdout.strip()).sql_connections is None
    prefixed = runner.invoke(cli_app, ["token", "create", "--team", "risk",
                                       "--data-prefix", "s3://data/risk"])
    assert "SQL connections: none" in " ".join(prefixed.stderr.split())
    listed = runner.invoke(cli_app, ["token", "list"], env={"COLUMNS": "250"})
    assert listed.exit_code == 0
    assert "sql connections" in listed.stdout and "warehouse, ledger" in listed.stdout
    bad = runner.invoke(cli_app, ["token", "create", "--team", "x",
                                  "--sql-connection", "postgresql://u:p@h/db"])
    assert bad.exit_code == 1 and "not valid" in " ".join(bad.stderr.split())
