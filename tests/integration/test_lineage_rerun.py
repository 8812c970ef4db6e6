"""Lineage and reruns on the real stack: the lineage of a job lists every S3 object it read with
its size and ETag (checked against the S3 server's own listing), the workflow's source digest,
packages and seeds; a rerun of a deterministic XGBoost job reproduces its holdout metrics
exactly; overwriting one object makes the rerun a 409 naming it (unless changed data is
allowed); `railyard diff` shows what differs."""

from __future__ import annotations

import hashlib
import inspect
import io

import boto3
import pyarrow.parquet as pq
import pytest

from railyard.data.demo import fraud_table, sample_spec
from railyard.errors import ConflictError
from tests.integration.support import DATA_BUCKET, invoke_cli, upload_table

PREFIX = "lineage/fraud"


@pytest.fixture(scope="module")
def data_uri(platform) -> str:
    return upload_table(fraud_table(6000, seed=31), DATA_BUCKET, PREFIX, files=3)


def spec_for(uri: str) -> dict:
    spec = sample_spec(uri, source="s3")
    spec["model_name"] = "lineage-fraud"
    spec["train"]["custom_params"].update(n_estimators=25, seed=42, nthread=1)
    return spec


def test_lineage_rerun_reproduces_and_a_changed_object_is_a_409(platform, client, data_uri):
    job = client.wait(client.submit(spec_for(data_uri))["id"], timeout=180)
    assert job["status"] == "SUCCEEDED", (job["error"], client.events(job["id"]))

    lineage = client.lineage(job["id"])
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=DATA_BUCKET, Prefix=PREFIX + "/")["Contents"]
    expected = {f"s3://{DATA_BUCKET}/{o['Key']}": (o["Size"], o["ETag"].strip('"'))
                for o in listing}
    (source,) = lineage["sources"]
    assert source["uri"] == data_uri
    assert {f["path"]: (f["size"], f["etag"]) for f in source["files"]} == expected
    assert all(f["mtime"] for f in source["files"])
    workflow = lineage["code"]["workflow"]
    import workflows.stripe_fraud as module

    assert workflow["name"] == "StripeFraudModel" and workflow["module"] == module.__name__
    assert workflow["sha256"] == hashlib.sha256(inspect.getsource(module).encode()).hexdigest()
    packages = lineage["code"]["packages"]
    import xgboost

    assert packages["xgboost"] == xgboost.__version__ and packages["ray"] and packages["pyarrow"]
    assert lineage["seeds"]["train.custom_params.seed"] == 42
    from railyard.spec import parse_spec

    assert lineage["spec_hash"] == parse_spec(job["spec"]).spec_hash()
    assert lineage["sql"] == []

    rerun = client.rerun(job["id"])
    assert rerun["rerun_of"] == job["id"]
    rerun = client.wait(rerun["id"], timeout=180)
    assert rerun["status"] == "SUCCEEDED", (rerun["error"], client.events(rerun["id"]))
    assert rerun["metrics"]["holdout"] == job["metrics"]["holdout"]
    again = client.lineage(rerun["id"])
    assert again["rerun_of"] == job["id"] and again["pinned"] is True
    assert again["sources"] == lineage["sources"]

    result = invoke_cli(["diff", job["id"], rerun["id"]],
                        env={"RAILYARD_API_URL": platform.api_url})
    assert result.exit_code == 0, result.output
    assert "metrics.holdout" not in result.output and "lineage.files" not in result.output

    # Overwrite one object with other rows: the rerun is refused, naming it.
    changed = sorted(expected)[1]
    buf = io.BytesIO()
    pq.write_table(fraud_table(100, seed=99), buf)
    s3.put_object(Bucket=DATA_BUCKET, Key=changed.removeprefix(f"s3://{DATA_BUCKET}/"),
                  Body=buf.getvalue())
    with pytest.raises(ConflictError) as info:
        client.rerun(job["id"])
    assert info.value.status_code == 409 and changed in info.value.message
    assert [d["path"] for d in info.value.details] == [changed]
    result = invoke_cli(["rerun", job["id"]],
                        env={"RAILYARD_API_URL": platform.api_url})
    assert result.exit_code == 1 and changed in result.output

    # Allowed: it runs on the data as it is now, and its lineage shows the new ETag.
    loose = client.wait(client.rerun(job["id"], allow_changed_data=True)["id"], timeout=180)
    assert loose["status"] == "SUCCEEDED", loose["error"]
    files = {f["path"]: f for f in client.lineage(loose["id"])["sources"][0]["files"]}
    assert files[changed]["etag"] != expected[changed][1]
    assert loose["metrics"]["holdout"] != job["metrics"]["holdout"]
