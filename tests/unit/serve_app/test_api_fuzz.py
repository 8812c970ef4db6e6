"""Hypothesis-generated specs: mutations of the blog's request at random paths, with random
JSON values. The API must answer 201 or a 4xx naming a field — never a 5xx — and a rejected
spec must leave no job row behind."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes import build_env, job_count

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=8)


def paths(node, prefix=()):
    """Every path into a JSON document."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, (*prefix, i))


def mutate(spec: dict, path: tuple, action: str, value) -> dict:
    spec = copy.deepcopy(spec)
    if not path:
        return value if action == "replace" else spec
    parent = spec
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    elif isinstance(parent, dict):
        parent[f"{last}_extra"] = value
    return spec


_state: dict = {}


def platform():
    """One SQLite-backed app per test session (hypothesis calls the test many times)."""
    if not _state:
        _state["env"] = build_env(Path(tempfile.mkdtemp(prefix="railyard-fuzz-")))
    return _state["env"]


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_specs_never_cause_a_5xx_or_a_half_written_job(data):
    client, service, backend, spec = platform()
    all_paths = list(paths(spec))
    path = data.draw(st.sampled_from(all_paths))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    value = data.draw(json_values)
    body = mutate(spec, path, action, value)
    before = job_count(service)
    response = client.post("/v1/jobs", json=body)
    assert response.status_code < 500, (path, action, value, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"]
        assert job_count(service) == before
    else:
        assert response.status_code == 201
        assert job_count(service) == before + 1
