"""Registering webhooks, and who may see them: a team token registers, lists, deletes and
reads the deliveries of its own team's endpoints (they receive the events of the jobs the team
owns); an admin token may name any ``owner``, or none to receive every team's events, and sees
every endpoint. The URL passes :func:`railyard.control.webhooks_urls.check_url`; the secret is
stored encrypted and never returned, except a generated one, once, in the creation answer."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from railyard.config import Settings
from railyard.control.access import Caller
from railyard.control.webhooks_secrets import SecretBox
from railyard.control.webhooks_urls import Resolver, check_url, resolve
from railyard.errors import ForbiddenError, SpecError
from railyard.jobstore import webhooks
from railyard.jobstore.tables import WebhookAttempt, WebhookDelivery, WebhookEndpoint

MIN_SECRET_CHARS, MAX_SECRET_CHARS = 16, 256
MAX_URL_CHARS = 2048


@dataclass(frozen=True)
class Registered:
    """A new endpoint, and its secret when the server generated it (shown this once)."""

    endpoint: WebhookEndpoint
    generated_secret: str | None


def _invalid(field: str, why: str) -> SpecError:
    return SpecError(f"invalid webhook: {field}: {why}",
                     details=[{"field": field, "message": why}])


def check_events(events: Sequence[str]) -> list[str]:
    """The event types, deduplicated in order; a 422 naming an unknown one."""
    known = webhooks.WEBHOOK_EVENT_TYPES
    if not events:
        raise _invalid("events", f"name at least one of {', '.join(known)}")
    for i, event in enumerate(events):
        if event not in known:
            raise _invalid(f"events.{i}", f"{event!r} is not an event; use some of "
                                          f"{', '.join(known)} (job statuses, upper case)")
    return list(dict.fromkeys(events))


def _owner_for(caller: Caller, owner: str | None) -> str | None:
    if caller.is_admin:
        return owner
    if owner is not None and owner != caller.team:
        raise ForbiddenError(
            f"owner: {owner!r} is not your team; this token registers webhooks for the jobs of "
            f"team {caller.team!r} only: leave owner out or use that team's token",
            details=[{"field": "owner", "message": "not the token's team",
                      "team": caller.team}])
    return caller.team


def register(engine: Engine, settings: Settings, *, caller: Caller, url: str,
             events: Sequence[str], secret: str | None = None, owner: str | None = None,
             resolver: Resolver = resolve) -> Registered:
    """Store an endpoint after checking the URL (no SSRF), the events and the secret."""
    if len(url) > MAX_URL_CHARS:
        raise _invalid("url", f"longer than {MAX_URL_CHARS} characters")
    wanted = check_events(events)
    if secret is not None and not MIN_SECRET_CHARS <= len(secret) <= MAX_SECRET_CHARS:
        raise _invalid("secret", f"must be {MIN_SECRET_CHARS} to {MAX_SECRET_CHARS} characters "
                                 "(or leave it out and the server makes one)")
    target = _owner_for(caller, owner)
    check_url(url, allowed_hosts=settings.webhook_allowed_hosts, resolver=resolver)
    generated = None if secret is not None else "whsec_" + secrets.token_hex(24)
    sealed = SecretBox.from_settings(settings).seal(secret or generated or "")
    endpoint = webhooks.create_endpoint(engine, owner=target, url=url, events=wanted,
                                        secret_encrypted=sealed, created_by=caller.team)
    return Registered(endpoint=endpoint, generated_secret=generated)


def check_endpoint(caller: Caller, endpoint: WebhookEndpoint) -> None:
    """403 unless ``caller`` may see and change ``endpoint``."""
    if caller.is_admin or endpoint.owner == caller.team:
        return
    raise ForbiddenError(f"webhook {endpoint.id} is not one of team {caller.team!r}'s; only "
                         "its team or an admin token may read or delete it",
                         details=[{"field": "webhook_id", "message": "owned by another team",
                                   "team": caller.team}])


def list_for(engine: Engine, *, caller: Caller) -> list[WebhookEndpoint]:
    """The caller's team's endpoints (an admin: every one)."""
    return webhooks.list_endpoints(engine, owner=None if caller.is_admin else caller.team)


def delete(engine: Engine, *, caller: Caller, endpoint_id: str) -> None:
    """Remove an endpoint the caller may change, with its delivery log."""
    check_endpoint(caller, webhooks.get_endpoint(engine, endpoint_id=endpoint_id))
    webhooks.delete_endpoint(engine, endpoint_id=endpoint_id)


def deliveries(engine: Engine, *, caller: Caller, endpoint_id: str, limit: int = 50
               ) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    """The endpoint's newest deliveries with their attempts."""
    check_endpoint(caller, webhooks.get_endpoint(engine, endpoint_id=endpoint_id))
    return webhooks.list_deliveries(engine, endpoint_id=endpoint_id, limit=limit)
