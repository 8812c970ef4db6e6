"""``manifest.json``: what a published model directory says about its model.

A job's model directory (``<job>/model/``) holds the workflow's files and a ``ModelManifest``;
a fan-out job's (``train.partition_by``) holds a ``PartitionedManifest`` that points at one
model directory per partition (``<job>/models/<value>/``, each with its own ``ModelManifest``,
which names its ``partition``). railyard.execution.publish and railyard.training.partitioned
write them; railyard.serving.published reads them.

Reading ignores keys it does not know and every field but the workflow (the partition column
for a fan-out) is optional, so models published by older versions still load. Writing keeps
exactly the keys that were set, in the order below, as ``json.dumps(..., indent=2)``.

A manifest lists the SHA-256 ``digests`` of the files beside it (a fan-out manifest, of each
partition's files), and the job database holds the manifest's own digest
(``Job.artifacts["manifest_sha256"]``): loading checks the chain before it reads a model file
(railyard.artifacts.integrity).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

MANIFEST_FILE = "manifest.json"


class _Manifest(BaseModel):
    """Shared JSON handling: unknown keys ignored; only the fields that were set written."""

    model_config = ConfigDict(extra="ignore")

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data (the fields that were set, in field order)."""
        return self.model_dump(exclude_unset=True)

    def to_json(self) -> str:
        """The text of ``manifest.json``."""
        return json.dumps(self.to_dict(), indent=2)


class ModelManifest(_Manifest):
    """One model: its workflow (and the parameters it was built with), files, inputs, task and
    holdout metrics."""

    job_id: str | None = None
    workflow: str
    framework: str | None = None
    model_file: str | None = None
    features: list[str] | None = None
    feature_types: dict[str, str] | None = None
    label: str | None = None
    task: str | None = None
    partition: str | None = None             # only in a fan-out partition's manifest
    metrics: dict[str, Any] | None = None
    spec_hash: str | None = None             # only in a job's manifest
    reports: dict[str, Any] | None = None    # only in a job's manifest
    # train.custom_params of the workflow that saved the model; absent from manifests
    # published before it was recorded (the workflow then loads with default parameters).
    custom_params: dict[str, Any] | None = None
    # SHA-256 of every other file of the model directory, by name (railyard.artifacts.integrity):
    # trusted once the manifest's own digest matches the one the job database holds.
    digests: dict[str, str] | None = None



class PartitionEntry(_Manifest):
    """One partition of a fan-out job: where its model is and how its training ended."""

    model_dir: str | None = None
    key: str | None = None                   # the path-safe folder name of the value
    status: str | None = None                # SUCCEEDED | FAILED
    # SHA-256 of every file of the partition's model directory (its manifest.json included)
    digests: dict[str, str] | None = None


class PartitionedManifest(_Manifest):
    """A fan-out job's models, one per value of the ``partitioned_by`` column."""

    job_id: str | None = None
    partitioned_by: str
    workflow: str | None = None
    spec_hash: str | None = None
    partitions: dict[str, PartitionEntry] = {}



def read_manifest(source: str | bytes | Mapping[str, Any]
                  ) -> ModelManifest | PartitionedManifest:
    """Either kind of manifest, from its JSON text or decoded: a fan-out job's names
    ``partitioned_by``."""
    data = json.loads(source) if isinstance(source, str | bytes) else dict(source)
    if "partitioned_by" in data:
        return PartitionedManifest.model_validate(data)
    return ModelManifest.model_validate(data)
