"""Artifact-store cases run on both stores: a local directory in tests/unit, the S3 server in
tests/integration/test_artifacts_s3.py."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from railyard.artifacts.artifact_store import ArtifactStore
from railyard.artifacts.job_logs import LogShipper, log_uri
from tests.polling import wait_for


def read_or_empty(artifacts: ArtifactStore, uri: str) -> str:
    try:
        return artifacts.get_bytes(uri).decode()
    except OSError:
        return ""


def ship_and_watch(artifacts: ArtifactStore, tmp_path: Path, capsys) -> None:
    """Print from the driver, a thread and a Ray-style forwarder writing to sys.stderr; see
    chunks land while the shipper runs, and everything after it stops."""
    uri = log_uri(artifacts, "job-1", 3)
    assert uri.endswith("job-1/logs/attempt-3.log")
    with LogShipper(artifacts, "job-1", 3, tmp_path / "job.log", interval_s=0.2) as shipper:
        print("driver line 1")
        wait_for(lambda: "driver line 1" in read_or_empty(artifacts, uri), 20,
                 "the driver's line in the uploaded log", interval=0.05)
        worker = threading.Thread(target=print, args=("thread line",))
        worker.start()
        worker.join()
        # What Ray's log monitor thread does with a worker's stderr on the driver.
        forwarder = threading.Thread(
            target=lambda: print("(pid=42) worker stderr line", file=sys.stderr))
        forwarder.start()
        forwarder.join()
        wait_for(lambda: "worker stderr line" in read_or_empty(artifacts, uri), 20,
                 "the forwarded stderr line in the uploaded log", interval=0.05)
        assert "thread line" in read_or_empty(artifacts, uri)
        print("last line")
    final = artifacts.get_bytes(uri).decode()
    assert shipper.uploaded_uri == uri
    lines = final.splitlines()
    assert lines == ["driver line 1", "thread line", "(pid=42) worker stderr line", "last line"]
    assert type(sys.stdout).__name__ != "_Tee" and type(sys.stderr).__name__ != "_Tee"
    captured = capsys.readouterr()  # the original streams still got everything
    assert "driver line 1" in captured.out and "worker stderr line" in captured.err
