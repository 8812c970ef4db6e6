"""Python SDK over the REST API (httpx). Errors come back as the same RailyardError classes
the server raised::

    from railyard.client import RailyardClient
    client = RailyardClient()                     # RAILYARD_API_URL or http://127.0.0.1:8000
    job = client.submit(spec_dict)
    job = client.wait(job["id"])
    print(job["metrics"]["holdout"])
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from railyard.config import get_settings
from railyard.errors import ERROR_CLASSES, BackendUnavailableError, NotFoundError, RailyardError

if TYPE_CHECKING:
    from railyard.serving.published import PartitionedModel, PublishedModel

TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
# How long one long-poll read of a job may wait for a change (the API allows up to 60 s).
LONG_POLL_S = 20.0
# A read that lost its connection (reset, a keep-alive connection the server had just closed,
# refused while the API restarts) is sent again after these pauses: about 4 s in all, so that
# `railyard logs -f` and `wait` ride out a blip. Writes are never resent (a submit has its
# Idempotency-Key for that), nor a read that timed out.
READ_RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0)
_RESENDABLE = (httpx.NetworkError, httpx.RemoteProtocolError)


class BearerToken(httpx.Auth):
    """Sends ``Authorization: Bearer <token>``: the given token, else the one
    :func:`railyard.client.credentials.find_token` finds when a request is made (so a client made
    before ``railyard up`` wrote the token file still picks it up)."""

    def __init__(self, token: str | None = None) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._token is None:
            from railyard.client.credentials import find_token

            self._token = find_token()
        if self._token:
            request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


class RailyardClient:
    """A client of one Railyard API; ``token`` defaults to ``RAILYARD_TOKEN`` or the file
    ``$RAILYARD_HOME/token``."""

    def __init__(self, base_url: str | None = None, *, token: str | None = None,
                 timeout: float = 60.0, transport: httpx.BaseTransport | None = None,
                 read_retry_delays_s: Sequence[float] = READ_RETRY_DELAYS_S) -> None:
        self.base_url = (base_url or get_settings().api_url).rstrip("/")
        self.read_retry_delays_s = tuple(read_retry_delays_s)
        self._timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  auth=BearerToken(token))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> RailyardClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        pauses = iter(self.read_retry_delays_s if method in ("GET", "HEAD") else ())
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
                break
            except httpx.TransportError as exc:
                pause = next(pauses, None) if isinstance(exc, _RESENDABLE) else None
                if pause is None:
                    raise BackendUnavailableError(
                        f"cannot reach the Railyard API at {self.base_url}: {exc}; is "
                        "`railyard up` running?") from None
                time.sleep(pause)
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def submit(self, spec: dict[str, Any], *, idempotency_key: str | None = None
               ) -> dict[str, Any]:
        """POST a training spec; returns the new job. With ``idempotency_key``, a retry of
        the same spec returns the job the first call created instead of a second one."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._request("POST", "/v1/jobs", json=spec, headers=headers).json()

    def get(self, job_id: str, *, wait_s: float = 0.0, since: str | None = None
            ) -> dict[str, Any]:
        """One job. With ``wait_s``, a long poll: the API answers once the job's status or
        phase is no longer ``since`` (``STATUS`` or ``STATUS:PHASE``; default: as it is when
        the request arrives), or the job ends, or after ``wait_s`` seconds (60 at most)."""
        if not wait_s:
            return self._request("GET", f"/v1/jobs/{job_id}").json()
        params: dict[str, Any] = {"wait_s": wait_s}
        if since:
            params["since"] = since
        return self._request("GET", f"/v1/jobs/{job_id}", params=params,
                             timeout=self._timeout + wait_s).json()

    def list(self, **filters: Any) -> dict[str, Any]:
        """A page of jobs: ``owner``, ``project``, ``status``, ``limit``, ``cursor``."""
        params = {k: v for k, v in filters.items() if v is not None}
        return self._request("GET", "/v1/jobs", params=params).json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Cancel a job."""
        return self._request("POST", f"/v1/jobs/{job_id}/cancel").json()

    def logs(self, job_id: str, *, attempt: int | None = None, offset: int = 0) -> str:
        """A job's log text (``attempt``: default the latest) from byte ``offset`` on."""
        return self._logs(job_id, attempt, offset).text

    def _logs(self, job_id: str, attempt: int | None, offset: int) -> httpx.Response:
        params = {"offset": offset, **({"attempt": attempt} if attempt else {})}
        return self._request("GET", f"/v1/jobs/{job_id}/logs", params=params)

    def follow_logs(self, job_id: str, *, attempt: int | None = None,
                    poll_s: float = 2.0) -> Iterator[str]:
        """Yield a job's log as it grows, chunk by chunk, until the job is terminal (then one
        last read). The server says the log's size (``X-Log-Size``), the next offset."""
        offset, source, last = 0, None, False
        while True:
            response = self._logs(job_id, attempt, offset)
            got = response.headers.get("X-Log-Source")
            if got == "durable" and source not in (None, "durable") and offset:
                # Until the runner's first upload the API serves Ray's live driver log, whose
                # offsets are not the durable copy's: start over (a few lines may repeat).
                offset, source = 0, got
                continue
            if source != "durable" or got == "durable":  # never step back from the durable copy
                source = got
                size = int(response.headers.get("X-Log-Size", offset + len(response.content)))
                if size > offset and response.text:
                    yield response.text
                offset = max(offset, size)
            if last:
                return
            # The status is read before the log, so this read already has what the job wrote
            # before it ended; one more read picks up what its driver uploaded on the way out.
            last = response.headers.get("X-Job-Status") in TERMINAL
            if not last:
                time.sleep(poll_s)

    def events(self, job_id: str) -> builtins.list[dict[str, Any]]:
        """A job's timeline."""
        return self._request("GET", f"/v1/jobs/{job_id}/events").json()

    def attempts(self, job_id: str) -> builtins.list[dict[str, Any]]:
        """A job's attempts (1, then one per retry): outcome, failure kind, error."""
        return self._request("GET", f"/v1/jobs/{job_id}/attempts").json()

    def trials(self, job_id: str) -> builtins.list[dict[str, Any]]:
        """A sweep's trial records."""
        return self._request("GET", f"/v1/jobs/{job_id}/trials").json()

    def models(self, job_id: str) -> builtins.list[dict[str, Any]]:
        """A fan-out job's per-partition models."""
        return self._request("GET", f"/v1/jobs/{job_id}/models").json()

    def workflows(self) -> builtins.list[dict[str, Any]]:
        """Registered workflows."""
        return self._request("GET", "/v1/workflows").json()

    # ---------------------------------------------------------------- webhooks
    def create_webhook(self, url: str, events: builtins.list[str], *,
                       secret: str | None = None, owner: str | None = None) -> dict[str, Any]:
        """Register a webhook for some of RUNNING, SUCCEEDED, FAILED, CANCELLED; without
        ``secret`` the server makes one and returns it (this once) as ``secret``. Check
        deliveries with ``railyard.client.webhooks.verify``."""
        body: dict[str, Any] = {"url": url, "events": events}
        body.update({k: v for k, v in (("secret", secret), ("owner", owner)) if v is not None})
        return self._request("POST", "/v1/webhooks", json=body).json()

    def webhooks(self) -> builtins.list[dict[str, Any]]:
        """The team's webhooks (an admin token: every one)."""
        return self._request("GET", "/v1/webhooks").json()["webhooks"]

    def delete_webhook(self, webhook_id: str) -> None:
        """Remove a webhook and its delivery log."""
        self._request("DELETE", f"/v1/webhooks/{quote(webhook_id, safe='')}")

    def webhook_deliveries(self, webhook_id: str, *,
                           limit: int = 50) -> builtins.list[dict[str, Any]]:
        """A webhook's newest deliveries, each with its attempts (time, HTTP status, error,
        next retry)."""
        return self._request("GET", f"/v1/webhooks/{quote(webhook_id, safe='')}/deliveries",
                             params={"limit": limit}).json()["deliveries"]

    def load_model(self, job_id: str, *,
                   into: Path | None = None) -> PublishedModel | PartitionedModel:
        """The job's published model, loaded from its artifacts (``artifacts.model_dir``);
        ``.predict(table_or_dataframe)`` scores rows. S3 artifacts are copied to ``into`` (or a
        temporary directory) first."""
        from railyard.serving.published import load_published

        job = self.get(job_id)
        model_dir = (job.get("artifacts") or {}).get("model_dir")
        if not model_dir:
            raise NotFoundError(f"job {job_id} has no published model (status "
                                f"{job.get('status')}); only SUCCEEDED jobs publish one")
        # The API's record of the job vouches for the files (their SHA-256 digests).
        return load_published(model_dir, into=into, trusted=job.get("artifacts"))

    # ---------------------------------------------------------------- model registry
    def registered_models(self, *, owner: str | None = None,
                          q: str | None = None) -> builtins.list[dict[str, Any]]:
        """Registered models (``owner``, ``q`` in the name) with latest version and aliases."""
        params = {k: v for k, v in {"owner": owner, "q": q}.items() if v is not None}
        return self._request("GET", "/v1/models", params=params).json()

    def registered_model(self, owner: str, name: str) -> dict[str, Any]:
        """A model's versions, aliases and alias moves."""
        return self._request("GET", f"/v1/models/{quote(owner, safe='')}/"
                                    f"{quote(name, safe='')}").json()

    def alias(self, owner: str, name: str, alias: str) -> dict[str, Any]:
        """The version (and its job id) ``alias`` points at."""
        return self._request("GET", _alias_path(owner, name, alias)).json()

    def set_alias(self, owner: str, name: str, alias: str, version: int, *,
                  message: str | None = None) -> dict[str, Any]:
        """Point ``alias`` at ``version``."""
        body: dict[str, Any] = {"version": version}
        if message:
            body["message"] = message
        return self._request("PUT", _alias_path(owner, name, alias), json=body).json()

    def delete_alias(self, owner: str, name: str, alias: str) -> None:
        """Remove ``alias``."""
        self._request("DELETE", _alias_path(owner, name, alias))

    def resolve_model(self, ref: str) -> str:
        """The job id behind ``ref``: a job id, ``models:/OWNER/NAME@ALIAS`` or
        ``models:/OWNER/NAME/VERSION``."""
        from railyard.control.registry import MODEL_REF_PREFIX, parse_model_ref

        if not ref.startswith(MODEL_REF_PREFIX):
            return ref
        owner, name, which = parse_model_ref(ref)
        if isinstance(which, str):
            return str(self.alias(owner, name, which)["job_id"])
        for version in self.registered_model(owner, name)["versions"]:
            if version["version"] == which:
                return str(version["job_id"])
        raise NotFoundError(f"model {owner}/{name} has no version {which}")

    def lineage(self, job_id: str) -> dict[str, Any]:
        """What the job read and ran: files (size, ETag/version, mtime), SQL, code, seeds."""
        return self._request("GET", f"/v1/jobs/{job_id}/lineage").json()

    def rerun(self, job_id: str, *, allow_changed_data: bool = False) -> dict[str, Any]:
        """Submit the job again pinned to its files (a ConflictError naming a changed file
        unless ``allow_changed_data``); the new job."""
        return self._request("POST", f"/v1/jobs/{job_id}/rerun",
                             json={"allow_changed_data": allow_changed_data}).json()

    def healthy(self) -> bool:
        """True when /healthz answers 200."""
        try:
            return self._http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    def wait(self, job_id: str, *, timeout: float = 3600.0, poll: float = 0.5,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Wait until the job is terminal; ``on_update`` sees the job as first read and after
        each change. Each read is a long poll (``get(wait_s=...)``): the API answers within
        ~0.1 s of a change, with no request in between. ``poll`` only spaces out the reads of a
        job that did not change when the API answered at once (one older than long polls, or
        with every waiting slot taken)."""
        deadline = time.monotonic() + timeout
        job = self.get(job_id)
        while True:
            if on_update:
                on_update(job)
            if job["status"] in TERMINAL:
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"job {job_id} still {job['status']} after {timeout:.0f}s; "
                                   f"timeline: {self.events(job_id)}")
            seen = _state_key(job)
            asked = time.monotonic()
            job = self.get(job_id, wait_s=min(LONG_POLL_S, left), since=seen)
            unchanged_at_once = poll - (time.monotonic() - asked)
            if _state_key(job) == seen and unchanged_at_once > 0:
                time.sleep(min(unchanged_at_once, max(0.0, deadline - time.monotonic())))


def _state_key(job: dict[str, Any]) -> str:
    """A job's state as the API's long poll names it (``since``): STATUS or STATUS:PHASE."""
    return f"{job['status']}:{job['phase']}" if job.get("phase") else str(job["status"])


def _alias_path(owner: str, name: str, alias: str) -> str:
    return (f"/v1/models/{quote(owner, safe='')}/{quote(name, safe='')}/aliases/"
            f"{quote(alias, safe='')}")


def _error_from(response: httpx.Response) -> RailyardError:
    try:
        body = response.json()["error"]
        cls = ERROR_CLASSES.get(body.get("type"), RailyardError)
        error = cls(body.get("message", response.text), body.get("details"))
    except (ValueError, KeyError, TypeError):
        error = RailyardError(f"HTTP {response.status_code}: {response.text[:500]}")
    error.status_code = response.status_code
    return error
