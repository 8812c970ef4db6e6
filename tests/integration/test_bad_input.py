"""Bad input against the live API (Ray Serve + Postgres): every malformed body a probe of the
API once turned into a 500 — or into a stored spec that could never be read back — is a 4xx
naming the field and the fix, and nothing is stored. A sweep too large to expand is a 422 at
submit; a fan-out over too many partitions fails its job with the reason."""

from __future__ import annotations

import copy
import json
import uuid

import httpx
import pytest

from railyard.data.demo import sample_spec


@pytest.fixture()
def http(platform):
    with httpx.Client(base_url=platform.api_url, timeout=60,
                      headers={"Authorization": f"Bearer {platform.token}",
                               "content-type": "application/json"}) as c:
        yield c


@pytest.fixture()
def spec(platform) -> dict:
    """The blog's spec in a project of this test's own (its stored jobs are listed by it)."""
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["project"] = f"bad-input-{uuid.uuid4().hex[:8]}"
    return spec


def stored_jobs(http: httpx.Client, spec: dict) -> list[str]:
    """The ids of the jobs stored in ``spec``'s project."""
    response = http.get("/v1/jobs", params={"project": spec["project"], "limit": 200})
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["jobs"]]


def changed(spec: dict, change) -> bytes:
    bad = copy.deepcopy(spec)
    change(bad)
    return json.dumps(bad).encode()   # json.dumps writes NaN and Infinity as Python does


def float_val(value: float):
    return lambda s: s["data"]["filters"][2].update(feature_value={"float_val": value})


PROBES = {
    "100,000 [": (lambda spec: b"[" * 100_000, "(body)", "RAILYARD_MAX_JSON_DEPTH"),
    "a 5,000-digit integer": (
        lambda spec: json.dumps(spec).encode().replace(b'"max_depth": 6',
                                                       b'"max_depth": ' + b"9" * 5000),
        "train.custom_params.max_depth", "5000 digits"),
    "NUL in the data path": (
        lambda spec: changed(spec, lambda s: s["data"]["features"][0].update(
            path=s["data"]["features"][0]["path"] + "/\x00part.parquet")),
        "data.features.0.path", "NUL character"),
    "NUL in a key": (
        lambda spec: changed(spec, lambda s: s["train"]["custom_params"].update({"a\x00": 1})),
        "train.custom_params.a\\u0000", "NUL character"),
    "float_val NaN": (lambda spec: changed(spec, float_val(float("nan"))),
                      "data.filters.2.feature_value.float_val", "NaN is not a JSON number"),
    "float_val Infinity": (lambda spec: changed(spec, float_val(float("inf"))),
                           "data.filters.2.feature_value.float_val", "Infinity"),
    "float_val -Infinity": (lambda spec: changed(spec, float_val(float("-inf"))),
                            "data.filters.2.feature_value.float_val", "-Infinity"),
    "float_val 1e999": (
        lambda spec: json.dumps(spec).encode().replace(b'"float_val": 10.0',
                                                       b'"float_val": 1e999'),
        "data.filters.2.feature_value.float_val", "out of the range of a 64-bit float"),
    "an unpaired surrogate": (
        lambda spec: json.dumps(spec).encode().replace(b'"robstory"', b'"rob\\ud800"'),
        "trainer", "unpaired UTF-16 surrogate"),
}


@pytest.mark.parametrize("case", list(PROBES))
def test_every_probe_is_a_422_naming_the_field_and_stores_nothing(http, spec, case):
    make_body, field, words = PROBES[case]
    before = stored_jobs(http, spec)
    response = http.post("/v1/jobs", content=make_body(spec))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "SpecError"
    assert field in [d["field"] for d in error["details"]], error
    assert words in error["message"], error
    assert stored_jobs(http, spec) == before == []


def test_a_nan_spec_is_refused_and_the_same_spec_without_it_is_accepted(http, spec):
    """The NaN spec used to be stored as invalid JSON and read back with every feature_value
    field null; now it is refused, and nothing is stored until a valid spec comes."""
    assert stored_jobs(http, spec) == []
    nan = http.post("/v1/jobs", content=changed(spec, float_val(float("nan"))))
    assert nan.status_code == 422 and stored_jobs(http, spec) == []
    good = http.post("/v1/jobs", content=json.dumps(spec).encode())
    assert good.status_code == 201, good.text
    job = good.json()
    assert job["spec"]["data"]["filters"][2]["feature_value"]["float_val"] == 10.0
    assert stored_jobs(http, spec) == [job["id"]]
    assert http.post(f"/v1/jobs/{job['id']}/cancel").status_code in (200, 409)


def test_the_body_size_limit_is_still_a_413(http, platform):
    response = http.post("/v1/jobs", content=b" " * (platform.settings.max_body_bytes + 1))
    assert response.status_code == 413, response.text
    assert response.json()["error"]["type"] == "PayloadTooLargeError"


def test_a_sweep_too_large_to_expand_is_a_422_naming_train_tune_and_the_count(http, spec):
    spec["train"]["tune"] = {"num_samples": 10_000, "search_space": {
        name: {"grid": list(range(1, 1001))}
        for name in ("max_depth", "n_estimators", "min_child_weight")}}
    response = http.post("/v1/jobs", content=json.dumps(spec).encode())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert [d["field"] for d in error["details"]] == ["train.tune"]
    assert "10000000000000 trials" in error["message"]
    assert "RAILYARD_MAX_SWEEP_TRIALS" in error["message"]
    assert stored_jobs(http, spec) == []


def test_a_fan_out_over_the_partition_cap_fails_with_the_reason(platform, client, spec):
    """``created_at`` is a microsecond timestamp: nearly every training row is a partition of
    its own, far more than RAILYARD_MAX_PARTITIONS (default 10,000). The job fails before any
    model is trained, naming train.partition_by and the setting."""
    cap = platform.settings.max_partitions
    spec["data"]["filters"] = []
    spec["train"] = {"workflow_name": "xgboost", "label": "has_fraud_dispute",
                     "classifier_features": ["charge_type", "charge_amount", "charge_country"],
                     "custom_params": {"n_estimators": 2}, "partition_by": "created_at"}
    job = client.wait(client.submit(spec)["id"], timeout=300)
    assert job["status"] == "FAILED", job
    assert "train.partition_by" in job["error"] and "RAILYARD_MAX_PARTITIONS" in job["error"]
    assert f"at most {cap} partitions" in job["error"]
    assert client.models(job["id"]) == []
