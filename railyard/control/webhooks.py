"""The webhook dispatcher: it drains the outbox that job status changes write
(railyard.jobstore.jobs.transition) into signed HTTP deliveries, at least once.

Each :meth:`WebhookDispatcher.tick`

1. fans the new outbox events out: one pending delivery per endpoint that wants the event (its
   team owns the job, or an admin's endpoint for every team), the body built once and stored, so
   every attempt sends the same bytes;
2. hands each endpoint's oldest pending delivery, once due, to a worker thread, which goes on
   with that endpoint's next ones while they succeed: an endpoint gets its events in order,
   one at a time, while the others go on (a receiver that hangs holds
   one worker for RAILYARD_WEBHOOK_TIMEOUT_S, never the loop, the reconciler or another
   endpoint).

An attempt re-checks the URL (DNS may have changed), signs the body (``Railyard-Signature``,
railyard.control.webhooks_signing) and POSTs it without following redirects. A 2xx delivers;
anything else is retried after ``base * 2^(n-1)`` seconds (capped at RAILYARD_WEBHOOK_RETRY_MAX_S,
with jitter: 50-100% of that), until RAILYARD_WEBHOOK_RETRY_WINDOW_S (a day) after the event,
then the delivery is ``failed``. All state is in the database: a restarted API picks up where
the last one stopped (an attempt cut off mid-flight is sent again; receivers de-duplicate on the
event id). Only the replica that leads the reconciler runs it (serve_app.deployment).
"""

from __future__ import annotations

import functools
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy.engine import Engine

from railyard.config import Settings
from railyard.control.webhooks_secrets import SecretBox
from railyard.control.webhooks_signing import EVENT_ID_HEADER, SIGNATURE_HEADER, signature_header
from railyard.control.webhooks_urls import Resolver, check_url, resolve
from railyard.errors import RailyardError
from railyard.jobstore import webhooks
from railyard.jobstore.jobs import as_utc
from railyard.jobstore.tables import Job, WebhookEndpoint, WebhookOutboxEvent, utcnow

log = logging.getLogger(__name__)

MAX_WORKERS = 8                        # endpoints sent to at once
BURST = 50                             # deliveries in a row to one endpoint before yielding
RETENTION = timedelta(days=7)          # closed deliveries are kept this long
PRUNE_EVERY_S = 3600.0
USER_AGENT = "Railyard-Webhooks/1"


def job_links(api_url: str, job_id: str) -> dict[str, str]:
    """The job's API resource and its page in the web UI."""
    base = api_url.rstrip("/")
    return {"api": f"{base}/v1/jobs/{job_id}", "ui": f"{base}/jobs/{job_id}"}


def event_payload(event: WebhookOutboxEvent, job: Job, *, api_url: str) -> dict[str, Any]:
    """The body of ``event``'s deliveries: its id (for de-duplication), type and time, and the
    job as it is now, with the status it moved to."""
    created = event.created_at
    return {
        "id": event.event_id,
        "type": event.type,
        "created_at": created.isoformat() if created else None,
        "job": {"id": job.id, "status": event.type, "owner": job.owner,
                "model_name": job.model_name, "error": job.error,
                "error_phase": job.error_phase, "metrics": job.metrics or {},
                "links": job_links(api_url, job.id)},
    }


def encode_body(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, default=str).encode()


def retry_delay(attempts: int, *, base_s: float, max_s: float,
                rng: Callable[[], float] = random.random) -> float:
    """Seconds before the next try after ``attempts`` failed ones: exponential, capped, and
    jittered to 50-100% so that receivers coming back are not hit by every sender at once."""
    ceiling = min(max_s, base_s * 2 ** min(attempts - 1, 40))
    return ceiling * (0.5 + 0.5 * rng())


def endpoint_wants(endpoint: WebhookEndpoint, event: WebhookOutboxEvent, job: Job) -> bool:
    """Whether ``endpoint`` subscribes to ``event`` of ``job``."""
    return event.type in endpoint.events and endpoint.owner in (None, job.owner)


class WebhookDispatcher:
    """Fans out the outbox and delivers it; see the module's docs. ``tick`` is safe to call
    from one thread; attempts run on a pool of ``max_workers`` threads."""

    def __init__(self, engine: Engine, settings: Settings, *,
                 client: httpx.Client | None = None, resolver: Resolver = resolve,
                 clock: Callable[[], datetime] = utcnow,
                 rng: Callable[[], float] = random.random, max_workers: int = MAX_WORKERS,
                 box: SecretBox | None = None,
                 thread_setup: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.client = client or httpx.Client(follow_redirects=False,
                                             headers={"User-Agent": USER_AGENT})
        self.resolver = resolver
        self.clock = clock
        self.rng = rng
        self.box = box or SecretBox.from_settings(settings)
        # thread_setup runs in each worker first (the API lowers their CPU priority).
        self._pool = ThreadPoolExecutor(max_workers=max_workers,
                                        thread_name_prefix="webhook-delivery",
                                        initializer=thread_setup)
        self._busy: set[str] = set()
        self._futures: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._pruned_at = 0.0
        self._secrets: dict[str, str] = {}

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event, leading: Callable[[], bool] = lambda: True) -> None:
        """Tick every RAILYARD_WEBHOOK_POLL_INTERVAL_S until ``stop``, while ``leading()``."""
        while not stop.wait(self.settings.webhook_poll_interval_s):
            if not leading():
                continue
            try:
                self.tick()
            except Exception:
                log.exception("webhook dispatch failed")

    def tick(self) -> int:
        """Fan out new events, start the due deliveries, prune now and then; returns how many
        attempts were started."""
        self.fan_out()
        started = self.dispatch_due()
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self._pruned_at = time.monotonic()
            webhooks.prune(self.engine, finished_before=self.clock() - RETENTION)
        return started

    def drain(self, timeout: float | None = None) -> None:
        """Wait for the attempts in flight to finish."""
        with self._lock:
            pending = set(self._futures)
        wait(pending, timeout=timeout)

    def close(self) -> None:
        """Stop taking work; let attempts in flight finish."""
        self._pool.shutdown(wait=True)
        self.client.close()

    # ------------------------------------------------------------------ steps
    def fan_out(self) -> int:
        """Turn the outbox's new events into deliveries; returns how many were made."""
        events = webhooks.pending_events(self.engine)
        if not events:
            return 0
        endpoints = webhooks.list_endpoints(self.engine)
        jobs = webhooks.jobs_by_id(self.engine, job_ids=[e.job_id for e in events])
        plans: list[webhooks.FanOut] = []
        dropped: list[int | None] = []
        for event in events:
            job = jobs.get(event.job_id)
            if job is None:                     # pruned meanwhile: nothing to say
                dropped.append(event.seq)
                continue
            wanted = tuple(e.id for e in endpoints if endpoint_wants(e, event, job))
            payload = event_payload(event, job, api_url=self.settings.api_url) if wanted else {}
            plans.append(webhooks.FanOut(event=event, payload=payload, endpoint_ids=wanted))
        return webhooks.fan_out(self.engine, plans=plans, dropped=dropped, now=self.clock())

    def dispatch_due(self) -> int:
        """Start an attempt for every endpoint whose oldest pending delivery is due and which
        is not sending already."""
        with self._lock:
            busy = set(self._busy)
        due = webhooks.due_deliveries(self.engine, now=self.clock(), skip_endpoints=busy)
        for item in due:
            endpoint_id = item.endpoint.id
            with self._lock:
                self._busy.add(endpoint_id)
                future = self._pool.submit(self._send_in_turn, item)
                self._futures.add(future)
            future.add_done_callback(functools.partial(self._done, endpoint_id=endpoint_id))
        return len(due)

    def _done(self, future: Future[None], *, endpoint_id: str) -> None:
        with self._lock:
            self._busy.discard(endpoint_id)
            self._futures.discard(future)
        if future.exception() is not None:
            log.error("webhook attempt for %s failed: %s", endpoint_id, future.exception())

    def _send_in_turn(self, due: webhooks.DueDelivery) -> None:
        """Send ``due``, then the endpoint's next due deliveries while they succeed (up to
        BURST): a backlog drains at the receiver's pace, not one event per tick."""
        if not self.attempt(due):
            return
        sent = 1
        while sent < BURST:
            backlog = webhooks.endpoint_backlog(self.engine, endpoint=due.endpoint,
                                                now=self.clock(), limit=BURST - sent)
            if not backlog:
                return
            for item in backlog:
                if not self.attempt(item):
                    return
                sent += 1

    def _secret(self, endpoint: WebhookEndpoint) -> str:
        """The endpoint's signing secret, decrypted once per sealed value."""
        sealed = endpoint.secret_encrypted
        secret = self._secrets.get(sealed)
        if secret is None:
            secret = self._secrets[sealed] = self.box.open(sealed)
        return secret

    def attempt(self, due: webhooks.DueDelivery) -> bool:
        """One try of ``due``: check, sign, POST, and record the outcome; True if it was
        delivered."""
        delivery, endpoint = due.delivery, due.endpoint
        at = self.clock()
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            check_url(endpoint.url, allowed_hosts=self.settings.webhook_allowed_hosts,
                      resolver=self.resolver)
            body = encode_body(due.payload)
            headers = {"Content-Type": "application/json",
                       SIGNATURE_HEADER: signature_header(self._secret(endpoint), body),
                       EVENT_ID_HEADER: delivery.event_id}
            response = self.client.post(endpoint.url, content=body, headers=headers,
                                        timeout=self.settings.webhook_timeout_s)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}: {response.text[:300]}"
        except RailyardError as exc:             # the URL is refused now, or the key changed
            error = f"not sent: {exc.message}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        duration_ms = (time.monotonic() - started) * 1000
        assert delivery.id is not None
        if error is None:
            outcome, next_at = webhooks.DELIVERED, None
        else:
            delay = retry_delay(delivery.attempts + 1, base_s=self.settings.webhook_retry_base_s,
                                max_s=self.settings.webhook_retry_max_s, rng=self.rng)
            next_at = at + timedelta(seconds=delay)
            window = timedelta(seconds=self.settings.webhook_retry_window_s)
            outcome = webhooks.PENDING
            if next_at > as_utc(delivery.created_at) + window:
                outcome, next_at = webhooks.FAILED, None
        webhooks.record_attempt(self.engine, delivery_id=delivery.id, at=at, http_status=status,
                                error=error, duration_ms=duration_ms, status=outcome,
                                next_attempt_at=next_at)
        return outcome == webhooks.DELIVERED
