"""Session-wide real servers: Postgres and an S3-compatible server."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from tests.servers import postgres_server, s3_server

settings.register_profile("ci", deadline=None, max_examples=60,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci")


@pytest.fixture(scope="session")
def postgres():
    """A real Postgres server, started once per test session."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3():
    """A real S3-compatible HTTP server; the AWS variables point this process at it."""
    with s3_server() as server:
        old = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        try:
            yield server
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
