"""railyard.secrets: secrets live in a private directory and only its path travels."""

from __future__ import annotations

import json
import os
import stat

import pytest

from railyard import secrets
from railyard.cluster.local_cluster import cluster_env, inherited_env, ray_token_env
from railyard.config import Settings


def test_written_private_and_loaded_without_overriding(tmp_path, monkeypatch):
    directory = tmp_path / "secrets"
    secrets.write(directory, {"RAILYARD_DATABASE_URL": "postgresql://u:pw@db/x",
                              "AWS_SECRET_ACCESS_KEY": "k"})
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {
        "RAILYARD_DATABASE_URL": 0o600, "AWS_SECRET_ACCESS_KEY": 0o600}
    # setenv first: monkeypatch then removes what load() sets when the test ends.
    monkeypatch.setenv("RAILYARD_DATABASE_URL", "")
    monkeypatch.delenv("RAILYARD_DATABASE_URL")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "set-by-the-operator")
    monkeypatch.setenv(secrets.DIR_VARIABLE, str(directory))
    assert secrets.load() == ["RAILYARD_DATABASE_URL"]
    assert os.environ["RAILYARD_DATABASE_URL"] == "postgresql://u:pw@db/x"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "set-by-the-operator"
    # A secret no longer set disappears; unchanged files are not rewritten (a read-only mount).
    before = (directory / "RAILYARD_DATABASE_URL").stat().st_mtime_ns
    secrets.write(directory, {"RAILYARD_DATABASE_URL": "postgresql://u:pw@db/x"})
    assert sorted(p.name for p in directory.iterdir()) == ["RAILYARD_DATABASE_URL"]
    assert (directory / "RAILYARD_DATABASE_URL").stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="PATH"):
        secrets.write(directory, {"PATH": "/bin"})


def test_concurrent_writers_of_the_same_secrets_do_not_collide(tmp_path):
    """Many threads (an API replica's concurrent submits) writing changed secrets at once:
    each stages its own file, so no rename finds another's staging file gone."""
    from concurrent.futures import ThreadPoolExecutor

    directory = tmp_path / "secrets"

    def write(n: int) -> None:
        secrets.write(directory, {"RAILYARD_DATABASE_URL": f"postgresql://u:p{n}@h/db"})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(200)))    # raises what a thread raised
    assert [p.name for p in directory.iterdir()] == ["RAILYARD_DATABASE_URL"]
    assert stat.S_IMODE((directory / "RAILYARD_DATABASE_URL").stat().st_mode) == 0o600


def test_runtime_env_carries_the_directory_not_the_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://s3.local:9000")
    settings = Settings(home=tmp_path, database_url="postgresql://railyard:db-pw@db/railyard",
                        sql_connections={"wh": "postgresql://reader:wh-pw@wh/dw"})
    env = settings.runtime_env_vars()
    text = json.dumps(env)
    for secret in ("db-pw", "wh-pw", "aws-secret-value"):
        assert secret not in text
    assert env["AWS_ENDPOINT_URL"] == "http://s3.local:9000"
    shared = {p.name: p.read_text() for p in (tmp_path / "secrets").iterdir()}
    assert shared["RAILYARD_DATABASE_URL"] == "postgresql://railyard:db-pw@db/railyard"
    assert json.loads(shared["RAILYARD_SQL_CONNECTIONS"]) == {
        "wh": "postgresql://reader:wh-pw@wh/dw"}
    assert shared["AWS_SECRET_ACCESS_KEY"] == "aws-secret-value"


def test_a_local_node_inherits_no_secret_of_the_operators_shell(tmp_path, monkeypatch):
    shell = {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C", "RAY_DEDUP_LOGS": "0",
             "RAILYARD_POOLS_FILE": "/p.yaml", "AWS_REGION": "eu-west-1",
             "AWS_SECRET_ACCESS_KEY": "s", "AWS_SESSION_TOKEN": "t", "GITHUB_TOKEN": "g",
             "RAILYARD_TOKEN": "ry_x", "RAILYARD_DATABASE_URL": "postgresql://u:p@h/d",
             "RAY_AUTH_TOKEN": "r", "MY_API_KEY": "k"}
    assert inherited_env(shell) == {"PATH": "/usr/bin", "HOME": "/root", "LC_ALL": "C",
                                    "RAY_DEDUP_LOGS": "0", "RAILYARD_POOLS_FILE": "/p.yaml",
                                    "AWS_REGION": "eu-west-1"}
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("GITHUB_TOKEN", "g")
    env = cluster_env(Settings(home=tmp_path, database_url="sqlite:///x.db"))
    assert "GITHUB_TOKEN" not in env and "RAILYARD_DATABASE_URL" not in env
    assert env["RAY_AUTH_MODE"] == "token"
    token_file = tmp_path / "ray" / "auth_token"
    assert env["RAY_AUTH_TOKEN_PATH"] == str(token_file)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token_file.read_text()) == 64
    assert ray_token_env(Settings(home=tmp_path, ray_token_auth=False)) == {}


@pytest.mark.parametrize("text, shown", [
    ("postgresql+psycopg://railyard:s3cr%40t@db:5432/x",
     "postgresql+psycopg://railyard:***@db:5432/x"),
    ("could not connect to mysql://u:p@h/d, retrying",
     "could not connect to mysql://u:***@h/d, retrying"),
    ("sqlite:////home/me/.railyard/railyard.db", "sqlite:////home/me/.railyard/railyard.db"),
    ("postgresql://user@h/d", "postgresql://user@h/d"),
])
def test_redact_hides_url_passwords(text, shown):
    assert secrets.redact(text) == shown


def test_the_heartbeat_timeout_must_outlast_the_database_retry_window(tmp_path):
    from pydantic import ValidationError

    assert Settings(home=tmp_path).heartbeat_timeout_s > Settings(home=tmp_path).db_retry_window_s
    with pytest.raises(ValidationError, match="RAILYARD_HEARTBEAT_TIMEOUT_S"):
        Settings(home=tmp_path, heartbeat_timeout_s=180)      # the old default
    Settings(home=tmp_path, heartbeat_timeout_s=60, db_retry_window_s=30)
