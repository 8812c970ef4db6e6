"""The model registry's store on SQLite: version numbers, idempotent registration, aliases and
the record of their moves, listing."""

from __future__ import annotations

import pytest

from railyard.data.demo import sample_spec
from railyard.jobstore import jobs, registry
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.tables import JobStatus
from railyard.spec import parse_spec


@pytest.fixture()
def engine(tmp_path):
    url = f"sqlite:///{tmp_path}/r.db"
    migrate(url)
    return get_engine(url)


def succeeded_job(engine, owner: str = "team-a", name: str = "fraud"):
    spec = sample_spec("/data/x")
    spec.update(owner=owner, model_name=name)
    job = jobs.create_job(engine, spec=parse_spec(spec))
    assert jobs.transition(engine, job_id=job.id, status=JobStatus.SUCCEEDED,
                           allowed_from=frozenset({JobStatus.QUEUED}),
                           metrics={"holdout": {"auc": 0.75}})
    return jobs.get_job(engine, job_id=job.id)


def test_versions_count_per_model_and_registration_is_idempotent(engine):
    first, second = succeeded_job(engine), succeeded_job(engine)
    other = succeeded_job(engine, name="churn")
    assert registry.register_version(engine, job=first).version == 1
    assert registry.register_version(engine, job=second).version == 2
    # The success recorded twice registers nothing new.
    assert registry.register_version(engine, job=first).version == 1
    assert registry.register_version(engine, job=other).version == 1
    versions = registry.list_versions(engine, owner="team-a", name="fraud")
    assert [(v.version, v.job_id) for v in versions] == [(1, first.id), (2, second.id)]
    assert versions[0].metrics == {"holdout": {"auc": 0.75}}
    assert versions[0].spec_hash == first.spec_hash
    assert registry.version_of_job(engine, job_id=second.id).version == 2


def test_alias_moves_are_recorded_once_each(engine):
    for _ in range(2):
        registry.register_version(engine, job=succeeded_job(engine))
    kw = {"owner": "team-a", "name": "fraud", "alias": "production"}
    assert registry.set_alias(engine, **kw, version=1, actor="gate", reason="gate") is not None
    # Pointing it where it already points is no move.
    assert registry.set_alias(engine, **kw, version=1, actor="team-a", reason="person") is None
    registry.set_alias(engine, **kw, version=2, actor="team-a", reason="person", message="fix")
    assert registry.aliases_of(engine, owner="team-a", name="fraud") == {"production": 2}
    assert registry.delete_alias(engine, **kw, actor="team-a", reason="person") is not None
    assert registry.delete_alias(engine, **kw, actor="team-a", reason="person") is None
    events = registry.alias_events(engine, owner="team-a", name="fraud")
    assert [(e.from_version, e.to_version, e.reason, e.actor) for e in events] == [
        (None, 1, "gate", "gate"), (1, 2, "person", "team-a"), (2, None, "person", "team-a")]
    assert events[1].message == "fix"


def test_list_models_filters_by_owner_and_name(engine):
    for owner, name in (("team-a", "fraud"), ("team-a", "fraud"), ("team-a", "churn"),
                        ("team-b", "fraud_v2")):
        registry.register_version(engine, job=succeeded_job(engine, owner, name))
    registry.set_alias(engine, owner="team-a", name="fraud", alias="prod", version=2,
                       actor="x", reason="person")
    every = registry.list_models(engine)
    assert [(m.owner, m.name, m.latest_version, m.versions) for m in every] == [
        ("team-a", "churn", 1, 1), ("team-a", "fraud", 2, 2), ("team-b", "fraud_v2", 1, 1)]
    assert every[1].aliases == {"prod": 2}
    assert [m.name for m in registry.list_models(engine, owner="team-a", q="FRA")] == ["fraud"]
    # LIKE wildcards in q are matched literally.
    assert [m.name for m in registry.list_models(engine, q="_v")] == ["fraud_v2"]
    assert registry.list_models(engine, q="%") == []
    assert registry.registered_job_ids(engine, []) == set()


def test_an_alias_and_its_version_come_back_together(engine):
    for _ in range(2):
        registry.register_version(engine, job=succeeded_job(engine))
    kw = {"owner": "team-a", "name": "fraud", "alias": "production"}
    assert registry.aliased_version(engine, **kw) is None
    registry.set_alias(engine, **kw, version=2, actor="team-a", reason="person")
    alias, version = registry.aliased_version(engine, **kw)
    assert (alias.alias, alias.version) == ("production", 2)
    assert version.version == 2 and version.job_id == \
        registry.get_version(engine, owner="team-a", name="fraud", version=2).job_id
    assert registry.aliased_version(engine, **{**kw, "name": "churn"}) is None
