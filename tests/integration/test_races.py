"""Races between the job's driver, the background reconciler and request-path reconciling,
on the real Postgres: two callers that see the same failed attempt never undo each other."""

from __future__ import annotations

import threading

from railyard.data.demo import sample_spec
from railyard.jobstore import jobs
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.retries import classify, end_failed_attempt
from railyard.jobstore.tables import FailureKind, JobStatus
from railyard.spec import TrainingSpec
from tests.fakes import fresh_database


def _running_job(engine, max_retries: int):
    spec = sample_spec("/tmp/unused.parquet")
    spec["lifecycle"] = {"max_retries": max_retries}
    job = jobs.create_job(engine, spec=TrainingSpec.model_validate(spec),
                          status=JobStatus.RUNNING, ray_submission_id="railyard-x-1")
    jobs.start_attempt(engine, job_id=job.id, attempt=1, ray_submission_id="railyard-x-1")
    return jobs.get_job(engine, job_id=job.id)


def _fail(engine, snapshot) -> bool:
    return end_failed_attempt(engine, job=snapshot, kind=FailureKind.INFRASTRUCTURE,
                              error="the Ray driver ended (FAILED)", phase="train",
                              server_max_retries=5)


def test_a_second_reconcile_of_one_failed_attempt_does_not_fail_the_requeued_job(postgres):
    engine = get_engine(fresh_database(postgres, "railyard_races"))
    migrate(str(engine.url.render_as_string(hide_password=False)))
    snapshot = _running_job(engine, max_retries=1)

    assert _fail(engine, snapshot) is True           # the first queues attempt 2
    assert _fail(engine, snapshot) is False          # the second, from the same snapshot
    job = jobs.get_job(engine, job_id=snapshot.id)
    assert (job.status, job.attempt) == (JobStatus.QUEUED.value, 2)
    assert [(a.attempt, a.status) for a in jobs.list_attempts(engine, job_id=job.id)] \
        == [(1, "FAILED")]


def test_of_concurrent_reconcilers_exactly_one_decides(postgres):
    engine = get_engine(fresh_database(postgres, "railyard_races_threads"))
    migrate(str(engine.url.render_as_string(hide_password=False)))
    for max_retries in (0, 1):
        for _ in range(10):
            snapshot = _running_job(engine, max_retries=max_retries)
            start = threading.Barrier(4)
            decided: list[bool] = []

            def reconcile(snapshot=snapshot, start=start, decided=decided) -> None:
                start.wait()
                decided.append(_fail(engine, snapshot))

            threads = [threading.Thread(target=reconcile) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            job = jobs.get_job(engine, job_id=snapshot.id)
            if max_retries:
                assert decided.count(True) == 1, decided
                assert (job.status, job.attempt) == (JobStatus.QUEUED.value, 2)
            else:
                assert decided == [False] * 4
                assert (job.status, job.attempt) == (JobStatus.FAILED.value, 1)
            events = [e.kind for e in jobs.list_events(engine, job_id=job.id)]
            assert events.count("retry") == max_retries


def test_an_unreachable_object_store_is_an_infrastructure_failure(s3):
    """pyarrow's S3 filesystem against a real endpoint that stops answering: the OSError it
    raises is the platform's failure (retried within max_retries), not the user's."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from tests.servers import free_port

    dead = pafs.S3FileSystem(endpoint_override=f"http://127.0.0.1:{free_port()}",
                             access_key="k", secret_key="s", region="us-east-1",
                             connect_timeout=1, request_timeout=1, retry_strategy=
                             pafs.AwsStandardS3RetryStrategy(max_attempts=1))
    try:
        pq.read_table("railyard-data/fraud/part-0.parquet", filesystem=dead)
    except OSError as error:
        assert classify(error) is FailureKind.INFRASTRUCTURE, error
    else:
        raise AssertionError("a read from a closed port succeeded")
    # A missing object on a live store is still the user's (a wrong path).
    live = pafs.S3FileSystem(endpoint_override=s3.endpoint, access_key="testing",
                             secret_key="x", region="us-east-1")
    try:
        pq.read_table("no-such-bucket/none.parquet", filesystem=live)
    except OSError as error:
        assert classify(error) is FailureKind.USER_CODE, error
