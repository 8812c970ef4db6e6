"""The UI's sign-in session: a signed, HttpOnly, SameSite=Strict cookie.

The cookie holds the token's prefix, a fingerprint of the token's stored hash, and a random
CSRF token; it is signed (itsdangerous) with RAILYARD_UI_SESSION_KEY, or a key derived from
the database URL. The raw API token is never stored. Each request looks the token row up by
its prefix and checks the fingerprint, so a revoked token's sessions end at once, and a session
cannot be forged without reading the database. State-changing forms carry the session's CSRF
token (:func:`check_csrf`)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.engine import Engine
from sqlmodel import select

from railyard.config import Settings
from railyard.control.access import Caller
from railyard.errors import ForbiddenError
from railyard.jobstore import tokens
from railyard.jobstore.engine import session_scope
from railyard.jobstore.tables import ApiToken

COOKIE = "railyard_session"
MAX_AGE_S = 12 * 3600
_SALT = "railyard-ui-session"


@dataclass(frozen=True)
class Session:
    """A signed-in browser: the caller its token stands for and the session's CSRF token."""

    caller: Caller
    csrf: str


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    key = settings.ui_session_key.get_secret_value() if settings.ui_session_key else \
        hashlib.sha256(f"{_SALT}\0{settings.resolved_database_url}".encode()).hexdigest()
    return URLSafeTimedSerializer(key, salt=_SALT)


def _fingerprint(token_hash: str) -> str:
    return hashlib.sha256(f"{_SALT}\0{token_hash}".encode()).hexdigest()[:32]


def sign_in(engine: Engine, settings: Settings, token: str) -> tuple[str, Session] | None:
    """The cookie value and session for a valid API token; None for an invalid or revoked
    one."""
    row = tokens.authenticate(engine, token.strip())
    if row is None:
        return None
    csrf = secrets.token_urlsafe(24)
    value = _serializer(settings).dumps(
        {"p": row.prefix, "f": _fingerprint(row.token_hash), "c": csrf})
    return value, Session(caller=Caller.from_token(row), csrf=csrf)


def read_session(engine: Engine, settings: Settings, cookie: str | None) -> Session | None:
    """The session of a cookie: None unless it is signed by this server, younger than
    MAX_AGE_S, and its token still live with the same stored hash."""
    if not cookie:
        return None
    try:
        data = _serializer(settings).loads(cookie, max_age=MAX_AGE_S)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in "pfc"):
        return None
    with session_scope(engine) as db:
        row = db.exec(select(ApiToken).where(ApiToken.prefix == data["p"])).first()
    if row is None or row.revoked_at is not None or \
            not hmac.compare_digest(_fingerprint(row.token_hash), data["f"]):
        return None
    return Session(caller=Caller.from_token(row), csrf=data["c"])


def check_csrf(session: Session, submitted: str | None) -> None:
    """403 unless a form's ``csrf`` field is the session's CSRF token."""
    if not submitted or not hmac.compare_digest(submitted, session.csrf):
        raise ForbiddenError("the form's CSRF token is missing or stale; reload the page and "
                             "try again", details=[{"field": "csrf",
                                                    "message": "not this session's token"}])
