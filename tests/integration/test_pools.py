"""Placement on a local multi-node cluster whose nodes carry the pool labels: checked from
Ray's own records (the job's driver node and the node of every task it ran)."""

from __future__ import annotations

import time

from ray.job_submission import JobSubmissionClient
from ray.util.state import list_nodes, list_tasks
from sqlmodel import Session

from railyard.cluster.pools import POOL_LABEL
from railyard.data.demo import sample_spec
from railyard.jobstore.tables import Job
from tests.polling import wait_for


def node_pools(address: str) -> dict[str, str]:
    return {n.node_id: (n.labels or {}).get(POOL_LABEL, "") for n in list_nodes(address=address)}


# Ray Data 2.60's own bookkeeping actors (stats, autoscaling) live on the head, and its
# planning work (the ListFiles task, the Parquet FooterReader actors, scheduled with SPREAD)
# does not take the read's label selector: metadata-only work a job cannot steer. The data
# itself is read by ReadFiles* tasks, and those, like the driver, must stay on the pool.
RAY_DATA_INTERNAL_ACTORS = ("_StatsActor.", "_AutoscalingCoordinatorActor.",
                            "FooterReader.", "ListFiles")


def ray_records(platform, submission_id: str) -> tuple[str, set[str]]:
    """(pool of the driver's node, pools of the nodes that ran the job's tasks)."""
    info = JobSubmissionClient(platform.ray_address).get_job_info(submission_id)
    pools = node_pools(platform.ray_address)
    tasks = list_tasks(address=platform.ray_address, filters=[("job_id", "=", info.job_id)],
                       limit=10_000, raise_on_missing_output=False)
    work = [t for t in tasks if t.node_id and not t.name.startswith(RAY_DATA_INTERNAL_ACTORS)]
    assert any(t.name.startswith("ReadFiles") for t in work) or not tasks
    return pools[info.driver_node_id], {pools[t.node_id] for t in work}


def test_jobs_run_on_the_pool_they_ask_for(platform, client):
    spec = sample_spec(platform.big_fraud_uri, source="s3")
    spec["train"]["resources"] = {"pool": "highmem"}
    spec["train"]["custom_params"]["n_estimators"] = 20
    highmem = client.wait(client.submit(spec)["id"], timeout=300)
    assert highmem["status"] == "SUCCEEDED", highmem["error"]
    assert highmem["pool"] == "highmem" and highmem["dataset"]["stats"]["read_engine"] == "ray.data"
    driver_pool, task_pools = ray_records(platform, highmem["ray_submission_id"])
    assert driver_pool == "highmem"
    assert task_pools == {"highmem"}, task_pools   # the Ray Data read tasks

    spec["train"]["resources"] = {"pool": "cpu"}
    cpu = client.wait(client.submit(spec)["id"], timeout=300)
    assert cpu["status"] == "SUCCEEDED", cpu["error"]
    driver_pool, task_pools = ray_records(platform, cpu["ray_submission_id"])
    assert driver_pool == "cpu" and task_pools == {"cpu"}


def test_automatic_choice_is_recorded(platform, client):
    job = client.submit(sample_spec(platform.fraud_uri, source="s3"))
    assert job["pool"] == "cpu" and "chosen from the workflow and data size" in \
        job["placement_reason"]
    assert client.wait(job["id"], timeout=300)["status"] == "SUCCEEDED"


def test_gpu_job_on_a_cpu_cluster_waits_then_fails_with_the_reason(platform, client):
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["train"]["resources"] = {"pool": "gpu"}
    spec["lifecycle"] = {"pending_timeout_s": 8}
    job = client.submit(spec)
    time.sleep(2)
    waiting = client.get(job["id"])
    assert waiting["status"] == "PENDING"
    assert waiting["status_reason"] == \
        "waiting for pool gpu: no alive node with label railyard.io/pool=gpu"
    # Nobody reads the job now: the API's background reconciler must fail it by itself.
    def stored() -> Job:
        with Session(platform.engine) as session:
            return session.get(Job, job["id"])

    row = wait_for(lambda: (r := stored()).status == "FAILED" and r, 40,
                   "the background reconciler to fail the job", interval=1)
    assert row.status == "FAILED" and row.error_phase == "pending"
    assert "no alive node with label railyard.io/pool=gpu" in row.error
    assert "pending timeout of 8s" in row.error
    ray_jobs = JobSubmissionClient(platform.ray_address)
    wait_for(lambda: ray_jobs.get_job_status(job["ray_submission_id"]).is_terminal(), 60,
             "Ray to end the timed-out job (it still has it pending)", interval=1)


def test_sweep_trials_run_on_the_jobs_pool(platform, client):
    from ray.util.state import list_actors

    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["model_name"] = "sweep-on-highmem"
    spec["train"]["resources"] = {"pool": "highmem"}
    spec["train"]["custom_params"]["n_estimators"] = 20
    # Ray Tune's trials are actors placed on the pool (a small sweep would run in the driver).
    spec["train"]["tune"] = {"search_space": {"max_depth": {"randint": [2, 6]}},
                             "num_samples": 3, "cpus_per_trial": 1, "engine": "ray_tune"}
    job = client.wait(client.submit(spec)["id"], timeout=300)
    assert job["status"] == "SUCCEEDED", job["error"]
    info = JobSubmissionClient(platform.ray_address).get_job_info(job["ray_submission_id"])
    pools = node_pools(platform.ray_address)
    actors = list_actors(address=platform.ray_address, filters=[("job_id", "=", info.job_id)],
                         limit=1000, raise_on_missing_output=False)
    trials = [a for a in actors if "_trainable" in a.class_name or "ImplicitFunc" in
              a.class_name]
    assert trials, [a.class_name for a in actors]
    assert {pools[a.node_id] for a in trials} == {"highmem"}
