"""Durable job logs: the LogShipper streams the driver's output to the artifact store (a local
directory here; the S3-compatible server in tests/integration/test_artifacts_s3.py), the API
serves it by offset and attempt, and `railyard logs -f` follows it until the job ends."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading

import pytest

from railyard.artifacts.artifact_store import ArtifactStore
from railyard.artifacts.job_logs import LogShipper, log_to_stdout, log_uri, read_from
from railyard.control.backend import BackendStatus
from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus
from tests.artifact_cases import ship_and_watch
from tests.fakes import build_env
from tests.polling import wait_for
from tests.servers import free_port


def test_shipper_streams_to_a_local_store_while_running(tmp_path, capsys):
    ship_and_watch(ArtifactStore(str(tmp_path / "artifacts")), tmp_path, capsys)


def test_log_records_go_through_stdout_into_the_file_once(tmp_path, capsys):
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    level = logging.getLogger().level
    handler = log_to_stdout()
    try:
        assert log_to_stdout() is handler                       # idempotent
        logging.getLogger("railyard.execution.driver").info("before the shipper")
        with LogShipper(artifacts, "job-2", 1, tmp_path / "job.log", interval_s=60) as shipper:
            logging.getLogger("railyard.execution.driver").info("phase fetch started")
            print("a print")
            assert shipper.flush() == log_uri(artifacts, "job-2", 1)
        logging.getLogger("railyard.execution.driver").info("after the shipper")
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(level)
    text = artifacts.get_bytes(shipper.uri).decode()
    assert text.count("phase fetch started") == 1 and "INFO railyard.execution.driver:" in text
    assert text.endswith("a print\n") and "before" not in text and "after" not in text
    out = capsys.readouterr().out
    assert all(f"{w}" in out for w in ("before the", "phase fetch started", "after the"))


def test_upload_failure_is_logged_never_raised(tmp_path, caplog):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the artifact root should be")
    artifacts = ArtifactStore(str(blocker / "artifacts"))
    with caplog.at_level(logging.WARNING, logger="railyard.artifacts.job_logs"):
        with LogShipper(artifacts, "job-3", 1, tmp_path / "job.log", interval_s=0.1) as shipper:
            print("still running")
            wait_for(lambda: "could not upload the job log" in caplog.text, 20,
                     "the shipper's thread to try an upload", interval=0.05)
            assert shipper.flush() is None
    assert shipper.uploaded_uri is None
    assert "could not upload the job log" in caplog.text
    assert (tmp_path / "job.log").read_text() == "still running\n"


def test_a_long_log_uploads_its_tail_and_keeps_offsets(tmp_path):
    artifacts = ArtifactStore(str(tmp_path / "artifacts"))
    with LogShipper(artifacts, "job-4", 1, tmp_path / "job.log", interval_s=60,
                    max_bytes=100) as shipper:
        for i in range(20):
            print(f"line {i:02d}")       # 8 bytes each: 160 in all
    data = artifacts.get_bytes(shipper.uri)
    assert data.startswith(b"[railyard: log truncated, the first 64 bytes were dropped]\n")
    assert data.endswith(b"line 19\n") and b"line 07" not in data
    whole = read_from(data, 0)
    assert whole.size == 160 and "line 08" in whole
    assert read_from(data, 152) == "line 19\n" and read_from(data, 160) == ""
    assert read_from(b"abc\n", 2) == "c\n" and read_from(b"abc\n", 99) == ""


# ---------------------------------------------------------------------------- the API


@pytest.fixture()
def api(tmp_path):
    client, service, backend, spec = build_env(tmp_path)
    job = client.post("/v1/jobs", json=spec).json()
    jobs.transition(service.engine, job_id=job["id"], status=JobStatus.RUNNING)
    backend.statuses[job["ray_submission_id"]] = BackendStatus("RUNNING")
    artifacts = ArtifactStore(service.settings.resolved_artifact_root)
    return client, service, job, artifacts


def test_api_serves_the_streamed_log_by_offset(api):
    client, service, job, artifacts = api
    artifacts.put_bytes(b"one\ntwo\n", job["id"], "logs", "attempt-1.log")
    r = client.get(f"/v1/jobs/{job['id']}/logs")
    assert r.text == "one\ntwo\n" and r.headers["X-Log-Size"] == "8"
    assert r.headers["X-Job-Status"] == "RUNNING" and r.headers["X-Log-Source"] == "durable"
    r = client.get(f"/v1/jobs/{job['id']}/logs", params={"offset": 4})
    assert r.text == "two\n" and r.headers["X-Log-Size"] == "8"
    r = client.get(f"/v1/jobs/{job['id']}/logs", params={"offset": 50})
    assert r.text == "" and r.headers["X-Log-Size"] == "8"
    assert client.get(f"/v1/jobs/{job['id']}/logs", params={"offset": -1}).status_code == 422
    assert client.get(f"/v1/jobs/{job['id']}/logs", params={"attempt": 0}).status_code == 422
    r = client.get(f"/v1/jobs/{job['id']}/logs", params={"attempt": 2})
    assert r.status_code == 404 and "no attempt 2" in r.json()["error"]["message"]


def test_api_reads_any_attempt_and_falls_back_to_ray_for_the_latest(api):
    client, service, job, artifacts = api
    r = client.get(f"/v1/jobs/{job['id']}/logs", params={"offset": 5})
    live = f"live log of {job['ray_submission_id']}"
    assert r.text == live[5:] and r.headers["X-Log-Source"] == "ray"
    assert r.headers["X-Log-Size"] == str(len(live))
    artifacts.put_bytes(b"first attempt\n", job["id"], "logs", "attempt-1.log")
    jobs.update_job(service.engine, job_id=job["id"], attempt=2)
    r = client.get(f"/v1/jobs/{job['id']}/logs", params={"attempt": 1})
    assert r.text == "first attempt\n"
    assert client.get(f"/v1/jobs/{job['id']}/logs").text == live  # attempt 2: none durable yet
    artifacts.put_bytes(b"second attempt\n", job["id"], "logs", "attempt-2.log")
    assert client.get(f"/v1/jobs/{job['id']}/logs").text == "second attempt\n"


def test_api_reads_the_published_log_when_there_is_no_streamed_one(api):
    client, service, job, artifacts = api
    uri = artifacts.put_bytes(b"published\n", job["id"], "logs", "job.log")
    jobs.transition(service.engine, job_id=job["id"], status=JobStatus.SUCCEEDED,
                     artifacts={"logs": uri})
    r = client.get(f"/v1/jobs/{job['id']}/logs")
    assert r.text == "published\n" and r.headers["X-Job-Status"] == "SUCCEEDED"


# ---------------------------------------------------------------------------- the CLI


@pytest.fixture()
def live_api(api):
    """The API on a real HTTP port (uvicorn in a thread), and an admin token for it."""
    import uvicorn

    from serve_app.app import create_app

    client, service, job, artifacts = api
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(lambda: service), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 20, "uvicorn to start", interval=0.05)
        yield (f"http://127.0.0.1:{port}", client.headers["Authorization"].split()[1],
               service, job, artifacts)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_sdk_follow_moves_from_ray_live_log_to_the_streamed_copy(live_api):
    from railyard.client.sdk import RailyardClient

    url, token, service, job, artifacts = live_api
    chunks: list[str] = []
    with RailyardClient(url, token=token) as sdk:
        follower = threading.Thread(target=lambda: chunks.extend(
            sdk.follow_logs(job["id"], poll_s=0.05)))
        follower.start()
        wait_for(lambda: chunks, 20, "the first chunk, Ray's live log", interval=0.05)
        artifacts.put_bytes(b"a\n", job["id"], "logs", "attempt-1.log")
        wait_for(lambda: "a\n" in chunks, 20, "the streamed copy", interval=0.05)
        artifacts.put_bytes(b"a\nb\n", job["id"], "logs", "attempt-1.log")
        jobs.transition(service.engine, job_id=job["id"], status=JobStatus.SUCCEEDED)
        follower.join(timeout=30)
    assert not follower.is_alive()
    assert "".join(chunks) == f"live log of {job['ray_submission_id']}a\nb\n"


def test_cli_follows_a_running_job_until_it_succeeds(live_api, tmp_path):
    url, token, service, job, artifacts = live_api
    env = {**os.environ, "RAILYARD_API_URL": url, "RAILYARD_TOKEN": token,
           "RAILYARD_HOME": str(tmp_path / "cli-home")}
    with LogShipper(artifacts, job["id"], 1, tmp_path / "job.log", interval_s=0.1) as shipper:
        print("fetch: 2000 rows")
        wait_for(lambda: shipper.uploaded_uri, 20, "the first upload", interval=0.05)
        cli = subprocess.Popen([sys.executable, "-m", "railyard.cli.main", "logs", "-f", job["id"],
                                "--poll-s", "0.1"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        assert cli.stdout.readline() == "fetch: 2000 rows\n"     # it follows the running job
        print("train: done")
        shipper.flush()
        jobs.transition(service.engine, job_id=job["id"], status=JobStatus.SUCCEEDED)
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert out == "train: done\n"
