"""Artifact store over URIs: a local directory or an ``s3://`` prefix, through pyarrow.fs.

``AWS_ENDPOINT_URL`` (the standard AWS variable) points the S3 filesystem at any
S3-compatible server, so the code path is the AWS one in tests as in production.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pyarrow.fs as pafs


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 filesystem honouring AWS_ENDPOINT_URL and the usual credential variables."""
    return _s3_filesystem(os.environ.get("AWS_ENDPOINT_URL"),
                          os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))


@lru_cache(maxsize=8)
def _s3_filesystem(endpoint: str | None, region: str | None) -> pafs.S3FileSystem:
    kwargs: dict = {"region": region or "us-east-1"}
    if endpoint:
        kwargs["endpoint_override"] = endpoint
        kwargs["scheme"] = "https" if endpoint.startswith("https") else "http"
    return pafs.S3FileSystem(**kwargs)


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem for a URI and the path within it (``s3://b/k`` → S3, ``b/k``)."""
    if uri.startswith("s3://"):
        return s3_filesystem(), uri[len("s3://"):]
    if "://" in uri and not uri.startswith("file://"):
        raise ValueError(f"unsupported URI scheme in {uri!r}: use s3:// or a local path")
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    return pafs.LocalFileSystem(), str(Path(path).expanduser().absolute())


def join(root: str, *parts: str) -> str:
    """Join URI parts with '/'."""
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


class ArtifactStore:
    """Reads and writes job artifacts under one root URI."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.fs, self._root_path = resolve(self.root)

    def uri(self, *parts: str) -> str:
        """The full URI of an artifact."""
        return join(self.root, *parts)

    def _path(self, uri: str) -> str:
        fs, path = resolve(uri)
        return path

    def put_bytes(self, data: bytes, *parts: str) -> str:
        """Write bytes to ``root/parts...``; return the URI."""
        uri = self.uri(*parts)
        path = self._path(uri)
        if isinstance(self.fs, pafs.LocalFileSystem):
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(path) as out:
            out.write(data)
        return uri

    def put_file(self, local_path: str | Path, *parts: str) -> str:
        """Copy a local file to ``root/parts...``; return the URI."""
        return self.put_bytes(Path(local_path).read_bytes(), *parts)

    def get_bytes(self, uri: str) -> bytes:
        """Read an artifact by URI (must be under this store's root or any resolvable URI)."""
        fs, path = resolve(uri)
        with fs.open_input_stream(path) as src:
            return src.read()

    def exists(self, uri: str) -> bool:
        """True if the artifact exists."""
        fs, path = resolve(uri)
        return fs.get_file_info(path).type != pafs.FileType.NotFound
