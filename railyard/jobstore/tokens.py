"""API tokens: issue, check, list and revoke.

A token is ``ry_`` and 43 URL-safe characters from :func:`secrets.token_urlsafe` (256 bits).
The database keeps its SHA-256 and its first 11 characters (``ry_`` + 8, the *prefix*) to tell
tokens apart in listings and to find a token's row; the token itself is shown once, when it is
issued, and stored nowhere. A presented token is looked up by its prefix and its hash compared
with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from railyard.errors import ConflictError, NotFoundError, SpecError
from railyard.jobstore.engine import session_scope
from railyard.jobstore.tables import ApiToken, utcnow
from railyard.spec.data import SQL_CONNECTION_PATTERN

TOKEN_SCHEME = "ry_"
PREFIX_LENGTH = len(TOKEN_SCHEME) + 8
MAX_TEAM_LENGTH = 256


def new_token() -> str:
    """A fresh, high-entropy token."""
    return TOKEN_SCHEME + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The token's SHA-256, hex: what the database stores."""
    return hashlib.sha256(token.encode()).hexdigest()


def prefix_of(token: str) -> str:
    """The non-secret start of a token, shown in listings and used to revoke it."""
    return token[:PREFIX_LENGTH]


def _check_team(team: str) -> str:
    team = team.strip()
    if not team or len(team) > MAX_TEAM_LENGTH:
        raise SpecError(f"team {team!r} is not valid: give a non-empty name of at most "
                        f"{MAX_TEAM_LENGTH} characters (the `owner` its jobs will carry)",
                        details=[{"field": "team", "message": "empty or too long"}])
    return team


def _check_connections(names: list[str] | None) -> list[str] | None:
    if names is None:
        return None
    out = list(dict.fromkeys(name.strip() for name in names))
    for name in out:
        if len(name) > 128 or not re.fullmatch(SQL_CONNECTION_PATTERN, name):
            raise SpecError(f"SQL connection name {name!r} is not valid: give a name of "
                            "RAILYARD_SQL_CONNECTIONS (letters, digits, '_', '.', '-')",
                            details=[{"field": "sql_connections", "message": "invalid name"}])
    return out


def issue(engine: Engine, *, team: str, admin: bool = False,
          data_prefixes: list[str] | None = None,
          sql_connections: list[str] | None = None) -> tuple[str, ApiToken]:
    """Create a token for ``team``; returns the token (the only time it exists in clear) and
    its stored row.

    ``sql_connections`` are the SQL connection names the token may read through. None: the
    token is not narrowed by name, so it reads every connection, unless it has
    ``data_prefixes``, which then shut it out of SQL sources
    (:meth:`railyard.control.access.Caller.granted_sql_connections`)."""
    team = _check_team(team)
    prefixes = [p.strip() for p in data_prefixes or [] if p.strip()] or None
    connections = _check_connections(sql_connections)
    for _ in range(5):  # a prefix collision (48 random bits) is retried with a new token
        token = new_token()
        row = ApiToken(prefix=prefix_of(token), token_hash=hash_token(token), team=team,
                       is_admin=admin, data_prefixes=prefixes, sql_connections=connections)
        try:
            with session_scope(engine) as session:
                session.add(row)
            return token, row
        except IntegrityError:
            continue
    raise ConflictError("could not issue a token with a unique prefix; try again")


def authenticate(engine: Engine, token: str) -> ApiToken | None:
    """The live (not revoked) token row matching ``token``, or None."""
    if not token.startswith(TOKEN_SCHEME) or len(token) <= PREFIX_LENGTH:
        return None
    with session_scope(engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.prefix == prefix_of(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row if hmac.compare_digest(row.token_hash, hash_token(token)) else None


def list_tokens(engine: Engine) -> list[ApiToken]:
    """Every token row (revoked ones included), oldest first."""
    with session_scope(engine) as session:
        return list(session.exec(select(ApiToken).order_by(col(ApiToken.id))).all())


def revoke(engine: Engine, *, prefix: str) -> ApiToken:
    """Revoke the token whose prefix is ``prefix``; it stops working at once."""
    with session_scope(engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.prefix == prefix.strip())).first()
        if row is None:
            raise NotFoundError(f"no token with prefix {prefix!r}; `railyard token list` shows "
                                "the prefixes")
        if row.revoked_at is not None:
            raise ConflictError(f"token {row.prefix} was already revoked at {row.revoked_at}")
        row.revoked_at = utcnow()
        session.add(row)
    return row


def has_admin(engine: Engine) -> bool:
    """True when at least one live admin token exists."""
    with session_scope(engine) as session:
        query = select(ApiToken.id).where(col(ApiToken.is_admin).is_(True),
                                          col(ApiToken.revoked_at).is_(None)).limit(1)
        return session.exec(query).first() is not None
