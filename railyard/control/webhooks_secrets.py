"""Webhook signing secrets at rest: encrypted with Fernet (AES-128-CBC and HMAC-SHA256, from
``cryptography``) under a key kept apart from the database, so a copy of the job store alone
signs nothing. The key is RAILYARD_WEBHOOK_SECRET_KEY (a Fernet key: ``Fernet.generate_key()``)
or, unset, the file ``webhook-secrets.key`` in the secrets directory (railyard.secrets), created
0600 on first use; that name is not a setting's, so job drivers, which load the directory, do
not receive it. Secrets must be recoverable, not hashed: the dispatcher signs every delivery
with them."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from railyard.config import Settings
from railyard.errors import RailyardError

KEY_FILE = "webhook-secrets.key"


def _key_from_file(directory: Path) -> bytes:
    path = directory / KEY_FILE
    try:
        if not path.exists():
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:            # another process made it first: use theirs
                pass
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(Fernet.generate_key())
        return path.read_bytes().strip()
    except OSError as exc:
        raise RailyardError(f"no key for webhook secrets: {path} cannot be created or read "
                            f"({exc}); set RAILYARD_WEBHOOK_SECRET_KEY to a Fernet key "
                            "(python -c 'from cryptography.fernet import Fernet; "
                            "print(Fernet.generate_key().decode())')") from None


class SecretBox:
    """Encrypts and decrypts webhook secrets with the deployment's key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        """The box of RAILYARD_WEBHOOK_SECRET_KEY, else of the key file in the secrets dir."""
        if settings.webhook_secret_key is not None:
            return cls(settings.webhook_secret_key.get_secret_value().encode())
        return cls(_key_from_file(settings.resolved_secrets_dir))

    def seal(self, secret: str) -> str:
        """``secret`` encrypted (a URL-safe token)."""
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        """The secret back; a RailyardError if the key changed since it was sealed."""
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise RailyardError("a webhook secret cannot be decrypted: "
                                "RAILYARD_WEBHOOK_SECRET_KEY changed since it was registered; "
                                "restore the key or register the webhook again") from None
