"""Execution backend: submit, inspect, stop and read logs of jobs over the Ray Jobs API."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from railyard.errors import BackendUnavailableError
from railyard.jobstore.jobs import pack_submission_id, submission_id_for

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendStatus:
    """What the execution backend says about a submission."""

    status: str            # PENDING | RUNNING | SUCCEEDED | FAILED | STOPPED | UNKNOWN
    message: str | None = None

    @property
    def is_terminal(self) -> bool:
        """True once the driver has exited (or was never found)."""
        return self.status in ("SUCCEEDED", "FAILED", "STOPPED", "UNKNOWN")


class JobBackend(Protocol):
    """What the API needs from an execution backend."""

    def submit(self, job_id: str, *, env_vars: dict[str, str], placement: dict | None = None,
               attempt: int = 1) -> str: ...

    def submit_pack(self, members: list[tuple[str, int]], *, env_vars: dict[str, str],
                    placement: dict | None = None) -> str:
        """Submit several jobs' attempts (``(job id, attempt)``) as one pack; its submission
        id (``jobs.pack_submission_id``). A repeated submit of the same pack is a no-op."""
        ...

    def status(self, submission_id: str) -> BackendStatus: ...

    def list_statuses(self) -> dict[str, BackendStatus]:
        """Every submission the backend knows, ended ones included, in one call."""
        ...

    def stop(self, submission_id: str) -> None: ...

    def list_ended(self, ended_before: float) -> dict[str, str]:
        """Railyard's submissions that ended before ``ended_before`` (epoch seconds), by
        submission id: the Railyard job id each ran."""
        ...

    def delete(self, submission_id: str) -> None:
        """Delete the backend's own record of an ended submission."""
        ...

    def logs(self, submission_id: str) -> str: ...

    def node_pools(self) -> dict[str, int]: ...

    def pool_cpus(self) -> dict[str, float]:
        """The CPUs of each pool's alive nodes, summed."""
        ...


class RayJobsBackend:
    """Runs each job as a Ray job: ``python -m railyard.execution.entrypoint <job-id>``."""

    def __init__(self, address: str, *, status_max_age_s: float = 1.0,
                 request_timeout_s: float = 30.0) -> None:
        self.address = address
        # Ray's SDK sends its requests with no timeout: a stalled dashboard would hang the
        # request that asked and the reconciler with it.
        self.request_timeout_s = request_timeout_s
        self._client: JobSubmissionClient | None = None
        self._pools_cache: tuple[float, dict[str, int], dict[str, float]] | None = None
        self._pools_lock = threading.Lock()
        # Every read of a live job asks Ray for its status (GET /v1/jobs/{id} reconciles); a
        # client polling a running job 4 times a second made the API replica, the dashboard
        # and the GCS take ~15% of a 2-core node from the job itself. A live answer is reused
        # for this long (a driver's death shows up that much later); an ended one is not cached.
        self.status_max_age_s = status_max_age_s
        self._status_cache: dict[str, tuple[float, BackendStatus]] = {}

    @property
    def client(self) -> JobSubmissionClient:
        """A JobSubmissionClient, created on first use (its constructor contacts the cluster)."""
        if self._client is None:
            try:
                self._client = _client_with_timeout(self.address, self.request_timeout_s)
            except Exception as exc:  # noqa: BLE001 - any failure to connect is "unavailable"
                raise BackendUnavailableError(
                    f"cannot reach the Ray cluster at {self.address}: {exc}") from None
        return self._client

    def submit(self, job_id: str, *, env_vars: dict[str, str], placement: dict | None = None,
               attempt: int = 1) -> str:
        """Submit one attempt of the job; a repeated submit of the same attempt is a no-op."""
        # railyard.execution.entrypoint runs the job in a warm runner's forked driver when the
        # node has one (railyard.execution.warm_runner), else in this process as
        # railyard.execution.driver.
        return self._submit(f"python -m railyard.execution.entrypoint {job_id}",
                            submission_id_for(job_id, attempt), env_vars, placement,
                            {"railyard_job_id": job_id, "railyard_attempt": str(attempt)},
                            f"job {job_id}")

    def submit_pack(self, members: list[tuple[str, int]], *, env_vars: dict[str, str],
                    placement: dict | None = None) -> str:
        """Submit several jobs' attempts as one Ray job, ``python -m
        railyard.execution.entrypoint --pack JOB...``: one driver process per job, at once.
        Its metadata names the first job (Ray's history retention, railyard.control.
        ray_history) and all of them (``railyard_pack``)."""
        ids = [job_id for job_id, _ in members]
        return self._submit(f"python -m railyard.execution.entrypoint --pack {' '.join(ids)}",
                            pack_submission_id(members), env_vars, placement,
                            {"railyard_job_id": ids[0],
                             "railyard_pack": ",".join(f"{job_id}:{attempt}"
                                                       for job_id, attempt in members)},
                            f"the pack of jobs {', '.join(ids)}")

    def _submit(self, entrypoint: str, submission_id: str, env_vars: dict[str, str],
                placement: dict | None, metadata: dict[str, str], what: str) -> str:
        try:
            self.client.submit_job(
                entrypoint=entrypoint,
                submission_id=submission_id,
                # The job's Ray workers load the secrets directory as they start (only its
                # path is in env_vars: railyard.secrets).
                runtime_env={"env_vars": env_vars,
                             "worker_process_setup_hook": "railyard.secrets.load_in_worker"},
                metadata=metadata,
                **(placement or {}),
            )
        except BackendUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001
            if "already exists" in str(exc):
                return submission_id
            raise BackendUnavailableError(f"Ray refused {what}: {exc}") from None
        return submission_id

    def status(self, submission_id: str) -> BackendStatus:
        """Ray's view of the job; UNKNOWN when Ray has no record of it. A PENDING or RUNNING
        answer may be up to ``status_max_age_s`` old."""
        cached = self._status_cache.get(submission_id)
        if cached is not None and time.monotonic() - cached[0] < self.status_max_age_s:
            return cached[1]
        status = self._fetch_status(submission_id)
        if status.is_terminal:
            self._status_cache.pop(submission_id, None)
        else:
            if len(self._status_cache) > 10_000:
                self._status_cache.clear()
            self._status_cache[submission_id] = (time.monotonic(), status)
        return status

    def list_statuses(self) -> dict[str, BackendStatus]:
        """Every Ray job's status by submission id, in ONE request (the reconciler's tick):
        one call per active job was one dashboard request and one GCS read each, every tick.
        Ray keeps ended jobs in the list; their answers are final. Live answers refresh the
        cache ``status`` reads from."""
        details = self._list_jobs()
        now = time.monotonic()
        found: dict[str, BackendStatus] = {}
        for info in details:
            if not info.submission_id:
                continue                         # a driver started outside the Jobs API
            status = _status_of(info)
            found[info.submission_id] = status
            if status.is_terminal:
                self._status_cache.pop(info.submission_id, None)
            elif info.submission_id in self._status_cache or len(self._status_cache) < 10_000:
                self._status_cache[info.submission_id] = (now, status)
        return found

    def _fetch_status(self, submission_id: str) -> BackendStatus:
        try:
            info = self.client.get_job_info(submission_id)
        except BackendUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001
            if "does not exist" in str(exc) or "404" in str(exc):
                return BackendStatus("UNKNOWN", f"Ray has no job {submission_id}")
            raise BackendUnavailableError(f"cannot read Ray job status: {exc}") from None
        return _status_of(info)

    def _list_jobs(self) -> list[Any]:
        """Every job Ray has a record of, in one request."""
        try:
            return self.client.list_jobs()
        except BackendUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise BackendUnavailableError(f"cannot list Ray jobs: {exc}") from None

    def _on_job(self, call: Callable[[str], object], submission_id: str, what: str) -> None:
        """``call(submission_id)`` on Ray's SDK; a job Ray no longer has is not an error."""
        self._status_cache.pop(submission_id, None)
        try:
            call(submission_id)
        except BackendUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001
            if "does not exist" not in str(exc):
                raise BackendUnavailableError(f"cannot {what} Ray job: {exc}") from None

    def stop(self, submission_id: str) -> None:
        """Stop the Ray job (driver and its workers)."""
        self._on_job(self.client.stop_job, submission_id, "stop")
        if self.status(submission_id).status == "PENDING":
            _kill_unscheduled_supervisor(submission_id)

    def list_ended(self, ended_before: float) -> dict[str, str]:
        """The Ray jobs Railyard submitted (their metadata names the Railyard job) that ended
        before ``ended_before`` (epoch seconds): submission id -> Railyard job id."""
        cutoff_ms = ended_before * 1000
        ended: dict[str, str] = {}
        for info in self._list_jobs():
            job_id = (info.metadata or {}).get("railyard_job_id")
            if info.submission_id and job_id and _status_of(info).is_terminal \
                    and info.end_time is not None and info.end_time < cutoff_ms:
                ended[info.submission_id] = job_id
        return ended

    def delete(self, submission_id: str) -> None:
        """Delete Ray's record of an ended job: its entry in Ray's job list (and so in
        `ray job status` and `ray job logs`). Ray leaves the log file on the node. A job Ray
        no longer has is already deleted."""
        self._on_job(self.client.delete_job, submission_id, "delete")

    def logs(self, submission_id: str) -> str:
        """The driver's log as Ray holds it."""
        try:
            return self.client.get_job_logs(submission_id)
        except Exception as exc:  # noqa: BLE001
            raise BackendUnavailableError(f"cannot read Ray job logs: {exc}") from None

    def node_pools(self, max_age_s: float = 5.0) -> dict[str, int]:
        """Alive nodes per pool label (``railyard.io/pool``), from Ray's state API."""
        return self._alive_pools(max_age_s)[0]

    def pool_cpus(self, max_age_s: float = 5.0) -> dict[str, float]:
        """Total CPUs of each pool's alive nodes (Ray's ``CPU`` resource), from the same
        cached node list as ``node_pools``: what capacity admission fills
        (railyard.control.capacity)."""
        return self._alive_pools(max_age_s)[1]

    def _alive_pools(self, max_age_s: float) -> tuple[dict[str, int], dict[str, float]]:
        from railyard.cluster.pools import POOL_LABEL

        with self._pools_lock:
            cached = self._pools_cache
            if cached and time.monotonic() - cached[0] < max_age_s:
                return cached[1], cached[2]
        from ray.util.state import list_nodes

        try:
            nodes = list_nodes(address=self.address, filters=[("state", "=", "ALIVE")],
                               timeout=int(min(10, self.request_timeout_s)),
                               raise_on_missing_output=False)
        except Exception as exc:  # noqa: BLE001
            raise BackendUnavailableError(f"cannot list Ray nodes: {exc}") from None
        counts: dict[str, int] = {}
        cpus: dict[str, float] = {}
        for node in nodes:
            pool = (node.labels or {}).get(POOL_LABEL)
            if pool:
                counts[pool] = counts.get(pool, 0) + 1
                total = (getattr(node, "resources_total", None) or {}).get("CPU", 0.0)
                cpus[pool] = cpus.get(pool, 0.0) + float(total)
        with self._pools_lock:
            self._pools_cache = (time.monotonic(), counts, cpus)
        return counts, cpus


def _client_with_timeout(address: str, timeout_s: float) -> JobSubmissionClient:
    """A JobSubmissionClient whose every HTTP request (the version check in its constructor
    included) gives up after ``timeout_s``, and which asks the cluster its Ray version once.

    Ray's SDK checks the version again before every submit that places its entrypoint
    (``entrypoint_num_cpus``, a label selector: every Railyard submit), one more request to
    the dashboard per job; the version its constructor read is checked instead."""
    from packaging.version import parse
    from ray.job_submission import JobSubmissionClient

    class TimedJobSubmissionClient(JobSubmissionClient):
        def _do_request(self, method: str, endpoint: str, **kwargs):  # type: ignore[no-untyped-def]
            kwargs.setdefault("timeout", timeout_s)
            return super()._do_request(method, endpoint, **kwargs)

        def _check_connection_and_version(self, min_version: str = "1.9",
                                          version_error_message: str | None = None) -> None:
            known = getattr(self, "_server_ray_version", None)
            if known is not None and parse(known) >= parse(min_version):
                return
            # Not read yet, or too old: Ray's own check asks, and raises its own error.
            super()._check_connection_and_version(
                min_version, version_error_message)  # type: ignore[arg-type]

    return TimedJobSubmissionClient(address)


def _status_of(info: Any) -> BackendStatus:
    """The status of one of Ray's job records (JobDetails or JobInfo)."""
    return BackendStatus(str(getattr(info.status, "value", info.status)), info.message)


def _kill_unscheduled_supervisor(submission_id: str) -> None:
    """Ray 2.60's stop_job only *asks* the job's supervisor actor to stop; a job still waiting
    for a node (its label selector matches none) has no running supervisor to ask, so Ray
    would keep it PENDING until RAY_JOB_START_TIMEOUT_SECONDS. Killing the actor ends it."""
    import ray
    from ray.dashboard.modules.job.common import (
        JOB_ACTOR_NAME_TEMPLATE,
        SUPERVISOR_ACTOR_RAY_NAMESPACE,
    )

    if not ray.is_initialized():
        return
    try:
        actor = ray.get_actor(JOB_ACTOR_NAME_TEMPLATE.format(job_id=submission_id),
                              namespace=SUPERVISOR_ACTOR_RAY_NAMESPACE)
        ray.kill(actor, no_restart=True)
    except ValueError:  # no such actor: already gone
        pass
