"""The training spec: the single source of truth for *what to train*.

The blog's sample request, written as JSON, is valid as it stands. Every model forbids unknown
fields, so a typo is a 422 naming the field path instead of a silently ignored setting.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator

from railyard.errors import SpecError
from railyard.spec.common import Name, StrictModel, Text
from railyard.spec.data import DataSpec
from railyard.spec.promotion import PromotionSpec
from railyard.spec.train import TrainSpec


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
    # The queue releases higher priorities first (0-100); within one, teams share fairly.
    priority: Annotated[int, Field(ge=0, le=100, strict=True)] = 50
    # The promotion gate (railyard.spec.promotion); None: the job only registers its version.
    promotion: PromotionSpec | None = None

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_in_range(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= 100:
            raise ValueError(f"{value} is out of range: give 0 (lowest) to 100 (highest); "
                             "the default is 50")
        return value

    def spec_hash(self) -> str:
        """Stable hash of the spec's content (used for idempotency and model manifests)."""
        content = self.model_dump(mode="json")
        if content.get("promotion") is None:   # specs without a gate hash as they always did
            content.pop("promotion", None)
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
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
