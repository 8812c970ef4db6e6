"""The web UI's session and CSRF rules, through the real app on SQLite (tests.fakes): sign-in
with a token, the cookie's flags, forged, stale and revoked sessions, CSRF on every form post,
team isolation of the job pages, and that the API's bearer-token and JSON-body checks still
hold for the API's routes."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from railyard.jobstore import jobs, tokens
from serve_app.app import create_app
from serve_app.ui.session import COOKIE
from tests.fakes import TEAM_A, TEAM_B, ApiPlatform


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    return ApiPlatform(tmp_path)


def signed_in(plat: ApiPlatform, who: str) -> TestClient:
    """A browser-like client of the same app, signed in with ``who``'s token."""
    browser = TestClient(plat.http.app, follow_redirects=False)
    r = browser.post("/signin", data={"token": plat.tokens[who], "next": "/"})
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    return browser


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def test_landing_page_without_a_session_is_the_sign_in_form(plat):
    r = plat.http.get("/")
    assert r.status_code == 200 and '<input type="password" name="token"' in r.text
    assert 'action="/signin"' in r.text
    r = plat.http.get("/jobs/whatever", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin?next=/jobs/whatever"
    assert plat.http.get("/ui/rows").status_code == 401


def test_sign_in_sets_a_strict_http_only_cookie_without_the_token(plat):
    browser = TestClient(plat.http.app, follow_redirects=False)
    r = browser.post("/signin", data={"token": plat.tokens[TEAM_A], "next": "/cluster"})
    assert r.status_code == 303 and r.headers["location"] == "/cluster"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie                      # plain http here; https sets it
    assert plat.tokens[TEAM_A] not in cookie           # the raw token is never stored
    assert f"team <b>{TEAM_A}</b>" in browser.get("/").text


def test_https_sets_the_secure_flag(plat):
    browser = TestClient(plat.http.app, base_url="https://testserver", follow_redirects=False)
    r = browser.post("/signin", data={"token": plat.tokens[TEAM_A]})
    assert "Secure" in r.headers["set-cookie"]


def test_a_bad_token_is_refused_and_next_never_leaves_the_site(plat):
    r = plat.http.post("/signin", data={"token": "ry_nope"}, follow_redirects=False)
    assert r.status_code == 401 and "not valid or was revoked" in r.text
    assert "set-cookie" not in r.headers
    browser = TestClient(plat.http.app, follow_redirects=False)
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil"):
        r = browser.post("/signin", data={"token": plat.tokens[TEAM_A], "next": target})
        assert r.headers["location"] == "/"


def test_a_forged_or_tampered_cookie_is_no_session(plat):
    browser = signed_in(plat, TEAM_A)
    value = browser.cookies[COOKIE]
    browser.cookies.set(COOKIE, value[:-2] + ("AA" if not value.endswith("AA") else "BB"))
    assert 'name="token"' in browser.get("/").text
    browser.cookies.set(COOKIE, "not-a-session")
    assert 'name="token"' in browser.get("/").text


def test_revoking_the_token_ends_its_sessions(plat):
    browser = signed_in(plat, TEAM_A)
    assert "Jobs</h1>" in browser.get("/").text
    tokens.revoke(plat.service.engine, prefix=tokens.prefix_of(plat.tokens[TEAM_A]))
    assert 'name="token"' in browser.get("/").text


def test_another_servers_key_does_not_verify(plat, tmp_path):
    from pydantic import SecretStr

    browser = signed_in(plat, TEAM_A)
    plat.service.settings = plat.service.settings.model_copy(
        update={"ui_session_key": SecretStr("another key")})
    assert 'name="token"' in browser.get("/").text


def test_sign_out_needs_the_csrf_token_and_ends_the_session(plat):
    browser = signed_in(plat, TEAM_A)
    page = browser.get("/").text
    r = browser.post("/signout", data={"csrf": "wrong"})
    assert r.status_code == 403 and "CSRF" in r.text
    assert "Jobs</h1>" in browser.get("/").text
    r = browser.post("/signout", data={"csrf": csrf_of(page)})
    assert r.status_code == 303 and r.headers["location"] == "/signin"
    assert COOKIE not in browser.cookies
    assert 'name="token"' in browser.get("/").text


def test_cancel_needs_the_sessions_csrf_token(plat):
    job_id = plat.submit(TEAM_A).json()["id"]
    browser = signed_in(plat, TEAM_A)
    page = browser.get(f"/jobs/{job_id}").text
    assert 'id="cancel"' in page
    for bad in ({}, {"csrf": "x"}, {"csrf": csrf_of(signed_in(plat, TEAM_A).get("/").text)}):
        r = browser.post(f"/jobs/{job_id}/cancel", data=bad)
        assert r.status_code == 403, bad
    assert jobs.get_job(plat.service.engine, job_id=job_id).status != "CANCELLED"
    r = browser.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf_of(page)})
    assert r.status_code == 303 and r.headers["location"] == f"/jobs/{job_id}"
    assert jobs.get_job(plat.service.engine, job_id=job_id).status == "CANCELLED"
    r = browser.post(f"/jobs/{job_id}/cancel", data={"csrf": csrf_of(page)})
    assert r.status_code == 409 and "already CANCELLED" in r.text


def test_a_team_sees_only_its_jobs_and_another_teams_job_page_is_403(plat):
    mine = plat.submit(TEAM_A).json()["id"]
    theirs = plat.submit(TEAM_B).json()["id"]
    browser = signed_in(plat, TEAM_A)
    listing = browser.get("/").text
    assert mine in listing and theirs not in listing
    r = browser.get(f"/jobs/{theirs}")
    assert r.status_code == 403 and "not owned by team" in r.text and theirs in r.text
    assert "spec" not in r.text.lower().split("</header>")[1].split("not owned")[0]
    for path in (f"/jobs/{theirs}/log", f"/jobs/{theirs}/artifacts/model",
                 f"/compare?ids={mine},{theirs}"):
        assert browser.get(path).status_code == 403, path
    page = browser.get(f"/jobs/{mine}").text
    r = browser.post(f"/jobs/{theirs}/cancel", data={"csrf": csrf_of(page)})
    assert r.status_code == 403
    assert browser.get("/?owner=team-b").status_code == 403
    assert browser.get("/jobs/no-such-job").status_code == 404
    admin = signed_in(plat, "admin").get("/").text
    assert mine in admin and theirs in admin


def test_filters_and_bad_filter_values(plat):
    first = plat.submit(TEAM_A).json()["id"]
    browser = signed_in(plat, TEAM_A)
    assert first in browser.get("/?status=QUEUED").text or \
        first in browser.get("/?status=PENDING").text
    assert first not in browser.get("/?status=SUCCEEDED").text
    assert first in browser.get("/?model=" + plat.spec(TEAM_A)["model_name"][:4]).text
    assert first not in browser.get("/?q=no-such-words-anywhere").text
    assert first in browser.get(f"/?q={first[:8]}").text
    r = browser.get("/?status=DONE")
    assert r.status_code == 422 and "status=&#39;DONE&#39; is not a job status" in r.text
    assert browser.get("/compare?ids=" + first).status_code == 422


def test_the_api_keeps_its_bearer_and_json_checks(plat):
    browser = signed_in(plat, TEAM_A)
    assert browser.get("/v1/jobs").status_code == 401        # a UI cookie is no API token
    r = plat.http.post("/v1/jobs", content=b"token=x", headers={
        **plat.headers(TEAM_A), "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 422
    assert "/signin" not in plat.http.get("/openapi.json").json()["paths"]


def test_the_ui_is_part_of_every_app(tmp_path):
    app = create_app(lambda: None)  # type: ignore[arg-type,return-value]
    paths = {getattr(r, "path", None) for r in app.routes}
    assert {"/", "/signin", "/signout", "/jobs/{job_id}", "/compare", "/cluster",
            "/workflows", "/ui/static"} <= paths


def test_plotly_is_served_from_the_installed_package(plat):
    r = plat.http.get("/ui/static/vendor/plotly.min.js")
    assert r.status_code == 200 and "plotly" in r.text[:2000].lower()
    assert plat.http.get("/ui/static/ui.js").status_code == 200
    assert plat.http.get("/ui/static/ui.css").status_code == 200
