"""The spec's ``train`` section: the workflow, its features, label and parameters, resources,
sweeps (``tune``) and partitioned training.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, RootModel, model_validator

from railyard.spec.common import MAX_COLUMNS, ColumnName, Name, StrictModel, unsafe_values


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
        problems = unsafe_values(values, prefix=kind, limit=1)
        if problems:  # NaN, Infinity or a NUL character: JSON and the job database refuse it
            raise ValueError(f"{problems[0]['field']}: {problems[0]['message']}")
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
    def trial_count(self) -> int:
        """How many trials the sweep runs: ``num_samples`` draws (one pass for search_alg
        grid), each covering every combination of the grid domains, as Ray Tune expands it."""
        combinations = math.prod(len(d.values) for d in self.search_space.values()
                                 if d.kind == "grid")
        return combinations * (1 if self.search_alg == "grid" else self.num_samples)

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
