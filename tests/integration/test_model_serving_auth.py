"""A served model behind the API's tokens, on the real stack (Ray Serve beside the API,
Postgres, the S3 server): no token is a 401, another team's a 403, the owner team and an admin
get 200; an 8 MB body is a 413, a wrongly typed value a 422 naming the feature; Ray Serve's
/-/routes does not list the job id."""

from __future__ import annotations

import time
from urllib.parse import urlparse

import httpx
import pytest

from railyard.client.sdk import RailyardClient
from railyard.config import Settings
from railyard.data.demo import sample_spec
from railyard.jobstore import tokens
from railyard.serving.model_server import deploy_model, route_prefix, undeploy_model

FEATURES = ["charge_type", "charge_amount", "charge_country"]
ROW = {"charge_type": "recurring", "charge_amount": 42.5, "charge_country": "US"}


def served_spec(platform) -> dict:
    """A small model of team serve-a, `served-auth` in the registry."""
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["owner"] = "serve-a"
    spec["model_name"] = "served-auth"
    spec["train"] = {"workflow_name": "xgboost", "classifier_features": FEATURES,
                     "label": "has_fraud_dispute",
                     "custom_params": {"n_estimators": 10, "max_depth": 3}}
    return spec


@pytest.fixture(scope="module")
def served(platform):
    """A model of team A's job, served; yields (job id, URL, tokens by who)."""
    team_tokens = {team: tokens.issue(platform.engine, team=team)[0]
                   for team in ("serve-a", "serve-b")}
    team_tokens["admin"] = platform.token
    with RailyardClient(platform.api_url, token=team_tokens["serve-a"]) as owner:
        job = owner.wait(owner.submit(served_spec(platform))["id"], timeout=300)
    assert job["status"] == "SUCCEEDED", job["error"]
    url = deploy_model(platform.settings, job_id=job["id"],
                       model_dir=job["artifacts"]["model_dir"], address=platform.ray_address,
                       token=team_tokens["serve-a"], port=urlparse(platform.api_url).port or 0)
    try:
        yield job["id"], url, team_tokens
    finally:
        undeploy_model(job_id=job["id"], address=platform.ray_address)


def call(method: str, url: str, token: str | None = None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, url, headers=headers, timeout=60, **kwargs)


def test_served_model_needs_a_token_of_its_team_or_an_admin(served):
    job_id, url, team_tokens = served
    assert route_prefix(job_id) in url and job_id not in url
    for method, path, body in (("GET", "/", None), ("POST", "/predict", {"rows": [ROW]})):
        anonymous = call(method, url + path, json=body)
        assert anonymous.status_code == 401, anonymous.text
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        bad = call(method, url + path, "ry_" + "x" * 43, json=body)
        assert bad.status_code == 401 and "invalid_token" in bad.headers["WWW-Authenticate"]
        other = call(method, url + path, team_tokens["serve-b"], json=body)
        assert other.status_code == 403, other.text
        assert other.json()["error"]["type"] == "ForbiddenError"
        for who in ("serve-a", "admin"):
            ok = call(method, url + path, team_tokens[who], json=body)
            assert ok.status_code == 200, (who, ok.text)
    info = call("GET", url + "/", team_tokens["serve-a"]).json()
    assert info["job_id"] == job_id and info["input_columns"] == FEATURES
    scored = call("POST", url + "/predict", team_tokens["serve-a"], json={"rows": [ROW] * 3})
    assert len(scored.json()["predictions"]) == 3
    assert 0 <= scored.json()["predictions"][0]["prediction"] <= 1


def test_served_model_refuses_big_bodies_and_bad_rows(served):
    job_id, url, team_tokens = served
    owner = team_tokens["serve-a"]
    body = b'{"rows": [{"charge_type": "' + b"x" * (8 * 1024 * 1024) + b'"}]}'
    too_big = httpx.post(f"{url}/predict", content=body, timeout=60,
                         headers={"Authorization": f"Bearer {owner}",
                                  "content-type": "application/json"})
    assert too_big.status_code == 413, too_big.text[:500]
    assert str(Settings().max_body_bytes) in too_big.json()["error"]["message"]
    typed = call("POST", url + "/predict", owner,
                 json={"rows": [ROW, dict(ROW, charge_type=5)]})
    assert typed.status_code == 422, typed.text
    message = typed.json()["error"]["message"]
    assert "row 1" in message and "'charge_type'" in message and "must be a string" in message
    for row, field in ((dict(ROW, charge_amount="abc"), "charge_amount"),
                       ({"charge_type": "card", "charge_country": "US"}, "charge_amount"),
                       (dict(ROW, nope=1), "nope")):
        answer = call("POST", url + "/predict", owner, json={"rows": [row]})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["details"][0] == {
            "row": 0, "field": field, "message": answer.json()["error"]["details"][0]["message"]}


def test_routes_listing_does_not_name_the_job(served, platform):
    job_id, url, _ = served
    routes = httpx.get(f"http://127.0.0.1:{urlparse(platform.api_url).port}/-/routes",
                       timeout=30)
    assert routes.status_code == 200
    assert route_prefix(job_id) in routes.json()
    assert job_id not in routes.text


def version_of(client: RailyardClient, job_id: str) -> int:
    """The registry version of a SUCCEEDED job of `served-auth` (its driver registers it
    just after the job turned SUCCEEDED)."""
    deadline = time.monotonic() + 30
    while True:
        versions = {v["job_id"]: v["version"]
                    for v in client.registered_model("serve-a", "served-auth")["versions"]}
        if job_id in versions or time.monotonic() > deadline:
            return versions[job_id]
        time.sleep(0.5)


def test_a_model_served_by_its_alias_follows_the_alias(platform, served):
    """serve-model models:/OWNER/NAME@ALIAS: the replica looks the alias up every
    RAILYARD_MODEL_ALIAS_POLL_S and answers with the version it moved to, at the same URL."""
    job_id, _, team_tokens = served
    token = team_tokens["serve-a"]
    ref = "models:/serve-a/served-auth@live"
    with RailyardClient(platform.api_url, token=token) as owner:
        owner.set_alias("serve-a", "served-auth", "live", version_of(owner, job_id))
        second = owner.wait(owner.submit(served_spec(platform))["id"], timeout=300)
        assert second["status"] == "SUCCEEDED", second["error"]
        first = platform.client().get(job_id)
        url = deploy_model(platform.settings.model_copy(update={"model_alias_poll_s": 1.0}),
                           job_id=job_id, model_dir=first["artifacts"]["model_dir"],
                           address=platform.ray_address, token=token, alias=ref,
                           port=urlparse(platform.api_url).port or 0)
        try:
            assert route_prefix(ref) in url and "served-auth" not in url
            assert call("GET", url + "/", token).json()["job_id"] == job_id
            owner.set_alias("serve-a", "served-auth", "live", version_of(owner, second["id"]))
            deadline = time.monotonic() + 60
            answered = job_id
            while answered != second["id"] and time.monotonic() < deadline:
                time.sleep(0.5)
                scored = call("POST", url + "/predict", token, json={"rows": [ROW]})
                assert scored.status_code == 200, scored.text
                answered = scored.json()["job_id"]
            assert answered == second["id"]
            assert call("GET", url + "/", team_tokens["serve-b"]).status_code == 403
        finally:
            undeploy_model(job_id=ref, address=platform.ray_address)
