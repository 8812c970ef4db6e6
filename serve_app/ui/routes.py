"""The UI's pages and partials, as Starlette routes (see :mod:`serve_app.ui`).

Every page reads through the API's service layer: ``JobService`` (``list_jobs``, ``get``,
``cancel``, ``logs``, ``attempts``), the job store's read functions the API routes use, and
``check_job`` for each ``{job_id}`` — the rules the API applies, not a copy of them."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from railyard.control import team_limits
from railyard.control.access import check_job
from railyard.control.service import JobService
from railyard.errors import BackendUnavailableError, NotFoundError, RailyardError, SpecError
from railyard.jobstore import jobs, registry
from railyard.jobstore.tables import ACTIVE_STATUSES, JobStatus
from railyard.training.registry import available_workflows
from serve_app.deps import get_service
from serve_app.json_body import read_body
from serve_app.schemas import to_attempt_public, to_event_public, to_public
from serve_app.ui import views
from serve_app.ui.session import COOKIE, MAX_AGE_S, Session, check_csrf, read_session, sign_in

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 50
ARTIFACT_NAMES = ("model", "manifest", "metrics", "logs")
STATUS_CHOICES = [s.value for s in JobStatus]

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                          autoescape=True)
_env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
_env.filters["duration"] = lambda s: "" if s is None else (
    f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m {int(s % 60):02d}s")
_env.filters["when"] = lambda d: "" if d is None else d.strftime("%Y-%m-%d %H:%M:%S")

Handler = Callable[[Request, JobService, Session], Awaitable[Response]]


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> Response:
    """A page from ``templates/`` (autoescaped)."""
    html = _env.get_template(template).render(request=request, statuses=STATUS_CHOICES,
                                              **context)
    return HTMLResponse(html, status_code=status_code)


def _error_page(request: Request, exc: RailyardError, session: Session | None) -> Response:
    return render(request, "error.html", status_code=exc.status_code, session=session,
                  message=exc.message, code=exc.status_code)


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A signed-in route: no session redirects to the sign-in page (the landing page shows
    it in place); a RailyardError (403, 404, 409, 422) renders as an error page."""
    async def endpoint(request: Request) -> Response:
        svc = await get_service(request)
        session = await run_in_threadpool(read_session, svc.engine, svc.settings,
                                          request.cookies.get(COOKIE))
        if session is None:
            if request.url.path == "/":
                return render(request, "signin.html", session=None, error=None, next="/")
            if request.method != "GET" or request.url.path.startswith("/ui/"):
                return PlainTextResponse("sign in first", status_code=401)
            return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)
        try:
            return await handler(request, svc, session)
        except RailyardError as exc:
            return _error_page(request, exc, session)
    return endpoint


async def _form(request: Request, svc: JobService) -> dict[str, str]:
    """An urlencoded form body (size-limited like the API's), one value per field."""
    body = await read_body(request, svc.settings.max_body_bytes)
    return {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}


def _safe_next(target: str | None) -> str:
    """A local path to go back to after sign-in (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


# --------------------------------------------------------------------------- sign-in

async def signin_form(request: Request) -> Response:
    """GET /signin: the token form."""
    return render(request, "signin.html", session=None, error=None,
                  next=_safe_next(request.query_params.get("next")))


async def signin(request: Request) -> Response:
    """POST /signin: check the token, set the session cookie, go to ``next``."""
    svc = await get_service(request)
    form = await _form(request, svc)
    signed = await run_in_threadpool(sign_in, svc.engine, svc.settings, form.get("token", ""))
    target = _safe_next(form.get("next"))
    if signed is None:
        return render(request, "signin.html", status_code=401, session=None, next=target,
                      error="That token is not valid or was revoked. An admin creates tokens "
                            "with `railyard token create --team TEAM`.")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, signed[0], max_age=MAX_AGE_S, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")
    return response


async def _signout(request: Request, svc: JobService, session: Session) -> Response:
    check_csrf(session, (await _form(request, svc)).get("csrf"))
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict",
                           secure=request.url.scheme == "https")
    return response


# --------------------------------------------------------------------------- jobs list

def _filters(request: Request) -> views.Filters:
    q = request.query_params
    status = q.get("status", "").strip().upper()
    if status and status not in STATUS_CHOICES:
        raise SpecError(f"status={status!r} is not a job status; use one of "
                        f"{', '.join(STATUS_CHOICES)}", details=[{"field": "status"}])
    return views.Filters(owner=q.get("owner", "").strip(), project=q.get("project", "").strip(),
                         status=status, model=q.get("model", "").strip(),
                         q=q.get("q", "").strip())


def _list_context(request: Request, svc: JobService, session: Session) -> dict[str, Any]:
    filters = _filters(request)
    cursor = request.query_params.get("cursor") or None
    result = views.list_page(svc, session.caller, filters, limit=PAGE_SIZE, cursor=cursor)
    query = {k: v for k, v in vars(filters).items() if v}
    next_url = f"/?{urlencode({**query, 'cursor': result.next_cursor})}" \
        if result.next_cursor else None
    here = {**query, "cursor": cursor} if cursor else query
    return {"page": result, "filters": filters, "next_url": next_url, "cursor": cursor,
            "rows_url": f"/ui/rows?{urlencode(here)}", "session": session}


async def _jobs_page(request: Request, svc: JobService, session: Session) -> Response:
    context = await run_in_threadpool(_list_context, request, svc, session)
    return render(request, "jobs.html", **context)


async def _job_rows(request: Request, svc: JobService, session: Session) -> Response:
    context = await run_in_threadpool(_list_context, request, svc, session)
    return render(request, "job_rows.html", **context)


# --------------------------------------------------------------------------- one job

def _readable_job(svc: JobService, session: Session, job_id: str) -> Any:
    job = jobs.get_job(svc.engine, job_id=job_id)
    check_job(session.caller, job)
    return job


def _manifest_reports(svc: JobService, job: Any) -> dict[str, Any]:
    """The ``reports`` entry of the job's model manifest (curve points, importance), or {}."""
    from railyard.artifacts.artifact_store import ArtifactStore

    uri = (job.artifacts or {}).get("manifest")
    if not uri:
        return {}
    try:
        manifest = json.loads(ArtifactStore(svc.settings.resolved_artifact_root).get_bytes(uri))
    except (OSError, ValueError):
        return {}
    reports = manifest.get("reports") if isinstance(manifest, dict) else None
    return reports if isinstance(reports, dict) else {}


def _job_context(svc: JobService, session: Session, job_id: str) -> dict[str, Any]:
    _readable_job(svc, session, job_id)
    job = svc.get(job_id)
    events = jobs.list_events(svc.engine, job_id=job_id)
    public = to_public(job, events)
    spec = job.spec or {}
    tune = (spec.get("train") or {}).get("tune")
    summary = (job.metrics or {}).get("tune") or {}
    trials = jobs.list_trials(svc.engine, job_id=job_id) if tune else []
    partitions = jobs.list_partition_models(svc.engine, job_id=job_id) \
        if (spec.get("train") or {}).get("partition_by") else []
    reports = _manifest_reports(svc, job) if job.status == JobStatus.SUCCEEDED.value else {}
    created = jobs.as_utc(job.created_at)
    metric = summary.get("metric") or (tune or {}).get("metric") or "auc"
    charts = {
        "gantt": views.attempt_phases(events, created),
        "curves": reports.get("curves") or {},
        "importance": (reports.get("feature_importance") or {}).get("top") or [],
        "predicted_vs_actual": reports.get("predicted_vs_actual") or {},
        "progress": views.progress_points(events),
        "trials": views.trial_view(trials, metric, summary.get("mode")
                                   or (tune or {}).get("mode") or "max") if trials else {},
        "partitions": [{"partition": p.get("partition"),
                        "value": (p.get("metrics") or {}).get(
                            (views.main_metric({"holdout": p.get("metrics") or {}})
                             or ("", 0))[0])} for p in partitions],
    }
    registered = registry.version_of_job(svc.engine, job_id=job.id)
    aliases = sorted(alias for alias, version in registry.aliases_of(
        svc.engine, owner=job.owner, name=job.model_name).items()
        if registered is not None and version == registered.version)
    return {"job": public, "active": JobStatus(job.status) in ACTIVE_STATUSES,
            "lineage": dict(job.lineage or {}), "promotion": (job.metrics or {}).get("promotion"),
            "registered": registered, "aliases": aliases,
            "attempts": [to_attempt_public(a) for a in svc.attempts(job_id)],
            "events": [to_event_public(e) for e in events],
            "trials": trials, "partitions": partitions, "session": session,
            "artifacts": [n for n in ARTIFACT_NAMES if (job.artifacts or {}).get(n)],
            "holdout": (job.metrics or {}).get("holdout") or {},
            "charts": charts, "duration": views.duration_s(job)}


async def _job_page(request: Request, svc: JobService, session: Session) -> Response:
    context = await run_in_threadpool(_job_context, svc, session,
                                      request.path_params["job_id"])
    return render(request, "job.html", **context)


async def _job_log(request: Request, svc: JobService, session: Session) -> Response:
    job_id = request.path_params["job_id"]
    raw = request.query_params.get("offset", "0")
    if not raw.isdigit():
        raise SpecError(f"offset={raw!r}: give a byte offset, 0 or more",
                        details=[{"field": "offset"}])

    def read() -> tuple[str, str]:
        _readable_job(svc, session, job_id)
        status = svc.get(job_id).status       # before the read: a follower reads once more
        return svc.logs(job_id, offset=int(raw)), status

    text, status = await run_in_threadpool(read)
    size = getattr(text, "size", len(text.encode()))
    return PlainTextResponse(text, headers={"X-Log-Size": str(size), "X-Job-Status": status,
                                            "Cache-Control": "no-store"})


async def _cancel(request: Request, svc: JobService, session: Session) -> Response:
    job_id = request.path_params["job_id"]
    check_csrf(session, (await _form(request, svc)).get("csrf"))

    def cancel() -> None:
        _readable_job(svc, session, job_id)
        svc.cancel(job_id)

    await run_in_threadpool(cancel)
    return RedirectResponse(f"/jobs/{quote(job_id)}", status_code=303)


async def _artifact(request: Request, svc: JobService, session: Session) -> Response:
    job_id, name = request.path_params["job_id"], request.path_params["name"]

    def fetch() -> tuple[bytes, str]:
        from railyard.artifacts.artifact_store import ArtifactStore

        job = _readable_job(svc, session, job_id)
        uri = (job.artifacts or {}).get(name) if name in ARTIFACT_NAMES else None
        if not uri:
            have = [n for n in ARTIFACT_NAMES if (job.artifacts or {}).get(n)]
            raise NotFoundError(f"job {job_id} has no artifact {name!r}; it has "
                                f"{', '.join(have) or 'none yet'}")
        return ArtifactStore(svc.settings.resolved_artifact_root).get_bytes(uri), uri

    data, uri = await run_in_threadpool(fetch)
    filename = uri.rstrip("/").rsplit("/", 1)[-1] or name
    media = mimetypes.guess_type(filename)[0] or "application/octet-stream"
    return Response(data, media_type=media, headers={
        "Content-Disposition": f'attachment; filename="{quote(filename)}"'})


# --------------------------------------------------------------------------- other pages

async def _compare(request: Request, svc: JobService, session: Session) -> Response:
    ids = [i for i in request.query_params.get("ids", "").split(",") if i.strip()]
    if not 2 <= len(ids) <= 4:
        raise SpecError(f"ids: pick 2 to 4 jobs to compare (got {len(ids)}); tick them on "
                        "the jobs page", details=[{"field": "ids"}])

    def load() -> dict[str, Any]:
        picked = [_readable_job(svc, session, i.strip()) for i in ids]
        publics = [to_public(j, []) for j in picked]
        names = sorted({k for j in picked for k in ((j.metrics or {}).get("holdout") or {})})
        curves = []
        for job in picked:
            reports = _manifest_reports(svc, job) \
                if job.status == JobStatus.SUCCEEDED.value else {}
            curves.append({"id": job.id, "name": job.model_name,
                           "roc": (reports.get("curves") or {}).get("roc_points")})
        return {"jobs": publics, "metric_names": names,
                "spec_rows": views.compare_rows([j.spec or {} for j in picked]),
                "curves": curves, "session": session}

    return render(request, "compare.html", **await run_in_threadpool(load))


def ray_nodes(address: str, timeout_s: float) -> list[dict[str, Any]]:
    """Every node Ray knows (alive or dead): id, address, state, pool label and CPUs, from
    Ray's state API; BackendUnavailableError when Ray does not answer."""
    from ray.util.state import list_nodes

    from railyard.cluster.pools import POOL_LABEL

    try:
        nodes = list_nodes(address=address, timeout=int(max(1, min(10, timeout_s))),
                           raise_on_missing_output=False, detail=True)
    except Exception as exc:  # noqa: BLE001 - any failure to reach Ray is "unavailable"
        raise BackendUnavailableError(f"cannot list Ray nodes: {exc}") from None
    return sorted(({"id": n.node_id, "ip": n.node_ip, "state": n.state,
                    "head": bool(n.is_head_node),
                    "pool": (n.labels or {}).get(POOL_LABEL) or "",
                    "cpus": float((n.resources_total or {}).get("CPU", 0.0))}
                   for n in nodes), key=lambda n: (not n["head"], n["pool"], n["ip"]))


async def _cluster(request: Request, svc: JobService, session: Session) -> Response:
    def load() -> dict[str, Any]:
        try:
            nodes, cpus, ray_error = svc.backend.node_pools(), svc.backend.pool_cpus(), None
            node_list = ray_nodes(svc.settings.ray_address, svc.settings.ray_request_timeout_s)
        except BackendUnavailableError as exc:
            nodes, cpus, ray_error, node_list = {}, {}, exc.message, []
        caller = session.caller
        active = [j for j in jobs.list_active_jobs(svc.engine)
                  if caller.is_admin or j.owner == caller.team]
        teams: dict[str, dict[str, int]] = {}
        for job in active:
            counts = teams.setdefault(job.owner, {"running": 0, "pending": 0, "queued": 0})
            counts[job.status.lower()] = counts.get(job.status.lower(), 0) + 1
        queue, stored = team_limits.visible_queue(svc.engine, svc.settings, caller=caller)
        pools = sorted(set(nodes) | set(cpus) | set(queue))
        return {"pools": [{"name": p, "nodes": nodes.get(p, 0), "cpus": cpus.get(p, 0.0),
                           "queued": queue[p][0] if p in queue else 0} for p in pools],
                "teams": teams, "ray_error": ray_error, "session": session,
                "nodes": node_list,
                "queue": [{"pool": pool, "job_id": pl.job.id, "owner": pl.job.owner,
                           "priority": pl.job.priority, "position": pl.position,
                           "reason": pl.reason or stored.get(pl.job.id)}
                          for pool, (_, places) in queue.items() for pl in places]}

    return render(request, "cluster.html", **await run_in_threadpool(load))


async def _workflows(request: Request, svc: JobService, session: Session) -> Response:
    flows = [{"name": name, "framework": cls.framework, "doc": (cls.__doc__ or "").strip(),
              "params": sorted(cls.param_names())}
             for name, cls in sorted(available_workflows().items())]
    return render(request, "workflows.html", workflows=flows, session=session)


async def plotly_js(request: Request) -> Response:
    """The charting library, served from the installed ``plotly`` package (no CDN)."""
    import plotly

    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return FileResponse(path, media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=86400"})


def ui_routes() -> list[BaseRoute]:
    """The UI's routes (URL layout: ``/`` jobs, ``/jobs/{job_id}``, ``/signin``, ``/signout``,
    ``/compare?ids=a,b``, ``/cluster``, ``/workflows``, assets under ``/ui/static/``)."""
    return [
        Route("/", page(_jobs_page), methods=["GET"]),
        Route("/signin", signin_form, methods=["GET"]),
        Route("/signin", signin, methods=["POST"]),
        Route("/signout", page(_signout), methods=["POST"]),
        Route("/ui/rows", page(_job_rows), methods=["GET"]),
        Route("/jobs/{job_id}", page(_job_page), methods=["GET"]),
        Route("/jobs/{job_id}/log", page(_job_log), methods=["GET"]),
        Route("/jobs/{job_id}/cancel", page(_cancel), methods=["POST"]),
        Route("/jobs/{job_id}/artifacts/{name}", page(_artifact), methods=["GET"]),
        Route("/compare", page(_compare), methods=["GET"]),
        Route("/cluster", page(_cluster), methods=["GET"]),
        Route("/workflows", page(_workflows), methods=["GET"]),
        Route("/ui/static/vendor/plotly.min.js", plotly_js, methods=["GET"]),
        Mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static"),
    ]


