"""The API through a Postgres outage: 503 with the error body while the server is down, and
back to normal once it is up, without restarting the app (no Ray needed: the execution backend
is the in-memory one of tests/fakes.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from railyard.config import Settings
from railyard.data.demo import sample_spec, write_fraud_dataset
from railyard.jobstore import tokens
from railyard.jobstore.engine import get_engine
from serve_app.app import create_app, default_service_factory
from tests.fakes import InMemoryBackend, fresh_database


def assert_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["type"] == "BackendUnavailableError"
    assert "database" in error["message"] and "retry" in error["message"]


@pytest.fixture()
def down(postgres):
    """Stops the server; whatever happens, it is started again afterwards."""
    stopped = []

    def stop() -> None:
        postgres.stop()
        stopped.append(True)

    yield stop
    if stopped:
        try:
            postgres.start()
        except Exception:  # noqa: BLE001 - already started by the test
            pass


def test_database_outage_is_503_and_the_api_recovers(postgres, down, tmp_path):
    url = fresh_database(postgres, "railyard_outage")
    settings = Settings(home=tmp_path, database_url=url)
    http = TestClient(create_app(default_service_factory(settings, backend=InMemoryBackend())))
    spec = sample_spec(str(write_fraud_dataset(tmp_path / "fraud", 500, files=1)))

    # The service (and the migration) happen on first use: down at that moment is a 503, and
    # the next request after the outage builds it.
    down()
    assert_unavailable(http.get("/healthz"))
    assert_unavailable(http.get("/v1/jobs", headers={"Authorization": "Bearer ry_anything"}))
    postgres.start()
    assert http.get("/healthz").json() == {"status": "ok"}

    token, _ = tokens.issue(get_engine(url), team=spec["owner"])
    headers = {"Authorization": f"Bearer {token}"}
    created = http.post("/v1/jobs", json=spec, headers=headers)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    # Down while the app holds pooled connections: every route answers 503, none hangs or 500s.
    down()
    assert_unavailable(http.get("/healthz"))
    assert_unavailable(http.get(f"/v1/jobs/{job_id}", headers=headers))
    assert_unavailable(http.get("/v1/jobs", headers=headers))
    assert_unavailable(http.post("/v1/jobs", json=spec, headers=headers))
    assert_unavailable(http.post(f"/v1/jobs/{job_id}/cancel", headers=headers))
    postgres.start()

    # Back: the stale pooled connections are replaced (pool_pre_ping), nothing was half-written.
    assert http.get("/healthz").status_code == 200
    got = http.get(f"/v1/jobs/{job_id}", headers=headers)
    assert got.status_code == 200 and got.json()["status"] == "PENDING"
    listed = http.get("/v1/jobs", headers=headers).json()["jobs"]
    assert [j["id"] for j in listed] == [job_id]
    assert http.post(f"/v1/jobs/{job_id}/cancel", headers=headers).json()["status"] == \
        "CANCELLED"
