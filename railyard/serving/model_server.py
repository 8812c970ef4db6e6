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

A model can also be served by its registry alias (``models:/OWNER/NAME@ALIAS``): the key is
then the reference's, and each replica looks the alias up every ``alias_poll_s`` seconds and
swaps in the version it points at when it moves (checked against that job's recorded digests,
as any load), so the URL keeps answering with whatever the alias names.
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
from railyard.control.registry import parse_model_ref
from railyard.errors import (
    AuthError,
    BackendUnavailableError,
    ForbiddenError,
    PayloadTooLargeError,
    RailyardError,
    SpecError,
)
from railyard.jobstore import jobs, registry, tokens
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


class ServedModel:
    """What a replica serves: a model and who may use it (its job's access). A replica that
    follows an alias swaps both at once with :meth:`swap`; a request reads them once."""

    def __init__(self, model: PublishedModel | PartitionedModel, access: ModelAccess) -> None:
        self.current = (model, access)

    @property
    def job_id(self) -> str:
        """The job whose model is served now."""
        return self.current[1].job_id

    def swap(self, model: PublishedModel | PartitionedModel, access: ModelAccess) -> None:
        """Serve ``model`` from now on (one assignment: a request sees the old pair or the
        new one, never a mix)."""
        self.current = (model, access)


def model_api(served: ServedModel, *, max_body_bytes: int) -> FastAPI:
    """The HTTP app of one model (no /docs or /openapi.json: every route needs a token)."""
    app = FastAPI(title="Railyard model", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/")
    async def info(request: Request) -> Response:
        """The model's manifest facts and the columns /predict needs."""
        model, access = served.current
        try:
            await run_in_threadpool(access.authorize, request.headers.get("authorization"))
        except RailyardError as exc:
            return error_response(exc)
        return JSONResponse(json_ready(model.describe()))

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        """Score the rows."""
        model, access = served.current
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


def alias_target(engine: Engine, ref: str) -> Job | None:
    """The job of the version the alias ``ref`` (``models:/OWNER/NAME@ALIAS``) points at now,
    or None while the alias does not exist."""
    owner, name, alias = parse_model_ref(ref)
    if not isinstance(alias, str):
        raise SpecError(f"{ref!r} names a version, not an alias: only an alias can be followed",
                        details=[{"field": "alias", "message": "not an alias reference"}])
    found = registry.aliased_version(engine, owner=owner, name=name, alias=alias)
    version = None if found is None else found[1]
    return None if version is None else jobs.get_job(engine, job_id=version.job_id)


def follow_alias(served: ServedModel, ref: str, engine: Engine | None = None) -> bool:
    """Swap in the model the alias ``ref`` points at if it moved; True when it swapped. A
    deleted alias, or a version whose job has no model, leaves the current model serving.
    ``engine``: the job database (default: the settings')."""
    job = alias_target(engine or get_engine(get_settings().resolved_database_url), ref)
    if job is None or job.id == served.job_id:
        return False
    artifacts = dict(job.artifacts or {})
    if not artifacts.get("model_dir"):
        log.warning("alias %s points at job %s, which has no published model", ref, job.id)
        return False
    served.swap(load_published(artifacts["model_dir"], trusted=artifacts),
                ModelAccess(job.id, engine=engine))
    log.info("alias %s moved: now serving the model of job %s", ref, job.id)
    return True


def _poll_alias(served: ServedModel, ref: str, interval_s: float) -> None:
    """A replica's alias follower (a daemon thread): a failed lookup or load is logged and
    retried at the next tick; the model already served keeps answering."""
    while True:
        time.sleep(interval_s)
        try:
            follow_alias(served, ref)
        except Exception:   # logged with its traceback; the next tick tries again
            log.exception("following alias %s failed; still serving job %s", ref,
                          served.job_id)


# Everything the deployment's methods use must be defined above it: the class is pickled (with
# the module globals it refers to) when the decorator runs.
@serve.deployment(name=DEPLOYMENT, num_replicas=1, max_ongoing_requests=16,
                  ray_actor_options={"num_cpus": 1})
@serve.ingress()
class ModelServer:
    """Loads the model once per replica and serves :func:`model_api` (built at replica start,
    with the replica's settings); given an ``alias`` reference, follows it (module docstring)."""

    def __init__(self, model_dir: str, job_id: str | None = None, alias: str | None = None,
                 alias_poll_s: float = 10.0) -> None:
        get_settings()  # loads the secrets directory first: the job database, S3 credentials
        model = load_published(model_dir)
        job = job_id or model.job_id
        if not job:
            raise ValueError(f"the model at {model_dir} names no job; deploy it with its job id")
        self.served = ServedModel(model, ModelAccess(job))
        if alias:
            threading.Thread(target=_poll_alias, args=(self.served, alias, alias_poll_s),
                             name="railyard-alias-follower", daemon=True).start()

    def __serve_build_asgi_app__(self) -> FastAPI:
        return model_api(self.served, max_body_bytes=get_settings().max_body_bytes)


def build_app(args: dict[str, Any]) -> Application:
    """Serve application builder (``import_path``): ``args`` carries ``model_dir`` and
    ``job_id``, and for a served alias ``alias`` and ``alias_poll_s``."""
    # serve.deployment made ModelServer a Deployment; mypy ignores class decorators.
    return cast(Deployment, ModelServer).bind(args["model_dir"], args.get("job_id"),
                                              args.get("alias"),
                                              float(args.get("alias_poll_s", 10.0)))


# --------------------------------------------------------------------------- deploying

def serving_key(served_as: str) -> str:
    """The name a model is served under (``served_as``: the job id, or the alias reference
    for a followed alias), which does not reveal it."""
    return hashlib.sha256(f"railyard-model:{served_as}".encode()).hexdigest()[:32]


def app_name(served_as: str) -> str:
    """The Serve application name of a job's model (or of an alias's)."""
    return f"model-{serving_key(served_as)}"


def legacy_app_name(job_id: str) -> str:
    """The application name of a job's model deployed before serving keys (no token asked,
    the job id listed at /-/routes): a new deploy or an undeploy removes it."""
    return f"model-{job_id}"


def route_prefix(served_as: str) -> str:
    """Where a job's model (or an alias's, given its reference) answers."""
    return f"/models/{serving_key(served_as)}"


def model_app_config(settings: Settings, *, job_id: str, model_dir: str,
                     num_replicas: int = 1, runtime_env: dict[str, Any] | None = None,
                     alias: str | None = None) -> dict[str, Any]:
    """The Serve application config of one job's model, or with ``alias`` (a
    ``models:/OWNER/NAME@ALIAS`` reference whose current job is ``job_id``) of the model the
    alias names, followed as it moves; ``runtime_env`` defaults to the environment
    ``settings`` give a Ray job or replica."""
    served_as = alias or job_id
    args: dict[str, Any] = {"model_dir": model_dir, "job_id": job_id}
    if alias:
        args |= {"alias": alias, "alias_poll_s": settings.model_alias_poll_s}
    config = {
        "name": app_name(served_as), "route_prefix": route_prefix(served_as),
        "import_path": IMPORT_PATH, "args": args,
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
    them live, and so is where its proxies run)."""
    dropped = {drop} if isinstance(drop, str) else set(drop)
    running = details.get("applications") or {}
    apps = [a["deployed_app_config"] for name, a in running.items()
            if name not in dropped and a.get("deployed_app_config")]
    http = details.get("http_options") if running else None
    config: dict[str, Any] = {"http_options": {"host": (http or {}).get("host", host),
                                               "port": (http or {}).get("port", port)},
                              "applications": apps + ([app] if app else [])}
    if running and details.get("proxy_location"):
        config["proxy_location"] = details["proxy_location"]
    return config


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
                 num_replicas: int = 1, timeout: float = 180.0, alias: str | None = None) -> str:
    """Deploy the job's model on the cluster at ``address`` (with the runtime env of the API
    running there, else ``settings``'); return its URL once it answers (to ``token``, an API
    token of the job's team or an admin, when given). With ``alias`` (the reference whose
    current job is ``job_id``), the application follows the alias (module docstring)."""
    served_as = alias or job_id
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from railyard.cluster.local_cluster import SERVE_IMPORT_PATH

    try:
        client = ServeSubmissionClient(address)
        details = client.get_serve_details()
        config = serve_config_with(details, model_app_config(
            settings, job_id=job_id, model_dir=model_dir, num_replicas=num_replicas,
            runtime_env=api_runtime_env(details, SERVE_IMPORT_PATH), alias=alias),
            drop=(app_name(served_as), legacy_app_name(job_id)), host=host, port=port)
        client.deploy_applications(config)
    except (OSError, RuntimeError, ValueError) as exc:  # requests' errors are OSErrors
        raise BackendUnavailableError(f"cannot deploy on Ray Serve at {address}: {exc}") \
            from None
    serve_host = config["http_options"]["host"]
    url = (f"http://{'127.0.0.1' if serve_host in ('0.0.0.0', '::') else serve_host}:"
           f"{config['http_options']['port']}{route_prefix(served_as)}")
    wait_until_serving(url, token=token, timeout=timeout)
    return url


def undeploy_model(*, job_id: str, address: str) -> None:
    """Remove the job's model application (``job_id``: or the alias reference it was served
    as), keeping the others."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    client = ServeSubmissionClient(address)
    details = client.get_serve_details()
    http = details.get("http_options") or {}
    client.deploy_applications(serve_config_with(
        details, None, drop=(app_name(job_id), legacy_app_name(job_id)),
        host=http.get("host", "127.0.0.1"), port=http.get("port", 8000)))
