"""Published models are loaded only from files the job database vouches for: the publish phase
(railyard.execution.publish) records the manifest's SHA-256 in the job's results and the
manifest lists every other file's; railyard.serving.published checks the chain before it reads
a model file. A file rewritten in the artifact store afterwards is refused, naming it, and is
never unpickled; a pickle nothing vouches for is refused too."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from railyard.artifacts.artifact_store import ArtifactStore
from railyard.artifacts.integrity import ArtifactIntegrityError, sha256_hex
from railyard.data.demo import sample_spec
from railyard.execution.publish import publish_model, publish_partitioned
from railyard.serving.published import PartitionedModel, PublishedModel, load_published
from railyard.spec import parse_spec
from railyard.training.partitioned import PartitionModel
from tests.builders import trained

pytestmark = pytest.mark.usefixtures("one_thread")


class Payload:
    """A pickle that creates ``marker`` when it is unpickled (what an attacker's would run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return open, (str(self.marker), "w")


def publish_job(tmp_path: Path, name: str = "sklearn", job_id: str = "job-1",
                *, folder: str = "model") -> tuple[ArtifactStore, dict[str, Any], Any, Any]:
    """A model published by the publish phase into a local artifact store: (store, the job's
    results, the trained workflow and model, the data)."""
    workflow, model, data = trained(name, "binary")
    spec = parse_spec(sample_spec(str(tmp_path)))
    spec = spec.model_copy(update={"train": workflow.train_spec})
    store = ArtifactStore(str(tmp_path / "store"))
    work = tmp_path / "work" / job_id
    work.mkdir(parents=True, exist_ok=True)
    results = publish_model(store, job_id, work / folder, spec, workflow, model,
                            metrics={"auc": 0.5}, task="binary", schema=data.train.schema,
                            reports=lambda directory: {})
    return store, results, (workflow, model), data


def test_the_publish_phase_records_the_digests_the_loader_checks(tmp_path):
    store, results, (workflow, model), data = publish_job(tmp_path)
    artifacts = results["artifacts"]
    model_dir = Path(artifacts["model_dir"])
    manifest_bytes = (model_dir / "manifest.json").read_bytes()
    assert artifacts["manifest_sha256"] == sha256_hex(manifest_bytes)
    digests = json.loads(manifest_bytes)["digests"]
    assert set(digests) == {"model.joblib", "encoding.json"}
    assert digests["model.joblib"] == sha256_hex((model_dir / "model.joblib").read_bytes())

    loaded = load_published(artifacts["model_dir"], trusted=artifacts)
    assert isinstance(loaded, PublishedModel)
    assert loaded.directory != model_dir           # loaded from a private, checked copy
    assert np.array_equal(loaded.predict(data.holdout), workflow.predict(model, data.holdout))


def test_a_pickle_rewritten_in_the_store_is_refused_and_never_unpickled(tmp_path):
    _, results, _, _ = publish_job(tmp_path)
    artifacts = results["artifacts"]
    model_file = Path(artifacts["model_dir"]) / "model.joblib"
    marker = tmp_path / "payload-ran"
    model_file.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ArtifactIntegrityError, match="model.joblib does not match") as info:
        load_published(artifacts["model_dir"], trusted=artifacts)
    assert str(model_file) in info.value.message
    assert not marker.exists()
    # Without the job's record nothing vouches for the pickle: refused as well.
    with pytest.raises(ArtifactIntegrityError, match="model.joblib is a pickle"):
        load_published(artifacts["model_dir"])
    assert not marker.exists()


def test_a_rewritten_manifest_is_refused(tmp_path):
    _, results, _, _ = publish_job(tmp_path)
    artifacts = results["artifacts"]
    manifest_path = Path(artifacts["model_dir"]) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    # Vouch for a planted pickle in the manifest itself: the manifest no longer matches.
    (manifest_path.parent / "model.joblib").write_bytes(pickle.dumps({"planted": 1}))
    manifest["digests"]["model.joblib"] = sha256_hex(
        (manifest_path.parent / "model.joblib").read_bytes())
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match="manifest.json does not match"):
        load_published(artifacts["model_dir"], trusted=artifacts)


def test_the_job_database_vouches_when_the_caller_does_not(tmp_path, job_database):
    """The model server and the CLI on a machine with the job database: the manifest's job is
    looked up there."""
    _, results, (workflow, model), data = publish_job(tmp_path)
    artifacts = results["artifacts"]
    job_database("job-1", artifacts)
    loaded = load_published(artifacts["model_dir"])
    assert np.array_equal(loaded.predict(data.holdout), workflow.predict(model, data.holdout))
    model_file = Path(artifacts["model_dir"]) / "model.joblib"
    marker = tmp_path / "payload-ran"
    model_file.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ArtifactIntegrityError, match="model.joblib does not match"):
        load_published(artifacts["model_dir"])
    assert not marker.exists()


def test_a_manifest_naming_another_job_gains_nothing(tmp_path, job_database):
    """A rewritten manifest cannot borrow another job's record: its own bytes must match."""
    _, first, _, _ = publish_job(tmp_path, job_id="job-1")
    _, second, _, _ = publish_job(tmp_path, job_id="job-2")
    job_database("job-1", first["artifacts"])
    job_database("job-2", second["artifacts"])
    target = Path(second["artifacts"]["model_dir"])
    manifest = json.loads((target / "manifest.json").read_text())
    (target / "model.joblib").write_bytes(pickle.dumps({"planted": 1}))
    manifest["job_id"] = "job-1"
    manifest["digests"]["model.joblib"] = sha256_hex((target / "model.joblib").read_bytes())
    (target / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match="manifest.json does not match"):
        load_published(str(target))


def test_a_model_without_pickles_loads_unchecked_and_into_must_be_empty(tmp_path):
    _, results, (workflow, model), data = publish_job(tmp_path, "xgboost")
    model_dir = results["artifacts"]["model_dir"]
    loaded = load_published(model_dir)             # no record: native files load unchecked
    assert np.array_equal(loaded.predict(data.holdout), workflow.predict(model, data.holdout))
    into = tmp_path / "into"
    into.mkdir()
    (into / "model.joblib").write_bytes(b"left over")
    with pytest.raises(ArtifactIntegrityError, match="load it into an empty directory"):
        load_published(model_dir, into=into, trusted=results["artifacts"])


def test_a_fan_out_checks_each_partition_against_its_recorded_digests(tmp_path):
    store, _, _, data = publish_job(tmp_path, job_id="job-3", folder="unused")
    records = []
    for value in ("a", "b"):
        _, partition, _, _ = publish_job(tmp_path, job_id=f"part-{value}")
        records.append(PartitionModel(value, "SUCCEEDED", 10, 5, {"auc": 0.5},
                                      partition["artifacts"]["model_dir"], 0.1))
    spec = parse_spec(sample_spec(str(tmp_path)))
    results = publish_partitioned(store, "job-3", spec, column="c", records=records,
                                  summary={"partitions": 2})
    artifacts = results["artifacts"]
    loaded = load_published(artifacts["model_dir"], trusted=artifacts)
    assert isinstance(loaded, PartitionedModel) and sorted(loaded.models) == ["a", "b"]
    marker = tmp_path / "payload-ran"
    planted = Path(records[1].model_dir or "") / "model.joblib"
    planted.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ArtifactIntegrityError, match="model.joblib does not match") as info:
        load_published(artifacts["model_dir"], trusted=artifacts)
    assert str(planted) in info.value.message and not marker.exists()
