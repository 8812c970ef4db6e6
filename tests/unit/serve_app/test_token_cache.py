"""The Serve deployment's token cache (serve_app.deps.TokenCache): a checked token is trusted
for RAILYARD_TOKEN_CACHE_TTL_S, a revoked one keeps working no longer than that, and an app
without a cache checks every token."""

from __future__ import annotations

import pytest

from railyard.jobstore import tokens
from serve_app.deps import TokenCache
from tests.fakes import TEAM_A, ApiPlatform


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    return ApiPlatform(tmp_path, token_cache_ttl_s=5.0)


def test_a_revoked_token_works_until_its_cache_entry_expires(plat):
    clock = Ticks()
    plat.http.app.state.token_cache = TokenCache(clock=clock)
    assert plat.http.get("/v1/jobs", headers=plat.headers(TEAM_A)).status_code == 200
    tokens.revoke(plat.service.engine, prefix=tokens.prefix_of(plat.tokens[TEAM_A]))
    clock.now += 4.9
    assert plat.http.get("/v1/jobs", headers=plat.headers(TEAM_A)).status_code == 200
    clock.now += 0.2
    r = plat.http.get("/v1/jobs", headers=plat.headers(TEAM_A))
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_cached_caller_keeps_its_team_and_job_checks(plat):
    plat.http.app.state.token_cache = TokenCache()
    created = plat.submit(TEAM_A)
    assert created.status_code == 201
    job_id = created.json()["id"]
    for _ in range(2):   # the second request comes from the cache
        assert plat.http.get(f"/v1/jobs/{job_id}", headers=plat.headers(TEAM_A)).status_code \
            == 200
        assert plat.http.get(f"/v1/jobs/{job_id}", headers=plat.headers("team-b")).status_code \
            == 403
    assert plat.http.get("/v1/jobs/nope", headers=plat.headers(TEAM_A)).status_code == 404


def test_invalid_tokens_are_not_cached_and_ttl_zero_turns_it_off(tmp_path):
    plat = ApiPlatform(tmp_path, token_cache_ttl_s=0)
    cache = plat.http.app.state.token_cache = TokenCache()
    bad = {"Authorization": "Bearer ry_" + "x" * 43}
    assert plat.http.get("/v1/jobs", headers=bad).status_code == 401
    assert plat.http.get("/v1/jobs", headers=plat.headers(TEAM_A)).status_code == 200
    assert cache.get(tokens.hash_token(plat.tokens[TEAM_A])) is None
    tokens.revoke(plat.service.engine, prefix=tokens.prefix_of(plat.tokens[TEAM_A]))
    assert plat.http.get("/v1/jobs", headers=plat.headers(TEAM_A)).status_code == 401


def test_an_app_without_a_cache_checks_every_request(plat):
    assert getattr(plat.http.app.state, "token_cache", None) is None
    assert plat.http.get("/v1/jobs", headers=plat.headers(TEAM_A)).status_code == 200
    tokens.revoke(plat.service.engine, prefix=tokens.prefix_of(plat.tokens[TEAM_A]))
    assert plat.http.get("/v1/jobs", headers=plat.headers(TEAM_A)).status_code == 401


def test_cache_is_bounded_oldest_first():
    from railyard.control.access import Caller

    clock = Ticks()
    cache = TokenCache(max_entries=2, clock=clock)
    for name in ("a", "b", "c"):
        cache.put(name, Caller(team=name), ttl_s=5)
    assert cache.get("a") is None
    assert cache.get("b") == Caller(team="b") and cache.get("c") == Caller(team="c")
    clock.now += 5
    assert cache.get("c") is None
