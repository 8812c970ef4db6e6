"""The web UI in real headless Chromium (tests/integration/browser.py) against the platform the
integration tests start: the API on Ray Serve, Postgres, the S3 server, real jobs on Ray.

Sign-in, team isolation, filters, a job page with metrics, charts drawn from the curve points
the runner recorded, its log, the log tail growing while a NoOp job runs, cancel from the UI,
a sweep's trials chart, the compare, cluster and workflows pages, and no JavaScript error on
any page."""

from __future__ import annotations

import pytest

from railyard.client.sdk import RailyardClient
from railyard.data.demo import sample_spec
from railyard.jobstore import tokens
from tests.integration.browser import chromium
from tests.integration.support import noop_spec
from tests.polling import wait_for

TEAM, OTHER = "ui-team", "ui-other"


@pytest.fixture(scope="module")
def teams(platform) -> dict[str, str]:
    """A token for each of two teams."""
    return {team: tokens.issue(platform.engine, team=team)[0] for team in (TEAM, OTHER)}


@pytest.fixture(scope="module")
def new_browser(platform):
    with chromium(platform.api_url) as factory:
        yield factory


def team_client(platform, token: str) -> RailyardClient:
    return RailyardClient(platform.api_url, token=token)


def sweep_job(platform, owner: str) -> dict:
    """A small grid sweep of xgboost (runs in the job's driver): trials, metrics, curves."""
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["owner"] = owner
    spec["model_name"] = "ui_sweep"
    spec["train"] = {"workflow_name": "xgboost",
                     "classifier_features": ["charge_type", "charge_amount", "charge_country"],
                     "label": "has_fraud_dispute", "custom_params": {"n_estimators": 20},
                     "tune": {"cpus_per_trial": 0.5, "search_alg": "grid",
                              "search_space": {"max_depth": {"grid": [2, 4]}}}}
    return spec


def svg_drawn(page, selector: str) -> bool:
    """Whether Plotly drew ``selector``'s chart: an SVG with plotted marks."""
    return page.eval_on_selector(
        selector, "el => !!el.querySelector('svg.main-svg') && "
                  "el.querySelectorAll('path.js-line, path.point, g.trace path').length > 0")


def test_sign_in_team_isolation_and_filters(platform, teams, new_browser):
    with team_client(platform, teams[TEAM]) as mine, \
            team_client(platform, teams[OTHER]) as theirs:
        ours = mine.submit({**noop_spec(platform, "ui_noop_mine"), "owner": TEAM})["id"]
        other = theirs.submit({**noop_spec(platform, "ui_noop_theirs"), "owner": OTHER})["id"]
        for c, job in ((mine, ours), (theirs, other)):
            c.wait(job, timeout=240)
    browser = new_browser()
    page = browser.page()
    page.goto("/")
    assert page.locator("input[name=token]").count() == 1      # no session: the sign-in form
    page.fill("input[name=token]", "ry_not-a-token")
    page.press("input[name=token]", "Enter")
    page.wait_for_selector("[role=alert]")
    assert "not valid" in page.inner_text("[role=alert]")
    assert [e for e in browser.take_errors() if "status of 401" not in e] == []
    page = browser.sign_in(teams[TEAM])
    rows = page.inner_text("#job-rows")
    assert ours in rows and other not in rows
    assert page.locator(f"a.job-link[href='/jobs/{ours}']").count() == 1

    page.fill("input[name=model]", "ui_noop_mine")
    page.select_option("select[name=status]", "SUCCEEDED")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/?*model=ui_noop_mine*")
    assert ours in page.inner_text("#job-rows")
    page.select_option("select[name=status]", "FAILED")
    page.click("form.filters button[type=submit]")
    page.wait_for_selector("#job-rows tr.empty")
    page.goto("/?q=no-such-words-in-any-job")
    assert ours not in page.inner_text("#job-rows")

    response = page.goto(f"/jobs/{other}")
    assert response.status == 403
    body = page.inner_text("main")
    assert "not owned by team" in body and "ui_noop_theirs" not in body
    assert page.locator("#spec").count() == 0
    assert [e for e in browser.take_errors() if "status of 403" not in e] == []


def test_job_page_sweep_metrics_charts_and_log(platform, teams, new_browser):
    with team_client(platform, teams[TEAM]) as mine:
        job = mine.wait(mine.submit(sweep_job(platform, TEAM))["id"], timeout=600)
    assert job["status"] == "SUCCEEDED", job["error"]
    browser = new_browser()
    page = browser.sign_in(teams[TEAM])
    page.click(f"a.job-link[href='/jobs/{job['id']}']")
    page.wait_for_selector("#job-status")
    assert page.inner_text("#job-status") == "SUCCEEDED"
    metrics = page.inner_text("#metrics")
    assert "auc" in metrics and f"{job['metrics']['holdout']['auc']:.6g}" in metrics
    for chart in ("#chart-roc", "#chart-pr", "#chart-gantt", "#chart-trials", "#chart-params"):
        page.wait_for_selector(f"{chart} svg.main-svg")
        assert svg_drawn(page, chart), chart
    assert page.locator("#trials tbody tr").count() == 2
    page.click("#trials thead th:nth-child(3)")                     # sort by the metric
    assert "sorted-asc" in page.get_attribute("#trials thead th:nth-child(3)", "class")
    page.wait_for_function("(document.getElementById('log')?.textContent ?? '').length > 0")
    assert job["id"] in page.inner_text("#log") or "xgboost" in page.inner_text("#log").lower()
    assert page.locator("#artifacts a").count() >= 2
    with page.expect_download() as download:
        page.click("#artifacts a:has-text('metrics')")
    assert download.value.suggested_filename == "metrics.json"
    page.click("#copy-spec")
    assert '"workflow_name": "xgboost"' in page.inner_text("#spec")

    page.goto("/")
    page.check(f"input.pick[value='{job['id']}']")
    assert page.is_disabled("#compare")
    other = page.locator("input.pick").nth(1).get_attribute("value")
    page.check(f"input.pick[value='{other}']")
    page.click("#compare")
    page.wait_for_selector("#compare-spec")
    assert job["id"] in page.inner_text("#compare-metrics")
    for path, marker in (("/cluster", "#pools"), ("/workflows", "#workflows")):
        page.goto(path)
        page.wait_for_selector(marker)
    assert "xgboost" in page.inner_text("#workflows")
    page.goto("/cluster")
    pools, nodes = page.inner_text("#pools"), page.inner_text("#nodes")
    assert "highmem" in pools and "cpu" in pools          # the platform's labelled pools
    assert "(head)" in nodes and "highmem" in nodes and "ALIVE" in nodes
    assert browser.errors == []


def test_log_tail_grows_and_cancel_from_the_ui(platform, teams, new_browser):
    with team_client(platform, teams[TEAM]) as mine:
        job_id = mine.submit({**noop_spec(platform, "ui_cancel_me", train_s=120),
                              "owner": TEAM})["id"]
        wait_for(lambda: mine.get(job_id)["phase"] == "train", timeout=240,
                 what="the NoOp job reaches its train phase")
        browser = new_browser()
        page = browser.sign_in(teams[TEAM])
        page.goto(f"/jobs/{job_id}")
        page.wait_for_function("(document.getElementById('log')?.textContent ?? '').length > 0",
                               timeout=60_000)
        first = len(page.inner_text("#log"))
        page.wait_for_function(
            f"(document.getElementById('log')?.textContent ?? '').length > {first}", timeout=60_000)
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#cancel")
        # The cancel reloads the page: between the two documents there is no #job-status.
        page.wait_for_function(
            "document.getElementById('job-status')?.textContent === 'CANCELLED'",
            timeout=60_000)
        assert mine.get(job_id)["status"] == "CANCELLED"
        assert page.locator("#cancel").count() == 0
    assert browser.errors == []
