"""The spec's promotion gate: ``"promotion": {"alias": "production", "metric": "auc",
"min_delta": 0.0}``. After evaluate, the job scores the alias's current model on its own
holdout rows and moves the alias to the new version only if the new model is better by at
least ``min_delta`` (or when the alias points nowhere yet). Whether higher is better follows
from the metric (railyard.training.metrics: AUC higher, RMSE lower...)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from railyard.spec.common import StrictModel

HIGHER_IS_BETTER = frozenset({"auc", "pr_auc", "accuracy", "precision", "recall", "f1",
                              "macro_f1", "r2"})
LOWER_IS_BETTER = frozenset({"logloss", "rmse", "mae", "mape", "smape"})
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_\-]{0,127}$"


def higher_is_better(metric: str) -> bool:
    """True for a metric where a larger value is a better model (AUC), False for errors."""
    return metric in HIGHER_IS_BETTER


class PromotionSpec(StrictModel):
    """Move ``alias`` to this job's model version only if it beats the alias's current model on
    this job's holdout by ``min_delta`` in ``metric``."""

    alias: Annotated[str, Field(pattern=ALIAS_PATTERN)]
    metric: str
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in HIGHER_IS_BETTER | LOWER_IS_BETTER:
            known = ", ".join(sorted(HIGHER_IS_BETTER | LOWER_IS_BETTER))
            raise ValueError(f"{value!r} is not a holdout metric the gate can compare; use one "
                             f"of {known}")
        return value
