"""The promotion gate's comparison: the metric's direction, min_delta, no incumbent."""

from __future__ import annotations

from railyard.execution.promotion import compare
from railyard.spec.promotion import PromotionSpec


def gate(metric: str, min_delta: float = 0.0) -> PromotionSpec:
    return PromotionSpec(alias="production", metric=metric, min_delta=min_delta)


def test_higher_is_better_for_auc_lower_for_rmse():
    assert compare(gate("auc"), 0.81, 0.80)["promoted"]
    assert not compare(gate("auc"), 0.79, 0.80)["promoted"]
    assert compare(gate("rmse"), 1.0, 1.5)["promoted"]
    assert not compare(gate("rmse"), 1.5, 1.0)["promoted"]


def test_a_tie_keeps_the_incumbent_and_min_delta_is_a_margin():
    tie = compare(gate("auc"), 0.8, 0.8)
    assert not tie["promoted"] and "does not beat" in tie["reason"]
    assert not compare(gate("auc", 0.05), 0.84, 0.80)["promoted"]
    assert compare(gate("auc", 0.05), 0.86, 0.80)["promoted"]
    assert compare(gate("logloss", 0.1), 0.3, 0.5)["promoted"]


def test_an_incumbent_without_the_metric_is_replaced():
    assert compare(gate("auc"), 0.6, None)["promoted"]
    assert compare(gate("auc"), 0.6, float("nan"))["promoted"]


def test_decide_without_incumbent_promotes_and_an_unreadable_one_is_a_decision(tmp_path):
    import pyarrow as pa

    from railyard.data.demo import sample_spec
    from railyard.execution.promotion import decide
    from railyard.jobstore import jobs, registry
    from railyard.jobstore.engine import get_engine, migrate
    from railyard.jobstore.tables import JobStatus
    from railyard.spec import parse_spec
    from railyard.training.workflow import TrainingData

    url = f"sqlite:///{tmp_path}/p.db"
    migrate(url)
    engine = get_engine(url)
    spec = parse_spec({**sample_spec("/x"), "promotion": {"alias": "production",
                                                          "metric": "auc"}})
    holdout = pa.table({"charge_amount": [1.0], "is_fraudulent": [1]})
    data = TrainingData(train=holdout, holdout=holdout, features=["charge_amount"],
                        label="is_fraudulent")
    assert decide(engine, parse_spec(sample_spec("/x")), data, {"auc": 0.7}) is None
    first = decide(engine, spec, data, {"auc": 0.7})
    assert first is not None and first["promoted"] and first["incumbent_version"] is None
    assert not decide(engine, spec, data, {"rmse": 0.7})["promoted"]

    job = jobs.create_job(engine, spec=spec)
    jobs.transition(engine, job_id=job.id, status=JobStatus.SUCCEEDED,
                    allowed_from=frozenset({JobStatus.QUEUED}))
    row = registry.register_version(engine, job=jobs.get_job(engine, job_id=job.id))
    registry.set_alias(engine, owner=spec.owner, name=spec.model_name, alias="production",
                       version=row.version, actor="gate", reason="gate")
    kept = decide(engine, spec, data, {"auc": 0.99})
    assert kept is not None and kept["promoted"] is False and kept["incumbent_version"] == 1
    assert "cannot be scored" in kept["reason"] and kept["incumbent"] is None
