"""The Ray Serve deployment of the API. Import path for Serve configs and KubeRay's
RayService: ``serve_app.deployment:app``."""

from __future__ import annotations

import logging
import threading

from ray import serve

from railyard.config import get_settings
from serve_app.app import create_app

log = logging.getLogger(__name__)
api = create_app()


@serve.deployment(name="RailyardAPI", num_replicas=1, ray_actor_options={"num_cpus": 0},
                  max_ongoing_requests=64)
@serve.ingress(api)
class RailyardAPI:
    """FastAPI ingress; settings come from the replica's environment (RAILYARD_*).

    Each replica also runs the background reconciler, so a job whose driver died, whose pool
    never came, or which ran past its timeout is settled even if nobody reads it.
    """

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._reconcile_loop, name="reconciler",
                                        daemon=True)
        self._thread.start()

    def _reconcile_loop(self) -> None:
        interval = get_settings().reconcile_interval_s
        while not self._stop.wait(interval):
            try:
                api.state.service_factory().reconcile_all()
            except Exception:  # noqa: BLE001 - keep the loop alive through outages
                log.exception("background reconcile failed")

    def __del__(self) -> None:
        self._stop.set()


app = RailyardAPI.bind()
