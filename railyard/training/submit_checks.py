"""Submit-time checks: everything that can be known before a job is queued is checked here,
so a mistake is a 422 now rather than a FAILED job twenty minutes later.

Order matters: paths outside ``RAILYARD_ALLOWED_DATA_PREFIXES`` are refused (403) and SQL
connection names resolved (422 listing the known names) before any source is touched; then each
source's schema is read (Parquet footers, or a SQL ``LIMIT 0`` query) — cached for a minute and
bounded in time — and the spec is planned against them (missing columns, label, date and filter
columns, value types: 422 naming the field).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pyarrow as pa

from railyard.config import Settings, get_settings
from railyard.data.allowed_paths import check_allowed_paths
from railyard.data.read_plan import ReadPlan, plan_read, source_schema
from railyard.data.sql_sources import connection_url
from railyard.errors import BackendUnavailableError
from railyard.spec import FeatureSource, SqlSource, TrainingSpec
from railyard.training.registry import get_workflow
from railyard.training.workflow import Workflow

SCHEMA_TIMEOUT_S = 10.0
SCHEMA_TTL_S = 60.0
SCHEMA_CACHE_MAX = 1024

_cache: dict[tuple[str, ...], tuple[float, pa.Schema]] = {}
_cache_lock = threading.Lock()
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="schema")


def _cache_key(source: FeatureSource, url: str | None) -> tuple[str, ...]:
    if isinstance(source, SqlSource):
        return ("sql", url or "", source.table or "", source.query or "")
    return ("parquet", source.path)


def cached_schema(source: FeatureSource, index: int = 0, *,
                  settings: Settings | None = None) -> pa.Schema:
    """The source's schema, cached for a minute and looked up within SCHEMA_TIMEOUT_S."""
    url = None
    if isinstance(source, SqlSource):
        url = connection_url(source, (settings or get_settings()).sql_connections, index)
    key = _cache_key(source, url)
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(key)
        if hit and now - hit[0] < SCHEMA_TTL_S:
            return hit[1]
    future = _pool.submit(source_schema, source, index, url, SCHEMA_TIMEOUT_S)
    try:
        schema = future.result(timeout=SCHEMA_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        raise BackendUnavailableError(
            f"data.features.{index}: reading the schema of {source.label} took over "
            f"{SCHEMA_TIMEOUT_S:.0f}s; the data store is slow or unreachable, retry later"
        ) from None
    with _cache_lock:
        if len(_cache) >= SCHEMA_CACHE_MAX:
            _cache.pop(min(_cache, key=lambda k: _cache[k][0]))
        _cache[key] = (now, schema)
    return schema


def validate_spec(spec: TrainingSpec, *,
                  settings: Settings | None = None) -> tuple[type[Workflow], ReadPlan]:
    """Check workflow, hyperparameters, access and columns against the real source schemas."""
    settings = settings or get_settings()
    workflow_cls = get_workflow(spec.train.workflow_name)
    workflow_cls.parse_params(spec.train.custom_params)
    if spec.train.tune is not None:
        check_sweep_size(spec, settings.max_sweep_trials)
        check_search_space(workflow_cls, spec)
    if spec.train.partition_by and spec.train.partition_by not in spec.data.fetched_columns:
        from railyard.errors import SpecError

        raise SpecError(f"train.partition_by: {spec.train.partition_by!r} is not fetched; add "
                        "it to data.features[].names",
                        details=[{"field": "train.partition_by", "message": "not fetched"}])
    check_allowed_paths(spec.data, settings.allowed_data_prefixes)
    schemas = [cached_schema(source, i, settings=settings)
               for i, source in enumerate(spec.data.features)]
    plan = plan_read(spec, derived=workflow_cls.derived_columns, schemas=schemas,
                     settings=settings)
    return workflow_cls, plan


def check_sweep_size(spec: TrainingSpec, max_trials: int) -> None:
    """A sweep may expand to at most ``max_trials`` trials (RAILYARD_MAX_SWEEP_TRIALS): its
    configurations are drawn up front, so a huge grid must be a 422 now, not a driver out of
    memory later."""
    from railyard.errors import SpecError

    tune = spec.train.tune
    assert tune is not None, "called for specs with train.tune"
    count = tune.trial_count
    if count <= max_trials:
        return
    samples = 1 if tune.search_alg == "grid" else tune.num_samples
    how = (f"{count // samples} grid combinations" if samples == 1 else
           f"num_samples {samples} x {count // samples} grid combination(s)")
    raise SpecError(
        f"train.tune: this sweep expands to {count} trials ({how}); this server runs at most "
        f"{max_trials} per job (RAILYARD_MAX_SWEEP_TRIALS): use fewer grid values or a smaller "
        "num_samples, or sample the values (uniform, choice) instead of a grid",
        details=[{"field": "train.tune", "message": f"{count} trials; at most {max_trials} "
                                                    "(RAILYARD_MAX_SWEEP_TRIALS)"}])


def check_search_space(workflow_cls: type[Workflow], spec: TrainingSpec) -> None:
    """Every swept name must be a hyperparameter of the workflow, and every candidate value
    must be one the workflow accepts (checked with the first value of each domain)."""
    import difflib

    from railyard.errors import SpecError

    tune = spec.train.tune
    assert tune is not None, "called for specs with train.tune"
    valid = sorted(workflow_cls.param_names())
    for name in tune.search_space:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            raise SpecError(
                f"train.tune.search_space.{name}: {spec.train.workflow_name} has no parameter "
                f"{name!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                + f" Valid names: {', '.join(valid)}",
                details=[{"field": f"train.tune.search_space.{name}",
                          "message": "unknown parameter"}])
    for name, domain in tune.search_space.items():
        for value in domain.values[:1] + domain.values[-1:]:
            try:
                workflow_cls.parse_params({**spec.train.custom_params, name: value})
            except SpecError as exc:
                raise SpecError(f"train.tune.search_space.{name}: {value!r} is not accepted: "
                                f"{exc.message}",
                                details=[{"field": f"train.tune.search_space.{name}",
                                          "message": exc.message}]) from None
