"""Keyword-only CRUD over webhooks: the registered endpoints, the outbox of job events (written
by :func:`railyard.jobstore.jobs.transition` in the transaction of the status change), the
deliveries owed to each endpoint and every HTTP attempt at one. The rules (who may register
what, which URL is allowed, signing, retrying) are in ``railyard.control.webhooks*``."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from railyard.errors import NotFoundError
from railyard.jobstore.engine import session_scope
from railyard.jobstore.tables import (
    Job,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookOutboxEvent,
    utcnow,
)

# The job statuses a webhook may subscribe to; a transition to one of them writes an event.
WEBHOOK_EVENT_TYPES = ("RUNNING", "SUCCEEDED", "FAILED", "CANCELLED")
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


def new_endpoint_id() -> str:
    """A fresh endpoint id: ``wh_`` and 20 hex digits."""
    return "wh_" + uuid.uuid4().hex[:20]


def outbox_event(*, job_id: str, event_type: str) -> WebhookOutboxEvent:
    """The outbox row of a job's move to ``event_type`` (its id is the receivers' de-duplication
    key), for the caller to add to the transaction of the move."""
    return WebhookOutboxEvent(event_id="evt_" + uuid.uuid4().hex, job_id=job_id,
                              type=event_type)


# ---------------------------------------------------------------------- endpoints
def create_endpoint(engine: Engine, *, owner: str | None, url: str, events: list[str],
                    secret_encrypted: str, created_by: str) -> WebhookEndpoint:
    """Store a new endpoint (``owner`` None: every team's jobs)."""
    endpoint = WebhookEndpoint(id=new_endpoint_id(), owner=owner, url=url, events=events,
                               secret_encrypted=secret_encrypted, created_by=created_by)
    with session_scope(engine) as session:
        session.add(endpoint)
    return endpoint


def get_endpoint(engine: Engine, *, endpoint_id: str) -> WebhookEndpoint:
    """The endpoint, or NotFoundError."""
    with session_scope(engine) as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFoundError(f"no webhook with id {endpoint_id!r}; list yours with "
                            "GET /v1/webhooks")
    return endpoint


def list_endpoints(engine: Engine, *, owner: str | None = None) -> list[WebhookEndpoint]:
    """Endpoints oldest first: those of ``owner`` (None: every endpoint)."""
    query = select(WebhookEndpoint)
    if owner is not None:
        query = query.where(WebhookEndpoint.owner == owner)
    with session_scope(engine) as session:
        return list(session.exec(query.order_by(col(WebhookEndpoint.created_at),
                                                col(WebhookEndpoint.id))).all())


def delete_endpoint(engine: Engine, *, endpoint_id: str) -> None:
    """Remove an endpoint with its deliveries and their attempts (NotFoundError if none)."""
    with session_scope(engine) as session:
        ids = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == endpoint_id)
        session.exec(delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(ids)))
        session.exec(delete(WebhookDelivery).where(col(WebhookDelivery.endpoint_id)
                                                   == endpoint_id))
        result = session.exec(delete(WebhookEndpoint).where(col(WebhookEndpoint.id)
                                                            == endpoint_id))
        if result.rowcount == 0:
            raise NotFoundError(f"no webhook with id {endpoint_id!r}")


# ---------------------------------------------------------------------- the outbox
def pending_events(engine: Engine, *, limit: int = 500) -> list[WebhookOutboxEvent]:
    """Events not yet fanned out to endpoints, oldest first."""
    query = select(WebhookOutboxEvent).where(col(WebhookOutboxEvent.fanned_out_at).is_(None))\
        .order_by(col(WebhookOutboxEvent.seq)).limit(limit)
    with session_scope(engine) as session:
        return list(session.exec(query).all())


def jobs_by_id(engine: Engine, *, job_ids: Iterable[str]) -> dict[str, Job]:
    """The jobs of ``job_ids`` that still exist, by id (one query)."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        return {}
    with session_scope(engine) as session:
        return {job.id: job for job in session.exec(select(Job).where(col(Job.id).in_(ids)))}


@dataclass(frozen=True)
class FanOut:
    """What to do with one outbox event: the body the endpoints get, and which endpoints."""

    event: WebhookOutboxEvent
    payload: dict[str, object]
    endpoint_ids: tuple[str, ...]


def fan_out(engine: Engine, *, plans: Collection[FanOut],
            dropped: Collection[int | None] = (),
            now: datetime | None = None) -> int:
    """In one transaction: a pending delivery per (event, endpoint) of ``plans``, due now, and
    the event marked fanned out with its payload; an event no endpoint wants (and the events
    ``dropped`` by seq: their job is gone) leaves the outbox. Returns the deliveries made."""
    now = now or utcnow()
    made = 0
    with session_scope(engine) as session:
        unwanted = [seq for seq in dropped if seq is not None]
        for plan in plans:
            seq = plan.event.seq
            assert seq is not None
            if not plan.endpoint_ids:
                unwanted.append(seq)
                continue
            for endpoint_id in plan.endpoint_ids:
                session.add(WebhookDelivery(endpoint_id=endpoint_id, event_seq=seq,
                                            event_id=plan.event.event_id,
                                            event_type=plan.event.type,
                                            job_id=plan.event.job_id, next_attempt_at=now,
                                            created_at=now))
                made += 1
            session.exec(update(WebhookOutboxEvent).where(col(WebhookOutboxEvent.seq) == seq)
                         .values(fanned_out_at=now, payload=plan.payload))
        if unwanted:
            session.exec(delete(WebhookOutboxEvent)
                         .where(col(WebhookOutboxEvent.seq).in_(unwanted)))
    return made


# ---------------------------------------------------------------------- deliveries
@dataclass(frozen=True)
class DueDelivery:
    """A delivery to try now, with the endpoint and the body to send."""

    delivery: WebhookDelivery
    endpoint: WebhookEndpoint
    payload: dict[str, object]


def due_deliveries(engine: Engine, *, now: datetime,
                   skip_endpoints: Collection[str] = ()) -> list[DueDelivery]:
    """For each endpoint (but those in ``skip_endpoints``, busy sending), its oldest pending
    delivery if that one is due: an endpoint's events go out in order, one at a time."""
    heads = select(func.min(WebhookDelivery.id)).where(WebhookDelivery.status == PENDING)\
        .group_by(col(WebhookDelivery.endpoint_id))
    query = select(WebhookDelivery, WebhookEndpoint, WebhookOutboxEvent)\
        .join(WebhookEndpoint, col(WebhookEndpoint.id) == col(WebhookDelivery.endpoint_id))\
        .join(WebhookOutboxEvent, col(WebhookOutboxEvent.seq) == col(WebhookDelivery.event_seq))\
        .where(col(WebhookDelivery.id).in_(heads), col(WebhookDelivery.next_attempt_at) <= now)\
        .order_by(col(WebhookDelivery.id))
    if skip_endpoints:
        query = query.where(col(WebhookDelivery.endpoint_id).not_in(list(skip_endpoints)))
    with session_scope(engine) as session:
        return [DueDelivery(delivery=delivery, endpoint=endpoint, payload=event.payload or {})
                for delivery, endpoint, event in session.exec(query).all()]


def endpoint_backlog(engine: Engine, *, endpoint: WebhookEndpoint, now: datetime,
                     limit: int) -> list[DueDelivery]:
    """The endpoint's pending deliveries in order, up to ``limit``, as far as they are due (a
    delivery waiting for its retry holds back every later one)."""
    query = select(WebhookDelivery, WebhookOutboxEvent)\
        .join(WebhookOutboxEvent, col(WebhookOutboxEvent.seq) == col(WebhookDelivery.event_seq))\
        .where(WebhookDelivery.endpoint_id == endpoint.id, WebhookDelivery.status == PENDING)\
        .order_by(col(WebhookDelivery.id)).limit(limit)
    found = []
    with session_scope(engine) as session:
        for delivery, event in session.exec(query).all():
            due_at = delivery.next_attempt_at
            if due_at is not None and _utc(due_at) > _utc(now):
                break
            found.append(DueDelivery(delivery=delivery, endpoint=endpoint,
                                     payload=event.payload or {}))
    return found


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def record_attempt(engine: Engine, *, delivery_id: int, at: datetime, http_status: int | None,
                   error: str | None, duration_ms: float, status: str,
                   next_attempt_at: datetime | None) -> None:
    """Log one try of a delivery and move the delivery on: ``status`` DELIVERED or FAILED
    closes it, PENDING keeps it for ``next_attempt_at``."""
    finished = at if status != PENDING else None
    with session_scope(engine) as session:
        session.add(WebhookAttempt(delivery_id=delivery_id, at=at, http_status=http_status,
                                   error=error[:2000] if error else None,
                                   duration_ms=duration_ms, next_retry_at=next_attempt_at))
        session.exec(update(WebhookDelivery).where(col(WebhookDelivery.id) == delivery_id)
                     .values(status=status, attempts=WebhookDelivery.attempts + 1,
                             next_attempt_at=next_attempt_at, finished_at=finished))


def list_deliveries(engine: Engine, *, endpoint_id: str, limit: int = 50
                    ) -> list[tuple[WebhookDelivery, list[WebhookAttempt]]]:
    """An endpoint's newest deliveries first, each with its attempts (oldest first)."""
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)\
        .order_by(col(WebhookDelivery.id).desc()).limit(limit)
    with session_scope(engine) as session:
        deliveries = list(session.exec(query).all())
        ids = [d.id for d in deliveries]
        attempts: dict[int, list[WebhookAttempt]] = {i: [] for i in ids if i is not None}
        if ids:
            for attempt in session.exec(select(WebhookAttempt)
                                        .where(col(WebhookAttempt.delivery_id).in_(ids))
                                        .order_by(col(WebhookAttempt.id))):
                attempts[attempt.delivery_id].append(attempt)
    return [(d, attempts.get(d.id or 0, [])) for d in deliveries]


def prune(engine: Engine, *, finished_before: datetime) -> int:
    """Forget deliveries closed before ``finished_before`` (with their attempts) and the
    fanned-out events no delivery needs any more. Returns the deliveries removed."""
    with session_scope(engine) as session:
        old = select(WebhookDelivery.id).where(col(WebhookDelivery.status) != PENDING,
                                               col(WebhookDelivery.finished_at)
                                               < finished_before)
        session.exec(delete(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(old)))
        result = session.exec(delete(WebhookDelivery).where(
            col(WebhookDelivery.status) != PENDING,
            col(WebhookDelivery.finished_at) < finished_before))
        needed = select(WebhookDelivery.event_seq)
        session.exec(delete(WebhookOutboxEvent).where(
            col(WebhookOutboxEvent.fanned_out_at) < finished_before,
            col(WebhookOutboxEvent.seq).not_in(needed)))
        return int(result.rowcount)
