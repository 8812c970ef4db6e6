"""The spec's promotion gate: validation that names the field, and spec hashes unchanged for
specs without a gate."""

from __future__ import annotations

import pytest

from railyard.data.demo import sample_spec
from railyard.errors import SpecError
from railyard.spec import parse_spec
from railyard.spec.promotion import higher_is_better


def test_gate_parses_and_changes_the_hash_only_when_present():
    spec = sample_spec("/data/x")
    plain = parse_spec(spec)
    assert plain.promotion is None
    gated = parse_spec({**spec, "promotion": {"alias": "production", "metric": "auc"}})
    assert gated.promotion is not None and gated.promotion.min_delta == 0.0
    assert gated.spec_hash() != plain.spec_hash()
    # The stored spec (with "promotion": null) hashes as the spec without the field.
    assert parse_spec(plain.model_dump(mode="json")).spec_hash() == plain.spec_hash()


@pytest.mark.parametrize(("gate", "field"), [
    ({"alias": "production", "metric": "accuracy_at_k"}, "promotion.metric"),
    ({"alias": "no spaces", "metric": "auc"}, "promotion.alias"),
    ({"alias": "production", "metric": "auc", "min_delta": -1}, "promotion.min_delta"),
    ({"alias": "production", "metric": "auc", "typo": 1}, "promotion.typo"),
])
def test_a_bad_gate_is_a_422_naming_the_field(gate, field):
    with pytest.raises(SpecError) as info:
        parse_spec({**sample_spec("/data/x"), "promotion": gate})
    assert info.value.status_code == 422
    assert [d["field"] for d in info.value.details] == [field]


def test_metric_direction():
    assert higher_is_better("auc") and higher_is_better("r2")
    assert not higher_is_better("rmse") and not higher_is_better("logloss")
