"""The spec's ``data`` section: sources (Parquet, SQL), filters and their values, joins, holdout.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from railyard.spec.common import (
    MAX_COLUMNS,
    MAX_FILTERS,
    MAX_LIST_VALUES,
    MAX_QUERY_CHARS,
    MAX_SOURCES,
    SQL_TABLE_PATTERN,
    ColumnName,
    StrictModel,
    parse_datetime,
)
from railyard.spec.sql_guard import check_select_only, check_table_name


class Predicate(str, Enum):
    """Comparison a filter applies between a column and its value."""

    Eq = "Eq"
    NotEq = "NotEq"
    Gt = "Gt"
    GtEq = "GtEq"
    Lt = "Lt"
    LtEq = "LtEq"
    IsIn = "IsIn"
    NotIn = "NotIn"
    IsNull = "IsNull"
    IsNotNull = "IsNotNull"
    Between = "Between"
    StartsWith = "StartsWith"

    @property
    def arity(self) -> Literal["none", "scalar", "list"]:
        """How many values the predicate takes."""
        if self in (Predicate.IsNull, Predicate.IsNotNull):
            return "none"
        if self in (Predicate.IsIn, Predicate.NotIn, Predicate.Between):
            return "list"
        return "scalar"


SCALAR_VALUE_FIELDS = ("string_val", "float_val", "int_val", "bool_val")
LIST_VALUE_FIELDS = ("string_vals", "float_vals", "int_vals")


class FeatureValue(StrictModel):
    """A filter's operand: exactly one of the typed fields is set."""

    string_val: StrictStr | None = Field(default=None, max_length=4096)
    float_val: StrictFloat | None = None
    int_val: StrictInt | None = None
    bool_val: StrictBool | None = None
    string_vals: list[Annotated[StrictStr, Field(max_length=4096)]] | None = Field(
        default=None, max_length=MAX_LIST_VALUES)
    float_vals: list[StrictFloat] | None = Field(default=None, max_length=MAX_LIST_VALUES)
    int_vals: list[StrictInt] | None = Field(default=None, max_length=MAX_LIST_VALUES)

    @model_validator(mode="after")
    def _exactly_one(self) -> FeatureValue:
        set_fields = [name for name in SCALAR_VALUE_FIELDS + LIST_VALUE_FIELDS
                      if getattr(self, name) is not None]
        if len(set_fields) != 1:
            raise ValueError(
                "set exactly one of string_val, float_val, int_val, bool_val, string_vals, "
                f"float_vals, int_vals (got {', '.join(set_fields) or 'none'})")
        return self

    @property
    def field_name(self) -> str:
        """Which typed field carries the value."""
        return next(name for name in SCALAR_VALUE_FIELDS + LIST_VALUE_FIELDS
                    if getattr(self, name) is not None)

    @property
    def is_list(self) -> bool:
        """True for string_vals, float_vals and int_vals."""
        return self.field_name in LIST_VALUE_FIELDS

    @property
    def value(self) -> Any:
        """The Python value, scalar or list."""
        return getattr(self, self.field_name)


class Filter(StrictModel):
    """One row filter: ``feature_name <predicate> feature_value``."""

    feature_name: ColumnName
    predicate: Predicate
    feature_value: FeatureValue | None = None

    @model_validator(mode="after")
    def _value_fits_predicate(self) -> Filter:
        arity = self.predicate.arity
        value = self.feature_value
        p = self.predicate.value
        if arity == "none":
            if value is not None:
                raise ValueError(f"predicate {p} takes no feature_value; remove it")
            return self
        if value is None:
            raise ValueError(f"predicate {p} needs a feature_value")
        if arity == "scalar" and value.is_list:
            raise ValueError(
                f"predicate {p} compares with one value: use string_val, float_val, int_val or "
                f"bool_val, not {value.field_name}")
        if arity == "list" and not value.is_list:
            raise ValueError(
                f"predicate {p} takes a list: use string_vals, float_vals or int_vals, "
                f"not {value.field_name}")
        if arity == "list" and not value.value:
            raise ValueError(f"predicate {p} needs at least one value in {value.field_name}")
        if self.predicate is Predicate.Between and len(value.value) != 2:
            raise ValueError("predicate Between takes exactly two values [low, high]")
        if self.predicate is Predicate.StartsWith and value.field_name != "string_val":
            raise ValueError("predicate StartsWith takes a string_val")
        return self


class ParquetSource(StrictModel):
    """Columns from Parquet: a file, a directory (Hive ``key=value/`` partitions are columns too)
    or a glob such as ``s3://bucket/charges/*.parquet`` (``**`` spans directories)."""

    names: list[ColumnName] = Field(min_length=1, max_length=MAX_COLUMNS)
    source: Literal["s3", "local"]
    path: Annotated[str, Field(min_length=1, max_length=4096)]

    @model_validator(mode="after")
    def _path_matches_source(self) -> ParquetSource:
        if self.source == "s3" and not self.path.startswith("s3://"):
            raise ValueError("source 's3' needs a path starting with s3://")
        if self.source == "local" and "://" in self.path and not self.path.startswith("file://"):
            raise ValueError("source 'local' needs a filesystem path; use source 's3' for s3://")
        return self

    @property
    def label(self) -> str:
        """How messages name this source."""
        return self.path


SQL_CONNECTION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
"""A SQL connection name (``RAILYARD_SQL_CONNECTIONS`` keys, a token's ``--sql-connection``)."""


class SqlSource(StrictModel):
    """Columns from a SQL database: a table (``name`` or ``schema.name``) or one read-only SELECT.

    ``connection`` is the *name* of a database the server knows (``RAILYARD_SQL_CONNECTIONS``);
    connection strings never appear in a spec.
    """

    names: list[ColumnName] = Field(min_length=1, max_length=MAX_COLUMNS)
    source: Literal["sql"]
    connection: Annotated[str, Field(min_length=1, max_length=128,
                                     pattern=SQL_CONNECTION_PATTERN)]
    table: Annotated[str, Field(max_length=256, pattern=SQL_TABLE_PATTERN)] | None = None
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)] | None = None

    @field_validator("query")
    @classmethod
    def _read_only_query(cls, query: str | None) -> str | None:
        # PostgreSQL syntax here; again in the connection's dialect when it is read.
        if query is not None:
            check_select_only(query)
        return query

    @field_validator("table")
    @classmethod
    def _data_table(cls, table: str | None) -> str | None:
        return None if table is None else check_table_name(table)

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("source 'sql' needs exactly one of table or query")
        return self

    @property
    def label(self) -> str:
        """How messages name this source (never the connection string)."""
        what = f"table {self.table}" if self.table else "query"
        return f"sql connection {self.connection!r} {what}"


FeatureSource = Annotated[ParquetSource | SqlSource, Field(discriminator="source")]
"""One ``data.features`` entry: Parquet (``s3``/``local``) or ``sql``."""


class DateRangeSampling(StrictModel):
    """Holdout = rows whose date column lies in [start_date, end_date] (both inclusive)."""

    date_column: ColumnName | None = None
    start_date: Annotated[str, Field(max_length=64)]
    end_date: Annotated[str, Field(max_length=64)]

    @field_validator("start_date", "end_date")
    @classmethod
    def _is_date(cls, value: str) -> str:
        parse_datetime(value)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> DateRangeSampling:
        if parse_datetime(self.start_date) > parse_datetime(self.end_date):
            raise ValueError(f"start_date {self.start_date} is after end_date {self.end_date}")
        return self


Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class RandomSampling(StrictModel):
    """Holdout = a seeded random fraction of rows."""

    fraction: Fraction
    seed: StrictInt = 0


class LatestSampling(StrictModel):
    """Holdout = the newest fraction of rows by the date column."""

    fraction: Fraction
    date_column: ColumnName | None = None


class HashSampling(StrictModel):
    """Holdout = rows whose key hashes into the fraction (a key never straddles both sets)."""

    column: ColumnName
    fraction: Fraction


class SamplingFunction(str, Enum):
    """How the holdout set is chosen."""

    DATE_RANGE = "DATE_RANGE"
    RANDOM = "RANDOM"
    LATEST = "LATEST"
    HASH = "HASH"
    NONE = "NONE"


_SAMPLING_BLOCK = {
    SamplingFunction.DATE_RANGE: "date_range_sampling",
    SamplingFunction.RANDOM: "random_sampling",
    SamplingFunction.LATEST: "latest_sampling",
    SamplingFunction.HASH: "hash_sampling",
}


class HoldoutSampling(StrictModel):
    """Which rows are held out for evaluation."""

    sampling_function: SamplingFunction
    date_range_sampling: DateRangeSampling | None = None
    random_sampling: RandomSampling | None = None
    latest_sampling: LatestSampling | None = None
    hash_sampling: HashSampling | None = None

    @model_validator(mode="after")
    def _block_matches_function(self) -> HoldoutSampling:
        wanted = _SAMPLING_BLOCK.get(self.sampling_function)
        if wanted and getattr(self, wanted) is None:
            raise ValueError(f"sampling_function {self.sampling_function.value} needs {wanted}")
        for block in _SAMPLING_BLOCK.values():
            if block != wanted and getattr(self, block) is not None:
                raise ValueError(
                    f"{block} does not apply to sampling_function {self.sampling_function.value}")
        return self


class DataSpec(StrictModel):
    """What data to fetch, how to filter it and what to hold out."""

    features: list[FeatureSource] = Field(min_length=1, max_length=MAX_SOURCES)
    # With several features entries: the column they share, and how they are joined on it.
    join_key: ColumnName | None = None
    join_type: Literal["inner", "left"] = "inner"
    date_column: ColumnName | None = None
    filters: list[Filter] = Field(default_factory=list, max_length=MAX_FILTERS)
    holdout_sampling: HoldoutSampling = Field(
        default_factory=lambda: HoldoutSampling(sampling_function=SamplingFunction.NONE))

    @property
    def fetched_columns(self) -> list[str]:
        """Every column named in ``features``, in order, without duplicates."""
        return list(dict.fromkeys(name for source in self.features for name in source.names))

    @property
    def holdout_date_column(self) -> str | None:
        """The date column the holdout function uses, if it uses one."""
        h = self.holdout_sampling
        if h.date_range_sampling is not None:
            return h.date_range_sampling.date_column or self.date_column
        if h.latest_sampling is not None:
            return h.latest_sampling.date_column or self.date_column
        return None

    @model_validator(mode="after")
    def _joinable(self) -> DataSpec:
        if len(self.features) > 1 and self.join_key is None:
            raise ValueError(
                f"data.join_key: {len(self.features)} features entries are joined on one column; "
                "set data.join_key to the column they share (e.g. merchant_id)")
        seen: dict[str, int] = {}
        for i, source in enumerate(self.features):
            for name in dict.fromkeys(source.names):
                if name != self.join_key and name in seen:
                    raise ValueError(
                        f"data.features.{i}.names: column {name!r} is also fetched by "
                        f"data.features.{seen[name]}; fetch it from one source only")
                seen.setdefault(name, i)
        return self

    @model_validator(mode="after")
    def _date_column_known(self) -> DataSpec:
        h = self.holdout_sampling
        if h.sampling_function in (SamplingFunction.DATE_RANGE, SamplingFunction.LATEST) \
                and self.holdout_date_column is None:
            raise ValueError(
                f"holdout {h.sampling_function.value} needs a date column: set data.date_column")
        return self
