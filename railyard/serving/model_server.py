"""Serve a job's published model on Ray Serve, beside the Railyard API, behind the API's tokens.

Each model is its own Serve application, at a route prefix that does not give the job id away:

    GET  /models/<key>/          what the model is (manifest facts, input columns)
    POST /models/<key>/predict   {"rows": [{"col": value, ...}, ...]}
                                 → {"job_id": ..., "predictions": [{"prediction": ...}, ...]}

``<key>`` is :func:`serving_key` of the job id (32 hex digits of a SHA-256 of it) and the
application is ``model-<key>``: Ray Serve's proxy answers ``GET /-/routes`` itself, to anyone,
with every route prefix and application name, and has no switch to turn it off, so neither may
hold the job id. Whoever knows a job id computes its URL (:func:`route_prefix`; ``railyard
serve-model`` prints it); the listing gives no job id away (they carry 80 random bits).

Every route needs ``Authorization: Bearer <API token>``, checked as the API checks it: the
token's row in the job database (railyard.jobstore.tokens.authenticate) and the API's rule for a
job (railyard.control.access.check_job): the job's owner team or an admin may read the model and
predict; another team gets a 403; no token or a bad one a 401 with ``WWW-Authenticate``. A
replica remembers a token's caller for TOKEN_CACHE_S seconds (a revoked token stops working on a
model within that time). A body over RAILYARD_MAX_BODY_BYTES is a 413; rows that lack a feature,
carry a key the model does not know or a value of the wrong type are a 422 naming the row index
and the feature (``PublishedModel.check_records``). Errors are the API's
``{"error": {"type", "message", "details"}}``.

``deploy_model`` adds the application through the Ray dashboard's declarative Serve API,
re-submitting the applications already running (the API among them) unchanged. The model's
replicas get the API application's runtime env (its secrets directory, no secret itself), so
``get_settings()`` there reaches the API's job database; an application deployed before serving
keys (``model-<job id>``, no token asked) is removed when that job's model is deployed again.
"""

import hashlib
import logging
import math
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, cast

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from ray import serve
from ray.serve import Application, Deployment
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from railyard.config import Settings, get_settings
from railyard.control.access import Caller, check_job
from railyard.errors import (
    AuthError,
    BackendUnavailableError,
    ForbiddenError,
    PayloadTooLargeError,
    RailyardError,
    SpecError,
)
from railyard.jobstore import jobs, tokens
from railyard.jobstore.engine import get_engine
from railyard.jobstore.tables import Job
from railyard.serving.published import PartitionedModel, PublishedModel, load_published

log = logging.getLogger(__name__)

IMPORT_PATH = "railyard.serving.model_server:build_app"
DEPLOYMENT = "RailyardModel"
MAX_ROWS = 10_000
# How long a replica trusts a token it has looked up (seconds): revocation takes that long.
TOKEN_CACHE_S = 5.0
TOKEN_CACHE_SIZE = 1024
AUTH_SCHEME = 'Bearer realm="railyard"'


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


# --------------------------------------------------------------------------- who may use it

def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or a 401."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("no API token: send the header `Authorization: Bearer <token>` with the "
                        "token you use for the Railyard API (the CLI and SDK read RAILYARD_TOKEN "
                        "or $RAILYARD_HOME/token; an admin creates tokens with `railyard token "
                        "create --team TEAM`)")
    return token.strip()


class ModelAccess:
    """Who may use one job's model: the API's token table and its rule for a job's owner,
    with each token's caller remembered for ``ttl_s`` seconds (``clock``: monotonic seconds).
    The job database is the API's (``get_settings().resolved_database_url``) unless an
    ``engine`` is given."""

    def __init__(self, job_id: str, *, engine: Engine | None = None,
                 ttl_s: float = TOKEN_CACHE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.job_id = job_id
        self._engine = engine
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._callers: dict[str, tuple[float, Caller]] = {}
        self._job: Job | None = None   # its owner never changes

    @property
    def engine(self) -> Engine:
        """The job database."""
        return self._engine or get_engine(get_settings().resolved_database_url)

    def caller(self, token: str) -> Caller | None:
        """The caller behind a live token (None: unknown or revoked), from the cache while
        it is fresh."""
        key = tokens.hash_token(token)
        now = self._clock()
        with self._lock:
            hit = self._callers.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        row = tokens.authenticate(self.engine, token)
        with self._lock:
            if row is None:
                self._callers.pop(key, None)
                return None
            if len(self._callers) >= TOKEN_CACHE_SIZE:
                self._callers = {k: v for k, v in self._callers.items() if v[0] > now}
                if len(self._callers) >= TOKEN_CACHE_SIZE:
                    self._callers.clear()
            caller = Caller.from_token(row)
            self._callers[key] = (now + self._ttl_s, caller)
            return caller

    def authorize(self, authorization: str | None) -> Caller:
        """The caller of a request with this ``Authorization`` header: 401 without a valid
        token, 403 unless its team owns the job or it is an admin's, 503 while the job
        database is unreachable."""
        token = bearer_token(authorization)
        try:
            caller = self.caller(token)
            if caller is None:
                raise AuthError("the API token is not valid or was revoked; ask an admin for a "
                                "new one (`railyard token create --team TEAM`)",
                                details={"reason": "invalid_token"})
            if self._job is None:
                self._job = jobs.get_job(self.engine, job_id=self.job_id)
            check_job(caller, self._job)
        except SQLAlchemyError as exc:
            log.warning("job database unreachable: %s", exc)
            raise BackendUnavailableError("the job database is unreachable; retry shortly") \
                from None
        return caller


# --------------------------------------------------------------------------- the HTTP app

def error_response(exc: RailyardError) -> JSONResponse:
    """A RailyardError as the API answers it; a 401 also carries ``WWW-Authenticate``."""
    headers = None
    if exc.status_code == 401:
        invalid = isinstance(exc.details, dict) and exc.details.get("reason")
        headers = {"WWW-Authenticate": AUTH_SCHEME + (', error="invalid_token"' if invalid
                                                      else "")}
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 once it is (or declares to be) over ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body is {declared} bytes; the limit is {limit} "
                                   "bytes (RAILYARD_MAX_BODY_BYTES): send fewer rows per request")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes "
                                       "(RAILYARD_MAX_BODY_BYTES): send fewer rows per request")
    return bytes(body)


def parse_predict_request(body: bytes) -> PredictRequest:
    """The body as a PredictRequest, or a 422 naming what is wrong."""
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        problems = [{"field": ".".join(str(p) for p in e["loc"]) or "(body)",
                     "message": e["msg"]} for e in exc.errors()[:50]]
        raise SpecError('invalid request: ' + "; ".join(
            f"{p['field']}: {p['message']}" for p in problems[:5])
            + f'; send {{"rows": [{{"column": value, ...}}, ...]}} (1 to {MAX_ROWS} rows)',
            details=problems) from None


def model_api(model: PublishedModel | PartitionedModel, access: ModelAccess, *,
              max_body_bytes: int) -> FastAPI:
    """The HTTP app of one model (no /docs or /openapi.json: every route needs a token)."""
    app = FastAPI(title="Railyard model", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/")
    async def info(request: Request) -> Response:
        """The model's manifest facts and the columns /predict needs."""
        try:
            await run_in_threadpool(access.authorize, request.headers.get("authorization"))
        except RailyardError as exc:
            return error_response(exc)
        return JSONResponse(json_ready(model.describe()))

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        """Score the rows."""
        try:
            await run_in_threadpool(access.authorize, request.headers.get("authorization"))
            rows = parse_predict_request(await read_body(request, max_body_bytes)).rows
            predictions = await run_in_threadpool(model.predict_records, rows)
        except RailyardError as exc:
            return error_response(exc)
        answer = PredictResponse(job_id=model.job_id or access.job_id,
                                 predictions=json_ready(predictions))
        return JSONResponse(answer.model_dump())

    return app


# Everything the deployment's methods use must be defined above it: the class is pickled (with
# the module globals it refers to) when the decorator runs.
@serve.deployment(name=DEPLOYMENT, num_replicas=1, max_ongoing_requests=16,
                  ray_actor_options={"num_cpus": 1})
@serve.ingress()
class ModelServer:
    """Loads the model once per replica and serves :func:`model_api` (built at replica start,
    with the replica's settings)."""

    def __init__(self, model_dir: str, job_id: str | None = None) -> None:
        get_settings()  # loads the secrets directory first: the job database, S3 credentials
        self.model = load_published(model_dir)
        job = job_id or self.model.job_id
        if not job:
            raise ValueError(f"the model at {model_dir} names no job; deploy it with its job id")
        self.access = ModelAccess(job)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return model_api(self.model, self.access, max_body_bytes=get_settings().max_body_bytes)


def build_app(args: dict[str, str]) -> Application:
    """Serve application builder (``import_path``): ``args`` carries ``model_dir`` and
    ``job_id``."""
    # serve.deployment made ModelServer a Deployment; mypy ignores class decorators.
    return cast(Deployment, ModelServer).bind(args["model_dir"], args.get("job_id"))


# --------------------------------------------------------------------------- deploying

def serving_key(job_id: str) -> str:
    """The name a job's model is served under, which does not reveal the job id."""
    return hashlib.sha256(f"railyard-model:{job_id}".encode()).hexdigest()[:32]


def app_name(job_id: str) -> str:
    """The Serve application name of a job's model."""
    return f"model-{serving_key(job_id)}"


def legacy_app_name(job_id: str) -> str:
    """The application name of a job's model deployed before serving keys (no token asked,
    the job id listed at /-/routes): a new deploy or an undeploy removes it."""
    return f"model-{job_id}"


def route_prefix(job_id: str) -> str:
    """Where a job's model answers."""
    return f"/models/{serving_key(job_id)}"


def model_app_config(settings: Settings, *, job_id: str, model_dir: str,
                     num_replicas: int = 1,
                     runtime_env: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Serve application config of one job's model; ``runtime_env`` defaults to the
    environment ``settings`` give a Ray job or replica."""
    config = {
        "name": app_name(job_id), "route_prefix": route_prefix(job_id),
        "import_path": IMPORT_PATH, "args": {"model_dir": model_dir, "job_id": job_id},
        "runtime_env": ({"env_vars": settings.runtime_env_vars()} if runtime_env is None
                        else runtime_env),
        "deployments": [{"name": DEPLOYMENT, "num_replicas": num_replicas}],
    }
    if not config["runtime_env"]:
        del config["runtime_env"]
    return config


def api_runtime_env(details: dict[str, Any], api_import_path: str) -> dict[str, Any] | None:
    """The runtime env of the API application running on Serve ({} when it has none: its
    replicas read the nodes' environment), or None when no API runs there. A model's replicas
    get the same, so they reach the job database (and its tokens) as the API does, whatever
    the settings of whoever deploys the model."""
    for app in (details.get("applications") or {}).values():
        config = app.get("deployed_app_config") or {}
        if config.get("import_path") == api_import_path:
            return dict(config.get("runtime_env") or {})
    return None


def serve_config_with(details: dict[str, Any], app: dict[str, Any] | None, *,
                      drop: str | Collection[str], host: str, port: int) -> dict[str, Any]:
    """A Serve deploy config keeping every running application except those named in
    ``drop``, plus ``app``; the HTTP options of a running Serve are kept (Serve cannot change
    them live)."""
    dropped = {drop} if isinstance(drop, str) else set(drop)
    running = details.get("applications") or {}
    apps = [a["deployed_app_config"] for name, a in running.items()
            if name not in dropped and a.get("deployed_app_config")]
    http = details.get("http_options") if running else None
    return {"http_options": {"host": (http or {}).get("host", host),
                             "port": (http or {}).get("port", port)},
            "applications": apps + ([app] if app else [])}


def wait_until_serving(url: str, *, token: str | None, timeout: float,
                       interval: float = 1.0) -> None:
    """Poll ``url``/ until the model answers: 200 to ``token`` (its 401 or 403 is raised: the
    model runs but that token may not use it); without a token, its 401."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer: httpx.Response | None = httpx.get(f"{url}/", headers=headers, timeout=5)
        except httpx.HTTPError:
            answer = None
        if answer is not None and (answer.status_code == 200
                                   or (answer.status_code == 401 and not token)):
            return
        if answer is not None and answer.status_code in (401, 403) and token:
            try:
                message = answer.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = answer.text
            cls = ForbiddenError if answer.status_code == 403 else AuthError
            raise cls(f"the model is deployed at {url} but refuses this token: {message}")
        if time.monotonic() > deadline:
            raise BackendUnavailableError(f"the model did not answer at {url}/ within "
                                          f"{timeout:.0f}s; see the Serve logs in the dashboard")
        time.sleep(interval)


def deploy_model(settings: Settings, *, job_id: str, model_dir: str, address: str,
                 token: str | None = None, host: str = "127.0.0.1", port: int = 8000,
                 num_replicas: int = 1, timeout: float = 180.0) -> str:
    """Deploy the job's model on the cluster at ``address`` (with the runtime env of the API
    running there, else ``settings``'); return its URL once it answers (to ``token``, an API
    token of the job's team or an admin, when given)."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from railyard.cluster.local_cluster import SERVE_IMPORT_PATH

    try:
        client = ServeSubmissionClient(address)
        details = client.get_serve_details()
        config = serve_config_with(details, model_app_config(
            settings, job_id=job_id, model_dir=model_dir, num_replicas=num_replicas,
            runtime_env=api_runtime_env(details, SERVE_IMPORT_PATH)),
            drop=(app_name(job_id), legacy_app_name(job_id)), host=host, port=port)
        client.deploy_applications(config)
    except (OSError, RuntimeError, ValueError) as exc:  # requests' errors are OSErrors
        raise BackendUnavailableError(f"cannot deploy on Ray Serve at {address}: {exc}") \
            from None
    serve_host = config["http_options"]["host"]
    url = (f"http://{'127.0.0.1' if serve_host in ('0.0.0.0', '::') else serve_host}:"
           f"{config['http_options']['port']}{route_prefix(job_id)}")
    wait_until_serving(url, token=token, timeout=timeout)
    return url


def undeploy_model(*, job_id: str, address: str) -> None:
    """Remove the job's model application, keeping the others."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    client = ServeSubmissionClient(address)
    details = client.get_serve_details()
    http = details.get("http_options") or {}
    client.deploy_applications(serve_config_with(
        details, None, drop=(app_name(job_id), legacy_app_name(job_id)),
        host=http.get("host", "127.0.0.1"), port=http.get("port", 8000)))
