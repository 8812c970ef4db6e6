"""The trigger a deferred Railyard task waits on in the triggerer (no worker slot held)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from railyard_airflow.api import TERMINAL_STATUSES, RailyardApiError
from railyard_airflow.hooks import RailyardHook

# How long one read of the job may wait for it to change (the API's long poll allows 60 s).
LONG_POLL_S = 20.0


class RailyardJobTrigger(BaseTrigger):
    """Reads a job with async httpx until it is SUCCEEDED, FAILED or CANCELLED, then fires one
    event ``{"status", "job_id", "error", "error_phase"}``; ``{"status": "error", "message"}``
    when the API refuses the read, or stays unreachable for ``max_poll_errors`` polls in a row.
    Each read after the first is a long poll (``GET /v1/jobs/{id}?wait_s=``): the API answers
    when the job changes, so the task resumes within ~0.1 s of the job's end.

    :param job_id: the Railyard job.
    :param railyard_conn_id: the Airflow connection (type ``railyard``).
    :param poll_interval: the least seconds between two reads of an unchanged job when the API
        answers at once (an API without long polls, or with every waiting slot taken).
    :param max_poll_errors: unreachable-API (or 5xx) polls in a row that end the wait.
    """

    def __init__(self, job_id: str, railyard_conn_id: str = RailyardHook.default_conn_name,
                 poll_interval: float = 10.0, max_poll_errors: int = 10) -> None:
        super().__init__()
        self.job_id = job_id
        self.railyard_conn_id = railyard_conn_id
        self.poll_interval = poll_interval
        self.max_poll_errors = max_poll_errors

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The class path and arguments the triggerer re-creates this trigger from."""
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"job_id": self.job_id, "railyard_conn_id": self.railyard_conn_id,
                 "poll_interval": self.poll_interval, "max_poll_errors": self.max_poll_errors})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll until the job is terminal (or the API fails for good); fire one event."""
        hook = RailyardHook(self.railyard_conn_id)
        errors = 0
        seen: str | None = None             # the job's state as last read
        while True:
            asked = time.monotonic()
            try:
                job = await (hook.aget_job(self.job_id) if seen is None else
                             hook.aget_job(self.job_id, wait_s=LONG_POLL_S, since=seen))
            except RailyardApiError as exc:
                errors += 1
                if exc.transient and errors < self.max_poll_errors:
                    self.log.warning("reading Railyard job %s failed (%d in a row): %s",
                                     self.job_id, errors, exc)
                    await asyncio.sleep(self.poll_interval)
                    continue
                yield TriggerEvent({"status": "error", "job_id": self.job_id,
                                    "message": str(exc)})
                return
            errors = 0
            if job["status"] in TERMINAL_STATUSES:
                yield TriggerEvent({"status": job["status"], "job_id": self.job_id,
                                    "error": job.get("error"),
                                    "error_phase": job.get("error_phase")})
                return
            state = f"{job['status']}:{job['phase']}" if job.get("phase") else job["status"]
            if state != seen:
                self.log.info("Railyard job %s is %s (phase %s)", self.job_id, job["status"],
                              job.get("phase"))
            elif (rest := self.poll_interval - (time.monotonic() - asked)) > 0:
                await asyncio.sleep(rest)    # answered at once, unchanged: no long poll there
            seen = state

    async def on_kill(self) -> None:
        """A user killed the deferred task (mark failed, clear): cancel the job."""
        hook = RailyardHook(self.railyard_conn_id)
        try:
            job = await hook.aget_job(self.job_id)
            if job["status"] not in TERMINAL_STATUSES:
                await hook.acancel_job(self.job_id)
                self.log.info("cancelled Railyard job %s", self.job_id)
        except RailyardApiError as exc:
            self.log.warning("could not cancel Railyard job %s: %s", self.job_id, exc)
