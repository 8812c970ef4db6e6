"""Request bodies are checked before any route or pydantic sees them (serve_app.json_body): what
Python's json would turn into a 500 or an unstorable spec is a 422 naming the field and the fix,
a body over the size limit stays a 413, and nothing is stored."""

from __future__ import annotations

import copy
import json

import pytest
from fastapi.routing import APIRoute

from railyard.errors import SpecError
from serve_app.json_body import decode_json, nests_deeper
from serve_app.routes import api_router
from tests.fakes import build_env, job_count

LIMITS = {"max_depth": 64, "max_int_digits": 20}


def refused(body: bytes | str, **limits: int) -> SpecError:
    with pytest.raises(SpecError) as info:
        decode_json(body.encode() if isinstance(body, str) else body, **{**LIMITS, **limits})
    return info.value


def test_a_good_document_decodes_as_json_does() -> None:
    text = '{"a": [1, -2, 3.5, 1e300, "x[{\\"", true, null], "b": {"c": 12345678901234567890}}'
    assert decode_json(text.encode(), **LIMITS) == json.loads(text)
    assert decode_json('\ufeff{"a": 1}'.encode(), **LIMITS) == {"a": 1}   # a UTF-8 BOM
    assert decode_json('{"a": "é"}'.encode("utf-16"), **LIMITS) == {"a": "é"}


def test_nesting_is_counted_outside_strings_only() -> None:
    nested = '{"a": [[1], {"b": []}], "c": [[[]]]}'
    assert nests_deeper(nested, 3) and not nests_deeper(nested, 4)
    assert not nests_deeper('["[[[[[[", "{{{{{{{{\\"[[[["]', 1)
    assert nests_deeper('["[[[[[[", "{{{{{{{{\\"[[[["]', 0)
    assert nests_deeper("[" * 100_000, 64) and not nests_deeper("[]" * 100_000, 1)


def test_deep_nesting_is_refused_before_decoding() -> None:
    error = refused("[" * 100_000)
    assert error.details == [{"field": "(body)", "message": error.details[0]["message"]}]
    assert "deeper than 64" in error.message and "RAILYARD_MAX_JSON_DEPTH" in error.message
    assert "deeper than 3" in refused('{"a": {"b": {"c": {}}}}', max_depth=3).message
    # brackets inside strings do not nest anything
    assert decode_json(json.dumps({"a": "[" * 1000}).encode(), **LIMITS) == {"a": "[" * 1000}


def test_huge_integers_are_refused_naming_the_field() -> None:
    error = refused('{"train": {"custom_params": {"seed": ' + "9" * 5000 + "}}}")
    assert error.details == [{"field": "train.custom_params.seed", "message":
                              "an integer of 5000 digits is out of range: at most 20 digits "
                              "(RAILYARD_MAX_JSON_INT_DIGITS)"}]
    assert decode_json(b"[-18446744073709551615]", **LIMITS) == [-(2**64 - 1)]   # 20 digits
    assert refused(b"[1234]", max_int_digits=3).details[0]["field"] == "0"


@pytest.mark.parametrize("number, words", [
    ("NaN", "NaN is not a JSON number"), ("Infinity", "Infinity is not a JSON number"),
    ("-Infinity", "-Infinity is not a JSON number"), ("1e999", "1e999 is out of the range"),
    ("-1.5e400", "out of the range of a 64-bit float")])
def test_non_finite_numbers_are_refused_naming_the_field(number: str, words: str) -> None:
    body = '{"data": {"filters": [{"feature_value": {"float_val": ' + number + "}}]}}"
    error = refused(body)
    assert error.details[0]["field"] == "data.filters.0.feature_value.float_val"
    assert words in error.details[0]["message"]
    assert "send a finite number" in error.message or "send a smaller number" in error.message


def test_nul_and_unpaired_surrogates_are_refused_in_values_and_keys() -> None:
    error = refused(json.dumps({"data": {"features": [{"path": "/data/a\x00b"}]},
                                "train": {"custom_params": {"k\x00": 1, "ok": ["x", "\ud800"]}}}))
    assert [d["field"] for d in error.details] == [
        "data.features.0.path", "train.custom_params.k\\u0000", "train.custom_params.ok.1"]
    messages = [d["message"] for d in error.details]
    assert "NUL character" in messages[0] and messages[1].startswith("the key contains a NUL")
    assert "unpaired UTF-16 surrogate" in messages[2]
    assert "data.features.0.path: contains a NUL" in error.message


def test_what_json_cannot_decode_is_still_not_valid_json() -> None:
    assert "not valid JSON" in refused(b"{not json").message
    assert "not valid JSON" in refused(b"   ").message
    error = refused(b'{"a": "\xff"}')
    assert "not valid JSON" in error.message and "UTF-8" in error.message


# --------------------------------------------------------------------------- through the API

@pytest.fixture()
def env(tmp_path):
    return build_env(tmp_path)


def post_raw(client, body: bytes):
    return client.post("/v1/jobs", content=body, headers={"content-type": "application/json"})


def spec_with(spec: dict, change) -> bytes:
    bad = copy.deepcopy(spec)
    change(bad)
    return json.dumps(bad).encode()


PROBES = {
    "deep nesting": (lambda spec: b"[" * 20_000, "(body)", "RAILYARD_MAX_JSON_DEPTH"),
    "a 5000-digit integer": (
        lambda spec: json.dumps(spec).encode().replace(b'"max_depth": 6',
                                                       b'"max_depth": ' + b"7" * 5000),
        "train.custom_params.max_depth", "5000 digits"),
    "NUL in the data path": (
        lambda spec: spec_with(spec, lambda s: s["data"]["features"][0].update(
            path=s["data"]["features"][0]["path"] + "\x00.parquet")),
        "data.features.0.path", "NUL character"),
    "NaN float_val": (
        lambda spec: spec_with(spec, lambda s: s["data"]["filters"][2].update(
            feature_value={"float_val": float("nan")})),
        "data.filters.2.feature_value.float_val", "NaN is not a JSON number"),
    "Infinity float_val": (
        lambda spec: spec_with(spec, lambda s: s["data"]["filters"][2].update(
            feature_value={"float_val": float("inf")})),
        "data.filters.2.feature_value.float_val", "Infinity is not a JSON number"),
    "NUL in a filter's string": (
        lambda spec: spec_with(spec, lambda s: s["data"]["filters"][3]["feature_value"].update(
            string_vals=["US", "C\x00A"])),
        "data.filters.3.feature_value.string_vals.1", "NUL character"),
    "an unpaired surrogate": (
        lambda spec: json.dumps(spec).encode().replace(b'"robstory"', b'"rob\\udc00"'),
        "trainer", "surrogate"),
}


@pytest.mark.parametrize("case", list(PROBES))
def test_bad_bodies_are_422_naming_the_field_and_store_nothing(env, case):
    client, service, backend, spec = env
    make_body, field, words = PROBES[case]
    response = post_raw(client, make_body(spec))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "SpecError"
    assert field in [d["field"] for d in error["details"]], error
    assert words in error["message"]
    assert job_count(service) == 0 and backend.submitted == []


def test_the_size_limit_stays_a_413_and_a_good_spec_still_goes_through(env):
    client, service, backend, spec = env
    assert post_raw(client, b"[" * 100_000).status_code == 413      # over 64 KiB in build_env
    assert post_raw(client, json.dumps(spec).encode()).status_code == 201
    assert job_count(service) == 1


def test_the_token_is_checked_before_the_body(env):
    client, service, *_ = env
    response = client.post("/v1/jobs", content=b"[" * 20_000,
                           headers={"content-type": "application/json", "Authorization": ""})
    assert response.status_code == 401


def test_routes_without_a_body_are_unaffected(env):
    client, service, backend, spec = env
    job = client.post("/v1/jobs", json=spec).json()
    assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    assert client.get("/v1/jobs").status_code == 200


def api_routes(router) -> list[APIRoute]:
    """Every APIRoute under ``router``, through included routers."""
    found = []
    for route in router.routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):   # FastAPI's record of an included router
            found += api_routes(route.original_router)
    return found


def test_no_route_has_fastapi_decode_its_body():
    """FastAPI decodes a declared body before any dependency runs: a route with one would
    bypass these checks. Routes read their body by hand (serve_app.routes.jobs)."""
    routes = api_routes(api_router)
    assert "/v1/jobs" in {r.path for r in routes}
    assert not [r.path for r in routes if r.body_field is not None]
