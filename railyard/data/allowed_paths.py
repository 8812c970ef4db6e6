"""Which data paths a spec may read: ``RAILYARD_ALLOWED_DATA_PREFIXES``.

Prefixes are directory prefixes (``s3://bucket/datasets``, ``/srv/data``): a path is allowed
when it is the prefix or lies below it, compared after normalisation (``..`` and, for local
paths, symlinks resolved), so ``/srv/data/../etc`` and ``/srv/database`` are outside
``/srv/data``. For a glob, the directory above its first wildcard must be allowed. An empty list
allows every path. SQL sources are governed by the connection names the server defines instead.

The path is only where a read starts: a directory or glob may hold symbolic links that lead
out of every prefix. So every local file a read lists is resolved too and checked with
:func:`check_files` (at submit, and again by the driver right before it reads, against the
server's prefixes and those of the token that submitted the job, :class:`Grant`). S3 has no
links: an S3 source's path check covers every key below it.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from railyard.errors import DataSourceError, ForbiddenError, SpecError
from railyard.spec import DataSpec, ParquetSource, SqlSource

GLOB_CHARS = frozenset("*?[")
SERVER_REMEDY = "ask an operator to extend RAILYARD_ALLOWED_DATA_PREFIXES"


@dataclass(frozen=True)
class Grant:
    """Prefixes one authority lets a job read (empty: every path), and how a refusal names it
    (``granted_by``) and says how to get more (``remedy``)."""

    prefixes: tuple[str, ...]
    granted_by: str = "this server"
    remedy: str = SERVER_REMEDY


def server_grant(prefixes: Iterable[str]) -> Grant:
    """The server-wide prefixes (``Settings.allowed_data_prefixes``)."""
    return Grant(tuple(prefixes))


def team_grant(team: str, prefixes: Iterable[str]) -> Grant:
    """An API token's own prefixes (worded as :func:`railyard.control.access.check_submit`)."""
    return Grant(tuple(prefixes), granted_by=f"team {team!r}",
                 remedy=f"ask an admin for a token of team {team!r} that covers it "
                        "(railyard token create --data-prefix …)")


@dataclass(frozen=True)
class DataAccess:
    """What the token that submitted a job may read, on top of the server's rules: its path
    prefixes (empty: not narrowed) and SQL connection names (None: not narrowed). Stored on
    the job (``Job.data_prefixes``, ``Job.sql_connections``) and applied again by the driver."""

    team: str
    data_prefixes: tuple[str, ...] = ()
    sql_connections: tuple[str, ...] | None = None

    def grants(self, server_prefixes: Iterable[str]) -> list[Grant]:
        """The server's grant, then the token's when it narrows the paths."""
        out = [server_grant(server_prefixes)]
        if self.data_prefixes:
            out.append(team_grant(self.team, self.data_prefixes))
        return out


def check_no_nul(path: str, where: str) -> None:
    """A NUL byte is never part of a real path: 422 naming the field (not a crash later)."""
    if "\0" in path:
        raise DataSourceError(
            f"{where}: the path holds a NUL byte; give the path of a file, directory or glob",
            details=[{"field": where, "message": "NUL byte in path"}])


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
    if "\0" in path:
        raise SpecError(f"{path!r} holds a NUL byte, which no path can hold",
                        details=[{"message": "NUL byte in path"}])
    return os.path.realpath(os.path.expanduser(path))


def _under(target: str, roots: Iterable[str]) -> bool:
    """True if the normalised ``target`` is one of the normalised ``roots`` or below one."""
    return any(target == root or target.startswith(root.rstrip("/") + "/") for root in roots)


def is_allowed(path: str, prefixes: Sequence[str]) -> bool:
    """True if ``path`` (or, for a glob, its base directory) lies under one of ``prefixes``."""
    if not prefixes:
        return True
    return _under(normalize(glob_base(path)), [normalize(prefix) for prefix in prefixes])


def check_files(files: Iterable[str], grants: Sequence[Grant], *, where: str,
                source_path: str) -> None:
    """Raise ForbiddenError (403) naming the first local file of a source (``source_path``,
    spec field ``where``) that resolves, symbolic links followed, outside a grant's prefixes.

    ``files`` are what a read lists below the source's path, so a file outside a prefix got
    there through a link (the path itself is checked by :func:`check_allowed_paths`)."""
    active = [(grant, [normalize(prefix) for prefix in grant.prefixes])
              for grant in grants if grant.prefixes]
    if not active:
        return
    for file in files:
        target = normalize(file)
        for grant, roots in active:
            if not _under(target, roots):
                raise ForbiddenError(
                    f"{where}: {source_path!r} reads the file {file!r}, which resolves (through "
                    f"a symbolic link) to a path outside the data prefixes {grant.granted_by} "
                    f"may read ({', '.join(grant.prefixes)}); remove the link or put the data "
                    f"itself under one of them, or {grant.remedy}",
                    details=[{"field": where, "message": "file resolves outside an allowed "
                              "prefix", "file": file, "allowed_prefixes": list(grant.prefixes)}])


def check_allowed_paths(data: DataSpec, prefixes: list[str], *,
                        granted_by: str = "this server", remedy: str = SERVER_REMEDY) -> None:
    """Raise ForbiddenError (403) naming the first path outside ``prefixes``; ``granted_by``
    and ``remedy`` say whose prefixes they are and how to get more (the server's by default,
    a team's for an API token's own prefixes)."""
    for i, source in enumerate(data.features):
        if not isinstance(source, ParquetSource):
            continue
        where = f"data.features.{i}.path"
        check_no_nul(source.path, where)
        if not is_allowed(source.path, prefixes):
            raise ForbiddenError(
                f"{where}: {source.path!r} is outside the data prefixes {granted_by} may read "
                f"({', '.join(prefixes)}); put the data under one of them or {remedy}",
                details=[{"field": where, "message": "path not under an allowed prefix",
                          "allowed_prefixes": list(prefixes)}])


def check_sql_connections(data: DataSpec, granted: Sequence[str] | None, *, team: str) -> None:
    """Raise ForbiddenError (403) naming the first SQL source whose connection is not among the
    ``granted`` names (None: every connection the server defines is allowed)."""
    if granted is None:
        return
    for i, source in enumerate(data.features):
        if isinstance(source, SqlSource) and source.connection not in granted:
            where = f"data.features.{i}.connection"
            raise ForbiddenError(
                f"{where}: SQL connection {source.connection!r} is not granted to team "
                f"{team!r} (granted: {', '.join(granted) or 'none'}); read through a granted "
                f"connection or ask an admin for a token of team {team!r} that grants it",
                details=[{"field": where, "message": "connection not granted",
                          "granted_connections": list(granted)}])
