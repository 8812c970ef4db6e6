"""``POST /v1/jobs/{id}/rerun``: the same spec again, pinned to the files the original read.

Every file the original job's lineage lists is looked at again (one S3 listing per source, a
stat per local file): one that changed or vanished is a 409 naming it, unless the caller
allows changed data. The new job records ``rerun_of`` and, when pinned, the files; its runner
checks them once more when it reads (a file that changed meanwhile, or one that a glob now
also matches, fails its fetch phase naming it), so a pinned rerun trains on the same bytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from railyard.control.access import Caller, check_job
from railyard.data import lineage
from railyard.errors import ConflictError
from railyard.jobstore import jobs
from railyard.jobstore.tables import Job

if TYPE_CHECKING:
    from railyard.control.service import JobService


def rerun(svc: JobService, *, caller: Caller, job_id: str,
          allow_changed_data: bool = False) -> Job:
    """Submit job ``job_id``'s spec again as a new job that records ``rerun_of``; with pinned
    files unless ``allow_changed_data``."""
    original = jobs.get_job(svc.engine, job_id=job_id)
    check_job(caller, original)
    pinned: dict[str, Any] | None = None
    if not allow_changed_data:
        if not original.lineage:
            raise ConflictError(
                f"job {job_id} has no lineage recorded (it did not get to read its data, or "
                "ran before lineage was kept), so its files cannot be pinned; send "
                "{\"allow_changed_data\": true} to rerun on the data as it is now",
                details=[{"field": "allow_changed_data", "message": "no lineage to pin"}])
        pinned = lineage.pins(original.lineage)
        lineage.check_pins(pinned, lineage.current_facts(pinned), job_id=job_id)
    created = svc.create(dict(original.spec), caller=caller,
                         extra={"rerun_of": original.id, "pinned_files": pinned})
    return created.job
