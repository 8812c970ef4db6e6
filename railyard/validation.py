"""Submit-time checks: everything that can be known before a job is queued is checked here,
so a mistake is a 422 now rather than a FAILED job twenty minutes later."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import pyarrow as pa

from railyard.data import ReadPlan, plan_read, source_schema
from railyard.errors import BackendUnavailableError
from railyard.spec import FeatureSource, TrainingSpec
from railyard.workflows import Workflow, get_workflow

SCHEMA_TIMEOUT_S = 10.0
SCHEMA_TTL_S = 60.0

_cache: dict[str, tuple[float, pa.Schema]] = {}
_cache_lock = threading.Lock()
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="schema")


def cached_schema(source: FeatureSource) -> pa.Schema:
    """The source's schema, cached for a minute and looked up within SCHEMA_TIMEOUT_S."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(source.path)
        if hit and now - hit[0] < SCHEMA_TTL_S:
            return hit[1]
    future = _pool.submit(source_schema, source)
    try:
        schema = future.result(timeout=SCHEMA_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        raise BackendUnavailableError(
            f"reading the schema of {source.path} took over {SCHEMA_TIMEOUT_S:.0f}s; "
            "the data store is slow or unreachable, retry later") from None
    with _cache_lock:
        _cache[source.path] = (now, schema)
    return schema


def validate_spec(spec: TrainingSpec) -> tuple[type[Workflow], ReadPlan]:
    """Check workflow, hyperparameters and columns against the real source schema."""
    workflow_cls = get_workflow(spec.train.workflow_name)
    workflow_cls.parse_params(spec.train.custom_params)
    plan = plan_read(spec, derived=workflow_cls.derived_columns,
                     schema=cached_schema(spec.data.features[0]))
    return workflow_cls, plan
