"""The /v1/models routes: the model registry. Every SUCCEEDED job is a version of (owner,
name); aliases point at versions and every move is recorded. A team token reads and moves its
own team's models only (403 otherwise), an admin token all. The rules are in
:mod:`railyard.control.registry`."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from railyard.control import registry
from railyard.errors import SpecError
from railyard.spec.training_spec import spec_error_from_validation
from serve_app.deps import CurrentCaller, Service
from serve_app.errors import error_responses

router = APIRouter(prefix="/v1/models")


class ModelListEntry(BaseModel):
    """A registered model in ``GET /v1/models``."""

    owner: str
    name: str
    latest_version: int
    versions: int
    aliases: dict[str, int]


class ModelVersionPublic(BaseModel):
    """One version of a model: the job that trained it and its metrics."""

    version: int
    job_id: str
    created_at: datetime
    metrics: dict[str, Any]
    workflow_name: str
    spec_hash: str


class AliasEventPublic(BaseModel):
    """One alias move: who (a team, or ``gate``) and why (``gate`` or ``person``)."""

    alias: str
    from_version: int | None
    to_version: int | None
    at: datetime
    actor: str
    reason: str
    job_id: str | None
    message: str | None


class ModelPublic(BaseModel):
    """``GET /v1/models/{owner}/{name}``."""

    owner: str
    name: str
    versions: list[ModelVersionPublic]
    aliases: dict[str, int]
    alias_events: list[AliasEventPublic]


class AliasPublic(BaseModel):
    """The version an alias points at, with its job."""

    owner: str
    name: str
    alias: str
    version: int
    updated_at: datetime
    job_id: str | None = None
    created_at: datetime | None = None
    metrics: dict[str, Any] | None = None
    workflow_name: str | None = None
    spec_hash: str | None = None


class AliasUpdate(BaseModel):
    """The body of ``PUT /v1/models/{owner}/{name}/aliases/{alias}``."""

    model_config = ConfigDict(extra="forbid")

    version: Annotated[int, Field(ge=1, strict=True)]
    message: Annotated[str | None, Field(max_length=2000)] = None


@router.get("", response_model=list[ModelListEntry], responses=error_responses(403))
def list_models(svc: Service, caller: CurrentCaller, owner: str | None = None,
                q: Annotated[str | None, Query(max_length=256)] = None) -> list[ModelListEntry]:
    """Registered models with their latest version and aliases: a team token sees its own
    team's (``owner`` of another team is a 403), an admin all; ``q`` matches in the name."""
    return [ModelListEntry(**m) for m in
            registry.list_models(svc.engine, caller=caller, owner=owner, q=q)]


@router.get("/{owner}/{name}", response_model=ModelPublic, responses=error_responses(403, 404))
def show_model(owner: str, name: str, svc: Service, caller: CurrentCaller) -> ModelPublic:
    """A model's versions (job, metrics, workflow, spec hash), aliases and alias moves."""
    return ModelPublic(**registry.show_model(svc.engine, caller=caller, owner=owner,
                                             name=name))


@router.get("/{owner}/{name}/aliases/{alias}", response_model=AliasPublic,
            responses=error_responses(403, 404))
def get_alias(owner: str, name: str, alias: str, svc: Service,
              caller: CurrentCaller) -> AliasPublic:
    """The version ``alias`` points at, with its job id."""
    return AliasPublic(**registry.get_alias(svc.engine, caller=caller, owner=owner, name=name,
                                            alias=alias))


# The body is read by hand, after the app-wide JSON checks (serve_app.json_body), as in
# serve_app.routes.teams: a body parameter would answer a malformed body with a bare 400.
@router.put("/{owner}/{name}/aliases/{alias}", response_model=AliasPublic,
            responses=error_responses(403, 404, 422),
            openapi_extra={"requestBody": {"required": True, "content": {
                "application/json": {"schema": AliasUpdate.model_json_schema()}}}})
async def put_alias(owner: str, name: str, alias: str, request: Request, svc: Service,
                    caller: CurrentCaller) -> AliasPublic:
    """Point ``alias`` at version ``{"version": N}`` (creating it); recorded as a move by a
    person (the token's team)."""
    body = parse_alias_update(await request.body())
    view = await run_in_threadpool(
        lambda: registry.set_alias(svc.engine, caller=caller, owner=owner, name=name,
                                   alias=alias, version=body.version, message=body.message))
    return AliasPublic(**view)


@router.delete("/{owner}/{name}/aliases/{alias}", status_code=204,
               responses=error_responses(403, 404))
def delete_alias(owner: str, name: str, alias: str, svc: Service,
                 caller: CurrentCaller) -> Response:
    """Remove ``alias`` (recorded as a move to no version)."""
    registry.delete_alias(svc.engine, caller=caller, owner=owner, name=name, alias=alias)
    return Response(status_code=204)


def parse_alias_update(raw: bytes) -> AliasUpdate:
    """The PUT body, or a 422 naming the field and the expected form."""
    try:
        if not raw.strip():
            raise SpecError("the request body is empty; send {\"version\": N}",
                            details=[{"field": "version", "message": "field required"}])
        json.loads(raw)
        return AliasUpdate.model_validate_json(raw)
    except ValidationError as exc:
        error = spec_error_from_validation(exc)
        raise SpecError("invalid alias update: "
                        + error.message.removeprefix("invalid training spec: ")
                        + "; send {\"version\": N} with N a registered version (1, 2, ...)",
                        details=error.details) from None
    except ValueError as exc:
        raise SpecError(f"request body is not valid JSON: {exc}; send {{\"version\": N}}",
                        details=[{"field": "(body)", "message": str(exc)}]) from None
