"""The /v1/teams routes: a team's quota (jobs and CPUs on Ray at once). A team token reads its
own team's quota; only an admin token sets one. The rules are in
:mod:`railyard.control.team_limits`."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from railyard.control import team_limits
from railyard.errors import SpecError
from railyard.spec.training_spec import spec_error_from_validation
from serve_app.deps import CurrentCaller, Service
from serve_app.errors import error_responses
from serve_app.schemas import TeamQuotaPublic, TeamQuotaUpdate

router = APIRouter(prefix="/v1/teams")


@router.get("/{team}/quota", response_model=TeamQuotaPublic, responses=error_responses(403))
def get_quota(team: str, svc: Service, caller: CurrentCaller) -> TeamQuotaPublic:
    """The team's quota in force, the admin's override of it, and its jobs' use now."""
    view = team_limits.read_quota(svc.engine, svc.settings, caller=caller, team=team)
    return TeamQuotaPublic(**asdict(view))


# The body is read by hand, after the app-wide JSON checks (serve_app.json_body): a body
# parameter would have FastAPI decode it first, answering a malformed one with a bare 400.
@router.put("/{team}/quota", response_model=TeamQuotaPublic,
            responses=error_responses(403, 422),
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/json": {"schema": TeamQuotaUpdate.model_json_schema()}}}})
async def put_quota(team: str, request: Request, svc: Service,
                    caller: CurrentCaller) -> TeamQuotaPublic:
    """Set the team's quota (admin only): ``max_jobs`` and ``max_cpus`` on Ray at once (0: no
    limit; null: the server's default). Its queued jobs are released on the new quota at the
    reconciler's next tick."""
    try:
        body = TeamQuotaUpdate.model_validate_json(await request.body())
    except ValidationError as exc:
        error = spec_error_from_validation(exc)
        raise SpecError("invalid quota: " + error.message.removeprefix("invalid training spec: ")
                        + "; send {\"max_jobs\": N, \"max_cpus\": N} (0: no limit, null: "
                        "the server's default)", details=error.details) from None
    view = await run_in_threadpool(
        team_limits.write_quota, svc.engine, svc.settings, caller=caller, team=team,
        max_jobs=body.max_jobs, max_cpus=body.max_cpus)
    return TeamQuotaPublic(**asdict(view))
