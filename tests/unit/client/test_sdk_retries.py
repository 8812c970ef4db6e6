"""The SDK sends a read again when its connection was lost, never a write."""

from __future__ import annotations

import httpx
import pytest

from railyard.client.sdk import RailyardClient
from railyard.errors import BackendUnavailableError

JOB = {"id": "job-1", "status": "RUNNING"}


def flaky(failures: list[Exception]) -> tuple[httpx.MockTransport, list[str]]:
    """A transport raising ``failures`` in turn, then answering JOB; and the methods it saw."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if failures:
            raise failures.pop(0)
        return httpx.Response(200, json=JOB)

    return httpx.MockTransport(handle), seen


def client(transport: httpx.MockTransport) -> RailyardClient:
    return RailyardClient("http://api", token="t", transport=transport,
                          read_retry_delays_s=(0, 0, 0))


def test_a_read_whose_connection_was_reset_is_sent_again():
    transport, seen = flaky([httpx.ReadError("Connection reset by peer"),
                             httpx.RemoteProtocolError("Server disconnected")])
    assert client(transport).get("job-1") == JOB
    assert seen == ["GET", "GET", "GET"]


def test_a_read_gives_up_after_its_retries_with_the_reason():
    transport, seen = flaky([httpx.ConnectError("refused")] * 5)
    with pytest.raises(BackendUnavailableError, match="cannot reach the Railyard API.*refused"):
        client(transport).get("job-1")
    assert seen == ["GET"] * 4


def test_a_timed_out_read_is_not_sent_again():
    transport, seen = flaky([httpx.ReadTimeout("slow")])
    with pytest.raises(BackendUnavailableError):
        client(transport).get("job-1")
    assert seen == ["GET"]


def test_a_write_is_never_sent_again():
    transport, seen = flaky([httpx.ReadError("Connection reset by peer")])
    with pytest.raises(BackendUnavailableError):
        client(transport).cancel("job-1")
    assert seen == ["POST"]
