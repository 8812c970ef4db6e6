"""Calls from the API to Ray's dashboard give up: a dashboard that accepts connections and never
answers (a stalled head) costs a request its timeout, not the request or the reconciler."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from railyard.control.backend import RayJobsBackend
from railyard.errors import BackendUnavailableError


@pytest.fixture()
def stalled_dashboard():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])     # read nothing, answer nothing
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_a_stalled_dashboard_is_unavailable_within_the_timeout(stalled_dashboard):
    backend = RayJobsBackend(stalled_dashboard, request_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError):
        backend.status("railyard-job-x-1")
    assert time.monotonic() - started < 10


@pytest.fixture()
def counting_dashboard():
    """A stand-in for the dashboard's Jobs API over real HTTP: answers the version check and
    job submissions, and records each request's method and path."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            seen.append(f"GET {self.path}")
            self._answer({"ray_version": "2.60.0", "version": "4", "session_name": "s"})

        def do_POST(self) -> None:
            submitted = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(f"POST {self.path}")
            self._answer({"submission_id": submitted["submission_id"], "job_id": None})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_the_ray_version_is_asked_once_not_before_every_submit(counting_dashboard):
    address, seen = counting_dashboard
    backend = RayJobsBackend(address)
    for n in range(3):
        backend.submit(f"job-{n}", env_vars={}, placement={"entrypoint_num_cpus": 1})
    versions = [r for r in seen if r.startswith("GET /api/version")]
    assert len(versions) == 1, seen
    assert [r for r in seen if r.startswith("POST")] == ["POST /api/jobs/"] * 3
