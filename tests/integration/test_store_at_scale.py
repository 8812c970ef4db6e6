"""The job store with many jobs on the real Postgres (no Ray needed): the list's own SQL walks
migration 0006's composite indexes (no sort, first page or deep), a page's events come in one
query, and retention deletes old finished jobs with their events and attempts in batches, never
an active one."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from sqlalchemy import event, text

from railyard.jobstore import jobs
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.tables import JobStatus, utcnow
from tests.fakes import fresh_database

# 20,000 jobs: 10 owners, 20 projects, mostly finished, created a minute apart (the newest
# now); finished 5 minutes after creation. Every job has a status event and an attempt. They
# are written in a shuffled order: in a live store every job's row is rewritten several times
# (PENDING, RUNNING, phases, the result), so the heap is not in created_at order, and a table
# filled in that order would let the planner walk ix_job_created_at alone and sort a little.
FILL = """
INSERT INTO job (id, status, owner, project, trainer, model_name, model_description,
                 workflow_name, spec, spec_hash, origin, created_at, finished_at, dataset_stats,
                 metrics, artifacts, pool_enforced, attempt, priority)
SELECT 'job-' || lpad(to_hex(g), 20, '0'), status, 'team-' || mod(g, 10),
       'project-' || mod(g / 10, 20), 'trainer', 'model', '', 'StripeFraudModel',
       '{"owner": "x", "data": {"path": "s3://b/p"}}', md5(g::text), 'api', created,
       CASE WHEN status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
            THEN created + interval '5 minutes' END, '{}', '{}', '{}', false, 1, 50
FROM (SELECT g, now() - (%(jobs)s - g) * interval '1 minute' AS created,
             CASE mod(abs(hashtext(g::text)), 20) WHEN 0 THEN 'RUNNING' WHEN 1 THEN 'QUEUED'
                  WHEN 2 THEN 'PENDING' WHEN 3 THEN 'FAILED' WHEN 4 THEN 'CANCELLED'
                  ELSE 'SUCCEEDED' END AS status
      FROM generate_series(1, %(jobs)s) AS g) AS x
ORDER BY md5(g::text)
"""
JOBS = 20_000


@pytest.fixture(scope="module")
def filled(postgres):
    url = fresh_database(postgres, "railyard_at_scale")
    migrate(url)
    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(FILL, {"jobs": JOBS})
        conn.execute("INSERT INTO job_event (job_id, at, kind, message) "
                     "SELECT id, created_at, 'status', 'QUEUED' FROM job")
        conn.execute("INSERT INTO job_attempt (job_id, attempt, status, started_at) "
                     "SELECT id, 1, status, created_at FROM job WHERE status <> 'QUEUED'")
        conn.execute("ANALYZE job")
        conn.execute("ANALYZE job_event")
        conn.execute("ANALYZE job_attempt")
    return get_engine(url)


def _plan_of_list(engine, **filters) -> str:
    """EXPLAIN of the SQL that ``jobs.list_jobs(**filters)`` sends, with its parameters."""
    sent: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM job" in statement and "job_event" not in statement:
            sent.append((statement, parameters))
    event.listen(engine, "before_cursor_execute", record)
    try:
        jobs.list_jobs(engine, **filters)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    (statement, parameters), = sent
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize("filters,index", [
    ({"owner": "team-3"}, "ix_job_owner_created_id"),
    ({}, "ix_job_created_id"),
    ({"project": "project-7"}, "ix_job_project_created_id"),
    ({"status": JobStatus.FAILED}, "ix_job_status_created_id"),
    ({"owner": "team-3", "status": JobStatus.FAILED}, "ix_job_owner_status_created_id"),
    ({"owner": "team-3", "project": "project-7"}, "ix_job_owner_project_created_id"),
    ({"project": "project-7", "status": JobStatus.SUCCEEDED}, "ix_job_project_status_created_id"),
])
def test_every_list_filter_walks_its_composite_index_on_every_page(filled, filters, index):
    first = _plan_of_list(filled, limit=50, **filters)
    assert f"Index Scan Backward using {index} on job" in first, first
    assert "Sort" not in first, first
    cursor = None
    for _ in range(10):                        # a deep page: up to the 11th, or the last one
        _, following = jobs.list_jobs(filled, limit=20, cursor=cursor, **filters)
        if following is None:
            break
        cursor = following
    assert cursor is not None
    deep = _plan_of_list(filled, limit=20, cursor=cursor, **filters)
    # the cursor is part of the index condition (a plain or, for the last few rows of a small
    # filter, a bitmap scan of the same index): no row before the cursor is read
    assert f"Index Scan Backward using {index} on job" in deep \
        or f"Bitmap Index Scan on {index}" in deep, deep
    assert "Index Cond" in deep and "ROW(created_at" in deep.split("Index Cond", 1)[1], deep


def test_keyset_pages_on_postgres_cover_an_owner_exactly_once(filled):
    seen, cursor = [], None
    while True:
        page, cursor = jobs.list_jobs(filled, owner="team-3", limit=200, cursor=cursor)
        seen += [(jobs.as_utc(j.created_at), j.id) for j in page]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)) == JOBS // 10
    assert seen == sorted(seen, reverse=True)


def test_a_pages_events_come_in_one_query(filled):
    page, _ = jobs.list_jobs(filled, owner="team-4", limit=50)
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)
    event.listen(filled, "before_cursor_execute", record)
    try:
        found = jobs.list_events_for(filled, job_ids=[j.id for j in page])
    finally:
        event.remove(filled, "before_cursor_execute", record)
    assert len(statements) == 1
    assert sorted(found) == sorted(j.id for j in page)
    assert all([e.kind for e in events] == ["status"] for events in found.values())


def _count(engine, sql: str) -> int:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar_one()


def test_prune_on_postgres_keeps_active_and_recent_jobs(filled):
    cutoff = utcnow() - timedelta(days=7)       # 10,080 minutes: about half the jobs are older
    old_finished = _count(filled, "SELECT count(*) FROM job WHERE finished_at < "
                                  f"'{cutoff.isoformat()}' AND status IN "
                                  "('SUCCEEDED', 'FAILED', 'CANCELLED')")
    active_before = _count(filled, "SELECT count(*) FROM job WHERE status IN "
                                   "('QUEUED', 'PENDING', 'RUNNING')")
    total_before = _count(filled, "SELECT count(*) FROM job")
    assert old_finished > 5000

    assert jobs.prune_jobs(filled, finished_before=cutoff, dry_run=True) == old_finished
    assert _count(filled, "SELECT count(*) FROM job") == total_before
    failed = jobs.prune_jobs(filled, finished_before=cutoff, statuses=[JobStatus.FAILED],
                             batch_size=300)
    assert 0 < failed < old_finished
    rest = jobs.prune_jobs(filled, finished_before=cutoff, batch_size=700)
    assert failed + rest == old_finished

    assert _count(filled, "SELECT count(*) FROM job") == total_before - old_finished
    assert _count(filled, "SELECT count(*) FROM job WHERE status IN "
                          "('QUEUED', 'PENDING', 'RUNNING')") == active_before
    assert _count(filled, "SELECT count(*) FROM job WHERE finished_at < "
                          f"'{cutoff.isoformat()}'") == 0
    for table in ("job_event", "job_attempt"):
        orphans = _count(filled, f"SELECT count(*) FROM {table} AS t "
                                 "LEFT JOIN job ON job.id = t.job_id WHERE job.id IS NULL")
        assert orphans == 0
    assert _count(filled, "SELECT count(*) FROM job_event") == total_before - old_finished
    assert jobs.prune_jobs(filled, finished_before=cutoff) == 0


def test_the_queue_reads_light_rows_equal_to_the_whole_jobs(filled, postgres):
    """The queue's rows (columns and the spec's train.resources by JSON path in Postgres) are
    what the whole rows give, for the ~3,000 active jobs of the filled store and for jobs with
    and without resources in their spec."""
    from railyard.data.demo import sample_spec
    from railyard.spec import parse_spec

    wide = sample_spec("s3://b/p", source="s3")
    wide["train"]["resources"] = {"pool": "highmem", "num_workers": 3, "cpus_per_worker": 2}
    url = fresh_database(postgres, "railyard_queue_rows")
    migrate(url)
    engine = get_engine(url)
    for spec in (wide, sample_spec("s3://b/p", source="s3")):
        jobs.create_job(engine, spec=parse_spec(spec))
    for store in (engine, filled):
        light = jobs.list_active_work(store)
        assert light == [jobs.QueuedWork.of(j) for j in jobs.list_active_jobs(store)]
    assert light and len(light) > 2_000
    resources = [w.resources for w in jobs.list_active_work(engine)]
    assert resources[0]["num_workers"] == 3 and resources[0]["pool"] == "highmem"
