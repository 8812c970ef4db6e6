"""The Ray Serve deployment of the API. Import path for Serve configs and KubeRay's
RayService: ``serve_app.deployment:app``."""

from __future__ import annotations

from ray import serve

from serve_app.app import create_app

api = create_app()


@serve.deployment(name="RailyardAPI", num_replicas=1, ray_actor_options={"num_cpus": 0},
                  max_ongoing_requests=64)
@serve.ingress(api)
class RailyardAPI:
    """FastAPI ingress; settings come from the replica's environment (RAILYARD_*)."""


app = RailyardAPI.bind()
