"""The provider's tests run in the Airflow virtualenv (scripts/airflow_venv.sh); the ones that
talk to Railyard need a live API, which tests/integration/test_airflow_provider.py starts and
names in RAILYARD_TEST_API_URL, RAILYARD_TEST_TOKEN and RAILYARD_TEST_SPEC."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class LiveApi:
    """The live Railyard API the integration test started, and a NoOp spec it accepts."""

    url: str
    token: str
    spec: dict[str, Any]


@pytest.fixture()
def live_api(monkeypatch: pytest.MonkeyPatch) -> LiveApi:
    """The live API, with ``railyard_default`` pointing at it; fails (never skips) without."""
    names = ("RAILYARD_TEST_API_URL", "RAILYARD_TEST_TOKEN", "RAILYARD_TEST_SPEC")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        pytest.fail(f"{', '.join(missing)} unset: these tests need a live Railyard API; run "
                    "them through tests/integration/test_airflow_provider.py")
    api = LiveApi(os.environ[names[0]], os.environ[names[1]], json.loads(os.environ[names[2]]))
    monkeypatch.setenv("AIRFLOW_CONN_RAILYARD_DEFAULT", json.dumps(
        {"conn_type": "railyard", "host": api.url, "password": api.token}))
    return api
