"""Regenerate the web UI's screenshots (docs/screenshots/*.png) against a running stack.

    .venv/bin/python scripts/screenshots.py [--api-url http://127.0.0.1:8000] [--token TOKEN]
                                            [--out docs/screenshots] [--submit]

Signs in with an API token (``--token``, else RAILYARD_TOKEN, else $RAILYARD_HOME/token as
`railyard up` writes it) in headless Chromium (Debian's ``chromium``, driven by Playwright:
tests/integration/browser.py) and saves one PNG per page: the sign-in page, the jobs list, a
finished job (a sweep's when there is one), a running or other job, the compare page of two
jobs, the cluster and the workflows pages. ``--submit`` first sends a small xgboost sweep and
a NoOp job of the demo data (`railyard demo` writes it) so every page has something to show.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from railyard.client import credentials  # noqa: E402
from railyard.client.sdk import RailyardClient  # noqa: E402
from railyard.config import get_settings  # noqa: E402
from tests.integration.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

VIEWPORT = {"width": 1400, "height": 900}


def submit_examples(client: RailyardClient) -> None:
    """A small sweep (trials, curves) and a NoOp job, on the demo data."""
    from railyard.data.demo import sample_spec

    data = get_settings().home / "demo" / "fraud_data.parq"
    if not data.exists():
        raise SystemExit(f"no demo data at {data}: run `railyard demo` once first")
    sweep = sample_spec(str(data), source="local")
    sweep["model_name"] = "fraud_sweep"
    features = ["charge_type", "charge_amount", "charge_country"]
    sweep["train"] = {"workflow_name": "xgboost", "label": "has_fraud_dispute",
                      "classifier_features": features, "custom_params": {"n_estimators": 30},
                      "tune": {"search_alg": "grid", "cpus_per_trial": 0.5,
                               "search_space": {"max_depth": {"grid": [2, 4, 6]}}}}
    noop = sample_spec(str(data), source="local")
    noop["model_name"] = "fraud_noop"
    noop["train"].update(workflow_name="NoOp", label="has_fraud_dispute", custom_params={})
    for spec in (sweep, noop):
        job = client.wait(client.submit(spec)["id"], timeout=900)
        print(f"submitted {job['id']} ({spec['model_name']}): {job['status']}")


def pick_jobs(client: RailyardClient) -> list[dict[str, Any]]:
    """Jobs worth showing: a finished sweep first, then the newest others."""
    listed = client.list(limit=50)["jobs"]
    if not listed:
        raise SystemExit("the store has no jobs: run `railyard demo`, or pass --submit")
    sweeps = [j for j in listed if j["status"] == "SUCCEEDED"
              and (j["spec"].get("train") or {}).get("tune")]
    done = [j for j in listed if j["status"] == "SUCCEEDED"]
    return (sweeps[:1] + [j for j in done if j not in sweeps[:1]] + listed)[:3]


def shoot(api_url: str, token: str, out: Path, jobs: list[dict[str, Any]]) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(base_url=api_url, viewport=VIEWPORT).new_page()

        def save(name: str) -> None:
            time.sleep(1.0)                       # charts drawn, the log's first read in
            path = out / f"{name}.png"
            page.screenshot(path=str(path), full_page=True)
            saved.append(path)
            print(f"wrote {path}")

        page.goto("/")
        save("signin")
        page.fill("input[name=token]", token)
        page.press("input[name=token]", "Enter")
        page.wait_for_selector("#job-rows")
        save("jobs")
        page.goto(f"/jobs/{jobs[0]['id']}")
        page.wait_for_selector("#job-status")
        save("job")
        if len(jobs) > 1:
            page.goto(f"/jobs/{jobs[-1]['id']}")
            page.wait_for_selector("#job-status")
            save("job_other")
            page.goto(f"/compare?ids={jobs[0]['id']},{jobs[1]['id']}")
            page.wait_for_selector("#compare-spec")
            save("compare")
        for name in ("cluster", "workflows"):
            page.goto(f"/{name}")
            page.wait_for_selector(f"h1:has-text('{name.title()}')")
            save(name)
        browser.close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--api-url", default=get_settings().api_url)
    parser.add_argument("--token", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--submit", action="store_true")
    args = parser.parse_args()
    token = args.token or credentials.find_token(get_settings())
    if not token:
        raise SystemExit("no API token: pass --token, set RAILYARD_TOKEN, or run `railyard up`")
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: `apt-get install -y chromium` as root")
    with RailyardClient(args.api_url, token=token) as client:
        if args.submit:
            submit_examples(client)
        jobs = pick_jobs(client)
    shoot(args.api_url.rstrip("/"), token, args.out, jobs)


if __name__ == "__main__":
    main()
