"""Ray's record of finished Railyard jobs, deleted after a retention.

Ray keeps every job it ever ran in its job list (the dashboard's ``/api/jobs/``), and the
reconciler lists it on every tick: at 1,000 jobs of history one listing took 0.66 s (median)
and the dashboard's share of the CPUs grew with it. So the reconciler deletes Ray's record of a
Railyard job ``RAILYARD_RAY_JOB_RETENTION_S`` after its Ray job ended, once the Railyard job
itself is finished (an earlier attempt of a job that is being retried stays until the job
ends). Railyard's store keeps the job, its durable log and its timeline; Ray's dashboard,
`ray job status` and `ray job logs` show the job until then. Ray jobs that Railyard did not
submit (no ``railyard_job_id`` in their metadata) are never deleted.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from sqlalchemy.engine import Engine

from railyard.control.backend import JobBackend
from railyard.errors import BackendUnavailableError
from railyard.jobstore import jobs

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 60.0      # how often the reconciler looks for records to delete
MAX_DELETES = 500            # per look: a long backlog goes over several
BUDGET_S = 2.0               # per look, so a backlog holds up the reconciler's tick that long


def prune(engine: Engine, backend: JobBackend, *, now: datetime, retention_s: float,
          max_deletes: int = MAX_DELETES, budget_s: float = BUDGET_S) -> int:
    """Delete Ray's record of the finished Railyard jobs whose Ray job ended more than
    ``retention_s`` before ``now`` (at most ``max_deletes``, for about ``budget_s`` seconds:
    Ray deletes one per request); returns how many were deleted. Nothing when ``retention_s``
    is 0. Raises BackendUnavailableError if Ray cannot be listed."""
    if retention_s <= 0:
        return 0
    ended = backend.list_ended(now.timestamp() - retention_s)
    if not ended:
        return 0
    finished = jobs.finished_job_ids(engine, set(ended.values()))
    deleted = 0
    deadline = time.monotonic() + budget_s
    for submission_id, job_id in sorted(ended.items()):
        if deleted >= max_deletes or time.monotonic() > deadline:
            break
        if job_id not in finished:
            continue
        try:
            backend.delete(submission_id)
        except BackendUnavailableError as exc:
            log.warning("could not delete Ray's record of %s: %s", submission_id, exc.message)
            break
        deleted += 1
    if deleted:
        log.info("deleted Ray's record of %d finished jobs (retention %.0fs)", deleted,
                 retention_s)
    return deleted
