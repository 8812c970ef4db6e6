"""The job list at scale on SQLite: one query for a page's phases, no Ray call on the list path,
keyset pages through ties in created_at; and retention (``jobs.prune_jobs``, ``railyard jobs
prune``): finished jobs older than the cutoff go with their events and attempts, active jobs
never."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import event, func
from sqlmodel import Session, select
from typer.testing import CliRunner

from railyard.cli.jobs import parse_age
from railyard.cli.main import app as cli_app
from railyard.config import get_settings
from railyard.control.backend import BackendStatus
from railyard.data.demo import sample_spec
from railyard.errors import SpecError
from railyard.jobstore import jobs
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.tables import Job, JobAttempt, JobEvent, JobStatus, utcnow
from railyard.spec import parse_spec
from tests.fakes import build_env


@pytest.fixture()
def env(tmp_path):
    return build_env(tmp_path)


@pytest.fixture()
def engine(tmp_path):
    url = f"sqlite:///{tmp_path}/store.db"
    migrate(url)
    return get_engine(url)


def _statements(engine, into: list[str]):
    def record(conn, cursor, statement, parameters, context, executemany):
        into.append(statement)
    event.listen(engine, "before_cursor_execute", record)
    return lambda: event.remove(engine, "before_cursor_execute", record)


def _run_phases(engine, job_id: str, *names: str) -> None:
    for name in names:
        jobs.add_event(engine, job_id=job_id, kind="phase_started", phase=name)
        jobs.add_event(engine, job_id=job_id, kind="phase_finished", phase=name)


def test_a_list_page_loads_its_phases_in_one_query_and_never_asks_ray(env):
    client, service, backend, spec = env
    ids = [client.post("/v1/jobs", json=spec).json()["id"] for _ in range(4)]
    _run_phases(service.engine, ids[0], "fetch", "split")
    _run_phases(service.engine, ids[2], "fetch")
    jobs.record_trial(service.engine, job_id=ids[0], trial={"trial_id": "t1", "auc": 0.9})
    asked: list[str] = []
    real_status = backend.status
    backend.status = lambda sid: asked.append(sid) or real_status(sid)
    statements: list[str] = []
    stop = _statements(service.engine, statements)
    try:
        page = client.get("/v1/jobs", params={"limit": 10}).json()
    finally:
        stop()
    assert asked == []
    assert len([s for s in statements if "FROM job_event" in s]) == 1
    phases = {j["id"]: [p["name"] for p in j["phases"]] for j in page["jobs"]}
    assert phases == {ids[0]: ["fetch", "split"], ids[1]: [], ids[2]: ["fetch"], ids[3]: []}
    one = client.get(f"/v1/jobs/{ids[0]}").json()
    listed = next(j for j in page["jobs"] if j["id"] == ids[0])
    assert listed["phases"] == one["phases"]


def test_the_list_shows_stored_statuses_until_the_reconciler_runs(env):
    client, service, backend, spec = env
    job = client.post("/v1/jobs", json=spec).json()
    backend.statuses[job["ray_submission_id"]] = BackendStatus("STOPPED")
    assert client.get("/v1/jobs").json()["jobs"][0]["status"] == "PENDING"
    service.reconcile_all()
    assert client.get("/v1/jobs").json()["jobs"][0]["status"] == "CANCELLED"


def test_list_events_for_maps_every_job_and_filters_kinds(engine):
    spec = parse_spec(sample_spec("s3://b/p", source="s3"))
    a, b = (jobs.create_job(engine, spec=spec).id for _ in range(2))
    _run_phases(engine, a, "fetch")
    found = jobs.list_events_for(engine, job_ids=[a, b, "job-none"])
    assert [e.kind for e in found[a]] == ["status", "phase_started", "phase_finished"]
    assert [e.kind for e in found[b]] == ["status"] and found["job-none"] == []
    only = jobs.list_events_for(engine, job_ids=[a, b], kinds=("phase_started",))
    assert [e.phase for e in only[a]] == ["fetch"] and only[b] == []
    assert jobs.list_events_for(engine, job_ids=[]) == {}


def test_keyset_pages_walk_ties_in_created_at_once_each(engine):
    spec = parse_spec(sample_spec("s3://b/p", source="s3"))
    ids = [jobs.create_job(engine, spec=spec).id for _ in range(7)]
    same = utcnow() - timedelta(minutes=5)
    for job_id in ids[1:5]:                         # four jobs created in the same microsecond
        jobs.update_job(engine, job_id=job_id, created_at=same)
    expected = [j.id for j in sorted((jobs.get_job(engine, job_id=i) for i in ids),
                                     key=lambda j: (jobs.as_utc(j.created_at), j.id),
                                     reverse=True)]
    for limit in (1, 2, 3):
        seen, cursor = [], None
        while True:
            page, cursor = jobs.list_jobs(engine, owner=spec.owner, limit=limit, cursor=cursor)
            seen += [j.id for j in page]
            if cursor is None:
                break
        assert seen == expected


def _finished(engine, spec, status: JobStatus, days_ago: float) -> str:
    job = jobs.create_job(engine, spec=spec)
    jobs.start_attempt(engine, job_id=job.id, attempt=1, ray_submission_id="sid")
    _run_phases(engine, job.id, "fetch")
    if status.is_terminal():
        when = utcnow() - timedelta(days=days_ago)
        assert jobs.transition(engine, job_id=job.id, status=status, finished_at=when)
        jobs.update_job(engine, job_id=job.id, created_at=when - timedelta(minutes=3))
    else:
        jobs.transition(engine, job_id=job.id, status=status)
        jobs.update_job(engine, job_id=job.id,
                        created_at=utcnow() - timedelta(days=days_ago))
    return job.id


def _rows(engine, table, job_id: str) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(table)
                            .where(table.job_id == job_id)).one()


def test_prune_deletes_old_finished_jobs_with_their_rows_and_never_active_ones(engine):
    spec = parse_spec(sample_spec("s3://b/p", source="s3"))
    old = [_finished(engine, spec, s, 40) for s in
           (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED,
            JobStatus.SUCCEEDED, JobStatus.FAILED)]
    recent = _finished(engine, spec, JobStatus.SUCCEEDED, 2)
    active = [_finished(engine, spec, s, 90) for s in
              (JobStatus.QUEUED, JobStatus.PENDING, JobStatus.RUNNING)]
    cutoff = utcnow() - timedelta(days=30)

    assert jobs.prune_jobs(engine, finished_before=cutoff, dry_run=True, batch_size=2) == 5
    assert len(jobs.list_jobs(engine, limit=200)[0]) == 9
    assert jobs.prune_jobs(engine, finished_before=cutoff,
                           statuses=[JobStatus.FAILED], batch_size=1) == 2
    left = {j.id for j in jobs.list_jobs(engine, limit=200)[0]}
    assert old[1] not in left and old[4] not in left and old[0] in left
    kept = jobs.prune_jobs(engine, finished_before=cutoff, batch_size=2,
                           keep=lambda ids: [i for i in ids if i == old[3]])
    assert kept == 2
    left = {j.id for j in jobs.list_jobs(engine, limit=200)[0]}
    assert left == {old[3], recent, *active}
    for gone in (old[0], old[1], old[2], old[4]):
        assert _rows(engine, JobEvent, gone) == 0 and _rows(engine, JobAttempt, gone) == 0
    assert _rows(engine, JobEvent, recent) > 0 and _rows(engine, JobAttempt, active[2]) == 1
    with pytest.raises(SpecError, match="only finished jobs"):
        jobs.prune_jobs(engine, finished_before=utcnow(), statuses=[JobStatus.RUNNING])
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(Job)).one() == 5


@pytest.mark.parametrize("text,expected", [
    ("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("90m", timedelta(minutes=90)),
    ("2w", timedelta(weeks=2)), ("3600S", timedelta(hours=1))])
def test_parse_age(text, expected):
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["30", "d", "0d", "-1d", "1y", "1.5d"])
def test_parse_age_refuses_what_it_cannot_read(text):
    import typer

    with pytest.raises(typer.BadParameter):
        parse_age(text)


@pytest.fixture()
def cli_engine(tmp_path, monkeypatch):
    """The engine of the SQLite store the CLI's settings point at (RAILYARD_DATABASE_URL)."""
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("RAILYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RAILYARD_DATABASE_URL", url)
    get_settings.cache_clear()
    migrate(url)
    yield get_engine(url)
    get_settings.cache_clear()


def test_prune_cli(cli_engine):
    engine = cli_engine
    spec = parse_spec(sample_spec("s3://b/p", source="s3"))
    old = _finished(engine, spec, JobStatus.SUCCEEDED, 40)
    failed = _finished(engine, spec, JobStatus.FAILED, 40)
    running = _finished(engine, spec, JobStatus.RUNNING, 40)
    runner = CliRunner()
    dry = runner.invoke(cli_app, ["jobs", "prune", "--older-than", "30d", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would delete 2" in dry.stdout
    done = runner.invoke(cli_app, ["jobs", "prune", "--older-than", "30d",
                                   "--status", "SUCCEEDED"])
    assert done.exit_code == 0 and "deleted 1 SUCCEEDED" in done.stdout
    left = {j.id for j in jobs.list_jobs(engine)[0]}
    assert left == {failed, running} and old not in left
    refused = runner.invoke(cli_app, ["jobs", "prune", "--older-than", "30d",
                                      "--status", "RUNNING"])
    assert refused.exit_code == 1 and "only finished jobs" in refused.stderr
    bad = runner.invoke(cli_app, ["jobs", "prune", "--older-than", "soon"])
    assert bad.exit_code == 2 and running in {j.id for j in jobs.list_jobs(engine)[0]}


def test_prune_cli_keeps_the_jobs_that_registered_a_model_version(cli_engine):
    from railyard.jobstore import registry

    engine = cli_engine
    spec = parse_spec(sample_spec("s3://b/p", source="s3"))
    registered = _finished(engine, spec, JobStatus.SUCCEEDED, 40)
    plain = _finished(engine, spec, JobStatus.SUCCEEDED, 40)
    registry.register_version(engine, job=jobs.get_job(engine, job_id=registered))
    done = CliRunner().invoke(cli_app, ["jobs", "prune", "--older-than", "30d"])
    assert done.exit_code == 0 and "deleted 1 " in done.stdout, done.output
    left = {j.id for j in jobs.list_jobs(engine)[0]}
    assert registered in left and plain not in left


def test_the_queues_light_rows_equal_the_whole_jobs(tmp_path):
    """jobs.list_active_work (columns and train.resources by JSON path) is the queue's view
    of jobs.list_active_jobs, on SQLite (tests/integration/test_store_at_scale: Postgres)."""
    from railyard.data.demo import sample_spec
    from railyard.jobstore.engine import get_engine, migrate
    from railyard.jobstore.tables import JobStatus
    from railyard.spec import parse_spec

    url = f"sqlite:///{tmp_path}/q.db"
    migrate(url)
    engine = get_engine(url)
    wide = sample_spec("/data/x")
    wide["train"]["resources"] = {"num_workers": 3, "cpus_per_worker": 2}
    made = [jobs.create_job(engine, spec=parse_spec(s)) for s in (wide, sample_spec("/data/x"))]
    done = jobs.create_job(engine, spec=parse_spec(sample_spec("/data/x")))
    jobs.transition(engine, job_id=done.id, status=JobStatus.SUCCEEDED)
    jobs.set_status_reason(engine, job_id=made[1].id, reason="queued: position 1",
                           event_kind="queued")
    light = jobs.list_active_work(engine)
    assert light == [jobs.QueuedWork.of(j) for j in jobs.list_active_jobs(engine)]
    assert [w.id for w in light] == [j.id for j in made]
    assert light[0].resources["num_workers"] == 3 and light[1].status_reason == \
        "queued: position 1"
    assert [e.kind for e in jobs.list_events(engine, job_id=made[1].id)] == ["status", "queued"]
