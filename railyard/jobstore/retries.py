"""Who a failed attempt is down to, and whether its job gets another attempt.

Infrastructure failures (a node or worker process that died, an object lost with its node, a
database or object store that could not be reached, e.g. a network error reading S3) are the
platform's and retried within ``lifecycle.max_retries``. Everything else is the workflow's
code or data and retried only within ``lifecycle.max_user_code_retries`` (0 unless the spec
asks), as SageMaker does with its retry strategy.
"""

from __future__ import annotations

import re

from sqlalchemy.engine import Engine

from railyard.jobstore.tables import FailureKind, Job
from railyard.spec import LifecycleSpec


def _infrastructure_errors() -> tuple[type[BaseException], ...]:
    import ray.exceptions as rex
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

    names = ("NodeDiedError", "WorkerCrashedError", "ActorDiedError", "ActorUnavailableError",
             "ObjectLostError", "OwnerDiedError", "ObjectReconstructionFailedError",
             "RaySystemError", "LocalRayletDiedError", "OutOfMemoryError",
             "ActorPlacementGroupRemoved", "GetTimeoutError")
    ray_errors = tuple(getattr(rex, name) for name in names if hasattr(rex, name))
    return ray_errors + (OperationalError, InterfaceError, DisconnectionError, ConnectionError)


# How pyarrow's S3 filesystem (the AWS SDK's curl errors) and other clients word an object store
# they could not reach: an OSError like any missing file, told apart only by its message.
_NETWORK_MESSAGE = re.compile(
    r"NETWORK_CONNECTION|curlCode: (6|7|28|35|52|56)|Couldn't connect to server|"
    r"Connection refused|Connection reset|Could not resolve host|Timeout was reached|"
    r"Operation timed out|Unable to connect|SlowDown|ServiceUnavailable|InternalError",
    re.IGNORECASE)


def _network_errors() -> tuple[type[BaseException], ...]:
    try:
        from botocore.exceptions import ConnectionError as BotocoreConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:  # pragma: no cover - botocore comes with boto3, a dependency
        return ()
    return (BotocoreConnectionError, HTTPClientError)


def classify(error: BaseException) -> FailureKind:
    """The kind of failure ``error`` (or any exception it was raised from) stands for."""
    infrastructure = _infrastructure_errors() + _network_errors()
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, infrastructure):
            return FailureKind.INFRASTRUCTURE
        if isinstance(current, OSError) and _NETWORK_MESSAGE.search(str(current)):
            return FailureKind.INFRASTRUCTURE
        current = current.__cause__ or current.__context__
    return FailureKind.USER_CODE


def retry_budget(lifecycle: LifecycleSpec, kind: FailureKind, server_max: int) -> int:
    """How many failures of ``kind`` a job may retry."""
    asked = (lifecycle.max_retries if kind is FailureKind.INFRASTRUCTURE
             else lifecycle.max_user_code_retries)
    return min(asked, server_max)


def end_failed_attempt(engine: Engine, *, job: Job, kind: FailureKind, error: str,
                       phase: str, server_max_retries: int) -> bool:
    """Close ``job``'s current attempt as FAILED; then either queue the next attempt (True)
    when the kind's retry budget allows, or fail the job (False).

    One guarded transition: of several callers that see the same failed attempt (the driver,
    the background reconciler, a GET reconciling on the request path), only the one that
    closes the attempt decides; the others change nothing and return False.
    """
    from railyard.jobstore import jobs
    from railyard.jobstore.tables import JobStatus

    attempt = job.attempt or 1
    if not jobs.finish_attempt(engine, job_id=job.id, attempt=attempt, status=JobStatus.FAILED,
                               failure_kind=kind, error=error, error_phase=phase,
                               ray_submission_id=job.ray_submission_id):
        return False
    lifecycle = LifecycleSpec.model_validate((job.spec or {}).get("lifecycle") or {})
    budget = retry_budget(lifecycle, kind, server_max_retries)
    used = jobs.failures_of_kind(engine, job_id=job.id, kind=kind)
    if used <= budget:
        message = (f"attempt {attempt} failed ({kind.value}) in {phase}: {error[:500]}; "
                   f"attempt {attempt + 1} queued ({kind.value} retry {used} of {budget})")
        if jobs.requeue_for_retry(engine, job_id=job.id, from_attempt=attempt,
                                   message=message):
            return True
    suffix = (f" (after {attempt} attempts)" if attempt > 1 else "")
    jobs.transition(engine, job_id=job.id, status=JobStatus.FAILED, attempt=attempt,
                     message=f"failed in {phase} ({kind.value}){suffix}: {error[:500]}",
                     error=error[:8000], error_phase=phase)
    return False
