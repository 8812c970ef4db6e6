"""The Ray Serve deployment of the API. Import path for Serve configs and KubeRay's
RayService: ``serve_app.deployment:app``."""

from __future__ import annotations

import logging
import threading
from typing import cast

from ray import serve
from ray.serve import Deployment

from railyard.config import get_settings
from serve_app.app import create_app

log = logging.getLogger(__name__)
api = create_app()


@serve.deployment(name="RailyardAPI", num_replicas=1, ray_actor_options={"num_cpus": 0},
                  max_ongoing_requests=64)
@serve.ingress(api)
class RailyardAPI:
    """FastAPI ingress; settings come from the replica's environment (RAILYARD_*).

    Each replica also runs the background reconciler loop, so a job whose driver died, whose
    pool never came, or which ran past its timeout is settled even if nobody reads it; with
    several replicas only the one holding the reconciler lock (railyard.control.leader) runs it.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reconcile_loop, name="reconciler",
                                        daemon=True)
        self._thread.start()

    def _reconcile_loop(self) -> None:
        from railyard.control.leader import ReconcilerLease

        interval = get_settings().reconcile_interval_s
        lease: ReconcilerLease | None = None
        while not self._stop.wait(interval):
            try:
                service = api.state.service_factory()
                lease = lease or ReconcilerLease(service.engine)
                if lease.held():             # one replica reconciles; the others stand by
                    service.reconcile_all()
            except Exception:  # keep the loop alive through outages
                log.exception("background reconcile failed")
        if lease is not None:
            lease.release()

    def __del__(self) -> None:
        self._stop.set()


# serve.deployment made RailyardAPI a Deployment; mypy ignores class decorators.
app = cast(Deployment, RailyardAPI).bind()
