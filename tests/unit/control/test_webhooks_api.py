"""POST/GET/DELETE /v1/webhooks and the delivery log through the API (SQLite store): team
scoping as for jobs, and bad input as a 422 naming the field and the fix."""

from __future__ import annotations

import pytest

from railyard.jobstore import webhooks
from tests.fakes import TEAM_A, TEAM_B, ApiPlatform

HOOK = "https://hooks.example.com/railyard"
SECRET = "s3cret-s3cret-s3cret"


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    return ApiPlatform(tmp_path, webhook_allowed_hosts=["hooks.example.com"])


def register(plat: ApiPlatform, who: str, **body):
    body = {"url": HOOK, "events": ["SUCCEEDED", "FAILED"], "secret": SECRET, **body}
    return plat.http.post("/v1/webhooks", json=body, headers=plat.headers(who))


def test_register_list_delete(plat):
    made = register(plat, TEAM_A)
    assert made.status_code == 201, made.text
    hook = made.json()
    assert hook["owner"] == TEAM_A and hook["events"] == ["SUCCEEDED", "FAILED"]
    assert hook["secret"] is None and SECRET not in made.text    # never returned
    listed = plat.http.get("/v1/webhooks", headers=plat.headers(TEAM_A)).json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]]
    assert "secret" not in listed[0]
    stored = webhooks.get_endpoint(plat.service.engine, endpoint_id=hook["id"])
    assert SECRET not in stored.secret_encrypted                  # encrypted at rest
    gone = plat.http.delete(f"/v1/webhooks/{hook['id']}", headers=plat.headers(TEAM_A))
    assert gone.status_code == 204
    assert plat.http.get("/v1/webhooks", headers=plat.headers(TEAM_A)).json()["webhooks"] == []


def test_a_generated_secret_is_shown_once(plat):
    made = register(plat, TEAM_A, secret=None).json()
    assert made["secret"].startswith("whsec_") and len(made["secret"]) > 30
    listed = plat.http.get("/v1/webhooks", headers=plat.headers(TEAM_A)).text
    assert made["secret"] not in listed


def test_teams_see_and_change_only_their_own(plat):
    a = register(plat, TEAM_A).json()
    b = register(plat, TEAM_B).json()
    everyone = register(plat, "admin").json()
    assert everyone["owner"] is None
    assert register(plat, "admin", owner=TEAM_B).json()["owner"] == TEAM_B
    forged = register(plat, TEAM_A, owner=TEAM_B)
    assert forged.status_code == 403 and "owner" in forged.json()["error"]["message"]
    ids = {h["id"] for h in plat.http.get("/v1/webhooks",
                                          headers=plat.headers(TEAM_A)).json()["webhooks"]}
    assert ids == {a["id"]}
    all_ids = {h["id"] for h in plat.http.get("/v1/webhooks",
                                              headers=plat.headers("admin")).json()["webhooks"]}
    assert {a["id"], b["id"], everyone["id"]} <= all_ids
    for path in (f"/v1/webhooks/{b['id']}/deliveries",):
        assert plat.http.get(path, headers=plat.headers(TEAM_A)).status_code == 403
    assert plat.http.delete(f"/v1/webhooks/{b['id']}",
                            headers=plat.headers(TEAM_A)).status_code == 403
    assert plat.http.delete("/v1/webhooks/wh_nope", headers=plat.headers(TEAM_A)).status_code \
        == 404
    assert plat.http.get(f"/v1/webhooks/{a['id']}/deliveries",
                         headers=plat.headers(TEAM_A)).json() == {"deliveries": []}
    assert plat.http.get("/v1/webhooks").status_code == 401


@pytest.mark.parametrize("body, field, fix", [
    ({"url": None}, "url", "send {\"url\""),
    ({"events": []}, "events", "at least one of"),
    ({"events": ["DONE"]}, "events.0", "RUNNING, SUCCEEDED, FAILED, CANCELLED"),
    ({"events": "SUCCEEDED"}, "events", "send {\"url\""),
    ({"secret": "short"}, "secret", "16 to 256 characters"),
    ({"colour": "red"}, "colour", "send {\"url\""),
    ({"url": "file:///etc/passwd"}, "url", "https://"),
    ({"url": "http://10.0.0.1/hook"}, "url", "RAILYARD_WEBHOOK_ALLOWED_HOSTS"),
    ({"url": "http://169.254.169.254/latest/meta-data/"}, "url", "link-local"),
    ({"url": "http://127.0.0.1:9/hook"}, "url", "loopback"),
    ({"url": "http://localhost:9/hook"}, "url", "loopback"),
    ({"url": "https://" + "a" * 2100 + ".com/"}, "url", "longer than 2048"),
])
def test_bad_input_is_a_422_naming_the_field(plat, body, field, fix):
    answer = register(plat, TEAM_A, **body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["type"] == "SpecError"
    assert fix in error["message"]
    assert field in [d["field"] for d in error["details"]]


def test_a_body_that_is_not_json_is_a_422(plat):
    answer = plat.http.post("/v1/webhooks", content=b"{not json", headers=plat.headers(TEAM_A))
    assert answer.status_code == 422 and "not valid JSON" in answer.json()["error"]["message"]
