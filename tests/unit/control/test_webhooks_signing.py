"""The webhook signature (Stripe's scheme) and the SDK's verify helper."""

from __future__ import annotations

import json

import pytest

from railyard.client.webhooks import WebhookSignatureError, verify
from railyard.control.webhooks_signing import compute_signature, signature_header

SECRET = "whsec_0123456789abcdef"
BODY = json.dumps({"id": "evt_1", "type": "SUCCEEDED", "job": {"id": "job-1"}}).encode()


def test_a_signed_body_verifies_and_decodes():
    header = signature_header(SECRET, BODY, timestamp=1_000_000)
    assert header == f"t=1000000,v1={compute_signature(SECRET, 1_000_000, BODY)}"
    event = verify(BODY, header, SECRET, now=1_000_010)
    assert event["id"] == "evt_1" and event["job"]["id"] == "job-1"
    assert verify(BODY.decode(), header, SECRET, now=1_000_010)["type"] == "SUCCEEDED"


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), b"42." + BODY, hashlib.sha256).hexdigest()
    assert compute_signature(SECRET, 42, BODY) == expected


@pytest.mark.parametrize("case, match", [
    ("other secret", "does not match"),
    ("changed body", "does not match"),
    ("too old", "off"),
    ("from the future", "off"),
    ("no header", "no Railyard-Signature"),
    ("malformed", "malformed"),
    ("bad timestamp", "unix seconds"),
])
def test_verify_refuses(case, match):
    header = signature_header(SECRET, BODY, timestamp=1_000_000)
    body, secret, now = BODY, SECRET, 1_000_000.0
    if case == "other secret":
        secret = "whsec_another_secret_entirely"
    elif case == "changed body":
        body = BODY.replace(b"SUCCEEDED", b"FAILED")
    elif case == "too old":
        now += 301
    elif case == "from the future":
        now -= 301
    elif case == "no header":
        header = ""
    elif case == "malformed":
        header = "sha256=abc"
    elif case == "bad timestamp":
        header = "t=yesterday,v1=abc"
    with pytest.raises(WebhookSignatureError, match=match):
        verify(body, header, secret, now=now)


def test_tolerance_is_the_callers_choice():
    header = signature_header(SECRET, BODY, timestamp=1_000_000)
    assert verify(BODY, header, SECRET, now=1_003_000, tolerance_s=3600)["id"] == "evt_1"
    with pytest.raises(WebhookSignatureError):
        verify(BODY, header, SECRET, now=1_000_061, tolerance_s=60)
