"""Check a webhook from Railyard before trusting it::

    from railyard.client.webhooks import verify
    event = verify(request_body_bytes, request.headers["Railyard-Signature"], secret)
    if seen(event["id"]): return            # at-least-once: de-duplicate on the event id
    handle(event["type"], event["job"])

:func:`verify` raises :class:`WebhookSignatureError` (a ValueError) for a missing, malformed or
wrong signature, and for one older than ``tolerance_s`` seconds (a replay).
"""

from __future__ import annotations

import json
from typing import Any

from railyard.control.webhooks_signing import (
    DEFAULT_TOLERANCE_S,
    SIGNATURE_HEADER,
    WebhookSignatureError,
    check_signature,
)

__all__ = ["SIGNATURE_HEADER", "WebhookSignatureError", "verify"]


def verify(payload: bytes | str, header: str | None, secret: str, *,
           tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> dict[str, Any]:
    """The webhook's event (the decoded body) once ``header`` (the ``Railyard-Signature``
    value) proves ``payload`` (the raw body) was signed with ``secret`` no more than
    ``tolerance_s`` seconds ago; else :class:`WebhookSignatureError` saying why."""
    body = payload.encode() if isinstance(payload, str) else payload
    check_signature(body, header, secret, tolerance_s=tolerance_s, now=now)
    event: dict[str, Any] = json.loads(body)
    return event
