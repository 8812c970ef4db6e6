"""DAGs of the Airflow provider's integration tests (tests/integration/test_airflow_provider.py).

The test runs them with ``dag.test()`` in the Airflow virtualenv, against the live API it
started; the base spec (a NoOp job on the test's S3 data) comes in ``RAILYARD_TEST_SPEC``."""

from __future__ import annotations

import copy
import json
import os
from typing import Any

from airflow.sdk import DAG
from railyard_airflow.operators import RailyardTrainOperator
from railyard_airflow.sensors import RailyardJobSensor

BASE_SPEC: dict[str, Any] = json.loads(os.environ.get("RAILYARD_TEST_SPEC", "{}"))


def spec(**changes: Any) -> dict[str, Any]:
    """The base spec with top-level keys replaced (``train`` and ``lifecycle`` merged)."""
    out = copy.deepcopy(BASE_SPEC)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


with DAG("railyard_train_plain", schedule=None, catchup=False) as plain:
    # model_name is templated: the job's name proves the spec was rendered.
    RailyardTrainOperator(task_id="train", spec=spec(model_name="airflow_plain_{{ ds_nodash }}"),
                          poll_interval=1)

# The spec of this one is a Jinja template file next to this DAG (train_spec.json).
with DAG("railyard_train_deferrable", schedule=None, catchup=False,
         user_defined_macros={"base_spec": BASE_SPEC}) as deferrable:
    RailyardTrainOperator(task_id="train", spec="train_spec.json", deferrable=True,
                          poll_interval=1)

with DAG("railyard_train_run_timeout", schedule=None, catchup=False) as run_timeout:
    RailyardTrainOperator(
        task_id="train", poll_interval=1,
        spec=spec(model_name="airflow_timeout", train={"custom_params": {"train_s": 300}},
                  lifecycle={"run_timeout_s": 5}))

with DAG("railyard_train_rejected", schedule=None, catchup=False) as rejected:
    RailyardTrainOperator(task_id="train", spec=spec(model_name="airflow_rejected",
                                                     priority=500))

with DAG("railyard_sensor", schedule=None, catchup=False) as sensed:
    submit = RailyardTrainOperator(task_id="submit", wait_for_completion=False,
                                   spec=spec(model_name="airflow_sensed"))
    job_id = "{{ ti.xcom_pull(task_ids='submit') }}"
    poke = RailyardJobSensor(task_id="poke", job_id=job_id, poke_interval=1, timeout=600)
    defer = RailyardJobSensor(task_id="defer", job_id=job_id, poke_interval=1, timeout=600,
                              deferrable=True)
    submit >> [poke, defer]
