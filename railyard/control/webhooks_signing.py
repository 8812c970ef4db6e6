"""The webhook signature, as Stripe signs its webhooks: the header
``Railyard-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>``. The
dispatcher signs with :func:`signature_header`; receivers check with :func:`check_signature`
(the SDK's ``railyard.client.webhooks.verify``). Standard library only."""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Railyard-Signature"
EVENT_ID_HEADER = "Railyard-Event-Id"
DEFAULT_TOLERANCE_S = 300


class WebhookSignatureError(ValueError):
    """A webhook's signature header is missing, malformed, wrong or too old: do not trust the
    body."""


def compute_signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, *, timestamp: int | None = None) -> str:
    """The ``Railyard-Signature`` value for ``body`` signed now (or at ``timestamp``)."""
    moment = int(time.time()) if timestamp is None else timestamp
    return f"t={moment},v1={compute_signature(secret, moment, body)}"


def check_signature(body: bytes, header: str | None, secret: str, *,
                    tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None) -> int:
    """Check ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` seconds of
    ``now``; returns its timestamp, or raises :class:`WebhookSignatureError` saying why."""
    if not header:
        raise WebhookSignatureError(f"no {SIGNATURE_HEADER} header: this request was not sent "
                                    "by Railyard, or a proxy dropped the header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise WebhookSignatureError(f"{SIGNATURE_HEADER}: t={value!r} is not unix "
                                            "seconds") from None
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise WebhookSignatureError(f"{SIGNATURE_HEADER} is malformed: expected "
                                    "'t=<unix seconds>,v1=<hex signature>'")
    expected = compute_signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise WebhookSignatureError("the signature does not match: check the endpoint's secret "
                                    "and that the body is verified as received (raw bytes, "
                                    "before any JSON parsing)")
    age = (time.time() if now is None else now) - timestamp
    if abs(age) > tolerance_s:
        raise WebhookSignatureError(f"the signature's timestamp is {age:.0f}s off (more than "
                                    f"{tolerance_s:g}s): a replayed or delayed request; check "
                                    "the receiver's clock")
    return timestamp
