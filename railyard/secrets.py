"""Secrets kept off Ray's surface: a directory of files, loaded by the processes that need them.

Ray shows every job's runtime env through its dashboard and keeps processes' command lines
readable by any local user, so the database URL (with its password), the SQL connections and
cloud credentials never travel in a runtime env, an entrypoint or a command line. They live in
a *secrets directory*, one file per variable, named as the variable — the layout of a
Kubernetes Secret mounted as a volume, which is how the KubeRay manifests provide it
(``railyard-secrets``). Locally the API writes it under ``$RAILYARD_HOME/secrets`` (directory
0700, files 0600). Only its path travels (``RAILYARD_SECRETS_DIR``); the API replica, job
drivers, a job's Ray workers (through Ray's ``worker_process_setup_hook``) and model servers
load it into their environment when they start.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

DIR_VARIABLE = "RAILYARD_SECRETS_DIR"
SECRET_VARIABLES = ("RAILYARD_DATABASE_URL", "RAILYARD_SQL_CONNECTIONS", "AWS_ACCESS_KEY_ID",
                    "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
_SETTING_NAME = re.compile(r"(RAILYARD|AWS)_[A-Z0-9_]+")
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^/:@\s]*:)[^@\s/]+@")


def write(directory: Path, values: Mapping[str, str]) -> None:
    """Make ``directory`` hold exactly ``values`` (names from SECRET_VARIABLES), each file
    written only when it changed, so a read-only mount holding the same values is left alone.
    A secret no longer set is removed."""
    unknown = set(values) - set(SECRET_VARIABLES)
    if unknown:
        raise ValueError(f"not secret variables: {sorted(unknown)}")
    if all(_read(directory / name) == values.get(name) for name in SECRET_VARIABLES):
        return
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for name in SECRET_VARIABLES:
        path = directory / name
        value = values.get(name)
        if value is None:
            path.unlink(missing_ok=True)
        elif _read(path) != value:
            # a staging file of its own (0600): threads and processes writing the same
            # secrets at once must not rename each other's
            fd, staged = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
            with os.fdopen(fd, "w") as handle:
                handle.write(value)
            os.replace(staged, path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None


def load(directory: str | Path | None = None) -> list[str]:
    """Put the secrets of ``directory`` (default: ``$RAILYARD_SECRETS_DIR``) into this
    process's environment; a variable set already keeps its value. Returns the names set."""
    directory = directory or os.environ.get(DIR_VARIABLE)
    if not directory or not Path(directory).is_dir():
        return []
    loaded = []
    # Every RAILYARD_* and AWS_* key: a mounted Secret may hold other settings beside the
    # secrets (RAILYARD_ARTIFACT_ROOT, AWS_DEFAULT_REGION).
    for path in sorted(Path(directory).iterdir()):
        name = path.name
        if not _SETTING_NAME.fullmatch(name) or name in os.environ:
            continue
        value = _read(path)
        if value is not None:
            os.environ[name] = value
            loaded.append(name)
    return loaded


def load_in_worker() -> None:
    """Ray's ``worker_process_setup_hook`` for a job's workers: load the secrets directory."""
    load()


def redact(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}***@", text)
