"""API tokens and idempotency keys on Postgres (no Ray needed): token queries, and the unique
(team, key) constraint making exactly one job out of racing requests."""

from __future__ import annotations

import concurrent.futures

from fastapi.testclient import TestClient

from railyard.config import Settings
from railyard.control.service import JobService
from railyard.data.demo import sample_spec, write_fraud_dataset
from railyard.jobstore import jobs, tokens
from railyard.jobstore.engine import get_engine, migrate
from serve_app.app import create_app
from tests.fakes import InMemoryBackend, fresh_database


def test_token_lifecycle_on_postgres(postgres):
    url = fresh_database(postgres, "railyard_tokens")
    migrate(url)
    engine = get_engine(url)
    team_token, _ = tokens.issue(engine, team="fraud", data_prefixes=["s3://data/fraud"])
    assert not tokens.has_admin(engine)
    admin_token, _ = tokens.issue(engine, team="ops", admin=True)
    assert tokens.has_admin(engine)
    row = tokens.authenticate(engine, team_token)
    assert (row.team, row.is_admin, row.data_prefixes) == ("fraud", False, ["s3://data/fraud"])
    assert tokens.authenticate(engine, team_token + "x") is None
    tokens.revoke(engine, prefix=tokens.prefix_of(admin_token))
    assert tokens.authenticate(engine, admin_token) is None and not tokens.has_admin(engine)
    assert [t.team for t in tokens.list_tokens(engine)] == ["fraud", "ops"]


def test_racing_requests_with_one_key_make_one_job(postgres, tmp_path):
    url = fresh_database(postgres, "railyard_idempotency")
    migrate(url)
    engine = get_engine(url)
    backend = InMemoryBackend()
    service = JobService(engine=engine, backend=backend,
                         settings=Settings(home=tmp_path, database_url=url))
    http = TestClient(create_app(lambda: service))
    spec = sample_spec(str(write_fraud_dataset(tmp_path / "fraud", 500, files=1)))
    token, _ = tokens.issue(engine, team=spec["owner"])
    headers = {"Authorization": f"Bearer {token}", "Idempotency-Key": "nightly-run"}

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: http.post("/v1/jobs", json=spec, headers=headers),
                                  range(12)))
    assert sorted(r.status_code for r in responses) == [200] * 11 + [201]
    assert len({r.json()["id"] for r in responses}) == 1
    assert len(jobs.list_jobs(engine)[0]) == 1 and len(backend.submitted) == 1

    spec["model_name"] = "another_model"
    conflict = http.post("/v1/jobs", json=spec, headers=headers)
    assert conflict.status_code == 409 and conflict.json()["error"]["type"] == "ConflictError"
