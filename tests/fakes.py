"""Fakes the tests share: the in-memory execution backend, a clock tests move by hand, the API
in-process on a SQLite store (one admin client, or an admin and two teams), and empty databases
on the test Postgres server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from railyard.config import Settings
from railyard.control.backend import BackendStatus
from railyard.control.service import JobService
from railyard.data.demo import sample_spec, write_fraud_dataset
from railyard.errors import BackendUnavailableError
from railyard.jobstore import jobs, tokens
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.tables import Job, utcnow
from serve_app.app import create_app


class InMemoryBackend:
    """Records submissions; tests set what Ray would report."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.stopped: list[str] = []
        self.statuses: dict[str, BackendStatus] = {}
        self.available = True
        self.pools: dict[str, int] = {}
        self.cpus: dict[str, float] = {}      # CPUs per pool (capacity admission); {}: no limit
        self.placements: list[dict] = []
        self.status_calls = 0                 # how often Ray would have been asked
        self.list_calls = 0
        self.ended_at: dict[str, float] = {}  # submission id -> epoch seconds it ended
        self.deleted: list[str] = []
        self.job_ids: dict[str, str] = {}     # submission id -> Railyard job id
        self.packs: dict[str, list] = {}      # a pack's submission id -> (job id, attempt)s

    def submit(self, job_id, *, env_vars, placement=None, attempt=1):
        if not self.available:
            raise BackendUnavailableError("cluster down")
        sid = jobs.submission_id_for(job_id, attempt)
        if sid not in self.submitted:
            self.submitted.append(sid)
            self.placements.append(placement or {})
            self.job_ids[sid] = job_id
        return sid

    def submit_pack(self, members, *, env_vars, placement=None):
        if not self.available:
            raise BackendUnavailableError("cluster down")
        sid = jobs.pack_submission_id(members)
        if sid not in self.submitted:
            self.submitted.append(sid)
            self.placements.append(placement or {})
            self.job_ids[sid] = members[0][0]
            self.packs[sid] = list(members)
        return sid

    def status(self, submission_id):
        self.status_calls += 1
        return self.statuses.get(submission_id, BackendStatus("PENDING"))

    def list_statuses(self):
        if not self.available:
            raise BackendUnavailableError("cluster down")
        self.list_calls += 1
        listed = {sid: BackendStatus("PENDING") for sid in self.submitted}
        listed.update(self.statuses)
        return listed

    def stop(self, submission_id):
        self.stopped.append(submission_id)

    def list_ended(self, ended_before):
        if not self.available:
            raise BackendUnavailableError("cluster down")
        return {sid: self.job_ids[sid] for sid, at in self.ended_at.items()
                if at < ended_before and sid in self.job_ids and sid not in self.deleted
                and self.statuses.get(sid, BackendStatus("PENDING")).is_terminal}

    def delete(self, submission_id):
        self.deleted.append(submission_id)

    def logs(self, submission_id):
        return f"live log of {submission_id}"

    def node_pools(self):
        return dict(self.pools)

    def pool_cpus(self):
        return dict(self.cpus)


class FakeClock:
    """A clock for ``JobService(clock=...)`` that stands still until ``advance`` moves it:
    timezone-aware UTC, starting at the real now."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def build_env(tmp_path, clock: Callable[[], datetime] | None = None):
    """An app on a SQLite store with an in-memory backend, an admin client and a spec; the
    service reads the time from ``clock`` (default: the real one)."""
    settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path}/t.db",
                        max_body_bytes=64 * 1024)
    migrate(settings.resolved_database_url)
    backend = InMemoryBackend()
    service = JobService(engine=get_engine(settings.resolved_database_url), backend=backend,
                         settings=settings, clock=clock or utcnow)
    data = write_fraud_dataset(tmp_path / "fraud", 2000, files=2)
    admin_token, _ = tokens.issue(service.engine, team="admin", admin=True)
    client = TestClient(create_app(lambda: service),
                        headers={"Authorization": f"Bearer {admin_token}"})
    return client, service, backend, sample_spec(str(data))


def job_count(service) -> int:
    with Session(service.engine) as session:
        return session.exec(select(func.count()).select_from(Job)).one()


TEAM_A, TEAM_B = "team-a", "team-b"


class ApiPlatform:
    """An app on a fresh SQLite store with an admin and two team tokens."""

    def __init__(self, tmp_path: Path, **settings_overrides) -> None:
        self.settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path}/t.db",
                                 **settings_overrides)
        migrate(self.settings.resolved_database_url)
        self.backend = InMemoryBackend()
        self.service = JobService(engine=get_engine(self.settings.resolved_database_url),
                                  backend=self.backend, settings=self.settings)
        self.data = write_fraud_dataset(tmp_path / "fraud", 500, files=1)
        self.http = TestClient(create_app(lambda: self.service))
        self.tokens = {name: tokens.issue(self.service.engine, team=team, admin=admin)[0]
                       for name, team, admin in (("admin", "admin", True),
                                                 (TEAM_A, TEAM_A, False),
                                                 (TEAM_B, TEAM_B, False))}

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def spec(self, owner: str, path: Path | None = None) -> dict:
        spec = sample_spec(str(path or self.data))
        spec["owner"] = owner
        return spec

    def submit(self, who: str, owner: str | None = None, **kwargs) -> httpx.Response:
        return self.http.post("/v1/jobs", json=self.spec(owner or who, **kwargs),
                              headers=self.headers(who))


def fresh_database(postgres, name: str) -> str:
    """An empty database on the test server; returns its URL."""
    with psycopg.connect(postgres.dsn(),
                         autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    return postgres.url(name)
