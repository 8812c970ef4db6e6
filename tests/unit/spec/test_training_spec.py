"""The training spec: the blog's request is valid; every malformed input names its field."""

from __future__ import annotations

import copy

import pytest

from railyard.data.demo import sample_spec
from railyard.errors import SpecError
from railyard.spec import Predicate, TrainingSpec, parse_spec

BLOG = sample_spec("s3://bucket/fraud_data.parq", source="s3")


def fields_of(exc: SpecError) -> list[str]:
    return [d["field"] for d in exc.details]


def mutated(**changes) -> dict:
    spec = copy.deepcopy(BLOG)
    for path, value in changes.items():
        node = spec
        keys = path.split("__")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        last = keys[-1]
        if value is ...:
            del node[last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return spec


def test_blog_sample_request_is_valid():
    spec = parse_spec(BLOG)
    assert spec.train.workflow_name == "StripeFraudModel"
    assert [f.predicate for f in spec.data.filters] == [Predicate.GtEq, Predicate.LtEq,
                                                         Predicate.Gt, Predicate.IsIn]
    assert spec.data.filters[3].feature_value.value == ["US", "CA"]
    assert spec.data.holdout_sampling.date_range_sampling.start_date == "2018-10-01"
    assert spec.train.custom_params["objective"] == "reg:linear"


@pytest.mark.parametrize("changes, field, words", [
    ({"data__filters__0__predicate": "Around"}, "data.filters.0.predicate", "Input should be"),
    ({"data__filters__3__feature_value": {"string_val": "US"}}, "data.filters.3",
     "takes a list"),
    ({"data__filters__2__feature_value": {"float_vals": [1.0]}}, "data.filters.2",
     "one value"),
    ({"data__filters__2__feature_value": {"float_val": "ten"}},
     "data.filters.2.feature_value.float_val", "valid number"),
    ({"data__filters__2__feature_value": {"float_val": 1.0, "int_val": 1}},
     "data.filters.2.feature_value", "exactly one"),
    ({"data__holdout_sampling__date_range_sampling__start_date": "2018-13-01"},
     "data.holdout_sampling.date_range_sampling.start_date", "not a date"),
    ({"data__holdout_sampling__date_range_sampling__start_date": "2019-06-01"},
     "data.holdout_sampling.date_range_sampling", "after end_date"),
    ({"data__features__0__sourse": "s3"}, "data.features.0.sourse", "Extra inputs"),
    ({"colour": "blue"}, "colour", "Extra inputs"),
    ({"train__label": ...}, "train.label", "Field required"),
    ({"data__features__0__source": "hdfs"}, "data.features.0.source", "hdfs"),
    ({"data__features__0__path": "/local/path"}, "data.features.0", "s3://"),
    ({"model_name": "x" * 300}, "model_name", "at most 256"),
    ({"model_description": "x" * 5000}, "model_description", "at most 4096"),
    ({"data__holdout_sampling__sampling_function": "RANDOM"}, "data.holdout_sampling",
     "needs random_sampling"),
])
def test_malformed_specs_name_the_field(changes, field, words):
    with pytest.raises(SpecError) as info:
        parse_spec(mutated(**changes))
    assert field in fields_of(info.value), info.value.details
    assert words in info.value.message


@pytest.mark.parametrize("predicate, value, ok", [
    ("IsNull", None, True), ("IsNull", {"int_val": 1}, False),
    ("Between", {"int_vals": [1, 5]}, True), ("Between", {"int_vals": [1]}, False),
    ("StartsWith", {"string_val": "U"}, True), ("StartsWith", {"int_val": 1}, False),
    ("NotIn", {"string_vals": ["US"]}, True), ("Eq", {"bool_val": True}, True),
    ("Eq", None, False),
])
def test_predicate_arity(predicate, value, ok):
    flt = {"feature_name": "x", "predicate": predicate}
    if value is not None:
        flt["feature_value"] = value
    spec = mutated(data__filters=[flt])
    if ok:
        assert parse_spec(spec).data.filters[0].predicate.value == predicate
    else:
        with pytest.raises(SpecError) as info:
            parse_spec(spec)
        assert any(f.startswith("data.filters.0") for f in fields_of(info.value))


def test_non_object_body_is_rejected():
    with pytest.raises(SpecError):
        parse_spec(["not", "an", "object"])


def test_spec_hash_is_stable_and_content_based():
    a, b = parse_spec(BLOG), parse_spec(copy.deepcopy(BLOG))
    assert a.spec_hash() == b.spec_hash()
    assert a.spec_hash() != parse_spec(mutated(trainer="someone")).spec_hash()
    assert TrainingSpec.model_validate(a.model_dump(mode="json")) == a
