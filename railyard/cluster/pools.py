"""Instance pools: the kinds of node a training job can run on, and how each is targeted.

A pool is one worker group of the Ray cluster. Ray finds its nodes by **node labels**
(``railyard.io/pool: <name>``); the same definition yields

- Ray Jobs placement for a job's driver: ``job_placement(pool)`` → ``submit_job(**kwargs)``,
- Ray Train / task placement for its workers: ``worker_placement(pool)``,
- ``ray start`` arguments for a local node that stands in for the pool: ``local_node_args``,
- a KubeRay worker group (labels, container requests/limits, nodeSelector, tolerations,
  min/max replicas): see ``railyard.cluster.kuberay``.

Defaults are ``cpu`` (high-CPU), ``highmem`` (high-memory) and ``gpu``. A YAML file named by
``RAILYARD_POOLS_FILE`` overrides them::

    pools:
      cpu:                    # merged over the default ``cpu`` pool
        cpus: 32
        max_replicas: 20
      gpu: null               # removes the default ``gpu`` pool
      arm:                    # a new pool: every required field
        cpus: 16
        memory_gib: 64
        node_selector: {kubernetes.io/arch: arm64}
    # replace_defaults: true  # start from no pools instead of the defaults
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from railyard.errors import RailyardError, SpecError

if TYPE_CHECKING:
    from railyard.spec import ResourcesSpec

POOL_LABEL = "railyard.io/pool"
"""The Ray node label (and Kubernetes pod label) that names a node's pool."""
POOLS_FILE_ENV = "RAILYARD_POOLS_FILE"
GIB = 1024 ** 3

# Kubernetes label syntax, which Ray node labels follow too.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_RESOURCE_NAME = re.compile(r"^[A-Za-z0-9_.\-/]{1,128}$")


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid Kubernetes/Ray label key, or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _LABEL_PREFIX.match(prefix)):
        return f"label key {key!r}: prefix must be a DNS subdomain"
    if not _LABEL_NAME.match(name):
        return (f"label key {key!r}: name must be 1-63 alphanumerics, '-', '_' or '.', "
                "starting and ending alphanumeric")
    if key.startswith("ray.io/"):
        return f"label key {key!r}: the ray.io/ prefix is reserved for Ray's own labels"
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None (the empty string is valid)."""
    if value and not _LABEL_NAME.match(value):
        return (f"label value {value!r}: must be up to 63 alphanumerics, '-', '_' or '.', "
                "starting and ending alphanumeric")
    return None


class Toleration(BaseModel):
    """A Kubernetes toleration, as written in a pod spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None

    def to_k8s(self) -> dict[str, str]:
        """The toleration as a pod-spec dict (unset fields left out)."""
        return self.model_dump(exclude_none=True)


Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?([KMGTPE]i?|[mun]|[eE][0-9]+)?$")]


class Pool(BaseModel):
    """One pool of identical nodes; one KubeRay worker group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(min_length=1, max_length=40)]
    description: str = ""
    labels: dict[str, str] = Field(
        default_factory=dict,
        description=f"Ray node labels; {POOL_LABEL}: <name> is always added")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources per node (optional: labels are the primary target)")
    cpus: Annotated[int, Field(ge=1, le=1024)]
    memory_gib: Annotated[int, Field(ge=1, le=65536)]
    gpus: Annotated[int, Field(ge=0, le=16)] = 0
    gpu_resource: str = "nvidia.com/gpu"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    requests: dict[str, Quantity | int] | None = Field(
        default=None, description="container requests; default: cpus, memory_gib (and gpus)")
    limits: dict[str, Quantity | int] | None = Field(
        default=None, description="container limits; default: the same as requests")
    min_replicas: Annotated[int, Field(ge=0)] = 0
    max_replicas: Annotated[int, Field(ge=0)] = 10

    @model_validator(mode="before")
    @classmethod
    def _pool_label(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            labels = data.get("labels") or {}
            if isinstance(labels, dict) and POOL_LABEL not in labels:
                data = {**data, "labels": {**labels, POOL_LABEL: data["name"]}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Pool:
        if not _DNS_LABEL.match(self.name):
            raise ValueError(f"name {self.name!r}: use lowercase letters, digits and '-' "
                             "(it becomes a KubeRay groupName and a label value)")
        if self.labels.get(POOL_LABEL) != self.name:
            raise ValueError(f"labels[{POOL_LABEL!r}] must equal the pool name {self.name!r}")
        for key, value in self.labels.items():
            problem = label_key_problem(key) or label_value_problem(value)
            if problem:
                raise ValueError(problem)
        for key in self.resources:
            if not _RESOURCE_NAME.match(key) or key.upper() in ("CPU", "GPU", "MEMORY"):
                raise ValueError(f"resources: {key!r} is not a custom resource name; "
                                 "set cpus, gpus and memory_gib instead")
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas {self.min_replicas} > max_replicas "
                             f"{self.max_replicas}")
        return self

    @property
    def memory_bytes(self) -> int:
        """Memory of one node, in bytes."""
        return self.memory_gib * GIB

    @property
    def selector(self) -> dict[str, str]:
        """The label selector that targets this pool's nodes."""
        return {POOL_LABEL: self.name}

    def container_requests(self) -> dict[str, str]:
        """Kubernetes container requests for one node of the pool."""
        if self.requests is not None:
            return {k: str(v) for k, v in self.requests.items()}
        out = {"cpu": str(self.cpus), "memory": f"{self.memory_gib}Gi"}
        if self.gpus:
            out[self.gpu_resource] = str(self.gpus)
        return out

    def container_limits(self) -> dict[str, str]:
        """Kubernetes container limits (Ray reads its CPU/GPU/memory from these)."""
        if self.limits is not None:
            return {k: str(v) for k, v in self.limits.items()}
        return self.container_requests()


DEFAULT_POOLS: dict[str, dict[str, Any]] = {
    "cpu": {
        "description": "high-CPU nodes: tree models, Ray Data preprocessing",
        "cpus": 16, "memory_gib": 32,
        "node_selector": {"railyard.io/node-pool": "cpu"},
        "min_replicas": 0, "max_replicas": 10,
    },
    "highmem": {
        "description": "high-memory nodes: large in-memory datasets",
        "cpus": 16, "memory_gib": 128,
        "node_selector": {"railyard.io/node-pool": "highmem"},
        "min_replicas": 0, "max_replicas": 4,
    },
    "gpu": {
        "description": "GPU nodes: neural networks",
        "cpus": 8, "memory_gib": 64, "gpus": 1,
        "node_selector": {"railyard.io/node-pool": "gpu"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                         "effect": "NoSchedule"}],
        "min_replicas": 0, "max_replicas": 4,
    },
}


def _build(name: str, fields: dict[str, Any], source: str) -> Pool:
    try:
        return Pool.model_validate({**fields, "name": name})
    except ValidationError as exc:
        problems = "; ".join(
            f"pools.{name}.{'.'.join(str(p) for p in err['loc']) or '(pool)'}: {err['msg']}"
            for err in exc.errors())
        raise RailyardError(f"invalid pool {name!r} in {source}: {problems}") from None


def load_pools(path: str | Path | None = None) -> dict[str, Pool]:
    """The pools: defaults, overridden by ``path`` or the file named by RAILYARD_POOLS_FILE."""
    path = path or os.environ.get(POOLS_FILE_ENV) or None
    merged: dict[str, dict[str, Any]] = {name: dict(f) for name, f in DEFAULT_POOLS.items()}
    source = "the default pools"
    if path:
        source = str(path)
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise RailyardError(
                f"cannot read pools file {path} ({POOLS_FILE_ENV}): {exc}") from None
        if not isinstance(doc, dict) or not set(doc) <= {"pools", "replace_defaults"}:
            raise RailyardError(f"pools file {path}: expected a mapping with keys 'pools' and "
                                "optionally 'replace_defaults'")
        if doc.get("replace_defaults"):
            merged = {}
        entries = doc.get("pools") or {}
        if not isinstance(entries, dict):
            raise RailyardError(f"pools file {path}: 'pools' must map pool names to fields")
        for name, fields in entries.items():
            if fields is None:
                merged.pop(str(name), None)
            elif isinstance(fields, dict):
                merged[str(name)] = {**merged.get(str(name), {}), **fields}
            else:
                raise RailyardError(f"pools file {path}: pools.{name} must be a mapping or null")
    pools = {name: _build(name, fields, source) for name, fields in sorted(merged.items())}
    if not pools:
        raise RailyardError(f"{source} define no pools")
    return pools


def get_pool(name: str, pools: dict[str, Pool] | None = None) -> Pool:
    """The pool called ``name``; a SpecError (422) naming ``train.resources.pool`` if unknown."""
    pools = pools if pools is not None else load_pools()
    try:
        return pools[name]
    except KeyError:
        valid = ", ".join(sorted(pools))
        raise SpecError(
            f"train.resources.pool: unknown pool {name!r}; use one of: {valid}",
            details=[{"field": "train.resources.pool",
                      "message": f"unknown pool; valid pools: {valid}"}]) from None


def _as_pool(pool: Pool | str) -> Pool:
    return pool if isinstance(pool, Pool) else get_pool(pool)


def job_placement(pool: Pool | str, *, cpus: float | None = None) -> dict[str, Any]:
    """Keyword arguments for ``JobSubmissionClient.submit_job`` that put the driver on ``pool``.

    ``entrypoint_label_selector`` always; ``entrypoint_num_cpus`` when ``cpus`` is given;
    ``entrypoint_resources`` (one unit of each) when the pool defines custom resources.
    """
    pool = _as_pool(pool)
    out: dict[str, Any] = {"entrypoint_label_selector": pool.selector}
    if cpus is not None:
        out["entrypoint_num_cpus"] = cpus
    if pool.resources:
        out["entrypoint_resources"] = {name: 1.0 for name in sorted(pool.resources)}
    return out


def worker_placement(pool: Pool | str) -> dict[str, Any]:
    """``{"label_selector": ...}`` for ``ray.train.ScalingConfig(**...)`` or ``.options(**...)``."""
    return {"label_selector": _as_pool(pool).selector}


def local_node_args(pool: Pool | str, *, scale_cpus: int | None = None,
                    num_gpus: int | None = None) -> list[str]:
    """``ray start`` arguments for a local node that stands in for one node of ``pool``.

    ``scale_cpus`` shrinks the node to fit a laptop or CI machine; ``num_gpus`` overrides the
    pool's GPUs (give 0 to mimic the ``gpu`` pool where there is no GPU). Labels use Ray 2.60's
    ``--labels=key=value,key2=value2`` form.
    """
    pool = _as_pool(pool)
    labels = ",".join(f"{key}={value}" for key, value in sorted(pool.labels.items()))
    args = [f"--labels={labels}",
            f"--num-cpus={scale_cpus if scale_cpus is not None else pool.cpus}",
            f"--num-gpus={num_gpus if num_gpus is not None else pool.gpus}"]
    if pool.resources:
        amounts = {k: int(v) if float(v).is_integer() else v for k, v in pool.resources.items()}
        args.append("--resources=" + json.dumps(amounts, sort_keys=True))
    return args


def highmem_threshold_bytes(pools: dict[str, Pool]) -> int:
    """Data bigger than a quarter of a ``cpu`` node's memory goes to ``highmem``."""
    cpu = pools.get("cpu")
    return (cpu.memory_bytes if cpu else 32 * GIB) // 4


def choose_pool(resources: ResourcesSpec | None, data_bytes: int, *,
                pools: dict[str, Pool] | None = None) -> str:
    """The pool a job should run on.

    ``train.resources.pool`` when given (checked to exist and to have GPUs if asked for);
    otherwise ``gpu`` when ``gpus_per_worker > 0``, ``highmem`` when the data (or
    ``memory_per_worker``) is over ``highmem_threshold_bytes``, else ``cpu``.
    """
    pools = pools if pools is not None else load_pools()
    gpus = float(getattr(resources, "gpus_per_worker", 0) or 0)
    memory = int(getattr(resources, "memory_per_worker", 0) or 0)
    explicit = getattr(resources, "pool", None)
    if explicit:
        pool = get_pool(explicit, pools)
        if gpus > 0 and pool.gpus == 0:
            raise SpecError(
                f"train.resources.gpus_per_worker: pool {pool.name!r} has no GPUs; "
                "set gpus_per_worker to 0 or choose a GPU pool",
                details=[{"field": "train.resources.gpus_per_worker",
                          "message": f"pool {pool.name} has no GPUs"}])
        return pool.name
    if gpus > 0:
        wanted = "gpu"
    elif max(data_bytes, memory) > highmem_threshold_bytes(pools):
        wanted = "highmem"
    else:
        wanted = "cpu"
    if wanted in pools:
        return wanted
    if wanted == "gpu":
        raise SpecError("train.resources.gpus_per_worker: no gpu pool is configured; "
                        "set gpus_per_worker to 0 or name a pool in train.resources.pool",
                        details=[{"field": "train.resources.gpus_per_worker",
                                  "message": "no gpu pool"}])
    return "cpu" if "cpu" in pools else sorted(pools)[0]
