"""The job store on both databases it supports: a real Postgres and a SQLite file."""

from __future__ import annotations

import pytest

from railyard.data.demo import sample_spec
from railyard.jobstore import jobs
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.tables import JobStatus
from railyard.spec import parse_spec


@pytest.fixture(params=["postgres", "sqlite"])
def engine(request, tmp_path):
    if request.param == "postgres":
        url = request.getfixturevalue("postgres").url()
    else:
        url = f"sqlite:///{tmp_path}/store.db"
    migrate(url)
    migrate(url)  # idempotent
    return get_engine(url)


def test_guarded_transitions_never_leave_a_terminal_state(engine):
    spec = parse_spec(sample_spec("s3://b/p", source="s3"))
    job = jobs.create_job(engine, spec=spec)
    assert jobs.transition(engine, job_id=job.id, status=JobStatus.PENDING)
    assert jobs.transition(engine, job_id=job.id, status=JobStatus.CANCELLED)
    # A late write from the runner must not resurrect the job.
    assert not jobs.transition(engine, job_id=job.id, status=JobStatus.SUCCEEDED)
    got = jobs.get_job(engine, job_id=job.id)
    assert got.status == "CANCELLED" and got.finished_at is not None
    kinds = [e.message for e in jobs.list_events(engine, job_id=job.id)]
    assert kinds == ["QUEUED", "PENDING", "CANCELLED"]


def test_json_fields_and_pagination_round_trip(engine):
    spec = parse_spec(sample_spec("s3://b/p", source="s3"))
    ids = [jobs.create_job(engine, spec=spec).id for _ in range(3)]
    jobs.update_job(engine, job_id=ids[0], metrics={"holdout": {"auc": 0.7}})
    assert jobs.get_job(engine, job_id=ids[0]).metrics == {"holdout": {"auc": 0.7}}
    first, cursor = jobs.list_jobs(engine, owner=spec.owner, limit=2)
    rest, end = jobs.list_jobs(engine, owner=spec.owner, limit=2, cursor=cursor)
    mine = [j.id for j in first + rest if j.id in ids]
    assert mine == list(reversed(ids))
