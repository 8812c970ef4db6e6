"""The Airflow provider (integrations/airflow) in a real Airflow 3: its DAGs
(tests/integration/airflow_dags/) run with ``dag.test()`` in the Airflow virtualenv that
scripts/airflow_venv.sh builds (Airflow, the provider, no Ray), against the live API of the
session's platform; the provider's own tests (integrations/airflow/tests/) run there too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import jsonschema
import pytest

from tests.integration.support import noop_spec

REPO = Path(__file__).resolve().parents[2]
DAGS = Path(__file__).resolve().parent / "airflow_dags"
DAG_FILE = DAGS / "railyard_dags.py"
EXAMPLES = REPO / "examples" / "airflow"
SUMMARY_MARK = "DAG-RUN-SUMMARY "


@dataclass
class Airflow:
    """The Airflow virtualenv and the environment its commands run with."""

    python: Path
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 600, **env: str
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.python), *args], cwd=REPO, env={**self.env, **env},
                              text=True, capture_output=True, timeout=timeout)


@dataclass
class DagRun:
    """What ``dag.test()`` printed, and the summary run_dag.py printed last."""

    output: str
    state: str
    tasks: dict[str, dict]

    def task(self, task_id: str) -> dict:
        return self.tasks[task_id]


@pytest.fixture(scope="session")
def airflow_venv() -> Path:
    """The virtualenv scripts/airflow_venv.sh built; the tests fail (before the platform starts)
    if there is none."""
    found = subprocess.run(["bash", str(REPO / "scripts" / "airflow_venv.sh"), "--no-build"],
                           capture_output=True, text=True)
    if found.returncode != 0:
        pytest.fail("the Airflow virtualenv is missing: build it with `bash scripts/"
                    f"airflow_venv.sh` (CI: .ci/run does)\n{found.stderr}")
    return Path(found.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def airflow(airflow_venv, platform, tmp_path_factory) -> Airflow:
    """Airflow's home in tmp with a migrated sqlite metadata DB, and the ``railyard_default``
    connection to the live API (host with its scheme and port, password the token)."""
    venv = airflow_venv
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RAILYARD_TOKEN")}
    env.update({
        "PATH": f"{venv / 'bin'}:{env.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW_CONN_RAILYARD_DEFAULT": json.dumps(
            {"conn_type": "railyard", "host": platform.api_url, "password": platform.token}),
        "RAILYARD_TEST_SPEC": json.dumps(noop_spec(platform, "airflow")),
        "RAILYARD_TEST_API_URL": platform.api_url,
        "RAILYARD_TEST_TOKEN": platform.token,
    })
    af = Airflow(python=venv / "bin" / "python", env=env)
    migrated = af.run("-m", "airflow", "db", "migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    return af


def run_dag(airflow: Airflow, dag_id: str) -> DagRun:
    """``dag.test()`` of one DAG in the Airflow virtualenv."""
    done = airflow.run(str(DAGS / "run_dag.py"), str(DAG_FILE), dag_id)
    output = done.stdout + done.stderr
    sys.stdout.write(output[-20_000:])   # the task logs, shown when the test fails
    assert done.returncode == 0, f"run_dag.py {dag_id} exited {done.returncode}"
    summary = json.loads(output.rsplit(SUMMARY_MARK, 1)[1].splitlines()[0])
    return DagRun(output=output, state=summary["state"], tasks=summary["tasks"])


def assert_succeeded_with_metrics(client, platform, run: DagRun, task_id: str) -> dict:
    """The task succeeded, pushed the job id, its URL (and the extra link), and the metrics
    the API reports for the SUCCEEDED job."""
    task = run.task(task_id)
    assert task["state"] == "success", run.output[-5000:]
    job_id = task["xcom"]["return_value"]
    job = client.get(job_id)
    assert job["status"] == "SUCCEEDED"
    assert task["xcom"]["railyard_job_id"] == job_id
    url = f"{platform.api_url.rstrip('/')}/jobs/{job_id}"
    assert task["xcom"]["railyard_job_url"] == url
    assert task["xcom"]["_link_RailyardJobLink"] == url
    assert task["xcom"]["holdout_metrics"] == job["metrics"]["holdout"]
    assert task["xcom"]["holdout_metrics"]["holdout_rows"] > 0
    return job


def test_provider_tests_in_the_airflow_venv(airflow):
    """integrations/airflow/tests: the provider's own tests, the hook's against the live API."""
    done = airflow.run("-m", "pytest", "-q", "-p", "no:cacheprovider",
                       str(REPO / "integrations" / "airflow" / "tests"))
    print(done.stdout[-3000:])
    assert done.returncode == 0, done.stdout[-10_000:] + done.stderr[-5000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-3000:]


def test_the_airflow_venv_has_no_ray_nor_pyarrow(airflow):
    """The provider installs into Airflow without Ray, pyarrow or Railyard."""
    probe = ("import importlib.util as u, sys; import railyard_airflow.operators; "
             "print([m for m in ('ray', 'pyarrow', 'railyard') if u.find_spec(m)]); "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'pyarrow')))")
    done = airflow.run("-I", "-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "[]"], done.stdout


def test_operator_trains_and_pushes_the_job_and_its_metrics(airflow, client, platform):
    run = run_dag(airflow, "railyard_train_plain")
    assert run.state == "success"
    job = assert_succeeded_with_metrics(client, platform, run, "train")
    # the spec was templated: {{ ds_nodash }} rendered in the model name
    assert job["model_name"].startswith("airflow_plain_2")
    assert "{{" not in job["model_name"]


def test_deferrable_operator_waits_in_the_trigger(airflow, client, platform):
    run = run_dag(airflow, "railyard_train_deferrable")
    assert run.state == "success"
    job = assert_succeeded_with_metrics(client, platform, run, "train")
    assert "running trigger in line" in run.output   # it deferred; the trigger ran
    # the spec came from the Jinja template file next to the DAG
    assert job["model_name"].startswith("airflow_deferred_2")


def test_a_job_past_its_run_timeout_fails_the_task_with_the_reason(airflow, client):
    run = run_dag(airflow, "railyard_train_run_timeout")
    task = run.task("train")
    assert task["state"] == "failed"
    job = client.get(task["xcom"]["railyard_job_id"])
    assert job["status"] == "FAILED" and "run timeout of 5s exceeded" in job["error"]
    assert f"Railyard job {job['id']} ended FAILED in phase {job['error_phase']}" in run.output
    assert "run timeout of 5s exceeded" in run.output
    assert f"lines of Railyard job {job['id']}'s log" in run.output


def test_a_rejected_spec_fails_the_task_with_the_api_message(airflow):
    run = run_dag(airflow, "railyard_train_rejected")
    task = run.task("train")
    assert task["state"] == "failed"
    assert "railyard_job_id" not in task["xcom"]
    assert "Railyard rejected the training spec" in run.output
    assert "answered HTTP 422 SpecError" in run.output
    assert "500 is out of range: give 0 (lowest) to 100 (highest)" in run.output


def test_sensor_pokes_and_defers_until_the_job_succeeds(airflow, client, platform):
    run = run_dag(airflow, "railyard_sensor")
    assert run.state == "success", run.output[-5000:]
    job_id = run.task("submit")["xcom"]["return_value"]
    job = client.get(job_id)
    assert job["status"] == "SUCCEEDED"
    for task_id in ("poke", "defer"):
        task = run.task(task_id)
        assert task["state"] == "success"
        assert task["xcom"]["return_value"] == job["metrics"]["holdout"]
        assert task["xcom"]["railyard_job_url"].endswith(f"/jobs/{job_id}")


def test_the_example_dag_renders_a_valid_spec_for_its_day(airflow, platform):
    """examples/airflow: the DAG imports, has its tasks, and the spec it renders for a day
    follows that day and is a TrainingSpec by the API's own schema (/openapi.json)."""
    env = {"AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES)}
    listed = airflow.run("-m", "airflow", "tasks", "list", "fraud_daily_model", **env)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert set(listed.stdout.split()) >= {"wait_for_partition", "train", "check_quality",
                                          "promote", "flag_for_review"}
    rendered = airflow.run("-m", "airflow", "tasks", "render", "fraud_daily_model", "train",
                           "2026-06-01", **env)
    assert rendered.returncode == 0, rendered.stdout + rendered.stderr
    spec = json.loads(rendered.stdout[rendered.stdout.index("{"):])
    assert spec["model_name"] == "fraud_daily_20260601"
    assert spec["data"]["features"][0]["path"].endswith("/date=2026-06-01/")
    assert spec["data"]["holdout_sampling"]["date_range_sampling"]["end_date"] == "2026-06-01"
    openapi = httpx.get(f"{platform.api_url}/openapi.json", timeout=30).json()
    jsonschema.validate(spec, {"$ref": "#/components/schemas/TrainingSpec",
                               "components": openapi["components"]})
