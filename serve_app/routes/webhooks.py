"""The /v1/webhooks routes: register, list and delete a team's webhook endpoints, and read an
endpoint's delivery log. The rules are in :mod:`railyard.control.webhooks_endpoints`; the
dispatcher that delivers is :mod:`railyard.control.webhooks`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from railyard.control import webhooks_endpoints
from railyard.errors import SpecError
from railyard.jobstore.jobs import as_utc
from railyard.jobstore.tables import WebhookEndpoint
from railyard.spec.training_spec import spec_error_from_validation
from serve_app.deps import CurrentCaller, Service
from serve_app.errors import error_responses
from serve_app.schemas import (
    WebhookAttemptPublic,
    WebhookCreate,
    WebhookCreated,
    WebhookDeliveryList,
    WebhookDeliveryPublic,
    WebhookList,
    WebhookPublic,
)

router = APIRouter(prefix="/v1/webhooks")


def _public(endpoint: WebhookEndpoint) -> WebhookPublic:
    return WebhookPublic(id=endpoint.id, url=endpoint.url, events=endpoint.events,
                         owner=endpoint.owner, created_by=endpoint.created_by,
                         created_at=as_utc(endpoint.created_at))


# The body is read by hand, after the app-wide JSON checks (serve_app.json_body), as in
# serve_app.routes.teams.
@router.post("", status_code=201, response_model=WebhookCreated,
             responses=error_responses(403, 422),
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": WebhookCreate.model_json_schema()}}}})
async def create_webhook(request: Request, svc: Service,
                         caller: CurrentCaller) -> WebhookCreated:
    """Register an endpoint for the events (some of RUNNING, SUCCEEDED, FAILED, CANCELLED) of
    the jobs its team owns. The URL must be http(s) on a public host (else a 422, unless the
    host is in RAILYARD_WEBHOOK_ALLOWED_HOSTS). The secret is never shown again."""
    try:
        body = WebhookCreate.model_validate_json(await request.body())
    except ValidationError as exc:
        error = spec_error_from_validation(exc)
        raise SpecError("invalid webhook: " + error.message.removeprefix(
            "invalid training spec: ") + "; send {\"url\": \"https://…\", \"events\": "
            "[\"SUCCEEDED\", \"FAILED\"], \"secret\": \"…\"}", details=error.details) from None
    made = await run_in_threadpool(
        webhooks_endpoints.register, svc.engine, svc.settings, caller=caller, url=body.url,
        events=body.events, secret=body.secret, owner=body.owner)
    return WebhookCreated(**_public(made.endpoint).model_dump(), secret=made.generated_secret)


@router.get("", response_model=WebhookList, responses=error_responses(403))
def list_webhooks(svc: Service, caller: CurrentCaller) -> WebhookList:
    """The caller's team's webhooks (an admin token: every one)."""
    found = webhooks_endpoints.list_for(svc.engine, caller=caller)
    return WebhookList(webhooks=[_public(e) for e in found])


@router.delete("/{webhook_id}", status_code=204, responses=error_responses(403, 404))
def delete_webhook(webhook_id: str, svc: Service, caller: CurrentCaller) -> Response:
    """Remove a webhook and its delivery log; pending deliveries are dropped."""
    webhooks_endpoints.delete(svc.engine, caller=caller, endpoint_id=webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=WebhookDeliveryList,
            responses=error_responses(403, 404))
def list_deliveries(webhook_id: str, svc: Service, caller: CurrentCaller,
                    limit: Annotated[int, Query(ge=1, le=200)] = 50) -> WebhookDeliveryList:
    """The webhook's newest deliveries, each with its attempts: time, HTTP status, error and
    when the next retry is due."""
    found = webhooks_endpoints.deliveries(svc.engine, caller=caller, endpoint_id=webhook_id,
                                          limit=limit)
    return WebhookDeliveryList(deliveries=[
        WebhookDeliveryPublic(
            id=d.id or 0, event_id=d.event_id, event_type=d.event_type, job_id=d.job_id,
            status=d.status, created_at=as_utc(d.created_at),
            next_attempt_at=as_utc(d.next_attempt_at),
            attempts=[WebhookAttemptPublic(at=as_utc(a.at), http_status=a.http_status,
                                           error=a.error, duration_ms=a.duration_ms,
                                           next_retry_at=as_utc(a.next_retry_at))
                      for a in attempts])
        for d, attempts in found])
