"""The webhook tables (migration 0008): deleting an endpoint takes its delivery log along,
pruning forgets closed deliveries and spent events; the secrets' key file."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session, select

from railyard.config import Settings
from railyard.control.webhooks_secrets import KEY_FILE, SecretBox
from railyard.errors import NotFoundError, RailyardError
from railyard.jobstore import webhooks
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.tables import (
    WebhookAttempt,
    WebhookDelivery,
    WebhookOutboxEvent,
    utcnow,
)


@pytest.fixture()
def engine(tmp_path):
    url = f"sqlite:///{tmp_path}/w.db"
    migrate(url)
    return get_engine(url)


def one_delivery(engine, endpoint_id: str) -> WebhookDelivery:
    with Session(engine) as session:
        event = webhooks.outbox_event(job_id="job-1", event_type="SUCCEEDED")
        session.add(event)
        session.commit()
        session.refresh(event)
    webhooks.fan_out(engine, plans=[webhooks.FanOut(event=event, payload={"id": 1},
                                                    endpoint_ids=(endpoint_id,))])
    with Session(engine) as session:
        return session.exec(select(WebhookDelivery)).one()


def count(engine, table) -> int:
    with Session(engine) as session:
        return len(session.exec(select(table)).all())


def test_delete_takes_the_delivery_log_along(engine):
    endpoint = webhooks.create_endpoint(engine, owner="t", url="http://x", events=["FAILED"],
                                        secret_encrypted="x", created_by="t")
    delivery = one_delivery(engine, endpoint.id)
    webhooks.record_attempt(engine, delivery_id=delivery.id, at=utcnow(), http_status=500,
                            error="HTTP 500", duration_ms=1.0, status=webhooks.PENDING,
                            next_attempt_at=utcnow())
    webhooks.delete_endpoint(engine, endpoint_id=endpoint.id)
    assert count(engine, WebhookDelivery) == 0 and count(engine, WebhookAttempt) == 0
    with pytest.raises(NotFoundError):
        webhooks.delete_endpoint(engine, endpoint_id=endpoint.id)


def test_prune_keeps_pending_and_recent_deliveries(engine):
    endpoint = webhooks.create_endpoint(engine, owner="t", url="http://x", events=["FAILED"],
                                        secret_encrypted="x", created_by="t")
    delivery = one_delivery(engine, endpoint.id)
    assert webhooks.prune(engine, finished_before=utcnow() + timedelta(days=1)) == 0
    webhooks.record_attempt(engine, delivery_id=delivery.id, at=utcnow(), http_status=200,
                            error=None, duration_ms=1.0, status=webhooks.DELIVERED,
                            next_attempt_at=None)
    assert webhooks.prune(engine, finished_before=utcnow() - timedelta(days=1)) == 0
    assert webhooks.prune(engine, finished_before=utcnow() + timedelta(days=1)) == 1
    assert count(engine, WebhookAttempt) == 0 and count(engine, WebhookOutboxEvent) == 0


def test_the_key_file_is_made_once_and_private(tmp_path):
    settings = Settings(home=tmp_path)
    sealed = SecretBox.from_settings(settings).seal("hello-secret")
    key_file = settings.resolved_secrets_dir / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert SecretBox.from_settings(settings).open(sealed) == "hello-secret"
    key_file.unlink()
    with pytest.raises(RailyardError, match="RAILYARD_WEBHOOK_SECRET_KEY changed"):
        SecretBox.from_settings(settings).open(sealed)
