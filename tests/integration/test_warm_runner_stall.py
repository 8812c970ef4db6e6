"""The warm runners (railyard.execution.warm_runner) never wait on a stalled client: with
half-written requests held open on every node's socket, a job still runs in a warm driver, and
the runners drop the stalled connections. Only the runners' user may connect."""

from __future__ import annotations

import os
import socket
import stat

from railyard.cluster.local_cluster import warm_dir
from tests.integration.support import noop_spec

# More stalled clients than a job could wait out one by one (each is dropped after
# REQUEST_TIMEOUT_S): only reading them all at once lets the job through in time.
STALLED_PER_NODE = 24


def warm_sockets(platform) -> list[str]:
    """Every node's warm runner socket (the local cluster's pid files name them)."""
    sockets = []
    for pid_file in sorted(warm_dir(platform.settings).glob("*.pid")):
        _, _, path = pid_file.read_text().partition(" ")
        if path.strip() and os.path.exists(path.strip()):
            sockets.append(path.strip())
    return sockets


def stall(socket_path: str) -> socket.socket:
    """A client that connects, sends half a request and holds the connection open."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(socket_path)
    client.sendall(b'{"argv": ["job-')
    return client


def test_half_written_requests_on_every_node_hold_up_no_job(platform, client):
    sockets = warm_sockets(platform)
    assert len(sockets) >= 3, sockets          # the head and one node per pool
    for path in sockets:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    stalled = [stall(path) for path in sockets for _ in range(STALLED_PER_NODE)]
    try:
        job = client.submit(noop_spec(platform, "warm-runner-stalled"))
        final = client.wait(job["id"], timeout=60)
        assert final["status"] == "SUCCEEDED", final["error"]
        assert "running in a warm driver (forked from pid" in client.logs(job["id"])
        for connection in stalled:             # the runners gave up on them
            connection.settimeout(60)
            assert connection.recv(1) == b""
    finally:
        for connection in stalled:
            connection.close()
