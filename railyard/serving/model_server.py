"""Serve a job's published model on Ray Serve, beside the Railyard API.

Each model is its own Serve application, ``model-<job id>`` at ``/models/<job id>``:

    GET  /models/<job id>/          what the model is (manifest facts, input columns)
    POST /models/<job id>/predict   {"rows": [{"col": value, ...}, ...]}
                                    → {"job_id": ..., "predictions": [{"prediction": ...}, ...]}

``deploy_model`` adds the application through the Ray dashboard's declarative Serve API,
re-submitting the applications already running (the API among them) unchanged.
"""

# No ``from __future__ import annotations`` here: Serve's class-based ingress re-creates the
# route functions elsewhere, where string annotations no longer resolve, and FastAPI then
# takes the request body model for a query parameter (a 422 on every /predict).
import math
from typing import Any, cast

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from ray import serve
from ray.serve import Application, Deployment

from railyard.config import Settings
from railyard.errors import BackendUnavailableError, RailyardError
from railyard.serving.published import load_published

IMPORT_PATH = "railyard.serving.model_server:build_app"
DEPLOYMENT = "RailyardModel"
MAX_ROWS = 10_000

api = FastAPI(title="Railyard model")


class PredictRequest(BaseModel):
    """Rows to score, as JSON objects keyed by column name."""

    rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ROWS)


class PredictResponse(BaseModel):
    """One object of prediction columns per input row (NaN is null)."""

    job_id: str | None
    predictions: list[dict[str, Any]]


def json_ready(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


# Everything the deployment's methods use must be defined above it: the class is pickled (with
# the module globals it refers to) when the decorator runs.
@serve.deployment(name=DEPLOYMENT, num_replicas=1, max_ongoing_requests=16,
                  ray_actor_options={"num_cpus": 1})
@serve.ingress(api)
class ModelServer:
    """Loads the model once per replica and answers /predict."""

    def __init__(self, model_dir: str) -> None:
        self.model = load_published(model_dir)

    @api.get("/")
    def info(self) -> dict[str, Any]:
        """The model's manifest facts and the columns /predict needs."""
        return self.model.describe()

    @api.post("/predict")
    def predict(self, request: PredictRequest) -> PredictResponse:
        """Score the rows."""
        try:
            predictions = self.model.predict_records(request.rows)
        except RailyardError as exc:
            raise HTTPException(exc.status_code, exc.to_dict()["error"]) from None
        return PredictResponse(job_id=self.model.job_id, predictions=json_ready(predictions))


def build_app(args: dict[str, str]) -> Application:
    """Serve application builder (``import_path``): ``args`` carries ``model_dir``."""
    # serve.deployment made ModelServer a Deployment; mypy ignores class decorators.
    return cast(Deployment, ModelServer).bind(args["model_dir"])


def app_name(job_id: str) -> str:
    """The Serve application name of a job's model."""
    return f"model-{job_id}"


def route_prefix(job_id: str) -> str:
    """Where a job's model answers."""
    return f"/models/{job_id}"


def model_app_config(settings: Settings, *, job_id: str, model_dir: str,
                     num_replicas: int = 1) -> dict[str, Any]:
    """The Serve application config of one job's model."""
    return {
        "name": app_name(job_id), "route_prefix": route_prefix(job_id),
        "import_path": IMPORT_PATH, "args": {"model_dir": model_dir},
        "runtime_env": {"env_vars": settings.runtime_env_vars()},
        "deployments": [{"name": DEPLOYMENT, "num_replicas": num_replicas}],
    }


def serve_config_with(details: dict[str, Any], app: dict[str, Any] | None, *, drop: str,
                      host: str, port: int) -> dict[str, Any]:
    """A Serve deploy config keeping every running application except ``drop``, plus ``app``;
    the HTTP options of a running Serve are kept (Serve cannot change them live)."""
    running = details.get("applications") or {}
    apps = [a["deployed_app_config"] for name, a in running.items()
            if name != drop and a.get("deployed_app_config")]
    http = details.get("http_options") if running else None
    return {"http_options": {"host": (http or {}).get("host", host),
                             "port": (http or {}).get("port", port)},
            "applications": apps + ([app] if app else [])}


def deploy_model(settings: Settings, *, job_id: str, model_dir: str, address: str,
                 host: str = "127.0.0.1", port: int = 8000, num_replicas: int = 1,
                 timeout: float = 180.0) -> str:
    """Deploy the job's model on the cluster at ``address``; return its URL once it answers."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    try:
        client = ServeSubmissionClient(address)
        details = client.get_serve_details()
        config = serve_config_with(details, model_app_config(
            settings, job_id=job_id, model_dir=model_dir, num_replicas=num_replicas),
            drop=app_name(job_id), host=host, port=port)
        client.deploy_applications(config)
    except (OSError, RuntimeError, ValueError) as exc:  # requests' errors are OSErrors
        raise BackendUnavailableError(f"cannot deploy on Ray Serve at {address}: {exc}") \
            from None
    serve_host = config["http_options"]["host"]
    url = (f"http://{'127.0.0.1' if serve_host in ('0.0.0.0', '::') else serve_host}:"
           f"{config['http_options']['port']}{route_prefix(job_id)}")
    from railyard.cluster.local_cluster import wait_for_http_ok

    if not wait_for_http_ok(f"{url}/", timeout=timeout, interval=1.0):
        raise BackendUnavailableError(f"the model did not answer at {url}/ within "
                                      f"{timeout:.0f}s; see the Serve logs in the dashboard")
    return url


def undeploy_model(*, job_id: str, address: str) -> None:
    """Remove the job's model application, keeping the others."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    client = ServeSubmissionClient(address)
    details = client.get_serve_details()
    http = details.get("http_options") or {}
    client.deploy_applications(serve_config_with(
        details, None, drop=app_name(job_id), host=http.get("host", "127.0.0.1"),
        port=http.get("port", 8000)))
