"""Schemathesis against the live API: a few hundred generated requests (schema-valid and
schema-invalid) over every operation of /openapi.json with a valid token. No answer may be a
5xx, carry a status code the schema does not declare, or a body that does not match the
declared schema. Jobs the run creates are cancelled at the end."""

from __future__ import annotations

import httpx

from railyard.data.demo import sample_spec
from tests.api_fuzz_target import cancel_jobs, fuzz_api, local_api
from tests.fakes import fresh_database

EXAMPLES = 300


def check_api_against_its_schema(base_url: str, token: str, *, spec: dict | None = None,
                                 max_examples: int = EXAMPLES) -> None:
    """Fuzz the API at ``base_url`` with ``token`` and assert it held to its schema. With a
    valid ``spec``, one job is created first for the ``{job_id}`` routes to aim at and a few
    POST /v1/jobs cases send that spec (each may start a real job; all are cancelled)."""
    seeds: tuple[str, ...] = ()
    if spec is not None:
        created = httpx.post(f"{base_url.rstrip('/')}/v1/jobs", json=spec, timeout=30,
                             headers={"Authorization": f"Bearer {token}"})
        assert created.status_code == 201, created.text
        seeds = (created.json()["id"],)
    report = None
    try:
        report = fuzz_api(base_url, token, max_examples=max_examples, job_ids=seeds,
                          valid_spec=spec)
    finally:
        cancel_jobs(base_url, token, [*seeds, *(report.created_job_ids if report else [])])
    print(report.summary())
    assert not report.failures, "\n\n".join(report.failures)
    # an operation without parameters (GET /healthz) runs out of distinct cases early
    assert all(sum(codes.values()) for codes in report.per_operation.values()), report.summary()
    assert report.requests >= max_examples // 2, report.summary()
    assert not [code for code in report.statuses if code >= 500], report.summary()


def test_live_api_holds_to_its_schema(platform):
    """Ray Serve + Postgres, as deployed."""
    check_api_against_its_schema(platform.api_url, platform.token,
                                 spec=sample_spec(platform.fraud_uri, source="s3"))


def test_plain_uvicorn_app_on_postgres_holds_to_its_schema(postgres):
    """The same app under uvicorn on Postgres, with the in-memory execution backend: the
    fuzzing without Ray."""
    with local_api(fresh_database(postgres, "railyard_fuzz")) as (url, token, spec):
        check_api_against_its_schema(url, token, spec=spec)


def test_nul_characters_are_a_422_and_store_nothing_on_postgres(postgres):
    """What the fuzzing found: Postgres refuses NUL in text, and that came back as a 503
    "database unavailable" (a client would retry it forever). It is bad input: a 422."""
    with local_api(fresh_database(postgres, "railyard_nul")) as (url, token, spec):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as http:
            for path in ("/v1/jobs?owner=%00", "/v1/jobs?project=a%00b", "/v1/jobs/job-%00",
                         "/v1/jobs/job-%00/events"):
                response = http.get(path)
                assert response.status_code == 422, (path, response.text)
                assert "NUL" in response.json()["error"]["message"]
            assert http.post("/v1/jobs/job-%00/cancel").status_code == 422
            for field in ("owner", "trainer", "model_description"):
                response = http.post("/v1/jobs", json={**spec, field: "a\x00b"})
                assert response.status_code == 422, (field, response.text)
            assert http.get("/v1/jobs").json()["jobs"] == []
