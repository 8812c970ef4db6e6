"""The hook of the ``railyard`` connection type: the Railyard REST API over httpx."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import httpx
from airflow.sdk import BaseHook

from railyard_airflow.api import RailyardApiError, api_base_url, job_url, raise_for_error
from railyard_airflow.get_provider_info import HIDDEN_FIELDS, PLACEHOLDERS, RELABELING


class RailyardHook(BaseHook):
    """Talks to one Railyard API: submit a training spec (with an ``Idempotency-Key``), read,
    cancel and read the log of a job. The connection's host is the API URL (it may carry its
    scheme and port: ``https://railyard.internal:8443``) and its password the API token.

    :param railyard_conn_id: the Airflow connection (type ``railyard``).
    :param timeout: seconds for each HTTP request.
    """

    conn_name_attr = "railyard_conn_id"
    default_conn_name = "railyard_default"
    conn_type = "railyard"
    hook_name = "Railyard"

    def __init__(self, railyard_conn_id: str = default_conn_name, timeout: float = 60.0) -> None:
        super().__init__()
        self.railyard_conn_id = railyard_conn_id
        self.timeout = timeout

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form: the API URL and the token; nothing else is used."""
        return {"hidden_fields": list(HIDDEN_FIELDS), "relabeling": dict(RELABELING),
                "placeholders": dict(PLACEHOLDERS)}

    @cached_property
    def _connection(self) -> tuple[str, str | None]:
        """The API's base URL and token, read from the connection once."""
        conn = self.get_connection(self.railyard_conn_id)
        return api_base_url(conn.host, port=conn.port, schema=conn.schema), conn.password

    @property
    def base_url(self) -> str:
        """The API's base URL, e.g. ``http://127.0.0.1:8000``."""
        return self._connection[0]

    def _headers(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    def get_conn(self) -> httpx.Client:
        """A new httpx client of the API, its token set; close it after use."""
        base_url, token = self._connection
        return httpx.Client(base_url=base_url, headers=self._headers(token), timeout=self.timeout)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.get_conn() as client:
            try:
                response = client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise RailyardApiError.unreachable(self.base_url, exc) from None
        return raise_for_error(response)

    def submit_job(self, spec: dict[str, Any], *, idempotency_key: str | None = None
                   ) -> dict[str, Any]:
        """POST a training spec; the new job (or, when ``idempotency_key`` was used before
        with the same spec, the job that first request created)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        job: dict[str, Any] = self._request("POST", "/v1/jobs", json=spec, headers=headers).json()
        return job

    def get_job(self, job_id: str) -> dict[str, Any]:
        """One job: status, phase, error, error_phase, metrics, artifacts, …"""
        job: dict[str, Any] = self._request("GET", f"/v1/jobs/{job_id}").json()
        return job

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a QUEUED, PENDING or RUNNING job (a finished one answers 409)."""
        job: dict[str, Any] = self._request("POST", f"/v1/jobs/{job_id}/cancel").json()
        return job

    def get_logs(self, job_id: str, *, attempt: int | None = None, offset: int = 0) -> str:
        """A job's log text (``attempt``: default the latest) from byte ``offset`` on."""
        params: dict[str, int] = {"offset": offset, **({"attempt": attempt} if attempt else {})}
        return self._request("GET", f"/v1/jobs/{job_id}/logs", params=params).text

    def job_url(self, job_id: str) -> str:
        """The job's page in the Railyard UI."""
        return job_url(self.base_url, job_id)

    def test_connection(self) -> tuple[bool, str]:
        """Airflow's "Test" button: the token lists jobs."""
        try:
            self._request("GET", "/v1/jobs", params={"limit": 1})
        except RailyardApiError as exc:
            return False, str(exc)
        return True, f"connected to the Railyard API at {self.base_url}"

    # The triggerer's side: the same calls, async, so a deferred task holds no worker.

    async def _aconnection(self) -> tuple[str, str | None]:
        conn = await self.aget_connection(self.railyard_conn_id)
        return api_base_url(conn.host, port=conn.port, schema=conn.schema), conn.password

    async def _arequest(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                        wait_s: float = 0.0) -> httpx.Response:
        base_url, token = await self._aconnection()
        async with httpx.AsyncClient(base_url=base_url, headers=self._headers(token),
                                     timeout=self.timeout + wait_s) as client:
            try:
                response = await client.request(method, path, params=params)
            except httpx.TransportError as exc:
                raise RailyardApiError.unreachable(base_url, exc) from None
        return raise_for_error(response)

    async def aget_job(self, job_id: str, *, wait_s: float = 0.0,
                       since: str | None = None) -> dict[str, Any]:
        """:meth:`get_job`, async. With ``wait_s``, a long poll: the API answers once the
        job's status or phase is no longer ``since`` (``STATUS`` or ``STATUS:PHASE``), or it
        ends, or after ``wait_s`` seconds; an API without long polls answers at once."""
        params = {"wait_s": wait_s, **({"since": since} if since else {})} if wait_s else None
        job: dict[str, Any] = (await self._arequest("GET", f"/v1/jobs/{job_id}", params=params,
                                                    wait_s=wait_s)).json()
        return job

    async def acancel_job(self, job_id: str) -> dict[str, Any]:
        """:meth:`cancel_job`, async."""
        job: dict[str, Any] = (await self._arequest("POST", f"/v1/jobs/{job_id}/cancel")).json()
        return job
