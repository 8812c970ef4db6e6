"""The provider's pure helpers: the API URL of a connection, the idempotency key, the spec,
the failure message and error answers."""

from __future__ import annotations

import httpx
import pytest
from airflow.sdk.exceptions import AirflowException

from railyard_airflow.api import (
    RailyardApiError,
    api_base_url,
    failure_message,
    idempotency_key,
    load_spec,
    raise_for_error,
    succeeded_metrics,
)


@pytest.mark.parametrize(("host", "port", "schema", "url"), [
    ("http://api.internal:8000", None, None, "http://api.internal:8000"),
    ("https://api.internal/railyard/", None, None, "https://api.internal/railyard"),
    ("api.internal", 8443, "https", "https://api.internal:8443"),
    ("api.internal", None, "", "http://api.internal"),
    ("http://api.internal:8000", 9000, None, "http://api.internal:8000"),
    ("http://api.internal", 9000, None, "http://api.internal:9000"),
])
def test_api_base_url_takes_a_url_or_a_host(host: str, port: int | None, schema: str | None,
                                            url: str) -> None:
    assert api_base_url(host, port=port, schema=schema) == url


def test_a_connection_without_host_says_what_to_set() -> None:
    with pytest.raises(AirflowException, match="set it to the API URL"):
        api_base_url("")


def test_idempotency_key_is_per_try_and_fits_the_api() -> None:
    first = idempotency_key("dag", "train", "manual__2026-01-01T00:00:00+00:00", 1)
    assert first == idempotency_key("dag", "train", "manual__2026-01-01T00:00:00+00:00", 1)
    assert first != idempotency_key("dag", "train", "manual__2026-01-01T00:00:00+00:00", 2)
    assert first != idempotency_key("dag", "train", "manual__2026-01-01T00:00:00+00:00", 1, 3)
    long = idempotency_key("d" * 250, "train", "run", 1)
    assert long.startswith("airflow-sha256:") and len(long) <= 255
    assert idempotency_key("dag", "train", "run-é", 1).isascii()


def test_load_spec_takes_a_dict_or_json_text() -> None:
    assert load_spec({"a": 1}) == {"a": 1}
    assert load_spec('{"a": 1}') == {"a": 1}
    with pytest.raises(AirflowException, match="relative to the DAG folder"):
        load_spec("specs/missing.yaml")
    with pytest.raises(AirflowException, match="must be a JSON object"):
        load_spec("[1]")


def test_failure_message_names_status_phase_and_error() -> None:
    job = {"id": "j1", "status": "FAILED", "phase": "train", "error_phase": "evaluate",
           "error": "boom"}
    message = failure_message(job, "http://x/jobs/j1")
    assert message == ("Railyard job j1 ended FAILED in phase evaluate: boom "
                       "(see http://x/jobs/j1)")
    with pytest.raises(AirflowException, match="ended FAILED in phase evaluate: boom"):
        succeeded_metrics(job)
    ok = {"id": "j2", "status": "SUCCEEDED", "metrics": {"holdout": {"auc": 0.9}}}
    assert succeeded_metrics(ok) == {"auc": 0.9}
    assert succeeded_metrics({"status": "SUCCEEDED", "metrics": None}) == {}


def test_error_answers_carry_the_api_message() -> None:
    request = httpx.Request("POST", "http://x/v1/jobs")
    response = httpx.Response(422, request=request, json={"error": {
        "type": "SpecError", "message": "priority: out of range", "details": [{"field": "p"}]}})
    with pytest.raises(RailyardApiError) as caught:
        raise_for_error(response)
    assert str(caught.value) == ("Railyard API POST /v1/jobs answered HTTP 422 SpecError: "
                                 "priority: out of range")
    assert caught.value.details == [{"field": "p"}] and not caught.value.transient
    plain = httpx.Response(503, request=request, text="down")
    assert RailyardApiError.from_response(plain).transient
    assert raise_for_error(httpx.Response(200, request=request)).status_code == 200
