"""Values JSON or the job database cannot carry are refused by the spec models themselves, so a
spec built in Python (the SDK, a test, the driver reading a file) is refused too: NaN and
infinite floats, NUL characters, unpaired surrogates — anywhere, naming the field."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from railyard.data.demo import sample_spec
from railyard.errors import SpecError
from railyard.spec import FeatureValue, SearchDomain, TrainSpec, TuneSpec, parse_spec
from railyard.spec.common import unsafe_values

BLOG = sample_spec("s3://bucket/fraud_data.parq", source="s3")
NAN, INF = float("nan"), float("inf")


def problems_of(change) -> list[dict]:
    spec = copy.deepcopy(BLOG)
    change(spec)
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    return info.value.details


@pytest.mark.parametrize("value", [NAN, INF, -INF])
def test_a_non_finite_float_val_is_refused(value: float) -> None:
    details = problems_of(lambda s: s["data"]["filters"][2].update(
        feature_value={"float_val": value}))
    assert [(d["field"], d["message"]) for d in details] == [
        ("data.filters.2.feature_value.float_val", "Input should be a finite number")]


@pytest.mark.parametrize("change, field, words", [
    (lambda s: s["data"]["filters"][3]["feature_value"].update(float_vals=[1.0, NAN],
                                                               string_vals=None),
     "data.filters.3.feature_value.float_vals.1", "finite number"),
    (lambda s: s["data"]["holdout_sampling"].update(
        sampling_function="RANDOM", date_range_sampling=None,
        random_sampling={"fraction": NAN}),
     "data.holdout_sampling.random_sampling.fraction", "finite number"),
    (lambda s: s["train"]["custom_params"].update(learning_rate=NAN),
     "train.custom_params", "at learning_rate: NaN is not a JSON number"),
    (lambda s: s["train"]["custom_params"].update(nested={"a": [1, INF]}),
     "train.custom_params", "at nested.a.1: Infinity is not a JSON number"),
    (lambda s: s["data"]["features"][0].update(path="s3://bucket/a\x00b"),
     "data.features.0.path", "NUL character"),
    (lambda s: s.update(owner="team\x00"), "owner", "NUL character"),
    (lambda s: s.update(model_description="bad \udc80 text"), "model_description",
     "unicode string"),                                    # pydantic's own check of str
    (lambda s: s["train"]["custom_params"].update(objective="bad \udc80 text"),
     "train.custom_params", "at objective: contains an unpaired UTF-16 surrogate"),
    (lambda s: s["train"]["custom_params"].update({"k\x00": 1}), "train.custom_params",
     "at k\\u0000: the key contains a NUL character"),
    (lambda s: s["data"]["filters"][3]["feature_value"].update(string_vals=["US", "\x00"]),
     "data.filters.3.feature_value.string_vals", "at 1: contains a NUL character"),
])
def test_unstorable_values_are_refused_anywhere_naming_the_field(change, field, words) -> None:
    details = problems_of(change)
    assert [d["field"] for d in details] == [field], details
    assert words in details[0]["message"]


@pytest.mark.parametrize("domain, words", [
    ({"uniform": [0.0, NAN]}, "uniform.1: NaN is not a JSON number"),
    ({"loguniform": [0.01, INF]}, "loguniform.1: Infinity is not a JSON number"),
    ({"grid": [0.1, NAN]}, "grid.1: NaN"),
    ({"choice": ["gbtree", "dart\x00"]}, "choice.1: contains a NUL character"),
])
def test_search_domains_refuse_them_too(domain: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words.replace("\\", "\\\\").replace(".", r"\.")):
        SearchDomain.model_validate(domain)


def test_a_spec_built_in_python_is_refused_as_the_api_refuses_it() -> None:
    with pytest.raises(ValidationError, match="finite number"):
        FeatureValue(float_val=NAN)
    with pytest.raises(ValidationError, match="custom_params"):
        TrainSpec(workflow_name="xgboost", classifier_features=["a"], label="y",
                  custom_params={"eta": NAN})
    with pytest.raises(ValidationError, match="NUL"):
        TrainSpec(workflow_name="xgboost", classifier_features=["a\x00"], label="y")
    good = TrainSpec(workflow_name="xgboost", classifier_features=["a"], label="y",
                     custom_params={"eta": 0.1, "tags": ["é", 1, None, True]})
    assert good.custom_params["tags"] == ["é", 1, None, True]


def test_unsafe_values_walks_a_document_in_order() -> None:
    document = {"a": [1.5, NAN, {"b\x00": "ok", "c": "x\x00"}], "d": True, "e": None}
    assert [p["field"] for p in unsafe_values(document)] == ["a.1", "a.2.b\\u0000", "a.2.c"]
    assert len(unsafe_values([NAN] * 100)) == 20 and len(unsafe_values([NAN] * 5, limit=2)) == 2
    assert unsafe_values("a\x00")[0]["field"] == "(body)"
    assert unsafe_values({"x": object()}, extra=lambda v: "odd") == [
        {"field": "x", "message": "odd"}]
    assert unsafe_values(BLOG) == []


def test_a_sweep_counts_its_trials_as_ray_tune_expands_them() -> None:
    def tune(**fields) -> TuneSpec:
        return TuneSpec.model_validate({"search_space": {"a": {"grid": [1, 2, 3]},
                                                         "b": {"grid": [1, 2]},
                                                         "c": {"choice": [0, 1]}}, **fields})

    assert tune(num_samples=5).trial_count == 30          # 5 samples x 6 grid combinations
    assert tune(num_samples=5, search_alg="grid").trial_count == 6
    assert TuneSpec.model_validate({"search_space": {"c": {"uniform": [0, 1]}},
                                    "num_samples": 7}).trial_count == 7
    huge = TuneSpec.model_validate({"search_space": {
        name: {"grid": list(range(1000))} for name in "abc"}, "num_samples": 10_000})
    assert huge.trial_count == 10**13
