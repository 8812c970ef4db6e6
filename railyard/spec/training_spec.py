"""The training spec: the single source of truth for *what to train*.

The blog's sample request, written as JSON, is valid as it stands. Every model forbids unknown
fields, so a typo is a 422 naming the field path instead of a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (BaseModel, ConfigDict, Field, RootModel, StrictBool, StrictFloat, StrictInt,
                      StrictStr, ValidationError, field_validator, model_validator)

from railyard.errors import SpecError
from railyard.spec.sql_guard import check_select_only

Name = Annotated[str, Field(min_length=1, max_length=256)]
Text = Annotated[str, Field(max_length=4096)]
ColumnName = Annotated[str, Field(min_length=1, max_length=256)]

MAX_FILTERS = 64
MAX_COLUMNS = 512
MAX_LIST_VALUES = 10_000
MAX_SOURCES = 8
MAX_QUERY_CHARS = 100_000
SQL_TABLE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$"


class StrictModel(BaseModel):
    """Base for spec sections: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


def parse_datetime(text: str) -> datetime:
    """Parse ``YYYY-MM-DD`` or an ISO-8601 timestamp; raise ValueError naming the format."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time())
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date: use YYYY-MM-DD or an ISO-8601 timestamp") from None


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


class SqlSource(StrictModel):
    """Columns from a SQL database: a table (``name`` or ``schema.name``) or one read-only SELECT.

    ``connection`` is the *name* of a database the server knows (``RAILYARD_SQL_CONNECTIONS``);
    connection strings never appear in a spec.
    """

    names: list[ColumnName] = Field(min_length=1, max_length=MAX_COLUMNS)
    source: Literal["sql"]
    connection: Annotated[str, Field(min_length=1, max_length=128,
                                     pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
    table: Annotated[str, Field(max_length=256, pattern=SQL_TABLE_PATTERN)] | None = None
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)] | None = None

    @model_validator(mode="after")
    def _table_or_query(self) -> SqlSource:
        if (self.table is None) == (self.query is None):
            raise ValueError("source 'sql' needs exactly one of table or query")
        if self.query is not None:
            check_select_only(self.query)
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


class ResourcesSpec(StrictModel):
    """Where and how wide to train."""

    pool: Name | None = None
    num_workers: Annotated[int, Field(ge=1, le=256)] = 1
    # Unset: all of the node's cores for training in the driver, 1 per Ray Train worker,
    # 1 per fan-out task.
    cpus_per_worker: Annotated[float, Field(gt=0, le=256)] | None = None
    gpus_per_worker: Annotated[float, Field(ge=0, le=16)] = 0.0
    memory_per_worker: Annotated[int, Field(ge=0)] | None = None


SEARCH_DOMAINS = ("uniform", "loguniform", "randint", "choice", "grid")


class SearchDomain(RootModel[dict[str, list[Any]]]):
    """One hyperparameter's search space: exactly one of ``{"uniform": [lo, hi]}``,
    ``{"loguniform": [lo, hi]}``, ``{"randint": [lo, hi]}``, ``{"choice": [...]}``,
    ``{"grid": [...]}``."""

    @model_validator(mode="after")
    def _one_known_domain(self) -> SearchDomain:
        if len(self.root) != 1 or next(iter(self.root)) not in SEARCH_DOMAINS:
            raise ValueError(f"use exactly one of {', '.join(SEARCH_DOMAINS)}, e.g. "
                             '{"uniform": [0.01, 0.3]}')
        kind, values = next(iter(self.root.items()))
        if kind in ("uniform", "loguniform", "randint"):
            if len(values) != 2 or not all(isinstance(v, (int, float)) and
                                           not isinstance(v, bool) for v in values):
                raise ValueError(f"{kind} takes two numbers [low, high]")
            if values[0] >= values[1]:
                raise ValueError(f"{kind}: low {values[0]} must be below high {values[1]}")
            if kind == "loguniform" and values[0] <= 0:
                raise ValueError("loguniform needs a positive low bound")
            if kind == "randint" and not all(isinstance(v, int) for v in values):
                raise ValueError("randint takes two integers [low, high)")
        elif not values or len(values) > 1000:
            raise ValueError(f"{kind} takes a list of 1 to 1000 values")
        return self

    @property
    def kind(self) -> str:
        """uniform | loguniform | randint | choice | grid."""
        return next(iter(self.root))

    @property
    def values(self) -> list[Any]:
        """The domain's bounds or candidates."""
        return next(iter(self.root.values()))


class TuneSpec(StrictModel):
    """A hyperparameter sweep with Ray Tune; the best trial's model becomes the job's model."""

    search_space: dict[Annotated[str, Field(max_length=256)], SearchDomain] = Field(
        min_length=1, max_length=64)
    search_alg: Literal["random", "grid", "optuna", "hyperopt"] = "random"
    scheduler: Literal["fifo", "asha", "median"] = "fifo"
    num_samples: Annotated[int, Field(ge=1, le=10_000)] = 8
    max_concurrent_trials: Annotated[int, Field(ge=1, le=1024)] | None = None
    metric: Annotated[str, Field(max_length=64)] | None = None
    mode: Literal["min", "max"] | None = None
    time_budget_s: Annotated[int, Field(ge=1)] | None = None
    cpus_per_trial: Annotated[float, Field(gt=0, le=64)] = 1.0
    # Who runs the trials: Ray Tune (its actors across the pool, schedulers, search
    # algorithms, experiment state), or the job's driver (threads in one process, for small
    # random and grid sweeps with the FIFO scheduler). auto: the driver when the sweep can run
    # there and has at most RAILYARD_DRIVER_SWEEP_MAX_ROWS training rows.
    engine: Literal["auto", "ray_tune", "driver"] = "auto"

    @model_validator(mode="after")
    def _grid_fits_algorithm(self) -> TuneSpec:
        has_grid = any(d.kind == "grid" for d in self.search_space.values())
        if has_grid and self.search_alg in ("optuna", "hyperopt"):
            raise ValueError(f"grid domains need search_alg random or grid, not "
                             f"{self.search_alg}; use choice instead")
        if self.search_alg == "grid" and not all(d.kind in ("grid", "choice")
                                                 for d in self.search_space.values()):
            raise ValueError("search_alg grid needs grid (or choice) domains only")
        if self.engine == "driver" and not self.runs_in_driver:
            raise ValueError("engine driver runs random or grid search with the fifo "
                             "scheduler and no time_budget_s; use engine ray_tune (or auto) "
                             f"for search_alg {self.search_alg} / scheduler {self.scheduler}")
        if (self.metric is None) != (self.mode is None):
            raise ValueError("set both metric and mode, or neither (then the workflow's "
                             "main holdout metric is used)")
        return self

    @property
    def runs_in_driver(self) -> bool:
        """Whether the driver engine can run this sweep: nothing in it needs Ray Tune's
        schedulers, search algorithms or time budget."""
        return self.search_alg in ("random", "grid") and self.scheduler == "fifo" \
            and self.time_budget_s is None


class TrainSpec(StrictModel):
    """Which workflow trains, on which features, towards which label, with which parameters."""

    workflow_name: Name
    classifier_features: list[ColumnName] = Field(min_length=1, max_length=MAX_COLUMNS)
    label: ColumnName
    custom_params: dict[Annotated[str, Field(max_length=256)], Any] = Field(
        default_factory=dict, max_length=256)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tune: TuneSpec | None = None
    # One model per distinct value of this column, trained in parallel in one job.
    partition_by: ColumnName | None = None

    @model_validator(mode="after")
    def _one_way_to_many_models(self) -> TrainSpec:
        if self.tune is not None and self.partition_by is not None:
            raise ValueError("use either tune or partition_by in one job, not both")
        if self.partition_by is not None and self.resources.num_workers > 1:
            raise ValueError("partition_by trains one small model per task; leave "
                             "resources.num_workers at 1")
        return self


class LifecycleSpec(StrictModel):
    """Time limits and retries of a job. Unset timeouts take the server's defaults; timeouts
    and retries are capped by its maxima (RAILYARD_MAX_PENDING_TIMEOUT_S,
    RAILYARD_MAX_RUN_TIMEOUT_S, RAILYARD_MAX_RETRIES).

    Retries have two budgets: ``max_retries`` for infrastructure failures (a lost node, a
    killed driver, an unreachable database), and ``max_user_code_retries`` for errors raised
    by the workflow or its data, which are not retried unless asked. The run timeout applies to
    each attempt; a timed-out or cancelled job is not retried.
    """

    pending_timeout_s: Annotated[int, Field(ge=1)] | None = None
    run_timeout_s: Annotated[int, Field(ge=1)] | None = None
    max_retries: Annotated[int, Field(ge=0, le=100)] = 0
    max_user_code_retries: Annotated[int, Field(ge=0, le=100)] = 0
    # How often an iterative workflow (xgboost, lightgbm, torch) checkpoints its training to
    # the artifact store, for a retried attempt to resume from; unset: the server's default.
    checkpoint_interval_s: Annotated[int, Field(ge=1, le=86_400)] | None = None


class TrainingSpec(StrictModel):
    """A whole training request, as POSTed to ``/v1/jobs``."""

    model_description: Text = ""
    model_name: Annotated[str, Field(min_length=1, max_length=256,
                                     pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")]
    owner: Name
    project: Annotated[str, Field(max_length=256)] = ""
    trainer: Annotated[str, Field(max_length=256)] = ""
    data: DataSpec
    train: TrainSpec
    lifecycle: LifecycleSpec = Field(default_factory=LifecycleSpec)

    def spec_hash(self) -> str:
        """Stable hash of the spec's content (used for idempotency and model manifests)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(body)"


def _without_union_tags(loc: tuple[Any, ...], error_type: str) -> tuple[Any, ...]:
    """Pydantic puts the tag of a discriminated union into the path (``features.0.s3.path``);
    users wrote ``features[0].path``, so drop it (and name the tag field when it is wrong)."""
    parts = list(loc)
    for i in range(len(parts) - 2):
        if parts[i] == "features" and isinstance(parts[i + 1], int) \
                and isinstance(parts[i + 2], str) and parts[i + 2] in _SOURCE_TAGS:
            del parts[i + 2]
            break
    if error_type in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("source")
    return tuple(parts)


_SOURCE_TAGS = frozenset({"s3", "local", "sql"})


def spec_error_from_validation(exc: ValidationError, prefix: str = "") -> SpecError:
    """Turn pydantic's errors into one SpecError whose details name every field path."""
    problems = []
    for err in exc.errors(include_url=False):
        path = _loc(_without_union_tags(((prefix,) if prefix else ()) + tuple(err["loc"]),
                                        err["type"]))
        message = err["msg"].removeprefix("Value error, ")
        problems.append({"field": path, "message": message, "type": err["type"]})
    summary = "; ".join(f"{p['field']}: {p['message']}" for p in problems[:5])
    if len(problems) > 5:
        summary += f"; and {len(problems) - 5} more"
    return SpecError(f"invalid training spec: {summary}", details=problems)


def parse_spec(payload: Any) -> TrainingSpec:
    """Validate a decoded JSON payload as a TrainingSpec, raising SpecError on any problem."""
    if not isinstance(payload, dict):
        raise SpecError("the training spec must be a JSON object",
                        details=[{"field": "(body)", "message": "expected an object"}])
    try:
        return TrainingSpec.model_validate(payload)
    except ValidationError as exc:
        raise spec_error_from_validation(exc) from None
