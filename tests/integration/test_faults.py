"""Faults with real processes on the real platform: killed drivers (retried and resumed), a
Postgres restart under a running job, the Serve app killed mid-run, cancel in every phase.

Jobs use the NoOp workflow (workflows/noop.py), which waits a given number of seconds in a
phase, so a test can act while the job is known to be in that phase.
"""

from __future__ import annotations

import time

import httpx
import psutil
import pytest
from ray.dashboard.modules.serve.sdk import ServeSubmissionClient
from ray.job_submission import JobStatus as RayJobStatus
from ray.job_submission import JobSubmissionClient

from railyard.control.leader import ReconcilerLease
from railyard.data.demo import sample_spec
from railyard.errors import RailyardError
from railyard.jobstore import jobs
from tests.integration.support import OUTAGE_ERRORS, noop_spec, runner_processes
from tests.polling import wait_for

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def in_phase(client, job_id: str, phase: str):
    job = client.get(job_id)
    assert job["status"] not in TERMINAL, job
    return job if job["status"] == "RUNNING" and job["phase"] == phase else None


def kill_driver(job_id: str) -> float:
    procs = wait_for(lambda: runner_processes(job_id), 30, "the driver process",
                     interval=0.5, ignore=OUTAGE_ERRORS)
    for proc in procs:
        proc.kill()
    return time.monotonic()


def ray_work_left(platform, submission_id: str) -> list[str]:
    """Live actors and running tasks of a Ray job (its driver's job id)."""
    from ray.util.state import list_actors, list_tasks

    info = JobSubmissionClient(platform.ray_address).get_job_info(submission_id)
    if not info.job_id:
        return []
    actors = list_actors(address=platform.ray_address, raise_on_missing_output=False,
                         filters=[("job_id", "=", info.job_id), ("state", "=", "ALIVE")])
    tasks = list_tasks(address=platform.ray_address, raise_on_missing_output=False,
                       filters=[("job_id", "=", info.job_id), ("state", "=", "RUNNING")])
    return [f"actor {a.class_name}" for a in actors] + [f"task {t.name}" for t in tasks]


def test_a_killed_driver_is_retried_as_attempt_2(platform, client):
    spec = noop_spec(platform, "retry-after-kill", train_s=4)
    spec["lifecycle"] = {"max_retries": 1}
    job = client.submit(spec)
    wait_for(lambda: in_phase(client, job["id"], "train"), 120, "the train phase",
             interval=0.5, ignore=OUTAGE_ERRORS)
    killed_at = kill_driver(job["id"])
    retried = wait_for(lambda: (j := client.get(job["id"]))["attempt"] == 2
                       and j["status"] == "RUNNING" and j, 60, "attempt 2 to run",
                       interval=0.5, ignore=OUTAGE_ERRORS)
    print(f"\nkill -> attempt 2 RUNNING: {time.monotonic() - killed_at:.1f}s")
    assert time.monotonic() - killed_at < 60
    assert retried["ray_submission_id"] == f"railyard-{job['id']}-attempt-2"
    final = client.wait(job["id"], timeout=120)
    assert final["status"] == "SUCCEEDED" and final["attempt"] == 2
    attempts = client.attempts(job["id"])
    assert [(a["attempt"], a["status"], a["failure_kind"], a["error_phase"])
            for a in attempts] == [(1, "FAILED", "infrastructure", "train"),
                                   (2, "SUCCEEDED", None, None)]
    assert "driver ended" in attempts[0]["error"]
    assert [p["name"] for p in final["phases"]] == ["fetch", "split", "train", "evaluate",
                                                      "publish"]


def test_a_retried_training_resumes_from_its_last_checkpoint(platform, client):
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["model_name"] = "resumed-from-checkpoint"
    spec["lifecycle"] = {"max_retries": 1, "checkpoint_interval_s": 1}
    spec["train"]["custom_params"] = {"n_estimators": 4000, "max_depth": 8,
                                      "learning_rate": 0.01, "nthread": 1}
    job = client.submit(spec)
    checkpoint = f"{platform.settings.resolved_artifact_root}/{job['id']}/checkpoints"

    def saved_a_checkpoint() -> bool:
        import pyarrow.fs as pafs

        fs, path = pafs.FileSystem.from_uri(checkpoint + "/latest.json")
        return fs.get_file_info(path).type == pafs.FileType.File

    wait_for(lambda: in_phase(client, job["id"], "train") and saved_a_checkpoint(), 180,
             "a checkpoint of the training", interval=0.5, ignore=OUTAGE_ERRORS)
    time.sleep(1.5)
    kill_driver(job["id"])
    final = client.wait(job["id"], timeout=600)
    assert final["status"] == "SUCCEEDED" and final["attempt"] == 2, final["error"]
    resumed = [e["message"] for e in client.events(job["id"])
               if "resumed from checkpoint" in (e["message"] or "")]
    assert resumed, "attempt 2 did not resume from a checkpoint"
    round_, total = (int(x) for x in resumed[0].split("round ")[1].split(" of "))
    print(f"\n{resumed[0]}")
    assert 0 < round_ < total == 4000
    log = client.logs(job["id"])
    assert "resumed from checkpoint" in log


def test_a_killed_sweep_resumes_from_its_tune_state(platform, client):
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["model_name"] = "resumed-sweep"
    spec["lifecycle"] = {"max_retries": 1}
    spec["train"]["custom_params"] = {"n_estimators": 1500, "max_depth": 3, "nthread": 1}
    spec["train"]["tune"] = {"search_space": {"learning_rate": {"loguniform": [0.01, 0.3]}},
                             "num_samples": 8, "max_concurrent_trials": 1,
                             "cpus_per_trial": 1, "engine": "ray_tune"}
    job = client.submit(spec)
    # Tune saves its state every 2 s: 2.5 s after 2 trials ended, both are in it.
    wait_for(lambda: len(client.trials(job["id"])) >= 2, 240, "two finished trials",
             interval=0.5, ignore=OUTAGE_ERRORS)
    time.sleep(2.5)
    done_before_kill = len(client.trials(job["id"]))
    assert done_before_kill < 8, "the sweep ended before the test could kill it"
    kill_driver(job["id"])
    final = client.wait(job["id"], timeout=400)
    assert final["status"] == "SUCCEEDED" and final["attempt"] == 2, final["error"]
    tune = final["metrics"]["tune"]
    assert tune["resumed_trials"] >= 2, tune
    print(f"\n{done_before_kill} trials recorded before the kill, "
          f"{tune['resumed_trials']} kept by the restored sweep")
    trials = client.trials(job["id"])
    assert len(trials) == 8 and sum(tune["trials"].values()) == 8
    assert [a["status"] for a in client.attempts(job["id"])] == ["FAILED", "SUCCEEDED"]


def test_a_killed_driver_sweep_keeps_its_recorded_trials(platform, client):
    spec = sample_spec(platform.fraud_uri, source="s3")
    spec["model_name"] = "resumed-driver-sweep"
    spec["lifecycle"] = {"max_retries": 1}
    spec["train"]["custom_params"] = {"n_estimators": 1500, "max_depth": 3}
    spec["train"]["tune"] = {"search_space": {"learning_rate": {"loguniform": [0.01, 0.3]}},
                             "num_samples": 6, "max_concurrent_trials": 1,
                             "cpus_per_trial": 1, "engine": "driver"}
    job = client.submit(spec)
    wait_for(lambda: len(client.trials(job["id"])) >= 2, 240, "two finished trials",
             interval=0.5, ignore=OUTAGE_ERRORS)
    recorded = {t["trial_id"]: t for t in client.trials(job["id"])}
    assert len(recorded) < 6, "the sweep ended before the test could kill it"
    kill_driver(job["id"])
    final = client.wait(job["id"], timeout=400)
    assert final["status"] == "SUCCEEDED" and final["attempt"] == 2, final["error"]
    tune = final["metrics"]["tune"]
    assert tune["engine"] == "driver" and tune["resumed_trials"] >= len(recorded), tune
    trials = {t["trial_id"]: t for t in client.trials(job["id"])}
    assert sorted(trials) == [f"trial_{i:05d}" for i in range(6)]
    # The trials recorded before the kill were kept as they were, not run again.
    for trial_id, before in recorded.items():
        assert trials[trial_id] == before
    assert [a["status"] for a in client.attempts(job["id"])] == ["FAILED", "SUCCEEDED"]


def test_postgres_restart_under_a_running_job(platform, client, postgres):
    job = client.submit(noop_spec(platform, "through-db-restart", train_s=12))
    wait_for(lambda: in_phase(client, job["id"], "train"), 120, "the train phase",
             interval=0.5, ignore=OUTAGE_ERRORS)
    postgres.stop()
    try:
        with pytest.raises(RailyardError) as outage:
            client.get(job["id"])
        assert outage.value.status_code == 503
        time.sleep(6)
    finally:
        postgres.start()
    final = wait_for(lambda: (j := client.get(job["id"]))["status"] in TERMINAL and j, 180,
                     "the job to finish after the restart", interval=0.5, ignore=OUTAGE_ERRORS)
    assert final["status"] == "SUCCEEDED", final["error"]
    assert final["attempt"] == 1 and final["metrics"]["holdout"]["holdout_rows"] > 0
    assert final["artifacts"]["model"].startswith("s3://")
    assert [p["name"] for p in final["phases"]][-1] == "publish"


def serve_replicas() -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"])
            if any("ServeReplica:" in part for part in (p.info["cmdline"] or []))]


def test_serve_app_killed_mid_run(platform, client):
    finishing = client.submit(noop_spec(platform, "finishes-while-api-down", train_s=3))
    dying = client.submit(noop_spec(platform, "driver-dies-while-api-down", train_s=60))
    wait_for(lambda: in_phase(client, dying["id"], "train"), 120, "the train phase",
             interval=0.5, ignore=OUTAGE_ERRORS)
    replicas = serve_replicas()
    assert replicas, "no Serve replica process found"
    for proc in replicas:
        proc.kill()
    kill_driver(dying["id"])
    # Serve's controller restarts the replica; meanwhile the first job ends on its own.
    wait_for(lambda: jobs.get_job(platform.engine, job_id=finishing["id"]).status in TERMINAL,
             120, "the first job to finish", interval=0.5, ignore=OUTAGE_ERRORS)
    back = wait_for(lambda: httpx.get(f"{platform.api_url}/healthz", timeout=5).status_code
                    == 200 and time.monotonic(), 180, "the API to come back",
                    interval=0.5, ignore=OUTAGE_ERRORS)
    assert client.get(finishing["id"])["status"] == "SUCCEEDED"
    # One proxy, the head's, wherever the replica restarted: a second proxy on this host would
    # share the API's port and drop connections while it drains away.
    details = ServeSubmissionClient(platform.ray_address).get_serve_details()
    assert details["proxy_location"] == "HeadOnly"
    assert len(details["proxies"]) == 1, details["proxies"]
    failed = wait_for(lambda: (j := client.get(dying["id"]))["status"] == "FAILED" and j, 30,
                      "the dead driver's job to be FAILED", interval=0.5, ignore=OUTAGE_ERRORS)
    print(f"\nAPI back -> dead driver's job FAILED: {time.monotonic() - back:.1f}s")
    assert failed["error_phase"] == "train" and "driver ended" in failed["error"]


@pytest.mark.parametrize("phase", ["pending", "fetch", "train", "evaluate", "publish"])
def test_cancel_in_each_phase_leaves_no_ray_work(platform, client, phase):
    if phase == "pending":
        spec = noop_spec(platform, "cancel-pending")
        spec["train"]["resources"] = {"pool": "gpu"}
        job = client.submit(spec)
        wait_for(lambda: client.get(job["id"])["status"] == "PENDING", 60, "PENDING",
                 interval=0.5, ignore=OUTAGE_ERRORS)
    else:
        job = client.submit(noop_spec(platform, f"cancel-in-{phase}", **{f"{phase}_s": 60}))
        wait_for(lambda: in_phase(client, job["id"], phase), 120, f"the {phase} phase",
                 interval=0.5, ignore=OUTAGE_ERRORS)
    cancelled = client.cancel(job["id"])
    assert cancelled["status"] == "CANCELLED"
    ray = JobSubmissionClient(platform.ray_address)
    sid = cancelled["ray_submission_id"]
    # A job that never got a node has no supervisor to stop it: Railyard kills that actor,
    # and Ray records the job as FAILED rather than STOPPED.
    ended = (RayJobStatus.STOPPED,) if phase != "pending" else (RayJobStatus.STOPPED,
                                                                 RayJobStatus.FAILED)
    wait_for(lambda: ray.get_job_status(sid) in ended, 60, "Ray to stop the job",
             interval=0.5, ignore=OUTAGE_ERRORS)
    wait_for(lambda: not runner_processes(job["id"]), 60, "the driver process to exit",
             interval=0.5, ignore=OUTAGE_ERRORS)
    wait_for(lambda: not ray_work_left(platform, sid), 60, "the job's actors and tasks to end",
             interval=0.5, ignore=OUTAGE_ERRORS)
    final = client.get(job["id"])
    assert final["status"] == "CANCELLED"
    assert [a["status"] for a in client.attempts(job["id"])] in (["CANCELLED"], [])


def _try_lease(engine) -> bool:
    lease = ReconcilerLease(engine)
    try:
        return lease.held()
    finally:
        lease.release()


def test_one_reconciler_leader_at_a_time(platform, postgres):
    from railyard.jobstore.engine import get_engine
    from tests.fakes import fresh_database

    # The platform's API replica holds the lock of its database...
    wait_for(lambda: httpx.get(f"{platform.api_url}/healthz", timeout=5).status_code == 200,
             120, "the API", interval=0.5, ignore=OUTAGE_ERRORS)
    wait_for(lambda: not _try_lease(platform.engine), 30, "the replica to lead",
             interval=0.5, ignore=OUTAGE_ERRORS)
    # ...and on a database of their own, two contenders take turns.
    engine = get_engine(fresh_database(postgres, "railyard_leader"))
    first, second = ReconcilerLease(engine), ReconcilerLease(engine)
    try:
        assert first.held() and first.held()
        assert not second.held()
        first.release()
        assert second.held()
        assert not first.held()
    finally:
        first.release()
        second.release()


def test_logs_stream_while_running_and_outlive_the_cluster(platform, client, tmp_path):
    import os
    import subprocess
    import sys

    from railyard.control.backend import RayJobsBackend
    from railyard.control.service import JobService

    job = client.submit(noop_spec(platform, "streamed-log", train_s=8))
    wait_for(lambda: in_phase(client, job["id"], "train"), 120, "the train phase",
             interval=0.5, ignore=OUTAGE_ERRORS)
    headers = {"Authorization": f"Bearer {platform.token}"}

    def streamed():
        r = httpx.get(f"{platform.api_url}/v1/jobs/{job['id']}/logs", headers=headers)
        return r.headers["X-Log-Source"] == "durable" and "phase train started" in r.text and r

    live = wait_for(streamed, 30, "the streamed log to show the train phase",
                    interval=0.5, ignore=OUTAGE_ERRORS)
    size = int(live.headers["X-Log-Size"])
    # `railyard logs -f` follows it to the end, then exits.
    env = {**os.environ, "RAILYARD_API_URL": platform.api_url, "RAILYARD_TOKEN": platform.token}
    exe = os.path.join(os.path.dirname(sys.executable), "railyard")
    follow = subprocess.run([exe, "logs", "-f", job["id"], "--poll-s", "0.5"],
                            capture_output=True, text=True, env=env, timeout=180)
    assert follow.returncode == 0, follow.stderr
    assert "phase train started" in follow.stdout and "phase publish finished" in follow.stdout
    assert client.get(job["id"])["status"] == "SUCCEEDED"
    rest = httpx.get(f"{platform.api_url}/v1/jobs/{job['id']}/logs", headers=headers,
                     params={"offset": size})
    assert "phase publish finished" in rest.text and "phase train started" not in rest.text

    # A server whose Ray cluster is gone still serves the whole log from the artifact store.
    no_ray = JobService(engine=platform.engine, backend=RayJobsBackend("http://127.0.0.1:9"),
                        settings=platform.settings)
    text = no_ray.logs(job["id"])
    assert "phase fetch started" in text and "phase publish finished" in text
