"""From a spec and its sources' schemas to a read plan: what each source reads and filters.

Every column the spec mentions must exist in some source (422 naming the field otherwise):
fetched names in their own source; the label and features fetched or derived by the workflow;
the date, holdout and derived-from columns in the source that fetches them, or else the one
source that has them. A filter may name any column of its source, fetched or not; it is pushed
into that source's read (Parquet: a Ray Data / pyarrow expression; SQL: a WHERE clause). A
filter on the join key applies to every source. Under a left join, filters on a later source's
columns run after the join (SQL semantics: a row without a match has nulls there), and are also
pushed into that source's read when they can never keep a null, which is then just earlier.

Access is checked here too: each Parquet path against the server's prefixes and, for a job,
those of the token that submitted it (:class:`DataAccess`); each local file a source lists when
it is opened (symbolic links resolved); a SQL source's connection against the token's grant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import sqlalchemy as sa
from ray.data.expressions import Expr

from railyard.config import Settings, get_settings
from railyard.data import parquet_sources, sql_sources
from railyard.data.allowed_paths import (
    DataAccess,
    Grant,
    check_allowed_paths,
    check_sql_connections,
    server_grant,
)
from railyard.data.filters import filter_where, filters_to_expr, null_rejecting, type_word
from railyard.data.joins import JoinType
from railyard.errors import DataSourceError, SpecError
from railyard.spec import (
    DataSpec,
    FeatureSource,
    Filter,
    ParquetSource,
    SqlSource,
    TrainingSpec,
)


def source_schema(source: FeatureSource, index: int = 0, connection_url: str | None = None,
                  timeout_s: float | None = None) -> pa.Schema:
    """The columns of a source: Parquet footers + Hive partitions, or a SQL ``LIMIT 0`` query."""
    if isinstance(source, SqlSource):
        assert connection_url is not None, "SQL sources need their connection URL"
        return sql_sources.sql_schema(source, connection_url, index, timeout_s)
    return parquet_sources.source_schema(source, index)


@dataclass(frozen=True)
class SourcePlan:
    """What to read from one ``data.features`` entry."""

    index: int
    source: FeatureSource
    schema: pa.Schema                    # every column of the source
    columns: list[str]                   # what is read from it
    filters: list[tuple[int, Filter]]    # (position in data.filters, filter) pushed into the read
    filter_expr: Expr | None
    connection_url: str | None = field(default=None, repr=False)
    opened: parquet_sources.Opened | None = field(default=None, repr=False, compare=False)
    # the prefixes every local file of a Parquet source must resolve under when it is opened
    grants: tuple[Grant, ...] = field(default=(), repr=False)

    @property
    def kind(self) -> str:
        """``parquet`` or ``sql``."""
        return "sql" if isinstance(self.source, SqlSource) else "parquet"

    @property
    def parquet_source(self) -> ParquetSource:
        """The source of a Parquet plan."""
        assert isinstance(self.source, ParquetSource), "not a Parquet source"
        return self.source

    @property
    def sql_source(self) -> SqlSource:
        """The source of a SQL plan."""
        assert isinstance(self.source, SqlSource), "not a SQL source"
        return self.source

    @property
    def sql_url(self) -> str:
        """The connection URL of a SQL plan."""
        assert self.connection_url is not None, "SQL sources need their connection URL"
        return self.connection_url

    @property
    def pyarrow_filter(self) -> pc.Expression | None:
        """The pushed filter as a pyarrow compute expression."""
        return None if self.filter_expr is None else self.filter_expr.to_pyarrow()

    @property
    def read_schema(self) -> pa.Schema:
        """The schema of what is read."""
        return pa.schema([self.schema.field(c) for c in self.columns])

    @cached_property
    def parquet(self) -> parquet_sources.Opened:
        """A Parquet source's files, checked against ``grants``, and the dataset over exactly
        them (the one opened for the schema, if any)."""
        return self.opened or parquet_sources.open_source(self.parquet_source, self.index,
                                                          self.grants)

    @property
    def dataset(self) -> pads.Dataset:
        """The pyarrow dataset of a Parquet source."""
        return self.parquet.dataset

    @cached_property
    def statement(self) -> sa.Select:
        """The SELECT of a SQL source (SQLAlchemy)."""
        dialect = sql_sources.normalize_url(self.sql_url).get_backend_name()
        return sql_sources.select_statement(self.sql_source, self.schema, self.columns,
                                            self.filters, dialect)

    @cached_property
    def scan(self) -> parquet_sources.ScanStats | None:
        """Files, bytes and rows a Parquet read touches after partition pruning (None: SQL)."""
        if self.kind == "sql":
            return None
        return parquet_sources.scan_stats(self.dataset, self.pyarrow_filter)

    def estimated_bytes(self) -> int:
        """On-disk bytes of the Parquet files read, or the database's estimate for SQL."""
        if self.scan is not None:
            return self.scan.bytes_read
        return sql_sources.estimate_bytes(self.statement, self.sql_url, self.sql_source,
                                          self.index)

    def rows_before_filters(self) -> int:
        """Rows in the files read (Parquet footers) or in the table/query (SQL count)."""
        if self.scan is not None:
            return self.scan.rows_read(self.dataset)
        return int(sql_sources.scalar_query(
            sql_sources.count_statement(self.sql_source, self.schema), self.sql_url,
            self.sql_source, self.index))


@dataclass(frozen=True)
class ReadPlan:
    """The whole read: one SourcePlan per features entry, joined on ``join_key``."""

    sources: list[SourcePlan]
    columns: list[str]                   # the output columns, in order
    data: DataSpec
    join_key: str | None = None
    join_type: JoinType = "inner"
    post_filters: list[tuple[int, Filter]] = field(default_factory=list)
    post_filter_expr: Expr | None = None

    @property
    def source(self) -> FeatureSource:
        """The first (driving) source."""
        return self.sources[0].source

    @property
    def schema(self) -> pa.Schema:
        """The first source's schema."""
        return self.sources[0].schema

    @property
    def filter_expr(self) -> Expr | None:
        """The first source's pushed filter."""
        return self.sources[0].filter_expr

    @property
    def pyarrow_filter(self) -> pc.Expression | None:
        """The first source's pushed filter as a pyarrow expression."""
        return self.sources[0].pyarrow_filter

    @cached_property
    def output_schema(self) -> pa.Schema:
        """The schema of the joined, filtered output (types from the owning sources)."""
        return pa.schema([self.field(c) for c in self.columns])

    def field(self, column: str) -> pa.Field:
        """A column's field from the first source that reads it."""
        return next(sp.schema.field(column) for sp in self.sources if column in sp.columns)

    def estimated_bytes(self) -> int:
        """What the read is expected to bring in, all sources together."""
        return sum(sp.estimated_bytes() for sp in self.sources)


def _columns_text(schema: pa.Schema, limit: int = 40) -> str:
    names = schema.names
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit
                                       else "")


def check_access(data: DataSpec, settings: Settings,
                 access: DataAccess | None = None) -> list[Grant]:
    """Each Parquet path against the server's prefixes and the token's (``access``), each SQL
    connection against the token's grant (403 naming the field); the grants every local file
    must then resolve under."""
    check_allowed_paths(data, settings.allowed_data_prefixes)
    if access is None:
        return [server_grant(settings.allowed_data_prefixes)]
    grants = access.grants(settings.allowed_data_prefixes)
    for grant in grants[1:]:
        check_allowed_paths(data, list(grant.prefixes), granted_by=grant.granted_by,
                            remedy=grant.remedy)
    check_sql_connections(data, access.sql_connections, team=access.team)
    return grants


def check_data_files(data: DataSpec, *, settings: Settings | None = None,
                     access: DataAccess | None = None) -> None:
    """The submit-time access check of what the job will read: :func:`check_access`, then every
    local file each Parquet source lists, resolved (links followed) and checked against the
    server's and the token's prefixes (403 naming the file and the field). S3 sources are not
    listed: S3 has no links, so their path check covers every key."""
    settings = settings or get_settings()
    grants = check_access(data, settings, access)
    if not any(grant.prefixes for grant in grants):
        return
    for i, source in enumerate(data.features):
        if isinstance(source, ParquetSource) and not source.path.startswith("s3://"):
            parquet_sources.locate(source, i, grants)


def plan_read(spec: TrainingSpec, *, derived: dict[str, list[str]] | None = None,
              schema: pa.Schema | None = None, schemas: list[pa.Schema] | None = None,
              settings: Settings | None = None, access: DataAccess | None = None) -> ReadPlan:
    """Check the spec against the sources' schemas and decide what to read from each.

    ``derived`` maps columns a workflow derives to the source columns it needs. ``schemas``
    (one per features entry; ``schema`` for a single source) skip the lookups, as the
    submit-time validation passes cached ones. ``access`` is what the job's token may read
    (the driver passes the job's). Raises SpecError / DataSourceError (422) naming the field,
    ForbiddenError (403) for a path, a local file (links resolved, when a source is opened) or
    a SQL connection outside what the server and the token allow.
    """
    settings = settings or get_settings()
    data = spec.data
    derived = derived or {}
    sources = data.features
    grants = tuple(check_access(data, settings, access))
    urls = [sql_sources.connection_url(s, settings.sql_connections, i)
            if isinstance(s, SqlSource) else None for i, s in enumerate(sources)]
    opened: dict[int, parquet_sources.Opened] = {}
    if schemas is None and schema is not None and len(sources) == 1:
        schemas = [schema]
    if schemas is None:
        schemas = []
        for i, s in enumerate(sources):
            if isinstance(s, SqlSource):
                schemas.append(source_schema(s, i, urls[i]))
            else:
                opened[i] = parquet_sources.open_source(s, i, grants)
                schemas.append(opened[i].dataset.schema)
    multi = len(sources) > 1
    key = data.join_key if multi else None
    labels = " or ".join(f"data.features.{i} ({s.label})" for i, s in enumerate(sources))

    def not_found(column: str, where: str, field_path: str, inside: list[int]) -> DataSourceError:
        listing = "; ".join(f"data.features.{i} has {_columns_text(schemas[i])}" for i in inside)
        place = sources[inside[0]].label if len(inside) == 1 else labels
        return DataSourceError(
            f"{where}: no column {column!r} in {place}; {listing}",
            details=[{"field": field_path, "message": f"column {column!r} not found"}])

    def owner(column: str, where: str, field_path: str) -> int:
        having = [i for i, s in enumerate(schemas) if column in s.names]
        if not having:
            raise not_found(column, where, field_path, list(range(len(sources))))
        fetching = [i for i in having if column in sources[i].names]
        if fetching or len(having) == 1:
            return (fetching or having)[0]
        raise SpecError(
            f"{where}: column {column!r} is in " + " and ".join(
                f"data.features.{i}" for i in having) + "; add it to the names of the one to use",
            details=[{"field": field_path, "message": "column in several sources"}])

    read: dict[int, list[str]] = {i: list(s.names) for i, s in enumerate(sources)}
    for i, source in enumerate(sources):
        for j, name in enumerate(source.names):
            if name not in schemas[i].names:
                raise not_found(name, f"data.features.{i}.names.{j}",
                                f"data.features.{i}.names.{j}", [i])
        if key is not None:
            if key not in schemas[i].names:
                raise not_found(key, "data.join_key", "data.join_key", [i])
            first, here = schemas[0].field(key).type, schemas[i].field(key).type
            if type_word(first) != type_word(here):
                raise SpecError(
                    f"data.join_key: {key!r} is {first} in data.features.0 but {here} in "
                    f"data.features.{i}; join on columns of the same kind",
                    details=[{"field": "data.join_key", "message": "key types differ"}])
            read[i].append(key)

    fetched = set(data.fetched_columns)
    for i, name in enumerate(spec.train.classifier_features):
        if name not in fetched and name not in derived:
            raise SpecError(
                f"train.classifier_features.{i}: {name!r} is not fetched; add it to "
                "data.features[].names",
                details=[{"field": f"train.classifier_features.{i}", "message": "not fetched"}])
    label = spec.train.label
    if label not in fetched and label not in derived:
        raise SpecError(
            f"train.label: {label!r} is neither fetched (data.features[].names) nor derived by "
            f"workflow {spec.train.workflow_name!r}"
            + (f" (it derives {', '.join(sorted(derived))})" if derived else ""),
            details=[{"field": "train.label", "message": "label not fetched or derived"}])

    columns = list(data.fetched_columns)
    extras = [(c, "train.label") for name in derived for c in derived[name]]
    if data.date_column:
        extras.append((data.date_column, "data.date_column"))
    if data.holdout_date_column:
        extras.append((data.holdout_date_column, "data.holdout_sampling"))
    if data.holdout_sampling.hash_sampling is not None:
        extras.append((data.holdout_sampling.hash_sampling.column,
                       "data.holdout_sampling.hash_sampling.column"))
    for column, where in extras:
        i = owner(column, where, where)
        read[i].append(column)
        columns.append(column)
    if data.holdout_date_column:
        dtype = schemas[owner(data.holdout_date_column, "data.holdout_sampling",
                              "data.holdout_sampling")].field(data.holdout_date_column).type
        if not (pa.types.is_temporal(dtype) or pa.types.is_integer(dtype)):
            raise SpecError(
                f"data.holdout_sampling: date column {data.holdout_date_column!r} has type "
                f"{dtype}; use a date or timestamp column",
                details=[{"field": "data.holdout_sampling", "message": "not a date column"}])

    pushed: dict[int, list[tuple[int, Filter]]] = {i: [] for i in range(len(sources))}
    post: list[tuple[int, Filter]] = []
    for n, flt in enumerate(data.filters):
        name = flt.feature_name
        where = filter_where(n, flt)
        targets = list(range(len(sources))) if name == key else [
            owner(name, where, f"data.filters.{n}.feature_name")]
        for i in targets:
            if data.join_type == "left" and i > 0 and name != key:
                post.append((n, flt))
                read[i].append(name)
                if not null_rejecting(flt):
                    continue
            pushed[i].append((n, flt))

    plans = []
    for i, source in enumerate(sources):
        mine = pushed[i]
        plans.append(SourcePlan(
            index=i, source=source, schema=schemas[i], columns=list(dict.fromkeys(read[i])),
            filters=mine, filter_expr=filters_to_expr([f for _, f in mine], schemas[i],
                                                      [n for n, _ in mine]),
            connection_url=urls[i], opened=opened.get(i), grants=grants))
    have = {c for s in schemas for c in s.names}
    columns = [c for c in dict.fromkeys(columns) if c not in derived or c in have]
    post_schema = pa.schema([next(p.schema.field(c) for p in plans if c in p.columns)
                             for c in dict.fromkeys(f.feature_name for _, f in post)])
    return ReadPlan(sources=plans, columns=columns, data=data, join_key=key,
                    join_type=data.join_type, post_filters=post,
                    post_filter_expr=filters_to_expr([f for _, f in post], post_schema,
                                                     [n for n, _ in post]))


def plan_summary(plan: ReadPlan) -> list[dict[str, Any]]:
    """A JSON-ready description of each source's part of the plan (for logs and stats)."""
    return [{"index": sp.index, "kind": sp.kind, "source": sp.source.label,
             "columns": sp.columns, "filters": [n for n, _ in sp.filters]}
            for sp in plan.sources]
