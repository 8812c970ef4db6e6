"""A job's lineage: what exactly it was trained on and with, recorded by its runner from the
read plan, and the check a rerun makes that the files are still the same.

Shape (``GET /v1/jobs/{id}/lineage``)::

    {"sources": [{"uri", "files": [{"path", "size", "etag", "version_id", "mtime"}]}],
     "sql": [{"connection", "query", "ran_at"}],
     "code": {"workflow": {"name", "module", "sha256"}, "packages": {"xgboost": "3.x.y", …}},
     "seeds": {…}, "spec_hash"}

Cheap by construction: the files are those the read plan already pruned to; an S3 source's
ETags, version ids and sizes come from one listing of the files' common prefix (pages of
1,000 keys), never a request per file; a local file is one ``stat``.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import posixpath
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from typing import Any

import pyarrow.fs as pafs

from railyard.data.read_plan import ReadPlan, SourcePlan
from railyard.errors import ConflictError

PACKAGES = ("railyard", "ray", "pyarrow", "xgboost", "lightgbm", "scikit-learn", "torch")
SEED_KEYS = frozenset({"seed", "random_state", "random_seed"})


# ------------------------------------------------------------------ files
def s3_listing(bucket: str, prefix: str) -> dict[str, dict[str, Any]]:
    """Every current object under ``s3://bucket/prefix`` by key: size, ETag, version id (None
    on an unversioned bucket) and mtime, from listing pages (boto3, honouring
    AWS_ENDPOINT_URL). A server without object versions is listed without them."""
    from botocore.exceptions import ClientError

    client = _s3_client(os.environ.get("AWS_ENDPOINT_URL"),
                        os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"))
    found: dict[str, dict[str, Any]] = {}
    try:
        for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket,
                                                                          Prefix=prefix):
            for obj in page.get("Versions", []):
                if obj.get("IsLatest"):
                    version = obj.get("VersionId")
                    found[obj["Key"]] = _s3_entry(obj, None if version in (None, "null")
                                                  else version)
        return found
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchBucket", "AccessDenied"):
            raise
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = _s3_entry(obj, None)
    return found


@lru_cache(maxsize=4)
def _s3_client(endpoint: str | None, region: str | None) -> Any:
    """A boto3 S3 client per endpoint and region (making one costs ~10 ms; they are
    thread-safe)."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=region)


def _s3_entry(obj: Mapping[str, Any], version_id: str | None) -> dict[str, Any]:
    modified = obj.get("LastModified")
    return {"size": int(obj.get("Size", 0)), "etag": str(obj.get("ETag", "")).strip('"'),
            "version_id": version_id,
            "mtime": modified.isoformat() if isinstance(modified, datetime) else None}


def file_facts(fs: pafs.FileSystem, paths: list[str]) -> list[dict[str, Any]]:
    """``{"path", "size", "etag", "version_id", "mtime"}`` of each of ``paths`` on ``fs``
    (pyarrow paths: ``bucket/key`` on S3), in order; a vanished file is ``{"path",
    "missing": True}``. S3: one listing of the common prefix; local: one stat each."""
    if isinstance(fs, pafs.S3FileSystem):
        return [_s3_fact(path, listing) for path, listing in _s3_listings(paths)]
    facts = []
    for info in fs.get_file_info(paths):
        if info.type != pafs.FileType.File:
            facts.append({"path": info.path, "missing": True})
            continue
        mtime = info.mtime.astimezone(UTC).isoformat() if info.mtime is not None else None
        facts.append({"path": info.path, "size": int(info.size or 0), "etag": None,
                      "version_id": None, "mtime": mtime})
    return facts


def listing_prefixes(keys: list[str]) -> list[str]:
    """The prefixes to list for ``keys`` of one bucket: the key itself for one file, else the
    keys' common directory (one recursive listing); keys with no common directory (a glob
    over the bucket's top level) are listed per directory, never the whole bucket."""
    if len(keys) == 1:
        return keys
    common = posixpath.commonpath(keys)
    if common:
        return [common.rstrip("/") + "/"]
    return sorted({posixpath.dirname(key) + "/" if "/" in key else key for key in keys})


def _s3_listings(paths: list[str]) -> Iterable[tuple[str, dict[str, dict[str, Any]]]]:
    """(path, the listing that holds it) per path: one listing per bucket's common prefix."""
    by_bucket: dict[str, list[str]] = {}
    for path in paths:
        bucket, _, key = path.partition("/")
        by_bucket.setdefault(bucket, []).append(key)
    listings: dict[str, dict[str, dict[str, Any]]] = {}
    for bucket, keys in by_bucket.items():
        listings[bucket] = {}
        for prefix in listing_prefixes(keys):
            listings[bucket].update(s3_listing(bucket, prefix))
    for path in paths:
        bucket, _, _ = path.partition("/")
        yield path, listings[bucket]


def _s3_fact(path: str, listing: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    entry = listing.get(path.partition("/")[2])
    if entry is None:
        return {"path": f"s3://{path}", "missing": True}
    return {"path": f"s3://{path}", **entry}


def source_files(sp: SourcePlan) -> dict[str, Any]:
    """A Parquet source's entry: its URI and the facts of every file the read touches (after
    partition pruning)."""
    dataset = sp.dataset
    paths = [fragment.path for fragment in (sp.scan.fragments if sp.scan is not None else [])]
    return {"uri": sp.parquet_source.path, "files": file_facts(dataset.filesystem, paths)}


def sql_query(sp: SourcePlan, ran_at: datetime) -> dict[str, Any]:
    """A SQL source's entry: its connection name (never the URL), the query as run and when."""
    from railyard.data import sql_sources

    statement = sp.statement
    try:
        dialect = sql_sources.normalize_url(sp.sql_url).get_dialect()()
        query = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    except Exception:  # noqa: BLE001 - a value without a literal form: the parametrised text
        query = str(statement)
    return {"connection": sp.sql_source.connection, "query": query,
            "ran_at": ran_at.isoformat()}


# ------------------------------------------------------------------ code, packages, seeds
def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str | None]:
    """Installed distribution versions (None: not installed); looked up once per process
    (they do not change under a running driver)."""
    return dict(_package_versions(tuple(names)))


@lru_cache(maxsize=8)
def _package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def workflow_code(workflow: object) -> dict[str, Any]:
    """The workflow's registered name, its module and the SHA-256 of that module's source."""
    cls = type(workflow)
    module = inspect.getmodule(cls)
    digest = None
    try:
        source = inspect.getsource(module) if module is not None else None
        digest = hashlib.sha256(source.encode()).hexdigest() if source is not None else None
    except (OSError, TypeError):      # built in, or no source file shipped
        digest = None
    return {"name": getattr(workflow, "name", cls.__name__), "module": cls.__module__,
            "sha256": digest}


def seeds(spec: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every seed in the spec (by its dotted path) and in the workflow's effective
    parameters (``train.params.<name>``)."""
    found: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                where = f"{path}.{key}" if path else str(key)
                if key in SEED_KEYS and not isinstance(inner, (Mapping, list)):
                    found[where] = inner
                else:
                    walk(inner, where)
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                walk(inner, f"{path}.{i}")

    walk(spec, "")
    for key, value in (params or {}).items():
        if key in SEED_KEYS:
            found[f"train.params.{key}"] = value
    return found


def workflow_params(workflow: object) -> dict[str, Any]:
    """The workflow's effective parameters, when it keeps them as a pydantic model."""
    params = getattr(workflow, "params", None)
    dump = getattr(params, "model_dump", None)
    return dict(dump(mode="json")) if callable(dump) else {}


def record(plan: ReadPlan, *, spec: Mapping[str, Any], spec_hash: str, workflow: object,
           ran_at: datetime) -> dict[str, Any]:
    """The lineage of a job that reads ``plan`` with ``workflow``."""
    return {
        "sources": [source_files(sp) for sp in plan.sources if sp.kind == "parquet"],
        "sql": [sql_query(sp, ran_at) for sp in plan.sources if sp.kind == "sql"],
        "code": {"workflow": workflow_code(workflow), "packages": package_versions()},
        "seeds": seeds(spec, workflow_params(workflow)),
        "spec_hash": spec_hash,
    }


# ------------------------------------------------------------------ pins (reruns)
def pins(lineage: Mapping[str, Any]) -> dict[str, Any]:
    """What a rerun must read unchanged: per source URI, its files' facts."""
    return {source["uri"]: [dict(f) for f in source.get("files", [])]
            for source in lineage.get("sources", [])}


def _same(pinned: Mapping[str, Any], now: Mapping[str, Any]) -> bool:
    if now.get("missing"):
        return False
    if pinned.get("etag") or now.get("etag"):
        same = pinned.get("etag") == now.get("etag") and pinned.get("size") == now.get("size")
        if pinned.get("version_id") and now.get("version_id"):
            same = same and pinned["version_id"] == now["version_id"]
        return same
    return pinned.get("size") == now.get("size") and pinned.get("mtime") == now.get("mtime")


def pin_problems(pinned: Mapping[str, Any],
                 current: Mapping[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each pinned file that changed or vanished, and each file a source now reads that was
    not pinned: ``{"uri", "path", "problem": "changed" | "missing" | "added"}``."""
    problems = []
    for uri, files in pinned.items():
        now = {f["path"]: f for f in current.get(uri, [])}
        for f in files:
            got = now.pop(f["path"], None)
            if got is None or got.get("missing"):
                problems.append({"uri": uri, "path": f["path"], "problem": "missing"})
            elif not _same(f, got):
                problems.append({"uri": uri, "path": f["path"], "problem": "changed"})
        problems += [{"uri": uri, "path": path, "problem": "added"} for path in now]
    return problems


def current_facts(pinned: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The pinned files' facts now (one listing per S3 source, a stat per local file)."""
    from railyard.artifacts.artifact_store import resolve

    current: dict[str, list[dict[str, Any]]] = {}
    for uri, files in pinned.items():
        if not files:
            current[uri] = []
            continue
        fs, _ = resolve(uri)
        paths = [f["path"].removeprefix("s3://") for f in files]
        current[uri] = file_facts(fs, paths)
    return current


def check_pins(pinned: Mapping[str, Any], current: Mapping[str, list[dict[str, Any]]],
               *, job_id: str) -> None:
    """A 409 naming the first file that changed, vanished or appeared since job ``job_id``
    read its data; the details list them all."""
    problems = pin_problems(pinned, current)
    if not problems:
        return
    first = problems[0]
    verb = {"changed": "has changed", "missing": "is gone",
            "added": "is new (the source now reads it)"}[first["problem"]]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise ConflictError(
        f"{first['path']} {verb} since job {job_id} read it{more}: the rerun would not train "
        "on the same data. Restore the file, or send {\"allow_changed_data\": true} to rerun "
        "on the data as it is now",
        details=[{"field": "allow_changed_data", **p} for p in problems])
