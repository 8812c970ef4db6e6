"""The Ray Serve deployment of the API. Import path for Serve configs and KubeRay's
RayService: ``serve_app.deployment:app``.

Sized for throughput (benchmarks/bench_api_wrk.py): one replica takes up to
``MAX_ONGOING_REQUESTS`` at once (the API's handlers wait on Postgres, not the CPU; Starlette's
threadpool has 40 threads and the engine's pool 30 connections) and keeps no per-request
access log; the dependencies every request runs are async and skip the database for a token
checked in the last RAILYARD_TOKEN_CACHE_TTL_S seconds (serve_app.deps). The background
reconciler is kept off the request path: a pass runs at most ``RECONCILER_DUTY`` of the time
(a slow pass spaces the next out), at a lower CPU priority. The KubeRay RayService
(railyard.cluster.kuberay.serve_config) carries the same options. One replica: admission is
serialised per team by a lock inside this process (railyard.control.team_limits).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from ray import serve
from ray.serve import Deployment

from railyard.config import get_settings
from serve_app.app import create_app, freeze_startup_objects
from serve_app.deps import TokenCache

if TYPE_CHECKING:
    from railyard.control.service import JobService

log = logging.getLogger(__name__)
api = create_app()
# Checked tokens are trusted for RAILYARD_TOKEN_CACHE_TTL_S (5 s) per replica: a revoked token
# keeps working that long here.
api.state.token_cache = TokenCache()

DEPLOYMENT_NAME = "RailyardAPI"
MAX_ONGOING_REQUESTS = 100
# No runtime_env here: the application's (RAILYARD_* settings, from the Serve config) must reach
# the replica as it is.
DEPLOYMENT_OPTIONS: dict[str, Any] = {
    "name": DEPLOYMENT_NAME,
    "num_replicas": 1,
    "max_ongoing_requests": MAX_ONGOING_REQUESTS,
    "ray_actor_options": {"num_cpus": 0},
    "logging_config": {"enable_access_log": False},
}
# The reconciler's share of the time: after a pass of t seconds it waits at least
# t * (1 - duty) / duty (and at least RAILYARD_RECONCILE_INTERVAL_S).
RECONCILER_DUTY = 0.2
RECONCILER_NICE = 10
# Between ticks, the leading replica checks this often whether a full pool that jobs wait
# for has room again (one or two database queries; JobService.release_if_room).
RELEASE_CHECK_S = 0.25


def reconcile_pause(interval_s: float, pass_s: float, duty: float = RECONCILER_DUTY) -> float:
    """Seconds to wait before the next reconcile pass: the interval, longer after a slow pass
    (so the reconciler takes at most ``duty`` of the time), but never more than 3 intervals —
    queued jobs are released by these passes."""
    return min(max(interval_s, pass_s * (1 - duty) / duty), 3 * interval_s)


def lower_thread_priority(niceness: int = RECONCILER_NICE) -> None:
    """Make the calling thread yield the CPU to the request handlers (Linux: per-thread nice;
    elsewhere, or without permission, nothing)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


def _webhook_dispatcher(service: JobService) -> Any:
    """The webhook dispatcher (railyard.control.webhooks) of this replica."""
    from railyard.control.webhooks import WebhookDispatcher

    return WebhookDispatcher(service.engine, service.settings,
                             thread_setup=lower_thread_priority)


def _mlflow_exporter(service: JobService) -> Any:
    """The MLflow exporter (railyard.control.mlflow_export), or None without
    RAILYARD_MLFLOW_TRACKING_URI."""
    if not service.settings.mlflow_tracking_uri:
        return None
    from railyard.control.mlflow_export import MlflowExporter
    from railyard.serving.published import load_published

    return MlflowExporter(service.engine, service.settings,
                          load_model=lambda uri, artifacts: load_published(uri,
                                                                           trusted=artifacts))


@serve.deployment(**DEPLOYMENT_OPTIONS)
@serve.ingress(api)
class RailyardAPI:
    """FastAPI ingress; settings come from the replica's environment (RAILYARD_*).

    Each replica also runs the background reconciler loop, so a job whose driver died, whose
    pool never came, or which ran past its timeout is settled even if nobody reads it; with
    several replicas only the one holding the reconciler lock (railyard.control.leader) runs it.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        # Set while this replica holds the reconciler lock: the webhook dispatcher and the
        # MLflow exporter work then.
        self._leading = threading.Event()
        self._thread = threading.Thread(target=self._reconcile_loop, name="reconciler",
                                        daemon=True)
        self._thread.start()
        self._webhooks = threading.Thread(target=self._while_leading, name="webhooks",
                                          args=("webhook dispatcher", _webhook_dispatcher),
                                          daemon=True)
        self._webhooks.start()
        self._mlflow = threading.Thread(target=self._while_leading, name="mlflow-export",
                                        args=("MLflow exporter", _mlflow_exporter),
                                        daemon=True)
        self._mlflow.start()
        freeze_startup_objects()

    def _while_leading(self, what: str, build: Callable[[JobService], Any]) -> None:
        """Build a background worker (the webhook dispatcher, the MLflow exporter) once the
        database answers and run it, at low priority, until the replica stops: it works only
        while this replica holds the reconciler lease. ``build`` returns None when the
        worker is switched off."""
        lower_thread_priority()          # as the reconciler: requests come first
        worker = None
        while worker is None and not self._stop.wait(1.0):
            try:
                worker = build(api.state.service_factory())
            except Exception:  # the database is not up yet: try again
                log.exception("%s not started", what)
                continue
            if worker is None:
                return
        if worker is not None:
            worker.run(self._stop, leading=self._leading.is_set)

    def _reconcile_loop(self) -> None:
        from railyard.control.leader import ReconcilerLease

        lower_thread_priority()
        interval = get_settings().reconcile_interval_s
        lease: ReconcilerLease | None = None
        next_tick = time.monotonic() + interval
        while not self._stop.wait(max(0.0, min(RELEASE_CHECK_S,
                                               next_tick - time.monotonic()))):
            started = time.monotonic()
            if started < next_tick:          # between ticks: only a freed pool's queue
                if self._leading.is_set():
                    self._release_between_ticks()
                continue
            try:
                service = api.state.service_factory()
                lease = lease or ReconcilerLease(service.engine)
                if lease.held():             # one replica reconciles; the others stand by
                    self._leading.set()
                    service.reconcile_all()
                else:
                    self._leading.clear()
            except Exception:  # keep the loop alive through outages
                log.exception("background reconcile failed")
            next_tick = time.monotonic() + reconcile_pause(interval,
                                                           time.monotonic() - started)
        if lease is not None:
            lease.release()

    def _release_between_ticks(self) -> None:
        try:
            api.state.service_factory().release_if_room()
        except Exception:  # the next tick tries again
            log.exception("releasing the queue between ticks failed")

    def __del__(self) -> None:
        self._stop.set()


# serve.deployment made RailyardAPI a Deployment; mypy ignores class decorators.
app = cast(Deployment, RailyardAPI).bind()
