"""The model server's HTTP app (railyard.serving.model_server.model_api) without Ray Serve: a
published model behind the API's tokens (SQLite store, two teams and an admin), the body limit,
typed 422s for bad rows, and the opaque serving key; the real Serve stack is
tests/integration/test_model_serving_auth.py."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from railyard.errors import AuthError, BackendUnavailableError, ForbiddenError
from railyard.jobstore import tokens
from railyard.serving import model_server
from railyard.serving.model_server import ModelAccess, ServedModel, model_api
from railyard.serving.published import load_published
from tests.builders import publish, trained
from tests.fakes import TEAM_A, TEAM_B, ApiPlatform

pytestmark = pytest.mark.usefixtures("one_thread")

LIMIT = 16 * 1024
ROW = {"x1": 0.5, "c": "red", "x2": 0.25, "flag": False}


class Clock:
    """Monotonic seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    workflow, model, data = trained("xgboost", "binary")
    return workflow, model, publish(workflow, model, data,
                                    tmp_path_factory.mktemp("m") / "model")


@pytest.fixture()
def served(tmp_path, model_files):
    """(platform, job id of team-a, HTTP client of its model, clock of the token cache)."""
    plat = ApiPlatform(tmp_path)
    answer = plat.submit(TEAM_A)
    assert answer.status_code == 201, answer.text
    job_id = answer.json()["id"]
    model = load_published(model_files[2])
    clock = Clock()
    access = ModelAccess(job_id, engine=plat.service.engine, clock=clock)
    http = TestClient(model_api(ServedModel(model, access), max_body_bytes=LIMIT))
    return plat, job_id, http, clock


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_route_needs_a_token_of_the_owner_team_or_an_admin(served, model_files):
    plat, job_id, http, _ = served
    for method, path, body in (("GET", "/", None), ("POST", "/predict", {"rows": [ROW]})):
        anonymous = http.request(method, path, json=body)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.json()["error"]["type"] == "AuthError"
        assert "Authorization: Bearer" in anonymous.json()["error"]["message"]
        assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="railyard"'
        for bad in ("Bearer nonsense", "Bearer ry_" + "x" * 43,
                    "Bearer " + plat.tokens[TEAM_A][:-1] + "!"):
            r = http.request(method, path, json=body, headers={"Authorization": bad})
            assert r.status_code == 401 and 'error="invalid_token"' in \
                r.headers["WWW-Authenticate"], r.text
        basic = http.request(method, path, json=body,
                             headers={"Authorization": "Basic dXNlcjpwdw=="})
        assert basic.status_code == 401
        other = http.request(method, path, json=body, headers=plat.headers(TEAM_B))
        assert other.status_code == 403, other.text
        assert other.json()["error"]["type"] == "ForbiddenError"
        assert job_id in other.json()["error"]["message"]
        for who in (TEAM_A, "admin"):
            ok = http.request(method, path, json=body, headers=plat.headers(who))
            assert ok.status_code == 200, (who, ok.text)
    info = http.get("/", headers=plat.headers(TEAM_A)).json()
    assert info["job_id"] == "job-1" and info["input_columns"] == ["x1", "c", "x2", "flag"]
    answer = http.post("/predict", json={"rows": [ROW, ROW]}, headers=plat.headers("admin"))
    workflow, model, _ = model_files
    expected = workflow.predict(model, load_published(model_files[2]).prepare_input([ROW]))
    assert answer.json()["predictions"] == [{"prediction": pytest.approx(float(expected[0]))}] * 2


def test_no_docs_or_openapi_without_a_token(served):
    _, _, http, _ = served
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert http.get(path).status_code == 404


def test_a_revoked_token_stops_working_once_the_cache_entry_expires(served):
    plat, _, http, clock = served
    headers = plat.headers(TEAM_A)
    assert http.get("/", headers=headers).status_code == 200
    tokens.revoke(plat.service.engine, prefix=tokens.prefix_of(plat.tokens[TEAM_A]))
    assert http.get("/", headers=headers).status_code == 200       # still cached
    clock.now += model_server.TOKEN_CACHE_S + 0.1
    r = http.get("/", headers=headers)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_body_over_the_limit_is_413_naming_it(served):
    plat, _, http, _ = served
    big = {"rows": [dict(ROW, c="r" * 1000) for _ in range(LIMIT // 1000 + 2)]}
    r = http.post("/predict", json=big, headers=plat.headers(TEAM_A))
    assert r.status_code == 413, r.text
    assert r.json()["error"]["type"] == "PayloadTooLargeError"
    assert str(LIMIT) in r.json()["error"]["message"]

    def chunks():
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 4096):
            yield payload[i:i + 4096]

    streamed = http.post("/predict", content=chunks(), headers=plat.headers(TEAM_A))
    assert streamed.status_code == 413 and str(LIMIT) in streamed.text
    # No token: 401 before the body is looked at.
    assert http.post("/predict", json=big).status_code == 401


@pytest.mark.parametrize("row, field, words", [
    (dict(ROW, c=5), "c", "must be a string"),
    (dict(ROW, x1="abc"), "x1", "must be a number"),
    (dict(ROW, flag="yes"), "flag", "must be true or false"),
    (dict(ROW, c=["red"]), "c", "got an array"),
    ({k: v for k, v in ROW.items() if k != "x2"}, "x2", "is missing"),
    (dict(ROW, x3=1.0), "x3", "is not a feature"),
])
def test_bad_rows_are_422_naming_the_row_and_the_feature(served, row, field, words):
    plat, _, http, _ = served
    r = http.post("/predict", json={"rows": [ROW, row]}, headers=plat.headers(TEAM_A))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["type"] == "DataSourceError"
    assert "row 1: " in error["message"] and repr(field) in error["message"]
    assert words in error["message"]
    assert error["details"] == [{"row": 1, "field": field, "message": error["details"][0][
        "message"]}]


def test_mixed_types_across_rows_and_many_problems_are_422(served):
    plat, _, http, _ = served
    rows = [dict(ROW, c=5 if i % 2 else "red") for i in range(200)]
    r = http.post("/predict", json={"rows": rows}, headers=plat.headers(TEAM_A))
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["message"].startswith("100 problem(s) in the rows: row 1: feature 'c'")
    assert "and 95 more" in error["message"]
    assert len(error["details"]) == 50 and error["details"][1]["row"] == 3
    # null is a missing value, accepted for any feature; the label may be sent
    ok = http.post("/predict", json={"rows": [dict(ROW, c=None, x1=None, y_binary=1)]},
                   headers=plat.headers(TEAM_A))
    assert ok.status_code == 200, ok.text
    # ints for a double and integral floats are fine
    ok = http.post("/predict", json={"rows": [dict(ROW, x1=1, x2=0)]},
                   headers=plat.headers(TEAM_A))
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("body, field", [
    (b"{not json", "(body)"),
    (b'{"rows": []}', "rows"),
    (b'{"rows": [1]}', "rows.0"),
    (b'{"records": [{}]}', "rows"),
])
def test_malformed_requests_are_422(served, body, field):
    plat, _, http, _ = served
    r = http.post("/predict", content=body,
                  headers=plat.headers(TEAM_A) | {"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["type"] == "SpecError"
    assert r.json()["error"]["details"][0]["field"] == field


def test_unknown_job_is_404_and_an_unreachable_database_503(tmp_path, model_files,
                                                            monkeypatch):
    plat = ApiPlatform(tmp_path)
    model = load_published(model_files[2])
    access = ModelAccess("job-gone", engine=plat.service.engine)
    http = TestClient(model_api(ServedModel(model, access), max_body_bytes=LIMIT))
    assert http.get("/").status_code == 401                         # no token: no job facts
    r = http.get("/", headers=plat.headers("admin"))
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFoundError"

    def down(*_: Any, **__: Any) -> None:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(tokens, "authenticate", down)
    fresh = TestClient(model_api(ServedModel(model, ModelAccess("job-gone",
                                                                engine=plat.service.engine)),
                                 max_body_bytes=LIMIT))
    r = fresh.get("/", headers=plat.headers("admin"))
    assert r.status_code == 503 and r.json()["error"]["type"] == "BackendUnavailableError"


def test_serving_key_keeps_job_ids_out_of_routes_and_app_names(tmp_path):
    job_id = "job-0123456789abcdef0123"
    key = model_server.serving_key(job_id)
    assert len(key) == 32 and job_id not in key
    assert model_server.route_prefix(job_id) == f"/models/{key}"
    assert model_server.app_name(job_id) == f"model-{key}"
    assert model_server.serving_key("job-other") != key
    from railyard.config import Settings

    config = model_server.model_app_config(Settings(home=tmp_path), job_id=job_id,
                                           model_dir="s3://m")
    assert job_id not in config["name"] + config["route_prefix"]
    assert config["args"] == {"model_dir": "s3://m", "job_id": job_id}


def test_wait_until_serving_needs_the_tokens_200(monkeypatch):
    answers: list[httpx.Response] = []
    seen: list[dict[str, str]] = []

    def fake_get(url: str, *, headers: dict[str, str], timeout: float) -> httpx.Response:
        seen.append(headers)
        return answers.pop(0)

    monkeypatch.setattr(httpx, "get", fake_get)
    monkeypatch.setattr(model_server.time, "sleep", lambda _: None)
    not_yet = httpx.Response(404, json={"detail": "Not Found"})   # the API's, before the model
    answers[:] = [not_yet, httpx.Response(200, json={})]
    model_server.wait_until_serving("http://s/models/k", token="ry_t", timeout=60)
    assert seen[-1] == {"Authorization": "Bearer ry_t"}
    answers[:] = [not_yet, httpx.Response(401, json={})]
    model_server.wait_until_serving("http://s/models/k", token=None, timeout=60)
    refused = {"error": {"type": "ForbiddenError", "message": "not your team's job"}}
    answers[:] = [httpx.Response(403, json=refused)]
    with pytest.raises(ForbiddenError, match="refuses this token: not your team's job"):
        model_server.wait_until_serving("http://s/models/k", token="ry_t", timeout=60)
    answers[:] = [httpx.Response(401, json={})]
    with pytest.raises(AuthError):
        model_server.wait_until_serving("http://s/models/k", token="ry_t", timeout=60)
    answers[:] = [not_yet]
    with pytest.raises(BackendUnavailableError, match="did not answer"):
        model_server.wait_until_serving("http://s/models/k", token="ry_t", timeout=0)


def test_a_served_alias_swaps_in_the_version_it_moves_to(tmp_path):
    """follow_alias (what a replica serving models:/OWNER/NAME@ALIAS runs every
    RAILYARD_MODEL_ALIAS_POLL_S): a moved alias swaps the model and its job's access; an
    unmoved or deleted alias leaves the served model alone."""
    from railyard.jobstore import jobs, registry
    from railyard.serving.model_server import follow_alias

    plat = ApiPlatform(tmp_path)
    engine = plat.service.engine
    workflow, model, data = trained("xgboost", "binary")
    ids = []
    for n in (1, 2):
        answer = plat.submit(TEAM_A)
        assert answer.status_code == 201, answer.text
        job_id = answer.json()["id"]
        model_dir = publish(workflow, model, data, tmp_path / f"v{n}", job_id=job_id)
        jobs.update_job(engine, job_id=job_id, artifacts={"model_dir": str(model_dir)})
        registry.register_version(engine, job=jobs.get_job(engine, job_id=job_id))
        ids.append(job_id)
    owner, name = plat.service.get(ids[0]).owner, plat.service.get(ids[0]).model_name
    ref = f"models:/{owner}/{name}@live"
    registry.set_alias(engine, owner=owner, name=name, alias="live", version=1,
                       actor="t", reason="person")
    served = ServedModel(load_published(tmp_path / "v1"), ModelAccess(ids[0], engine=engine))
    http = TestClient(model_api(served, max_body_bytes=LIMIT))
    assert not follow_alias(served, ref, engine)          # not moved
    registry.set_alias(engine, owner=owner, name=name, alias="live", version=2,
                       actor="t", reason="person")
    assert follow_alias(served, ref, engine) and served.job_id == ids[1]
    r = http.post("/predict", json={"rows": [ROW]}, headers=plat.headers(TEAM_A))
    assert r.status_code == 200 and r.json()["job_id"] == ids[1], r.text
    assert http.get("/", headers=plat.headers(TEAM_B)).status_code == 403
    registry.delete_alias(engine, owner=owner, name=name, alias="live", actor="t",
                          reason="person")
    assert not follow_alias(served, ref, engine) and served.job_id == ids[1]
