"""The job service: what the API does with a spec, a job id or a cancel request.

It ties the store (database) to the execution backend (Ray Jobs) and keeps them truthful:
a job whose Ray driver is gone is never left RUNNING.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Engine

from railyard import store
from railyard.backend import JobBackend
from railyard.config import Settings
from railyard.errors import BackendUnavailableError, ConflictError
from railyard.models import Job, JobStatus
from railyard.spec import TrainingSpec, parse_spec
from railyard.validation import validate_spec

log = logging.getLogger(__name__)


class JobService:
    """Submit, reconcile and cancel jobs."""

    def __init__(self, *, engine: Engine, backend: JobBackend, settings: Settings) -> None:
        self.engine, self.backend, self.settings = engine, backend, settings

    def create(self, payload: Any) -> Job:
        """Validate a spec, store the job, submit it. Nothing is stored for an invalid spec."""
        spec = parse_spec(payload)
        validate_spec(spec)
        job = store.create_job(self.engine, spec=spec)
        return self._submit(job, spec)

    def _submit(self, job: Job, spec: TrainingSpec) -> Job:
        try:
            submission_id = self.backend.submit(job.id,
                                                env_vars=self.settings.runtime_env_vars())
        except BackendUnavailableError as exc:
            # The job stays QUEUED; reconcile() submits it once the cluster answers.
            log.warning("job %s queued, Ray unavailable: %s", job.id, exc.message)
            store.add_event(self.engine, job_id=job.id, kind="submit_deferred",
                            message=exc.message)
            return store.get_job(self.engine, job_id=job.id)
        store.transition(self.engine, job_id=job.id, status=JobStatus.PENDING,
                         allowed_from=frozenset({JobStatus.QUEUED}),
                         message=f"submitted to Ray as {submission_id}",
                         ray_submission_id=submission_id)
        return store.get_job(self.engine, job_id=job.id)

    def reconcile(self, job: Job) -> Job:
        """Bring a non-terminal job in line with what Ray knows about it."""
        if JobStatus(job.status).is_terminal():
            return job
        if job.status == JobStatus.QUEUED.value and job.ray_submission_id is None:
            return self._submit(job, TrainingSpec.model_validate(job.spec))
        if job.ray_submission_id is None:
            return job
        try:
            ray_status = self.backend.status(job.ray_submission_id)
        except BackendUnavailableError:
            return job
        if not ray_status.is_terminal:
            return job
        fresh = store.get_job(self.engine, job_id=job.id)   # the runner may have just finished
        if JobStatus(fresh.status).is_terminal():
            return fresh
        if ray_status.status == "STOPPED":
            store.transition(self.engine, job_id=job.id, status=JobStatus.CANCELLED,
                             message="Ray job was stopped")
        else:
            reason = (f"the Ray driver ended ({ray_status.status}) without recording a result"
                      + (f": {ray_status.message}" if ray_status.message else ""))
            store.transition(self.engine, job_id=job.id, status=JobStatus.FAILED,
                             message=reason, error=reason,
                             error_phase=fresh.phase or "startup")
        return store.get_job(self.engine, job_id=job.id)

    def get(self, job_id: str) -> Job:
        """A job, reconciled with Ray first."""
        return self.reconcile(store.get_job(self.engine, job_id=job_id))

    def cancel(self, job_id: str) -> Job:
        """Cancel a job in any non-terminal state and stop its Ray job."""
        job = store.get_job(self.engine, job_id=job_id)
        if JobStatus(job.status).is_terminal():
            raise ConflictError(
                f"job {job_id} is already {job.status}; only QUEUED, PENDING or RUNNING jobs "
                "can be cancelled")
        if not store.transition(self.engine, job_id=job_id, status=JobStatus.CANCELLED,
                                message="cancelled by request"):
            job = store.get_job(self.engine, job_id=job_id)
            raise ConflictError(f"job {job_id} finished ({job.status}) before it was cancelled")
        if job.ray_submission_id:
            try:
                self.backend.stop(job.ray_submission_id)
            except BackendUnavailableError as exc:
                store.add_event(self.engine, job_id=job_id, kind="cancel",
                                message=f"could not stop the Ray job yet: {exc.message}")
        return store.get_job(self.engine, job_id=job_id)

    def logs(self, job_id: str) -> str:
        """The job's log: the durable copy once published, else Ray's live driver log."""
        from railyard.storage import ArtifactStore

        job = store.get_job(self.engine, job_id=job_id)
        uri = (job.artifacts or {}).get("logs")
        if uri:
            try:
                return ArtifactStore(self.settings.resolved_artifact_root).get_bytes(uri)\
                    .decode(errors="replace")
            except OSError:
                pass
        if job.ray_submission_id:
            try:
                return self.backend.logs(job.ray_submission_id)
            except BackendUnavailableError:
                pass
        return ""
