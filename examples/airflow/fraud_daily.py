"""A daily fraud model, the way a data team would schedule it on Railyard.

1. ``wait_for_partition`` waits (rescheduling, no worker slot held between pokes) for the day's
   snapshot to land: ``<data_root>/date=YYYY-MM-DD/`` (the charges of the trailing year, as
   of that day) with its ``_SUCCESS`` marker, written by the upstream job.
2. ``train`` submits ``fraud_daily_spec.json`` (a Jinja template: the data path, the filters and
   the holdout follow ``{{ data_interval_start }}``) and waits in the triggerer
   (``deferrable=True``). The job id, its UI link and its holdout metrics land in XCom.
3. ``check_quality`` branches on the holdout AUC: ``promote`` above ``params.min_auc``,
   ``flag_for_review`` below it.

Copy this file and fraud_daily_spec.json into your DAG folder; create the ``railyard_default``
connection (type ``railyard``: host = the API URL, password = your team's API token); set
``data_root`` to your bucket (the ``ObjectStoragePath`` check reads s3:// with the Amazon
provider and an ``aws_default`` connection, file:// without one).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, ObjectStoragePath, Param, PokeReturnValue, task
from airflow.sdk.types import TaskInstance
from railyard_airflow.operators import RailyardTrainOperator

with DAG(
    dag_id="fraud_daily_model",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
    params={
        "data_root": Param("s3://fraud-features/charges", type="string"),
        "min_auc": Param(0.80, type="number", minimum=0, maximum=1),
    },
    tags=["railyard", "fraud"],
) as dag:

    @task.sensor(poke_interval=300, timeout=6 * 3600, mode="reschedule")
    def wait_for_partition(data_interval_start: datetime | None = None,
                           params: dict[str, Any] | None = None) -> PokeReturnValue:
        """Done once the day's partition has its _SUCCESS marker."""
        assert data_interval_start is not None and params is not None
        day = data_interval_start.strftime("%Y-%m-%d")
        marker = ObjectStoragePath(f"{params['data_root']}/date={day}/_SUCCESS")
        return PokeReturnValue(is_done=marker.exists(), xcom_value=str(marker.parent))

    train = RailyardTrainOperator(
        task_id="train",
        spec="fraud_daily_spec.json",
        deferrable=True,
        poll_interval=30,
    )

    @task.branch
    def check_quality(ti: TaskInstance | None = None,
                      params: dict[str, Any] | None = None) -> str:
        """Promote a model whose holdout AUC clears the bar; flag the others."""
        assert ti is not None and params is not None
        metrics = ti.xcom_pull(task_ids="train", key="holdout_metrics") or {}
        auc = float(metrics.get("auc", 0.0))
        print(f"holdout AUC {auc:.4f} (bar {params['min_auc']})")
        return "promote" if auc >= params["min_auc"] else "flag_for_review"

    @task
    def promote(ti: TaskInstance | None = None) -> None:
        """Hand the model on: point your serving alias or registry at the job's model here."""
        assert ti is not None
        print(f"promoting the model of Railyard job {ti.xcom_pull(task_ids='train')}")

    @task
    def flag_for_review(ti: TaskInstance | None = None) -> None:
        """Keep the current model serving; tell the owners (a notifier fits here)."""
        assert ti is not None
        print(f"Railyard job {ti.xcom_pull(task_ids='train')} missed the AUC bar")

    wait_for_partition() >> train >> check_quality() >> [promote(), flag_for_review()]
