"""SQL sources: a table or a read-only SELECT on a database the server names.

A spec names a connection (``{"source": "sql", "connection": "warehouse", ...}``); the server
maps names to SQLAlchemy URLs in ``RAILYARD_SQL_CONNECTIONS``. ``postgresql://`` URLs use
psycopg 3, the driver the project ships.

Every read is ``SELECT <columns> FROM <table or (query) AS q> WHERE <filters>``: column pruning
and filters run in the database, with values as bound parameters of the column's type (never
spliced into the SQL). String ordering comparisons use ``COLLATE "C"`` on Postgres so that they
agree with Arrow's byte order. A query is checked again in the connection's own dialect
(railyard.spec.sql_guard) before it is sent. Reads run in a read-only transaction (Postgres:
``SET TRANSACTION READ ONLY`` with a ``statement_timeout`` of RAILYARD_SQL_STATEMENT_TIMEOUT_S and
``standard_conforming_strings`` on, so the database reads quotes as the guard did; SQLite:
``PRAGMA query_only``), the second fence after the guard; the third is the database role the
operator's connection URL logs in as, which should only be able to read.

Types: on Postgres the column types come from the ``LIMIT 0`` result's type OIDs (``numeric`` is
read as float64, unknown types as strings); on other databases they are inferred from the first
rows. Small reads go through SQLAlchemy in this process; large ones through
``ray.data.read_sql`` with a picklable connection factory, sharded by a key column on Postgres.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from railyard.config import get_settings
from railyard.data.filters import coerce_scalar, filter_where, type_word
from railyard.errors import BackendUnavailableError, DataSourceError, SpecError
from railyard.spec import Filter, Predicate, SqlSource
from railyard.spec.sql_guard import check_select_only

if TYPE_CHECKING:
    import psycopg
    import ray.data

PG_TYPES: dict[str, pa.DataType] = {
    "bool": pa.bool_(), "int2": pa.int16(), "int4": pa.int32(), "int8": pa.int64(),
    "oid": pa.int64(), "float4": pa.float32(), "float8": pa.float64(), "numeric": pa.float64(),
    "text": pa.string(), "varchar": pa.string(), "bpchar": pa.string(), "name": pa.string(),
    "char": pa.string(), "uuid": pa.string(), "json": pa.string(), "jsonb": pa.string(),
    "date": pa.date32(), "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
}
SAMPLE_ROWS = 1000
QUERY_CANCELED = "57014"          # Postgres SQLSTATE of a statement stopped by statement_timeout
_BIND_COLON = re.compile(r"(?<![:\w\\]):(?=\w)")


# --------------------------------------------------------------------------- connections

def normalize_url(url: str) -> URL:
    """The SQLAlchemy URL, with ``postgresql://`` mapped to the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def connection_url(source: SqlSource, connections: dict[str, str], index: int = 0) -> str:
    """The URL behind ``source.connection``; DataSourceError (422) for an unknown name, which
    does not list the other names (a caller may not be granted them)."""
    url = connections.get(source.connection)
    if url is None:
        where = f"data.features.{index}.connection"
        raise DataSourceError(
            f"{where}: no SQL connection named {source.connection!r} on this server; ask your "
            "operator which connection names you may use (an operator may set "
            "RAILYARD_SQL_CONNECTIONS and grant them to tokens with `railyard token create "
            "--sql-connection NAME`)",
            details=[{"field": where, "message": "unknown connection name"}])
    return url


@lru_cache(maxsize=32)
def engine_for(url: str) -> Engine:
    """One pooled engine per URL for this process."""
    return sa.create_engine(normalize_url(url), pool_pre_ping=True)


def _dialect(url: str) -> str:
    return normalize_url(url).get_backend_name()


def statement_timeout_ms(timeout_s: float | None = None) -> int:
    """A statement's time limit in milliseconds: ``timeout_s`` or the server's
    RAILYARD_SQL_STATEMENT_TIMEOUT_S (at least 1 ms; Postgres reads 0 as no limit)."""
    seconds = get_settings().sql_statement_timeout_s if timeout_s is None else timeout_s
    return max(1, int(seconds * 1000))


@contextmanager
def read_only(url: str, *, timeout_s: float | None = None) -> Iterator[Connection]:
    """A connection in a read-only transaction (rolled back at the end); on Postgres each
    statement stops after ``timeout_s`` (default RAILYARD_SQL_STATEMENT_TIMEOUT_S)."""
    with engine_for(url).connect() as conn:
        name = conn.dialect.name
        if name == "postgresql":
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {statement_timeout_ms(timeout_s)}")
            conn.exec_driver_sql("SET LOCAL standard_conforming_strings = on")
        elif name == "sqlite":
            conn.exec_driver_sql("PRAGMA query_only = ON")
        try:
            yield conn
        finally:
            conn.rollback()


class ConnectionFactory:
    """Picklable DB-API connection factory for ``ray.data.read_sql``; sessions are read-only
    and, on Postgres, stop a statement after ``timeout_s`` (default
    RAILYARD_SQL_STATEMENT_TIMEOUT_S, read where the factory is made)."""

    def __init__(self, url: str, timeout_s: float | None = None) -> None:
        self.url = url
        self.timeout_ms = statement_timeout_ms(timeout_s)

    def __repr__(self) -> str:          # never print the URL: it may hold a password
        return f"ConnectionFactory({_dialect(self.url)})"

    def __call__(self) -> Any:
        engine = sa.create_engine(normalize_url(self.url), poolclass=NullPool)
        connection = engine.raw_connection()
        cursor = connection.cursor()
        if engine.dialect.name == "postgresql":
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            cursor.execute(f"SET statement_timeout = {int(self.timeout_ms)}")
            cursor.execute("SET standard_conforming_strings = on")
        elif engine.dialect.name == "sqlite":
            cursor.execute("PRAGMA query_only = ON")
        cursor.close()
        connection.commit()
        return connection


def database_error(exc: sa.exc.DBAPIError, source: SqlSource, index: int) -> Exception:
    """A RailyardError for a database failure, naming the source (never the URL)."""
    where = f"data.features.{index}"
    orig = getattr(exc, "orig", exc)
    reason = (str(orig).strip().splitlines() or [type(orig).__name__])[0][:500]
    if getattr(orig, "sqlstate", None) == QUERY_CANCELED:
        return DataSourceError(
            f"{where}: {source.label}: the database stopped the read ({reason}): it ran past "
            "the statement timeout (RAILYARD_SQL_STATEMENT_TIMEOUT_S); read less (filters, "
            "fewer columns, a simpler query) or ask your operator for a longer timeout",
            details=[{"field": where, "message": "statement timeout"}])
    if isinstance(exc, sa.exc.OperationalError):
        return BackendUnavailableError(
            f"{where}: {source.label}: the database did not answer ({reason}); retry later")
    return DataSourceError(f"{where}: {source.label}: the database refused the read: {reason}",
                           details=[{"field": where, "message": reason}])


# --------------------------------------------------------------------------- schema

def _query_text(source: SqlSource, dialect: str | None = None, index: int = 0) -> str:
    """The query without a trailing ``;`` or comment, on its own lines, with ``:name`` escaped
    so SQLAlchemy does not take it for a bound parameter; checked by the guard in the
    connection's ``dialect`` (SQLAlchemy's name) first: 422 naming the field."""
    assert source.query is not None, "a SqlSource without a table has a query (its validator)"
    try:
        body = check_select_only(source.query, dialect)
    except ValueError as exc:
        where = f"data.features.{index}.query"
        raise DataSourceError(f"{where}: {exc}",
                              details=[{"field": where, "message": str(exc)}]) from None
    return "\n" + _BIND_COLON.sub(lambda m: "\\:", body) + "\n"


def _from_clause_text(source: SqlSource, dialect: str, index: int = 0) -> str:
    return f"({_query_text(source, dialect, index)}) AS q"


def _table(table: str, columns: list[sa.ColumnClause]) -> sa.TableClause:
    schema, _, name = table.rpartition(".")
    return sa.table(name, *columns, schema=schema or None)


def arrow_type_for_oid(oid: int | None) -> pa.DataType | None:
    """The Arrow type of a Postgres type OID (None if unknown)."""
    import psycopg

    info = psycopg.postgres.types.get(oid) if oid is not None else None
    return PG_TYPES.get(info.name, pa.string()) if info is not None else None


def sql_schema(source: SqlSource, url: str, index: int = 0,
               timeout_s: float | None = None) -> pa.Schema:
    """The columns of the table or query, from a ``LIMIT 0`` query (types from Postgres OIDs;
    elsewhere inferred from the first rows)."""
    relation = (_table(source.table, []) if source.table
                else sa.text(_from_clause_text(source, _dialect(url), index)))
    head: sa.Select[Any] = sa.select(sa.literal_column("*")).select_from(relation)
    try:
        with read_only(url, timeout_s=timeout_s) as conn:
            if conn.dialect.name == "postgresql":
                result = conn.execute(head.limit(0))
                # psycopg's description entries: its Column, whose type_code is a type OID
                columns = cast("list[psycopg.Column]", result.cursor.description)
                fields = [(d.name, arrow_type_for_oid(d.type_code)) for d in columns]
            else:
                result = conn.execute(head.limit(SAMPLE_ROWS))
                names = list(result.keys())
                rows = result.fetchall()
                fields = [(n, _infer([r[i] for r in rows])) for i, n in enumerate(names)]
    except sa.exc.DBAPIError as exc:
        raise database_error(exc, source, index) from None
    names = [n for n, _ in fields]
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise DataSourceError(
            f"data.features.{index}.query: the query returns column(s) {', '.join(duplicated)} "
            "more than once; give each column a distinct name (AS ...)",
            details=[{"field": f"data.features.{index}.query", "message": "duplicate columns"}])
    return pa.schema([pa.field(n, t or pa.string()) for n, t in fields])


def _infer(values: list[Any]) -> pa.DataType:
    try:
        dtype = pa.array(values).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.string()
    if pa.types.is_null(dtype):
        return pa.string()
    return pa.float64() if pa.types.is_decimal(dtype) else dtype


# --------------------------------------------------------------------------- statements

def sa_type(dtype: pa.DataType) -> sa.types.TypeEngine:
    """The SQLAlchemy type for binding values compared with a column of Arrow type ``dtype``."""
    if pa.types.is_integer(dtype):
        return sa.BigInteger()
    if pa.types.is_floating(dtype):
        return sa.Float()
    if pa.types.is_decimal(dtype):
        return sa.Numeric()
    if pa.types.is_boolean(dtype):
        return sa.Boolean()
    if pa.types.is_timestamp(dtype):
        return sa.DateTime(timezone=dtype.tz is not None)
    if pa.types.is_date(dtype):
        return sa.Date()
    if type_word(dtype) == "string":
        return sa.String()
    return sa.types.NullType()


def filter_clause(flt: Filter, column: sa.ColumnElement, dtype: pa.DataType, where: str,
                  dialect: str) -> sa.ColumnElement:
    """One spec filter as a SQL condition, with the same null semantics as the Arrow filter."""
    p = flt.predicate
    if p is Predicate.IsNull:
        return column.is_(None)
    if p is Predicate.IsNotNull:
        return column.is_not(None)
    assert flt.feature_value is not None, "the Filter validator requires a value here"
    raw = flt.feature_value.value

    def value(v: Any) -> sa.ColumnElement:
        scalar = coerce_scalar(v, dtype, where)
        return sa.literal(scalar.as_py(), sa_type(scalar.type))

    ordered = column
    if dialect == "postgresql" and type_word(dtype) == "string":
        ordered = sa.collate(column, "C")
    if p is Predicate.IsIn:
        return column.in_([value(v) for v in raw])
    if p is Predicate.NotIn:
        return sa.and_(column.not_in([value(v) for v in raw]), column.is_not(None))
    if p is Predicate.Between:
        return ordered.between(value(raw[0]), value(raw[1]))
    if p is Predicate.StartsWith:
        if type_word(dtype) != "string":
            raise SpecError(f"{where}: StartsWith needs a string column, not {dtype}",
                            details=[{"field": where, "message": "StartsWith on non-string"}])
        return column.startswith(raw, autoescape=True)
    operand = value(raw)
    return {
        Predicate.Eq: lambda: column == operand, Predicate.NotEq: lambda: column != operand,
        Predicate.Gt: lambda: ordered > operand, Predicate.GtEq: lambda: ordered >= operand,
        Predicate.Lt: lambda: ordered < operand, Predicate.LtEq: lambda: ordered <= operand,
    }[p]()


def relation(source: SqlSource, schema: pa.Schema, dialect: str | None = None) -> sa.FromClause:
    """The table, or the query as a subquery ``q``, with typed columns (the query checked in
    ``dialect``, SQLAlchemy's name of the connection's database, where given)."""
    columns = [sa.column(f.name, sa_type(f.type)) for f in schema]
    if source.table:
        return _table(source.table, columns)
    return sa.text(_query_text(source, dialect)).columns(*columns).subquery("q")


def select_statement(source: SqlSource, schema: pa.Schema, columns: list[str],
                     filters: list[tuple[int, Filter]], dialect: str) -> sa.Select:
    """``SELECT columns FROM relation WHERE filters`` (filters indexed as in data.filters)."""
    rel = relation(source, schema, dialect)
    conditions = [filter_clause(flt, rel.c[flt.feature_name],
                                schema.field(flt.feature_name).type, filter_where(i, flt),
                                dialect)
                  for i, flt in filters]
    return sa.select(*[rel.c[c] for c in columns]).where(*conditions)


def count_statement(source: SqlSource, schema: pa.Schema, dialect: str | None = None
                    ) -> sa.Select:
    """``SELECT count(*)`` over the unfiltered table or query."""
    return sa.select(sa.func.count()).select_from(relation(source, schema, dialect))


# --------------------------------------------------------------------------- reads

def to_arrow_array(values: list[Any], dtype: pa.DataType) -> pa.Array:
    """Python values from a driver as an Arrow array of ``dtype`` (Decimal, JSON, UUID ...)."""
    try:
        return pa.array(values, type=dtype)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        pass
    if type_word(dtype) == "string":
        return pa.array([None if v is None else v if isinstance(v, str)
                         else json.dumps(v) if isinstance(v, (dict, list)) else str(v)
                         for v in values], type=dtype)
    return pa.array(values).cast(dtype)


class CastToSchema:
    """Cast Ray Data blocks from ``read_sql`` (types inferred per block) to the planned schema."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema

    def __call__(self, batch: pa.Table) -> pa.Table:
        arrays = []
        for field in self.schema:
            column = batch[field.name]
            if column.type != field.type:
                try:
                    column = column.cast(field.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                    column = to_arrow_array(column.to_pylist(), field.type)
            arrays.append(column)
        return pa.Table.from_arrays(arrays, schema=self.schema)


def read_arrow(statement: sa.Select, url: str, schema: pa.Schema, source: SqlSource,
               index: int = 0, batch_rows: int = 65_536) -> pa.Table:
    """Run the statement here and return an Arrow table of ``schema`` (streamed in batches)."""
    batches = []
    try:
        with read_only(url) as conn:
            result = conn.execution_options(stream_results=True).execute(statement)
            for rows in result.partitions(batch_rows):
                arrays = [to_arrow_array([r[i] for r in rows], f.type)
                          for i, f in enumerate(schema)]
                batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
    except sa.exc.DBAPIError as exc:
        raise database_error(exc, source, index) from None
    return pa.Table.from_batches(batches, schema=schema)


def scalar_query(statement: sa.Select, url: str, source: SqlSource, index: int = 0) -> Any:
    """The single value a statement returns (counts)."""
    try:
        with read_only(url) as conn:
            return conn.execute(statement).scalar()
    except sa.exc.DBAPIError as exc:
        raise database_error(exc, source, index) from None


def estimate_bytes(statement: sa.Select, url: str, source: SqlSource, index: int = 0) -> int:
    """About how many bytes the statement returns: the planner's rows × width on Postgres
    (nothing is read), otherwise a count of the rows × 8 bytes per column."""
    try:
        with read_only(url) as conn:
            if conn.dialect.name == "postgresql":
                compiled = statement.compile(dialect=conn.dialect,
                                             compile_kwargs={"render_postcompile": True})
                plan: Any = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled),
                                                 compiled.params).scalar()
                top = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]
                return int(top["Plan Rows"]) * int(top["Plan Width"])
            rows = conn.execute(sa.select(sa.func.count()).select_from(
                statement.subquery())).scalar_one()
            return int(rows) * 8 * max(1, len(statement.selected_columns))
    except sa.exc.DBAPIError as exc:
        raise database_error(exc, source, index) from None


def ray_read_args(statement: sa.Select, url: str, *, shard_key: str | None = None,
                  parallelism: int = 4, timeout_s: float | None = None) -> dict[str, Any]:
    """The arguments of ``ray.data.read_sql`` for the statement: SQL with bound parameters in
    the driver's style, a read-only connection factory whose statements stop after
    ``timeout_s`` (default RAILYARD_SQL_STATEMENT_TIMEOUT_S), and on Postgres with a
    ``shard_key`` a split into ``parallelism`` tasks by ``hashtext(key)``."""
    engine = engine_for(url)
    compiled = statement.compile(dialect=engine.dialect,
                                 compile_kwargs={"render_postcompile": True})
    params: Any = dict(compiled.params)
    if engine.dialect.paramstyle in ("qmark", "format", "numeric"):
        assert compiled.positiontup is not None, "positional paramstyles set positiontup"
        params = tuple(compiled.params[name] for name in compiled.positiontup)
    args: dict[str, Any] = {"sql": str(compiled),
                            "connection_factory": ConnectionFactory(url, timeout_s),
                            "sql_params": params}
    if engine.dialect.name == "postgresql" and shard_key and parallelism > 1:
        quoted = engine.dialect.identifier_preparer.quote(shard_key)
        # Ray writes MOD(ABS(<fn>(<key>)), n); int8 keeps ABS() clear of int4 overflow.
        args.update(shard_keys=[f"hashtext(CAST({quoted} AS TEXT))::int8"], shard_hash_fn="",
                    override_num_blocks=parallelism)
    return args


def read_ray(statement: sa.Select, url: str, schema: pa.Schema, *,
             shard_key: str | None = None, parallelism: int = 4,
             ray_remote_args: dict[str, Any] | None = None) -> ray.data.Dataset:
    """The statement as a lazy Ray Dataset via ``ray.data.read_sql``, cast to ``schema``.

    On Postgres with a ``shard_key`` column the read is split into ``parallelism`` tasks;
    otherwise one task reads it all.
    """
    import ray.data

    remote = dict(ray_remote_args or {})
    args = ray_read_args(statement, url, shard_key=shard_key, parallelism=parallelism)
    ds = ray.data.read_sql(**args, **remote)
    return ds.map_batches(CastToSchema(schema), batch_format="pyarrow", **remote)
