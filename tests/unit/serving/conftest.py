"""A job database for the serving tests that look a model's job up (railyard.serving.published
checks a model's files against the digests its job's record holds)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from railyard.config import get_settings
from railyard.data.demo import sample_spec
from railyard.jobstore import jobs
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.tables import JobStatus
from railyard.spec import parse_spec


@pytest.fixture()
def job_database(tmp_path, monkeypatch) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    """A fresh SQLite job database as this process's (RAILYARD_DATABASE_URL); yields
    ``record(job_id, artifacts)``, which stores a SUCCEEDED job with those artifacts."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    monkeypatch.setenv("RAILYARD_DATABASE_URL", url)
    get_settings.cache_clear()
    migrate(url)
    engine = get_engine(url)

    def record(job_id: str, artifacts: dict[str, Any]) -> None:
        jobs.create_job(engine, spec=parse_spec(sample_spec(str(tmp_path))), job_id=job_id,
                        status=JobStatus.SUCCEEDED)
        jobs.update_job(engine, job_id=job_id, artifacts=artifacts)

    yield record
    monkeypatch.delenv("RAILYARD_DATABASE_URL")
    get_settings.cache_clear()
