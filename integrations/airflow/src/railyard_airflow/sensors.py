"""The sensor that waits for a Railyard job submitted elsewhere."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException

from railyard_airflow.api import (
    TERMINAL_STATUSES,
    XCOM_HOLDOUT_METRICS,
    XCOM_JOB_URL,
    succeeded_metrics,
)
from railyard_airflow.hooks import RailyardHook
from railyard_airflow.links import RailyardJobLink
from railyard_airflow.triggers import RailyardJobTrigger


class RailyardJobSensor(BaseSensorOperator):
    """Wait for a Railyard job (submitted by another task, a CLI or the SDK) to succeed.

    Done when the job SUCCEEDED: its holdout metrics become the task's return value (and
    ``holdout_metrics``). A job that ends FAILED or CANCELLED fails the task with its error and
    phase. With ``deferrable=True`` the wait runs in the triggerer (:class:`RailyardJobTrigger`)
    instead of poking from a worker.

    :param job_id: the Railyard job id (templated).
    :param railyard_conn_id: the Airflow connection (type ``railyard``).
    :param deferrable: wait in the triggerer, holding no worker slot (default: Airflow's
        ``[operators] default_deferrable``).
    """

    template_fields: Sequence[str] = ("job_id",)
    operator_extra_links = (RailyardJobLink(),)
    ui_color = "#e8f1fb"

    def __init__(self, *, job_id: str, railyard_conn_id: str = RailyardHook.default_conn_name,
                 deferrable: bool = conf.getboolean("operators", "default_deferrable",
                                                    fallback=False),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_id = job_id
        self.railyard_conn_id = railyard_conn_id
        self.deferrable = deferrable

    @cached_property
    def hook(self) -> RailyardHook:
        """The hook of ``railyard_conn_id``."""
        return RailyardHook(self.railyard_conn_id)

    def execute(self, context: Context) -> Any:
        """Poke from the worker, or (deferrable) check once and defer to the trigger."""
        context["ti"].xcom_push(key=XCOM_JOB_URL, value=self.hook.job_url(self.job_id))
        if not self.deferrable:
            return super().execute(context)
        done = self.poke(context)
        if done:
            return done.xcom_value if isinstance(done, PokeReturnValue) else None
        self.defer(trigger=RailyardJobTrigger(job_id=self.job_id,
                                              railyard_conn_id=self.railyard_conn_id,
                                              poll_interval=self.poke_interval),
                   method_name="execute_complete",
                   timeout=timedelta(seconds=self.timeout))

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """True (with the metrics) once the job SUCCEEDED; raise if it FAILED/CANCELLED."""
        job = self.hook.get_job(self.job_id)
        if job["status"] not in TERMINAL_STATUSES:
            self.log.info("Railyard job %s is %s (phase %s)", self.job_id, job["status"],
                          job.get("phase"))
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._metrics(context, job))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: the job's metrics, or the task fails."""
        if event["status"] == "error":
            raise AirflowException(f"waiting for Railyard job {self.job_id} failed: "
                                   f"{event.get('message')}")
        return self._metrics(context, self.hook.get_job(self.job_id))

    def _metrics(self, context: Context, job: dict[str, Any]) -> dict[str, Any]:
        metrics = succeeded_metrics(job, self.hook.job_url(self.job_id))
        self.log.info("Railyard job %s SUCCEEDED; holdout metrics: %s", self.job_id, metrics)
        context["ti"].xcom_push(key=XCOM_HOLDOUT_METRICS, value=metrics)
        return metrics
