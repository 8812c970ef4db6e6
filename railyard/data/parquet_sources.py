"""Parquet sources: a file, a directory or a glob, local or on S3, through pyarrow.dataset.

Directories are read with Hive partitioning: ``year=2018/country=US/part-0.parquet`` adds the
columns ``year`` and ``country``, usable in filters like any other column. A filter on a
partition column prunes whole files before anything is read: ``pyarrow.dataset`` drops the
fragments whose partition expression contradicts the filter, and the Ray Data path is handed
only the surviving files. ``scan_stats`` reports what pruning left (files, bytes, and rows from
the Parquet footers), which is the evidence that it happened.

Globs: ``*`` and ``?`` stay within one path segment, ``**`` spans directories, ``[abc]`` is a
character class; files whose names start with ``.`` or ``_`` are skipped, as pyarrow does.

On local disk a read never discovers files on its own: :func:`locate` lists a directory's or a
glob's files, resolves each (symbolic links followed) and checks it against the allowed
prefixes it is given (railyard.data.allowed_paths), and the dataset is built from exactly that
list, so a link that leads out of a prefix is refused (403) rather than followed.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs

from railyard.artifacts.artifact_store import resolve
from railyard.data.allowed_paths import GLOB_CHARS, Grant, check_files, check_no_nul, glob_base
from railyard.errors import DataSourceError
from railyard.spec import ParquetSource

if TYPE_CHECKING:
    import ray.data
    from ray.data.expressions import Expr


@dataclass(frozen=True)
class ParquetLocation:
    """Where a source's files are: the filesystem, the files (for a glob) and the Hive base."""

    fs: pafs.FileSystem
    path: str
    # the files to read: a glob's matches, a local directory's files; None for a single file
    # or an S3 directory (pyarrow lists it: S3 has no links to check)
    files: list[str] | None
    base_dir: str | None         # where Hive partition directories start (None: a single file)


class Opened(NamedTuple):
    """A located source and the pyarrow dataset over exactly its located files."""

    location: ParquetLocation
    dataset: pads.Dataset


@dataclass(frozen=True)
class ScanStats:
    """What reading a source with a given filter touches, after partition pruning."""

    files_total: int
    files_read: int
    bytes_read: int
    fragments: list = field(default_factory=list, repr=False, compare=False)

    def rows_read(self, dataset: pads.Dataset) -> int:
        """Rows in the files read, before row filters: Parquet footers only, no data pages."""
        if not self.fragments:
            return 0
        return pads.FileSystemDataset(self.fragments, dataset.schema, dataset.format,
                                      dataset.filesystem).count_rows()


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A regex for a glob: ``*``/``?`` within a segment, ``**`` across segments."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _where(index: int) -> str:
    return f"data.features.{index}.path"


def _not_found(source: ParquetSource, index: int, reason: str) -> DataSourceError:
    return DataSourceError(
        f"{_where(index)}: cannot read Parquet at {source.path!r}: {reason}. Check the path "
        "and that the server can reach it.",
        details=[{"field": _where(index), "message": reason}])


def _hidden(relative: str) -> bool:
    """True for a path (below a directory read) that pyarrow's discovery skips: one with a
    segment starting with ``.`` or ``_``."""
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def _directory_files(fs: pafs.FileSystem, path: str) -> list[str]:
    """Every file a pyarrow discovery of directory ``path`` would read, sorted."""
    selector = pafs.FileSelector(path, recursive=True)
    skip = len(path.rstrip("/")) + 1
    return sorted(info.path for info in fs.get_file_info(selector)
                  if info.type == pafs.FileType.File and not _hidden(info.path[skip:]))


def locate(source: ParquetSource, index: int = 0,
           grants: Sequence[Grant] = ()) -> ParquetLocation:
    """Resolve the source's path; list the files of a glob and of a local directory. Every
    local file to read is resolved (links followed) and checked against ``grants`` (403 naming
    it). Raise DataSourceError if nothing is there."""
    check_no_nul(source.path, _where(index))
    try:
        fs, path = resolve(source.path)
    except ValueError as exc:         # an unsupported scheme
        raise _not_found(source, index, str(exc)) from None
    try:
        if GLOB_CHARS & set(path):
            base = glob_base(path)
            remainder = path[len(base):]
            selector = pafs.FileSelector(base, recursive="/" in remainder.strip("/")
                                         or "**" in remainder, allow_not_found=True)
            regex = glob_regex(path)
            files = sorted(info.path for info in fs.get_file_info(selector)
                           if info.type == pafs.FileType.File and regex.fullmatch(info.path)
                           and not posixpath.basename(info.path).startswith((".", "_")))
            if not files:
                raise _not_found(source, index, "no files match the pattern")
            where = ParquetLocation(fs=fs, path=path, files=files, base_dir=base)
        else:
            kind = fs.get_file_info(path).type
            if kind == pafs.FileType.NotFound:
                raise _not_found(source, index, "no such file or directory")
            directory = kind == pafs.FileType.Directory
            local = isinstance(fs, pafs.LocalFileSystem)
            where = ParquetLocation(
                fs=fs, path=path, files=_directory_files(fs, path) if directory and local
                else None, base_dir=path if directory else None)
    except OSError as exc:
        raise _not_found(source, index, str(exc)) from None
    if isinstance(fs, pafs.LocalFileSystem):
        check_files(where.files if where.files is not None else [path], grants,
                    where=_where(index), source_path=source.path)
    return where


def open_source(source: ParquetSource, index: int = 0, grants: Sequence[Grant] = ()) -> Opened:
    """The source located (its local files checked against ``grants``) and a pyarrow dataset
    over exactly the located files (Hive partitioning for directories and globs)."""
    where = locate(source, index, grants)
    if where.files == []:
        raise _not_found(source, index, "the directory holds no Parquet files")
    try:
        if where.files is not None:
            dataset = pads.dataset(where.files, filesystem=where.fs, format="parquet",
                                   partitioning="hive", partition_base_dir=where.base_dir)
        else:
            dataset = pads.dataset(where.path, filesystem=where.fs, format="parquet",
                                   partitioning="hive" if where.base_dir else None)
    except (OSError, pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise _not_found(source, index, str(exc)) from None
    if not dataset.files:
        raise _not_found(source, index, "the directory holds no Parquet files")
    return Opened(where, dataset)


def open_dataset(source: ParquetSource, index: int = 0,
                 grants: Sequence[Grant] = ()) -> pads.Dataset:
    """A pyarrow dataset over the source (Hive partitioning for directories and globs)."""
    return open_source(source, index, grants).dataset


def source_schema(source: ParquetSource, index: int = 0,
                  grants: Sequence[Grant] = ()) -> pa.Schema:
    """The schema of a source: Parquet footer columns plus Hive partition columns."""
    return open_dataset(source, index, grants).schema


def pruned_files(dataset: pads.Dataset, pyarrow_filter: pc.Expression | None) -> list[str]:
    """The files left after partition pruning with ``pyarrow_filter``."""
    return [fragment.path for fragment in dataset.get_fragments(filter=pyarrow_filter)]


def scan_stats(dataset: pads.Dataset, pyarrow_filter: pc.Expression | None) -> ScanStats:
    """Files and bytes of what a read with ``pyarrow_filter`` touches (no file is opened)."""
    fragments = list(dataset.get_fragments(filter=pyarrow_filter))
    sizes = file_sizes(dataset.filesystem, [f.path for f in fragments])
    return ScanStats(files_total=len(dataset.files), files_read=len(fragments),
                     bytes_read=sum(sizes), fragments=fragments)


def file_sizes(fs: pafs.FileSystem, paths: list[str]) -> list[int]:
    """Sizes of ``paths``: one listing of their common directory (one request on S3, where a
    lookup per file is a request per file), else a lookup per file."""
    if len(paths) > 1:
        base = posixpath.commonpath(paths)
        listing = {info.path: info.size or 0 for info in fs.get_file_info(
            pafs.FileSelector(base, recursive=True, allow_not_found=True))}
        if all(path in listing for path in paths):
            return [listing[path] for path in paths]
    return [info.size or 0 for info in fs.get_file_info(paths)]


def read_arrow(dataset: pads.Dataset, columns: list[str],
               pyarrow_filter: pc.Expression | None) -> pa.Table:
    """The column-pruned, filtered table, read in this process."""
    return dataset.to_table(columns=columns, filter=pyarrow_filter)


def partition_types(dataset: pads.Dataset) -> dict[str, type]:
    """Python types of the Hive partition columns pyarrow found, for Ray's ``Partitioning``
    (which reads every partition value as a string unless told otherwise)."""
    partitioning = getattr(dataset, "partitioning", None)
    if not isinstance(partitioning, pads.HivePartitioning):
        return {}
    # pyarrow reports the whole dataset schema here; the partition columns are the keys
    # that really appear as key=value directories in the file paths.
    keys = {segment.split("=", 1)[0] for path in getattr(dataset, "files", [])
            for segment in path.split("/")[:-1] if "=" in segment}
    kinds = {"integer": int, "floating": float, "boolean": bool}
    out: dict[str, type] = {}
    for f in partitioning.schema:
        if f.name not in keys:
            continue
        kind = next((k for k in kinds if getattr(pa.types, f"is_{k}")(f.type)), None)
        out[f.name] = kinds[kind] if kind else str
    return out


def read_ray(source: ParquetSource, columns: list[str], filter_expr: Expr | None,
             index: int = 0, *, ray_remote_args: dict[str, Any] | None = None,
             opened: Opened | None = None, grants: Sequence[Grant] = ()) -> ray.data.Dataset:
    """The same read as a lazy Ray Dataset over the files that survive partition pruning.

    ``filter_expr`` is a Ray Data expression; Ray pushes it into the Parquet read.
    ``ray_remote_args`` (e.g. a pool's ``label_selector``) place the read tasks. ``opened``
    (the plan's checked dataset) is read as it is; without it the source is opened here,
    its files checked against ``grants``.
    """
    remote = dict(ray_remote_args or {})
    import ray.data
    from ray.data.datasource.partitioning import Partitioning, PartitionStyle

    where, dataset = opened or open_source(source, index, grants)
    files = pruned_files(dataset, None if filter_expr is None else filter_expr.to_pyarrow())
    if not files:
        empty = pa.schema([dataset.schema.field(c) for c in columns]).empty_table()
        return ray.data.from_arrow(empty)
    partitioning = None
    types = partition_types(dataset)
    if where.base_dir and types:
        # Only with real key=value directories: given a hive Partitioning over plain files,
        # Ray 2.60 looks for every schema column in the path (KeyError).
        partitioning = Partitioning(PartitionStyle.HIVE, base_dir=where.base_dir, field_types=types)
    ds = ray.data.read_parquet(files, filesystem=where.fs, columns=columns,
                               partitioning=partitioning, **remote)
    if filter_expr is not None:
        ds = ds.filter(expr=filter_expr, **remote)
    return ds
