"""Where the CLI and SDK find their API token: ``RAILYARD_TOKEN``, else the file
``$RAILYARD_HOME/token`` (mode 0600) that ``railyard up`` writes on first start."""

from __future__ import annotations

import os
from pathlib import Path

from railyard.config import Settings, get_settings


def token_file(settings: Settings | None = None) -> Path:
    """The local token file: ``$RAILYARD_HOME/token``."""
    return (settings or get_settings()).home / "token"


def find_token(settings: Settings | None = None) -> str | None:
    """The token to send: ``RAILYARD_TOKEN``, else the token file's content, else None."""
    settings = settings or get_settings()
    if settings.token is not None and settings.token.get_secret_value().strip():
        return settings.token.get_secret_value().strip()
    path = token_file(settings)
    try:
        return path.read_text().strip() or None
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return None


def save_token(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` readable by its owner only (0600), replacing any old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)  # an older file may have had looser permissions
