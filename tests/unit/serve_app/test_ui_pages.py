"""The UI's job page for each kind of job, rendered by the real app on SQLite (tests.fakes):
a sweep's trials (STOPPED and FAILED ones too), a fan-out's partitions, a failed job's error
and attempts, and the curve points of the model manifest turned into chart data."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

from railyard.artifacts.artifact_store import ArtifactStore
from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus
from tests.fakes import TEAM_A, ApiPlatform


@pytest.fixture()
def plat(tmp_path) -> ApiPlatform:
    return ApiPlatform(tmp_path)


def browser_of(plat: ApiPlatform) -> TestClient:
    browser = TestClient(plat.http.app, follow_redirects=False)
    assert browser.post("/signin", data={"token": plat.tokens[TEAM_A]}).status_code == 303
    return browser


def chart_data(html: str) -> dict:
    match = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', html,
                      re.DOTALL)
    assert match, "no chart data on the page"
    return json.loads(match.group(1))


def finish(plat: ApiPlatform, job_id: str, **fields) -> None:
    jobs.update_job(plat.service.engine, job_id=job_id, status=JobStatus.SUCCEEDED.value,
                    **fields)


def test_sweep_page_lists_every_trial_and_charts_them(plat):
    job_id = plat.submit(TEAM_A).json()["id"]
    spec = jobs.get_job(plat.service.engine, job_id=job_id).spec
    spec["train"]["tune"] = {"search_space": {"max_depth": {"grid": [2, 4, 6]}}}
    finish(plat, job_id, spec=spec,
           metrics={"holdout": {"auc": 0.8}, "tune": {"metric": "auc", "mode": "max"}})
    for trial_id, status, auc in (("t1", "SUCCEEDED", 0.7), ("t2", "STOPPED", 0.6),
                                  ("t3", "FAILED", None)):
        jobs.add_event(plat.service.engine, job_id=job_id, kind="trial", message=json.dumps(
            {"trial_id": trial_id, "status": status, "params": {"max_depth": 2},
             "metrics": {"auc": auc} if auc else {}, "duration_s": 1.5,
             "error": "boom" if status == "FAILED" else None}))
    html = browser_of(plat).get(f"/jobs/{job_id}").text
    assert html.count('class="trial status-row-') == 3
    for status in ("STOPPED", "FAILED", "boom"):
        assert status in html
    trials = chart_data(html)["trials"]
    assert trials["values"] == [0.7, 0.6, None] and trials["best_so_far"] == [0.7, 0.7, 0.7]
    assert 'id="chart-trials"' in html and 'id="chart-params"' in html


def test_fan_out_page_lists_partitions_and_their_metric(plat):
    job_id = plat.submit(TEAM_A).json()["id"]
    spec = jobs.get_job(plat.service.engine, job_id=job_id).spec
    spec["train"]["partition_by"] = "charge_country"
    finish(plat, job_id, spec=spec, metrics={"holdout": {}, "fanout": {}})
    for country, auc in (("CA", 0.8), ("US", 0.9)):
        jobs.record_partition_model(plat.service.engine, job_id=job_id, model={
            "partition": country, "status": "SUCCEEDED", "metrics": {"auc": auc}})
    html = browser_of(plat).get(f"/jobs/{job_id}").text
    assert "Partitions (2)" in html and 'id="chart-partitions"' in html
    assert chart_data(html)["partitions"] == [{"partition": "CA", "value": 0.8},
                                              {"partition": "US", "value": 0.9}]


def test_a_failed_job_shows_its_error_phase_and_no_cancel_button(plat):
    job_id = plat.submit(TEAM_A).json()["id"]
    jobs.update_job(plat.service.engine, job_id=job_id, status=JobStatus.FAILED.value,
                    error="the label column is missing", error_phase="fetch")
    html = browser_of(plat).get(f"/jobs/{job_id}").text
    assert "the label column is missing" in html and "<b>fetch</b>" in html
    assert 'id="cancel"' not in html


def test_curve_points_of_the_manifest_become_chart_data(plat):
    job_id = plat.submit(TEAM_A).json()["id"]
    store = ArtifactStore(plat.service.settings.resolved_artifact_root)
    reports = {"curves": {"auc": 0.75, "pr_auc": 0.5,
                          "roc_points": {"x": [0, 0.5, 1], "y": [0, 0.8, 1]},
                          "pr_points": {"x": [0, 1], "y": [1, 0.4]}},
               "feature_importance": {"top": [{"feature": "amount", "importance": 3.0}]}}
    manifest = store.put_bytes(json.dumps({"reports": reports}).encode(), job_id, "model",
                               "manifest.json")
    finish(plat, job_id, artifacts={"manifest": manifest},
           metrics={"holdout": {"auc": 0.75}})
    browser = browser_of(plat)
    html = browser.get(f"/jobs/{job_id}").text
    data = chart_data(html)
    assert data["curves"]["roc_points"] == {"x": [0, 0.5, 1], "y": [0, 0.8, 1]}
    assert data["importance"] == [{"feature": "amount", "importance": 3.0}]
    assert 'id="chart-roc"' in html and 'id="chart-importance"' in html
    r = browser.get(f"/jobs/{job_id}/artifacts/manifest")
    assert r.status_code == 200 and json.loads(r.content)["reports"] == reports
    assert browser.get(f"/jobs/{job_id}/artifacts/model").status_code == 404
    assert browser.get(f"/jobs/{job_id}/log?offset=x").status_code == 422


def test_job_page_shows_lineage_the_registry_version_and_the_gate(plat):
    from railyard.jobstore import registry

    engine = plat.service.engine
    job_id = plat.submit(TEAM_A).json()["id"]
    lineage = {"sources": [{"uri": "s3://data/fraud/", "files": [
        {"path": "s3://data/fraud/part-0.parquet", "size": 8123, "etag": '"9b2c"',
         "version_id": None, "mtime": None}]}],
        "sql": [], "code": {"workflow": {"name": "xgboost", "module": "railyard.training",
                                         "sha256": "ab" * 32},
                            "packages": {"xgboost": "3.0.0"}},
        "seeds": {"holdout": 7}, "spec_hash": "0" * 64}
    finish(plat, job_id, lineage=lineage, metrics={"holdout": {"auc": 0.8}, "promotion": {
        "alias": "production", "metric": "auc", "candidate": 0.8, "incumbent": None,
        "incumbent_version": None, "promoted": True, "reason": "no incumbent"}})
    job = jobs.get_job(engine, job_id=job_id)
    version = registry.register_version(engine, job=job)
    registry.set_alias(engine, owner=job.owner, name=job.model_name, alias="production",
                       version=version.version, actor="gate", reason="gate")
    html = browser_of(plat).get(f"/jobs/{job_id}").text
    lineage_html = html[html.index('id="lineage"'):]
    for shown in ("s3://data/fraud/part-0.parquet", "8123", "9b2c", "ab" * 32, "xgboost 3.0.0",
                  "holdout 7"):
        assert shown in lineage_html, shown
    registry_html = html[html.index('id="registry"'):html.index('id="lineage"')]
    assert f"version <b>{version.version}</b>" in registry_html
    assert ">production<" in registry_html and "promoted" in registry_html
