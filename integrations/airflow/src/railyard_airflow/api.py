"""What the hook, operator, trigger and sensor share about the Railyard REST API, free of
Airflow's runtime: the API's URL from a connection, its error answers, job statuses, the
failure message of a job and its holdout metrics, the idempotency key of a task try."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
from airflow.sdk.exceptions import AirflowException, AirflowFailException

TERMINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
FAILED_STATUSES = frozenset({"FAILED", "CANCELLED"})
# The XCom keys the operator and sensor push.
XCOM_JOB_ID = "railyard_job_id"
XCOM_JOB_URL = "railyard_job_url"
XCOM_HOLDOUT_METRICS = "holdout_metrics"
# Railyard accepts Idempotency-Key values of up to 255 printable ASCII characters.
MAX_IDEMPOTENCY_KEY = 255


class RailyardApiError(AirflowException):
    """The API answered an error (``{"error": {"type", "message", "details"}}``) or could not
    be reached (``http_status`` None)."""

    def __init__(self, message: str, *, http_status: int | None = None,
                 error_type: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.error_type = error_type
        self.details = details

    @property
    def transient(self) -> bool:
        """True when retrying the same request may succeed: unreachable, 429 or 5xx."""
        status = self.http_status
        return status is None or status == 429 or status >= 500

    @classmethod
    def from_response(cls, response: httpx.Response) -> RailyardApiError:
        """The error an error answer carries, with the API's own message."""
        try:
            body = response.json()["error"]
            error_type, message = body.get("type"), body.get("message") or response.text
            details = body.get("details")
        except (ValueError, KeyError, TypeError, AttributeError):
            error_type, message, details = None, response.text[:1000], None
        what = f"HTTP {response.status_code}" + (f" {error_type}" if error_type else "")
        return cls(f"Railyard API {response.request.method} {response.request.url.path} "
                   f"answered {what}: {message}", http_status=response.status_code,
                   error_type=error_type, details=details)

    @classmethod
    def unreachable(cls, base_url: str, exc: Exception) -> RailyardApiError:
        """The API could not be reached at all."""
        return cls(f"cannot reach the Railyard API at {base_url}: {exc}")


def raise_for_error(response: httpx.Response) -> httpx.Response:
    """``response`` when it is not an error answer; else its :class:`RailyardApiError`."""
    if response.status_code >= 400:
        raise RailyardApiError.from_response(response)
    return response


def api_base_url(host: str | None, *, port: int | None = None, schema: str | None = None) -> str:
    """The API's base URL from a connection: ``host`` may be a whole URL (scheme, port and a
    path prefix included) or a bare host name, completed with ``schema`` (http or https;
    default http) and ``port``."""
    if not host:
        raise AirflowException("the Railyard connection has no host: set it to the API URL, "
                               "e.g. http://railyard.internal:8000")
    host = host.strip().rstrip("/")
    if "://" not in host:
        scheme = schema if schema in ("http", "https") else "http"
        host = f"{scheme}://{host}"
    url = httpx.URL(host)
    if port and url.port is None:
        url = url.copy_with(port=port)
    return str(url).rstrip("/")


def job_url(base_url: str, job_id: str) -> str:
    """The job's page in the Railyard UI."""
    return f"{base_url.rstrip('/')}/jobs/{job_id}"


def load_spec(spec: dict[str, Any] | str) -> dict[str, Any]:
    """The training spec as a dict: given as one, or as JSON text (what Airflow renders from a
    ``.json`` template file). A spec that is neither fails the task without retries."""
    if isinstance(spec, dict):
        return spec
    try:
        loaded = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise AirflowFailException(
            f"spec is not a dict nor JSON: {exc}; pass a dict, or the path of a .json file "
            f"relative to the DAG folder or template_searchpath (got {spec[:200]!r})") from None
    if not isinstance(loaded, dict):
        raise AirflowFailException(f"spec must be a JSON object, got {type(loaded).__name__}")
    return loaded


def idempotency_key(dag_id: str, task_id: str, run_id: str, try_number: int,
                    map_index: int | None = None) -> str:
    """The same key for every submit of one task try (so a worker that dies after submitting,
    and the retry of a lost answer, find the first job), another for the next try. Readable
    when it fits the API's limit, a digest of the same fields otherwise."""
    index = -1 if map_index is None else map_index
    key = f"airflow:{dag_id}:{task_id}:{run_id}:{index}:{try_number}"
    if len(key) <= MAX_IDEMPOTENCY_KEY and key.isascii() and key.isprintable():
        return key
    return "airflow-sha256:" + hashlib.sha256(key.encode()).hexdigest()


def failure_message(job: dict[str, Any], url: str | None = None) -> str:
    """Why a FAILED or CANCELLED job did not succeed: its status, phase and error."""
    phase = job.get("error_phase") or job.get("phase") or "unknown"
    message = (f"Railyard job {job.get('id')} ended {job.get('status')} in phase {phase}: "
               f"{job.get('error') or 'no error recorded'}")
    return f"{message} (see {url})" if url else message


def holdout_metrics(job: dict[str, Any]) -> dict[str, Any]:
    """The job's holdout metrics (empty when it published none)."""
    return dict((job.get("metrics") or {}).get("holdout") or {})


def succeeded_metrics(job: dict[str, Any], url: str | None = None) -> dict[str, Any]:
    """The holdout metrics of a SUCCEEDED job; a FAILED or CANCELLED one raises
    :class:`AirflowException` with :func:`failure_message`."""
    if job.get("status") != "SUCCEEDED":
        raise AirflowException(failure_message(job, url))
    return holdout_metrics(job)
