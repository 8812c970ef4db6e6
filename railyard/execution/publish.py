"""The publish phase: a job's model directory (``<job>/model/``: the workflow's files, its
reports and ``manifest.json``) and ``<job>/metrics.json`` in the artifact store.

The one place a job-level manifest is written (railyard.training.manifest); a fan-out job's
partitions write their own (railyard.training.partitioned).

Integrity (railyard.artifacts.integrity): the manifest lists the SHA-256 of every file written
beside it, and the job's results carry the manifest's own digest
(``artifacts.manifest_sha256``), which the driver stores in the job database; a loader checks
the files against that chain. A fan-out manifest lists the digests of each partition's files,
read back once every partition has been published.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from railyard.artifacts.artifact_store import ArtifactStore
from railyard.artifacts.integrity import directory_digests, read_files, sha256_hex
from railyard.spec import TrainingSpec
from railyard.training.manifest import (
    MANIFEST_FILE,
    ModelManifest,
    PartitionedManifest,
    PartitionEntry,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from railyard.training.partitioned import PartitionModel
    from railyard.training.workflow import Workflow

# Writes the workflow's reports into the model directory; returns the manifest's ``reports``.
ReportWriter = Callable[[Path], dict[str, Any]]


def publish_model(artifacts: ArtifactStore, job_id: str, model_dir: Path, spec: TrainingSpec,
                  workflow: Workflow, model: Any, *, metrics: dict[str, float], task: str,
                  schema: pa.Schema, reports: ReportWriter) -> dict[str, Any]:
    """Save the model, its reports and manifest to the artifact store; the job's results."""
    model_dir.mkdir()
    main_file = workflow.save(model, model_dir)
    written_reports = reports(model_dir)
    manifest = ModelManifest(
        job_id=job_id, workflow=workflow.name, framework=workflow.framework,
        model_file=main_file, features=list(spec.train.classifier_features),
        feature_types={f: str(schema.field(f).type) for f in spec.train.classifier_features},
        label=spec.train.label, task=task,
        metrics={"holdout": metrics}, spec_hash=spec.spec_hash(),
        reports=written_reports, custom_params=dict(spec.train.custom_params),
        digests=directory_digests(model_dir))
    manifest_bytes = manifest.to_json().encode()
    (model_dir / MANIFEST_FILE).write_bytes(manifest_bytes)
    uris = {p.name: artifacts.put_file(p, job_id, "model", p.name)
            for p in sorted(model_dir.iterdir())}
    metrics_uri = artifacts.put_bytes(
        json.dumps({"holdout": metrics}, indent=2).encode(), job_id, "metrics.json")
    return {
        "metrics": {"holdout": metrics},
        "artifacts": {"model": uris[main_file], "manifest": uris[MANIFEST_FILE],
                      "manifest_sha256": sha256_hex(manifest_bytes),
                      "model_dir": artifacts.uri(job_id, "model"),
                      "metrics": metrics_uri},
    }


def publish_partitioned(artifacts: ArtifactStore, job_id: str, spec: TrainingSpec, *,
                        column: str, records: list[PartitionModel],
                        summary: dict[str, Any]) -> dict[str, Any]:
    """A fan-out job's manifest (one entry per partition's model) and metrics; its results."""
    from railyard.training.partitioned import partition_key

    manifest = PartitionedManifest(
        job_id=job_id, partitioned_by=column, workflow=spec.train.workflow_name,
        spec_hash=spec.spec_hash(),
        partitions={r.partition: PartitionEntry(
            model_dir=r.model_dir, key=partition_key(r.partition), status=r.status,
            digests=_partition_digests(r.model_dir) if r.status == "SUCCEEDED" else None)
            for r in records})
    manifest_bytes = manifest.to_json().encode()
    manifest_uri = artifacts.put_bytes(manifest_bytes, job_id, "model", MANIFEST_FILE)
    metrics_uri = artifacts.put_bytes(
        json.dumps({"fanout": summary}, indent=2).encode(), job_id, "metrics.json")
    return {"metrics": {"holdout": {}, "fanout": summary},
            "artifacts": {"model": manifest_uri, "manifest": manifest_uri,
                          "manifest_sha256": sha256_hex(manifest_bytes),
                          "model_dir": artifacts.uri(job_id, "model"),
                          "models": artifacts.uri(job_id, "models"),
                          "metrics": metrics_uri}}


def _partition_digests(model_dir: str | None) -> dict[str, str] | None:
    """The SHA-256 of every file a partition's task published (read back here: the task runs
    elsewhere); None when it published none."""
    if not model_dir:
        return None
    return {name: sha256_hex(data) for name, data in read_files(model_dir).items()} or None
