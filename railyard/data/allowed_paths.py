"""Which data paths a spec may read: ``RAILYARD_ALLOWED_DATA_PREFIXES``.

Prefixes are directory prefixes (``s3://bucket/datasets``, ``/srv/data``): a path is allowed
when it is the prefix or lies below it, compared after normalisation (``..`` and, for local
paths, symlinks resolved), so ``/srv/data/../etc`` and ``/srv/database`` are outside
``/srv/data``. For a glob, the directory above its first wildcard must be allowed. An empty list
allows every path. SQL sources are governed by the connection names the server defines instead.
"""

from __future__ import annotations

import os
import posixpath

from railyard.errors import ForbiddenError
from railyard.spec import DataSpec, ParquetSource

GLOB_CHARS = frozenset("*?[")


def glob_base(path: str) -> str:
    """The part of ``path`` before the first segment holding a wildcard (the whole path if none)."""
    parts = path.split("/")
    for i, part in enumerate(parts):
        if GLOB_CHARS & set(part):
            return "/".join(parts[:i]) or ("/" if path.startswith("/") else ".")
    return path


def normalize(path: str) -> str:
    """A canonical form for comparison: ``s3://bucket/key`` or an absolute, resolved local path."""
    if path.startswith("s3://"):
        key = posixpath.normpath("/" + path[len("s3://"):].lstrip("/"))
        return "s3:/" + key.rstrip("/")
    if path.startswith("file://"):
        path = path[len("file://"):]
    return os.path.realpath(os.path.expanduser(path))


def is_allowed(path: str, prefixes: list[str]) -> bool:
    """True if ``path`` (or, for a glob, its base directory) lies under one of ``prefixes``."""
    if not prefixes:
        return True
    target = normalize(glob_base(path))
    for prefix in prefixes:
        root = normalize(prefix)
        if target == root or target.startswith(root.rstrip("/") + "/"):
            return True
    return False


def check_allowed_paths(data: DataSpec, prefixes: list[str], *,
                        granted_by: str = "this server",
                        remedy: str = "ask an operator to extend RAILYARD_ALLOWED_DATA_PREFIXES"
                        ) -> None:
    """Raise ForbiddenError (403) naming the first path outside ``prefixes``; ``granted_by``
    and ``remedy`` say whose prefixes they are and how to get more (the server's by default,
    a team's for an API token's own prefixes)."""
    for i, source in enumerate(data.features):
        if isinstance(source, ParquetSource) and not is_allowed(source.path, prefixes):
            where = f"data.features.{i}.path"
            raise ForbiddenError(
                f"{where}: {source.path!r} is outside the data prefixes {granted_by} may read "
                f"({', '.join(prefixes)}); put the data under one of them or {remedy}",
                details=[{"field": where, "message": "path not under an allowed prefix",
                          "allowed_prefixes": list(prefixes)}])
