"""Where a job runs: pick its pool, turn it into Ray placement, explain a job that waits.

An explicit ``train.resources.pool`` is always enforced (a job for a pool with no nodes waits,
with a reason, until its pending timeout). An automatic choice (data size, GPUs) is enforced
only among pools the cluster actually has, so a one-node local cluster still runs everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from railyard.cluster.pools import POOL_LABEL, choose_pool, job_placement, load_pools
from railyard.spec import TrainingSpec


@dataclass(frozen=True)
class Placement:
    """A job's pool, why it was chosen, and the submit_job arguments that enforce it."""

    pool: str | None
    reason: str
    submit_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def enforced(self) -> bool:
        """True when Ray will only place the driver on the pool's nodes."""
        return bool(self.submit_kwargs)


def decide(spec: TrainingSpec, *, data_bytes: int, cluster_pools: dict[str, int]) -> Placement:
    """Choose the pool for ``spec``. ``cluster_pools`` counts alive nodes per pool label."""
    pools = load_pools()
    resources = spec.train.resources
    name = choose_pool(resources, data_bytes, pools=pools)
    if resources.pool:
        return Placement(name, "requested in train.resources.pool", job_placement(pools[name]))
    why = (f"chosen from the workflow and data size ({data_bytes / 2**20:.1f} MiB"
           + (f", {resources.gpus_per_worker:g} GPUs per worker" if resources.gpus_per_worker
              else "") + ")")
    if not cluster_pools:
        return Placement(name, why + "; not enforced: the cluster has no pool-labelled nodes")
    if name not in cluster_pools:
        fallback = "cpu" if "cpu" in cluster_pools else sorted(cluster_pools)[0]
        why += f"; the cluster has no {name} nodes, so {fallback}"
        name = fallback
    return Placement(name, why, job_placement(pools[name]))


def pending_reason(pool: str, cluster_pools: dict[str, int]) -> str:
    """Why a job for ``pool`` has not started yet."""
    if cluster_pools.get(pool, 0) == 0:
        return f"waiting for pool {pool}: no alive node with label {POOL_LABEL}={pool}"
    return (f"waiting for pool {pool}: its {cluster_pools[pool]} node(s) have no free capacity "
            "for the job's driver")


def training_workers(spec: TrainingSpec, *, streams: bool, data_bytes: int,
                     min_bytes: int, auto_workers: int) -> tuple[int, str | None]:
    """How many Ray Train workers a job trains on, and why when Railyard chose it.

    A spec asking for ``num_workers`` gets them. A job left at 1 whose source is larger than
    ``min_bytes`` (RAILYARD_DISTRIBUTED_MIN_BYTES) trains on ``auto_workers`` workers, streamed
    from Ray Data, when its workflow can (``streams``) and it is neither a sweep nor a fan-out:
    a source that size would otherwise be gathered whole in one driver's memory.
    """
    asked = spec.train.resources.num_workers
    if asked > 1 or not streams or spec.train.tune is not None or spec.train.partition_by \
            or min_bytes <= 0 or data_bytes <= min_bytes or auto_workers < 2:
        return asked, None
    return auto_workers, (f"source is {data_bytes / 2**30:.1f} GiB, over "
                          f"RAILYARD_DISTRIBUTED_MIN_BYTES ({min_bytes / 2**30:.1f} GiB): "
                          f"streamed to {auto_workers} Ray Train workers")


def sweep_engine(spec: TrainingSpec, *, train_rows: int, max_rows: int) -> tuple[str, str]:
    """Who runs a sweep's trials (``train.tune.engine``), and why.

    ``auto`` picks the driver for a sweep it can run (random or grid search, FIFO, no time
    budget) on at most ``max_rows`` (RAILYARD_DRIVER_SWEEP_MAX_ROWS) training rows: Ray Tune's
    per-trial bookkeeping costs more than such a trial's whole fit. Otherwise Ray Tune, whose
    trials spread over the pool's nodes.
    """
    tune = spec.train.tune
    assert tune is not None
    if tune.engine != "auto":
        return tune.engine, f"train.tune.engine is {tune.engine}"
    if not tune.runs_in_driver:
        return "ray_tune", (f"search_alg {tune.search_alg}, scheduler {tune.scheduler}"
                            + (", time_budget_s" if tune.time_budget_s else "")
                            + " need Ray Tune")
    if train_rows > max_rows:
        return "ray_tune", (f"{train_rows:,} training rows, over RAILYARD_DRIVER_SWEEP_MAX_ROWS "
                            f"({max_rows:,}): trials spread over the pool with Ray Tune")
    return "driver", (f"{train_rows:,} training rows, at most RAILYARD_DRIVER_SWEEP_MAX_ROWS "
                      f"({max_rows:,}): trials run in the job's driver")
