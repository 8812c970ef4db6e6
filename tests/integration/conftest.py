"""One real platform per test session: Postgres, an S3 server, a Ray cluster started with
`ray start`, and the API deployed on it with Ray Serve. Every test collected here carries the
``integration`` marker."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pyarrow as pa
import pytest

from railyard.client.sdk import RailyardClient
from railyard.cluster import local_cluster
from railyard.config import Settings
from railyard.data.demo import fraud_table
from railyard.errors import RailyardError
from railyard.jobstore import tokens
from railyard.jobstore.engine import get_engine, migrate
from railyard.jobstore.tables import ACTIVE_STATUSES
from tests.integration.support import DATA_BUCKET, upload_table
from tests.servers import free_port, mlflow_server, postgres_server, s3_server

ARTIFACT_BUCKET = "railyard-artifacts"
FRAUD_ROWS = 60_000
BIG_FRAUD_ROWS = 300_000
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """Mark every test under tests/integration/ ``integration`` (``-m "not integration"``
    leaves exactly tests/unit/)."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def postgres():
    """A real Postgres server, started once per test session."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3():
    """A real S3-compatible HTTP server; the AWS variables point this process at it."""
    with s3_server() as server:
        old = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        try:
            yield server
        finally:
            for key, value in old.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def s3_size(uri: str) -> int:
    """Total bytes under an s3:// prefix (listed with boto3)."""
    bucket, prefix = uri[len("s3://"):].split("/", 1)
    listing = boto3.client("s3").list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
    return sum(obj["Size"] for obj in listing.get("Contents", []))


@pytest.fixture(scope="session")
def mlflow(s3):
    """A real `mlflow server` (scripts/mlflow_venv.sh builds it), artifacts on the S3 server;
    the platform exports every SUCCEEDED job to it."""
    with mlflow_server(s3) as server:
        yield server


@dataclass
class Platform:
    """Everything a test needs to talk to the running platform."""

    settings: Settings
    api_url: str
    ray_address: str
    fraud_uri: str
    fraud: pa.Table
    big_fraud_uri: str
    token: str = ""
    gcs_address: str = ""

    def client(self) -> RailyardClient:
        return RailyardClient(self.api_url, token=self.token)

    @property
    def engine(self):
        return get_engine(self.settings.resolved_database_url)


@pytest.fixture(scope="session")
def platform(postgres, s3, mlflow, tmp_path_factory) -> Platform:
    home = tmp_path_factory.mktemp("railyard-home")
    dashboard_port = free_port()
    s3_client = boto3.client("s3")
    for bucket in (DATA_BUCKET, ARTIFACT_BUCKET):
        s3_client.create_bucket(Bucket=bucket)
    fraud = fraud_table(FRAUD_ROWS, seed=7)
    fraud_uri = upload_table(fraud, DATA_BUCKET, "fraud")
    big_fraud_uri = upload_table(fraud_table(BIG_FRAUD_ROWS, seed=8), DATA_BUCKET, "fraud-big")
    settings = Settings(home=home, database_url=postgres.url(),
                        artifact_root=f"s3://{ARTIFACT_BUCKET}",
                        ray_address=f"http://127.0.0.1:{dashboard_port}",
                        # webhook receivers in tests listen on loopback; retries come quickly
                        webhook_allowed_hosts=["127.0.0.1"], webhook_retry_base_s=1.0,
                        webhook_retry_max_s=4.0,
                        # every SUCCEEDED job is exported to the test MLflow server
                        mlflow_tracking_uri=mlflow.url, mlflow_retry_base_s=1.0,
                        # the small dataset is read in-process, the big one by Ray Data tasks
                        in_process_read_max_bytes=(s3_size(fraud_uri) + s3_size(big_fraud_uri))
                        // 2)
    migrate(settings.resolved_database_url)
    # An admin API token for the tests' clients (CLI subprocesses get it as RAILYARD_TOKEN).
    token, _ = tokens.issue(get_engine(settings.resolved_database_url), team="admin", admin=True)
    previous_token = os.environ.get("RAILYARD_TOKEN")
    # A head that runs the API, plus one labelled node per pool, like the KubeRay groups.
    address = local_cluster.start_pool_cluster(
        settings, {"cpu": 1, "highmem": 1}, cpus_per_node={"cpu": 2, "highmem": 1},
        gcs_port=(gcs_port := free_port()),
        dashboard_port=dashboard_port,
        extra_head_args=[f"--temp-dir={Path('/tmp') / f'ray-tests-{os.getpid()}'}"])
    try:
        api_url = local_cluster.deploy_api(settings, address=address, port=free_port())
        os.environ["RAILYARD_TOKEN"] = token   # set after the cluster started: Ray never sees it
        yield Platform(settings=settings, api_url=api_url, ray_address=address,
                       fraud_uri=fraud_uri, fraud=fraud, big_fraud_uri=big_fraud_uri,
                       gcs_address=f"127.0.0.1:{gcs_port}",
                       token=token)
    finally:
        if previous_token is None:
            os.environ.pop("RAILYARD_TOKEN", None)
        else:
            os.environ["RAILYARD_TOKEN"] = previous_token
        local_cluster.stop_local_cluster(settings)


@pytest.fixture(autouse=True)
def _no_job_outlives_its_test(request: pytest.FixtureRequest):
    """Cancel what a test left running (it failed, or timed out waiting for its job): a hung
    job keeps its Ray actors and CPUs, and every training test after it would wait for them."""
    yield
    if "platform" not in request.fixturenames:
        return
    platform = request.getfixturevalue("platform")
    with platform.client() as c:
        for status in sorted(s.value for s in ACTIVE_STATUSES):
            try:
                left = c.list(status=status, limit=200)["jobs"]
            except (httpx.HTTPError, RailyardError) as exc:   # the test's failure says more
                print(f"\ncould not list the {status} jobs {request.node.name} left: {exc}")
                continue
            for job in left:
                print(f"\ncancelling {job['id']} ({job['status']}), left by "
                      f"{request.node.name}")
                try:
                    c.cancel(job["id"])
                except (httpx.HTTPError, RailyardError) as exc:   # it ended meanwhile
                    print(f"could not cancel {job['id']}: {exc}")


@pytest.fixture()
def client(platform) -> RailyardClient:
    with platform.client() as c:
        yield c
