"""Packs on the real cluster (RAILYARD_PACK_MAX_JOBS; the grouping itself is unit-tested in
tests/unit/control/test_packing.py): three jobs submitted to Ray as ONE Ray job run on the
cpu pool's warm runner, each recording its own result; cancelling one through the API leaves
the others running and its driver stops itself; the last one's cancel stops the Ray job."""

from __future__ import annotations

from ray.job_submission import JobSubmissionClient

from railyard.cluster import local_cluster
from railyard.cluster.pools import job_placement
from railyard.control.backend import RayJobsBackend
from railyard.execution.warm_runner import process_name
from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus, utcnow
from railyard.spec import parse_spec
from tests.integration.support import noop_spec, runner_processes
from tests.polling import wait_for


def forked_drivers(job_id: str) -> list:
    """The job's driver forked by the node's warm runner (the pack's entrypoint, one process
    for all its jobs, names every job on its command line)."""
    return [p for p in runner_processes(job_id) if p.info["name"] == process_name(job_id)]


def test_a_pack_runs_its_jobs_in_one_ray_job_and_a_job_is_cancelled_alone(platform, client):
    local_cluster.use_ray_token(platform.settings)
    engine = platform.engine
    specs = [noop_spec(platform, "pack-long-1", train_s=90),
             noop_spec(platform, "pack-long-2", train_s=90), noop_spec(platform, "pack-short")]
    ids = [jobs.create_job(engine, spec=parse_spec(spec), status=JobStatus.QUEUED).id
           for spec in specs]
    members = [(job_id, 1) for job_id in ids]
    pack_id = jobs.pack_submission_id(members)
    # What JobService._submit_packs does for a release of three jobs to the cpu pool.
    for job_id in ids:
        jobs.transition(engine, job_id=job_id, status=JobStatus.PENDING,
                        allowed_from=frozenset({JobStatus.QUEUED}), ray_submission_id=pack_id,
                        submitted_at=utcnow(), pool="cpu", pool_enforced=True)
    backend = RayJobsBackend(platform.ray_address)
    assert backend.submit_pack(members, env_vars=platform.settings.runtime_env_vars(),
                               placement=job_placement("cpu")) == pack_id
    first, second, short = ids

    done = client.wait(short, timeout=180)
    assert done["status"] == "SUCCEEDED", done["error"]
    assert done["ray_submission_id"] == pack_id
    wait_for(lambda: all(client.get(job_id)["phase"] == "train" for job_id in (first, second)),
             120, "the long jobs to train")
    ray = JobSubmissionClient(platform.ray_address)
    info = ray.get_job_info(pack_id)
    assert str(info.status.value) == "RUNNING"             # one Ray job for the three
    assert info.metadata["railyard_pack"] == ",".join(f"{j}:1" for j in ids)
    assert len(forked_drivers(first)) == 1

    # Cancelled while another job of the pack runs: Ray's job is left alone and the job's
    # own driver exits (within ~1 s, not after its 90 s).
    assert client.cancel(first)["status"] == "CANCELLED"
    wait_for(lambda: not forked_drivers(first), 30, "the cancelled job's driver to exit")
    assert "is no longer this driver's to run" in ray.get_job_logs(pack_id)
    assert str(ray.get_job_info(pack_id).status.value) == "RUNNING"
    assert client.get(second)["status"] == "RUNNING"

    # The last live job's cancel stops the pack's Ray job.
    assert client.cancel(second)["status"] == "CANCELLED"
    wait_for(lambda: str(ray.get_job_info(pack_id).status.value) == "STOPPED", 45,
             "the pack's Ray job to stop")
    log = ray.get_job_logs(pack_id)
    for job_id in ids:
        assert f"job {job_id} attempt 1 running in a warm driver" in log
    assert [client.get(job_id)["status"] for job_id in ids] == ["CANCELLED", "CANCELLED",
                                                               "SUCCEEDED"]
