"""The trigger a deferred Railyard task waits on in the triggerer (no worker slot held)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from railyard_airflow.api import TERMINAL_STATUSES, RailyardApiError
from railyard_airflow.hooks import RailyardHook


class RailyardJobTrigger(BaseTrigger):
    """Polls a job with async httpx until it is SUCCEEDED, FAILED or CANCELLED, then fires one
    event ``{"status", "job_id", "error", "error_phase"}``; ``{"status": "error", "message"}``
    when the API refuses the read, or stays unreachable for ``max_poll_errors`` polls in a row.

    :param job_id: the Railyard job.
    :param railyard_conn_id: the Airflow connection (type ``railyard``).
    :param poll_interval: seconds between reads of the job.
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
        while True:
            try:
                job = await hook.aget_job(self.job_id)
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
            self.log.info("Railyard job %s is %s (phase %s)", self.job_id, job["status"],
                          job.get("phase"))
            await asyncio.sleep(self.poll_interval)

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
