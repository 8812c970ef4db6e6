"""The artifact store on the S3-compatible server (moto over real HTTP, no Ray): job logs
streamed while the driver runs, training checkpoints, and a published model directory copied
down and loaded. Their local-directory counterparts are in tests/unit (artifacts/test_job_logs.py,
training/test_checkpoints.py, serving/test_published.py)."""

from __future__ import annotations

import numpy as np
import pytest

from railyard.artifacts.artifact_store import ArtifactStore
from railyard.artifacts.checkpoints import CheckpointStore
from railyard.errors import NotFoundError
from railyard.serving.published import load_published
from tests.artifact_cases import ship_and_watch
from tests.builders import publish, trained


def test_shipper_streams_to_s3(s3, tmp_path, capsys):
    import boto3

    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket="job-logs")
    ship_and_watch(ArtifactStore("s3://job-logs/railyard"), tmp_path, capsys)


def test_checkpoints_on_s3(s3):
    import boto3

    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket="ckpt")
    store = CheckpointStore(ArtifactStore("s3://ckpt/railyard"), "job-9", "checkpoints")
    assert store.latest() is None
    for step in (5, 10, 15):
        store.save(step, {"model.ubj": f"model {step}".encode(), "opt/state": b"s"},
                   meta={"round": step}, fingerprint="fp")
    latest = CheckpointStore(ArtifactStore("s3://ckpt/railyard"), "job-9",
                             "checkpoints").latest("fp")
    assert (latest.step, latest.meta) == (15, {"round": 15})
    assert latest.read("model.ubj") == b"model 15"
    keys = sorted(o["Key"] for o in boto3.client("s3", endpoint_url=s3.endpoint)
                  .list_objects_v2(Bucket="ckpt", Prefix="railyard/job-9/")["Contents"]
                  if not o["Key"].endswith("/"))  # pyarrow's empty directory markers
    assert keys == ["railyard/job-9/checkpoints/latest.json",
                    *(f"railyard/job-9/checkpoints/step-{s}/{f}"
                      for s in (10, 15) for f in ("model.ubj", "opt/state"))]
    store.clear()
    assert CheckpointStore(ArtifactStore("s3://ckpt/railyard"), "job-9",
                           "checkpoints").latest() is None


@pytest.mark.usefixtures("one_thread")
def test_model_directory_on_s3_is_copied_then_loaded(s3, tmp_path):
    import boto3

    boto3.client("s3", endpoint_url=s3.endpoint).create_bucket(Bucket="models")
    workflow, model, data = trained("lightgbm", "binary")
    local = publish(workflow, model, data, tmp_path / "model")
    store = ArtifactStore("s3://models/railyard")
    for path in local.iterdir():
        store.put_file(path, "job-1", "model", path.name)
    published = load_published(store.uri("job-1", "model"), into=tmp_path / "copy")
    assert published.directory == tmp_path / "copy"
    assert {p.name for p in local.iterdir()} == {p.name for p in published.directory.iterdir()}
    assert np.array_equal(published.predict(data.holdout), workflow.predict(model, data.holdout))
    with pytest.raises(NotFoundError):
        load_published(store.uri("job-2", "model"))
