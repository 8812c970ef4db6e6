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
