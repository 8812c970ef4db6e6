"""The model registry, lineage and rerun routes through the real app on SQLite (in-memory
execution backend): versions, aliases by hand and their record, team scoping, bad bodies,
``models:/`` references, lineage and pinned reruns."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from railyard.client.sdk import RailyardClient
from railyard.data import lineage
from railyard.data.read_plan import plan_read
from railyard.execution.promotion import register_and_promote
from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus
from railyard.spec import parse_spec
from tests.fakes import TEAM_A, TEAM_B, ApiPlatform


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    return ApiPlatform(tmp_path)


def succeed(plat: ApiPlatform, who: str = TEAM_A, auc: float = 0.7,
            promotion: dict | None = None) -> str:
    """Submit a job, record what its runner would (lineage, SUCCEEDED, metrics) and register."""
    r = plat.submit(who)
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    spec = parse_spec(plat.spec(who))
    plan = plan_read(spec, derived={"is_fraudulent": ["has_fraud_dispute"]})
    jobs.update_job(plat.service.engine, job_id=job_id, lineage=lineage.record(
        plan, spec=spec.model_dump(mode="json"), spec_hash=spec.spec_hash(), workflow=object(),
        ran_at=datetime.now(UTC)))
    metrics = {"holdout": {"auc": auc}, **({"promotion": promotion} if promotion else {})}
    assert jobs.transition(plat.service.engine, job_id=job_id, status=JobStatus.SUCCEEDED,
                           metrics=metrics)
    register_and_promote(plat.service.engine, job_id=job_id)
    register_and_promote(plat.service.engine, job_id=job_id)     # recorded twice: once
    return job_id


def test_versions_aliases_and_their_moves(plat):
    first = succeed(plat, promotion={"alias": "production", "promoted": True, "reason": "new"})
    second = succeed(plat, auc=0.8)
    h = plat.headers(TEAM_A)
    listed = plat.http.get("/v1/models", headers=h).json()
    assert listed == [{"owner": TEAM_A, "name": "fraud_prediction_model", "latest_version": 2,
                       "versions": 2, "aliases": {"production": 1}}]
    base = f"/v1/models/{TEAM_A}/fraud_prediction_model"
    model = plat.http.get(base, headers=h).json()
    assert [(v["version"], v["job_id"]) for v in model["versions"]] == [(1, first), (2, second)]
    assert model["versions"][1]["metrics"]["holdout"]["auc"] == 0.8
    assert model["alias_events"][0] | {"at": None} == {
        "alias": "production", "from_version": None, "to_version": 1, "at": None,
        "actor": "gate", "reason": "gate", "job_id": first, "message": "new"}
    r = plat.http.put(f"{base}/aliases/production", json={"version": 2, "message": "hotfix"},
                      headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2 and r.json()["job_id"] == second
    got = plat.http.get(f"{base}/aliases/production", headers=h).json()
    assert (got["version"], got["job_id"]) == (2, second)
    last = plat.http.get(base, headers=h).json()["alias_events"][-1]
    assert (last["from_version"], last["to_version"], last["reason"]) == (1, 2, "person")
    assert last["actor"].startswith(TEAM_A) and last["message"] == "hotfix"
    assert plat.http.delete(f"{base}/aliases/production", headers=h).status_code == 204
    assert plat.http.get(f"{base}/aliases/production", headers=h).status_code == 404
    assert plat.http.delete(f"{base}/aliases/production", headers=h).status_code == 404


def test_teams_see_and_move_only_their_models(plat):
    succeed(plat)
    base = f"/v1/models/{TEAM_A}/fraud_prediction_model"
    other = plat.headers(TEAM_B)
    assert plat.http.get("/v1/models", headers=other).json() == []
    for method, path, body in (("GET", base, None), ("GET", f"{base}/aliases/p", None),
                               ("PUT", f"{base}/aliases/p", {"version": 1}),
                               ("DELETE", f"{base}/aliases/p", None),
                               ("GET", f"/v1/models?owner={TEAM_A}", None)):
        r = plat.http.request(method, path, json=body, headers=other)
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["type"] == "ForbiddenError"
    admin = plat.headers("admin")
    assert plat.http.put(f"{base}/aliases/p", json={"version": 1},
                         headers=admin).status_code == 200


@pytest.mark.parametrize(("body", "field"), [
    (b"", "version"), (b'{"version": "2"}', "version"), (b'{"version": 0}', "version"),
    (b'{"version": 1, "extra": 1}', "extra"), (b"[1]", "(body)"), (b"{nope", "(body)"),
])
def test_a_bad_alias_body_is_a_422_naming_the_field(plat, body, field):
    succeed(plat)
    r = plat.http.put(f"/v1/models/{TEAM_A}/fraud_prediction_model/aliases/p", content=body,
                      headers={**plat.headers(TEAM_A), "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert field in [d.get("field") for d in r.json()["error"]["details"]], r.json()


def test_unknown_version_model_or_bad_alias_name(plat):
    succeed(plat)
    h = plat.headers(TEAM_A)
    base = f"/v1/models/{TEAM_A}/fraud_prediction_model"
    r = plat.http.put(f"{base}/aliases/p", json={"version": 9}, headers=h)
    assert r.status_code == 404 and "versions are 1" in r.json()["error"]["message"]
    r = plat.http.put(f"{base}/aliases/9lives", json={"version": 1}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "alias"
    assert plat.http.get(f"/v1/models/{TEAM_A}/nope", headers=h).status_code == 404


def test_model_references_resolve_to_jobs(plat):
    first = succeed(plat)
    second = succeed(plat)
    with RailyardClient(str(plat.http.base_url), token=plat.tokens[TEAM_A],
                        transport=plat.http._transport) as client:
        client.set_alias(TEAM_A, "fraud_prediction_model", "staging", 1)
        assert client.resolve_model(f"models:/{TEAM_A}/fraud_prediction_model@staging") == first
        assert client.resolve_model(f"models:/{TEAM_A}/fraud_prediction_model/2") == second
        assert client.resolve_model(second) == second
        with pytest.raises(Exception, match="models:/OWNER/NAME@ALIAS"):
            client.resolve_model("models:/just-a-name")


def test_lineage_and_pinned_rerun(plat):
    job_id = succeed(plat)
    h = plat.headers(TEAM_A)
    got = plat.http.get(f"/v1/jobs/{job_id}/lineage", headers=h).json()
    (source,) = got["sources"]
    assert source["uri"] == str(plat.data) and source["files"][0]["size"] > 0
    assert got["rerun_of"] is None and got["spec_hash"]
    r = plat.http.post(f"/v1/jobs/{job_id}/rerun", headers=h)
    assert r.status_code == 201, r.text
    rerun = r.json()
    assert rerun["rerun_of"] == job_id and rerun["spec"]["owner"] == TEAM_A
    pinned = jobs.get_job(plat.service.engine, job_id=rerun["id"]).pinned_files
    assert pinned == lineage.pins(got)
    assert plat.http.post(f"/v1/jobs/{job_id}/rerun",
                          headers=plat.headers(TEAM_B)).status_code == 403
    # Overwrite one file: refused, naming it, unless changed data is allowed.
    path = source["files"][0]["path"]
    with open(path, "ab") as out:
        out.write(b"tail")
    r = plat.http.post(f"/v1/jobs/{job_id}/rerun", headers=h)
    assert r.status_code == 409 and path in r.json()["error"]["message"], r.text
    r = plat.http.post(f"/v1/jobs/{job_id}/rerun", json={"allow_changed_data": True},
                       headers=h)
    assert r.status_code == 201 and r.json()["rerun_of"] == job_id
    assert jobs.get_job(plat.service.engine, job_id=r.json()["id"]).pinned_files is None
    r = plat.http.post(f"/v1/jobs/{job_id}/rerun", json={"allow_changed_data": "yes"},
                       headers=h)
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == \
        "allow_changed_data"
    os.remove(path)
    r = plat.http.post(f"/v1/jobs/{job_id}/rerun", headers=h)
    assert r.status_code == 409 and "is gone" in r.json()["error"]["message"]


def test_the_reconciler_registers_a_success_its_driver_did_not(plat):
    """A driver that ended between SUCCEEDED and its registration: the reconciler's sweep
    registers the job (and applies its gate) once."""
    from datetime import timedelta

    r = plat.submit(TEAM_A)
    job_id = r.json()["id"]
    assert jobs.transition(plat.service.engine, job_id=job_id, status=JobStatus.SUCCEEDED,
                           finished_at=datetime.now(UTC) - timedelta(minutes=2),
                           metrics={"holdout": {"auc": 0.7},
                                    "promotion": {"alias": "production", "promoted": True,
                                                  "reason": "no model holds it yet"}})
    plat.service.reconcile_all()
    plat.service._registry_swept_at = None      # the sweep runs at most once a minute
    plat.service.reconcile_all()
    model = plat.http.get(f"/v1/models/{TEAM_A}/fraud_prediction_model",
                          headers=plat.headers(TEAM_A)).json()
    assert [v["job_id"] for v in model["versions"]] == [job_id]
    assert model["aliases"] == {"production": 1} and len(model["alias_events"]) == 1
    assert [e["kind"] for e in plat.http.get(f"/v1/jobs/{job_id}/events",
                                             headers=plat.headers(TEAM_A)).json()
            ].count("promotion") == 1


def test_diff_names_each_leaf_that_differs():
    from railyard.cli.models import comparable_lineage, job_diff

    a = {"spec": {"train": {"custom_params": {"max_depth": 6}}}, "metrics": {"auc": 0.7},
         "lineage": comparable_lineage({"sources": [{"uri": "s3://b/d", "files": [
             {"path": "s3://b/d/p0", "size": 1, "etag": "e1"}]}],
             "code": {"packages": {"xgboost": "3.2.0"}}})}
    b = {"spec": {"train": {"custom_params": {"max_depth": 4}}}, "metrics": {"auc": 0.7},
         "lineage": comparable_lineage({"sources": [{"uri": "s3://b/d", "files": [
             {"path": "s3://b/d/p0", "size": 1, "etag": "e2"}]}],
             "code": {"packages": {"xgboost": "3.2.0"}}})}
    assert job_diff(a, b) == [("lineage.files.s3://b/d/p0.etag", "e1", "e2"),
                              ("spec.train.custom_params.max_depth", 6, 4)]
    assert job_diff(a, a) == []
