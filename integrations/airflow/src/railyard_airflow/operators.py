"""The operator that trains a model on Railyard: submit a spec, wait (or defer), report."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.configuration import conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from railyard_airflow.api import (
    TERMINAL_STATUSES,
    XCOM_HOLDOUT_METRICS,
    XCOM_JOB_ID,
    XCOM_JOB_URL,
    RailyardApiError,
    idempotency_key,
    load_spec,
    succeeded_metrics,
)
from railyard_airflow.hooks import RailyardHook
from railyard_airflow.links import RailyardJobLink
from railyard_airflow.triggers import RailyardJobTrigger

SUBMIT_ATTEMPTS = 3
LOG_TAIL_LINES = 40


class RailyardTrainOperator(BaseOperator):
    """Train a model on Railyard: POST the training ``spec`` and wait for the job.

    The submit carries an ``Idempotency-Key`` made of the dag, task, run, map index and try
    number, so a repeat of the same try (a lost answer, a worker that died after submitting)
    finds the job it started instead of starting a second one; the next try starts a new job.
    The job id goes to XCom (``return_value`` and ``railyard_job_id``), and once the job
    SUCCEEDED its holdout metrics (``holdout_metrics``). A job that ends FAILED or CANCELLED
    fails the task with the job's error and phase (and copies the end of the job's log into the
    task log); a spec the API rejects (4xx) fails it with the API's message, without retries.
    Killing the task cancels the job.

    :param spec: the training spec (templated): a dict, or the path of a ``.json`` file
        relative to the DAG folder or ``template_searchpath`` (rendered with Jinja too).
    :param railyard_conn_id: the Airflow connection (type ``railyard``).
    :param wait_for_completion: wait for the job to end; False returns once it is submitted.
    :param deferrable: wait in the triggerer (:class:`RailyardJobTrigger`), holding no worker
        slot while the job runs (default: Airflow's ``[operators] default_deferrable``).
    :param poll_interval: seconds between reads of the job while waiting.
    :param max_poll_errors: reads in a row that may fail (API unreachable, 5xx) while waiting.
    """

    template_fields: Sequence[str] = ("spec",)
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"spec": "json"}
    operator_extra_links = (RailyardJobLink(),)
    ui_color = "#e8f1fb"

    def __init__(self, *, spec: dict[str, Any] | str,
                 railyard_conn_id: str = RailyardHook.default_conn_name,
                 wait_for_completion: bool = True,
                 deferrable: bool = conf.getboolean("operators", "default_deferrable",
                                                    fallback=False),
                 poll_interval: float = 10.0, max_poll_errors: int = 10,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec
        self.railyard_conn_id = railyard_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.max_poll_errors = max_poll_errors
        self.job_id: str | None = None

    @cached_property
    def hook(self) -> RailyardHook:
        """The hook of ``railyard_conn_id``."""
        return RailyardHook(self.railyard_conn_id)

    def execute(self, context: Context) -> str:
        """Submit the spec; wait for (or defer on) the job unless told not to."""
        ti = context["ti"]
        key = idempotency_key(ti.dag_id, ti.task_id, ti.run_id, ti.try_number, ti.map_index)
        job = self._submit(load_spec(self.spec), key)
        job_id = self.job_id = str(job["id"])
        url = self.hook.job_url(job_id)
        self.log.info("Railyard job %s is %s: %s", job_id, job["status"], url)
        ti.xcom_push(key=XCOM_JOB_ID, value=job_id)
        ti.xcom_push(key=XCOM_JOB_URL, value=url)
        if not self.wait_for_completion:
            return job_id
        if self.deferrable and job["status"] not in TERMINAL_STATUSES:
            self.defer(trigger=RailyardJobTrigger(job_id=job_id,
                                                  railyard_conn_id=self.railyard_conn_id,
                                                  poll_interval=self.poll_interval,
                                                  max_poll_errors=self.max_poll_errors),
                       method_name="execute_complete")
        return self._finish(context, self._wait(job))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        """Resume after the trigger fired: fail, or push the metrics and return the job id."""
        self.job_id = str(event["job_id"])
        if event["status"] == "error":
            raise AirflowException(f"waiting for Railyard job {self.job_id} failed: "
                                   f"{event.get('message')}")
        return self._finish(context, self.hook.get_job(self.job_id))

    def on_kill(self) -> None:
        """The task was killed while it waited: cancel the job."""
        if not self.job_id or not self.wait_for_completion:
            return
        try:
            self.hook.cancel_job(self.job_id)
            self.log.info("cancelled Railyard job %s", self.job_id)
        except RailyardApiError as exc:
            self.log.warning("could not cancel Railyard job %s: %s", self.job_id, exc)

    def _submit(self, spec: dict[str, Any], key: str) -> dict[str, Any]:
        """POST the spec, retrying an unreachable API or a 5xx with the same key (safe: a
        replay answers with the first job); a rejected spec fails the task for good."""
        attempt = 1
        while True:
            try:
                return self.hook.submit_job(spec, idempotency_key=key)
            except RailyardApiError as exc:
                if not exc.transient:
                    raise AirflowFailException(f"Railyard rejected the training spec: {exc}"
                                               ) from None
                if attempt >= SUBMIT_ATTEMPTS:
                    raise
                self.log.warning("submitting to Railyard failed (attempt %d of %d): %s",
                                 attempt, SUBMIT_ATTEMPTS, exc)
                time.sleep(min(self.poll_interval, 2.0 ** attempt))
                attempt += 1

    def _wait(self, job: dict[str, Any]) -> dict[str, Any]:
        """Poll the job until it is terminal, in this worker."""
        job_id, errors, status = str(job["id"]), 0, None
        while job["status"] not in TERMINAL_STATUSES:
            if job["status"] != status:
                status = job["status"]
                self.log.info("Railyard job %s is %s (phase %s)", job_id, status,
                              job.get("phase"))
            time.sleep(self.poll_interval)
            try:
                job = self.hook.get_job(job_id)
                errors = 0
            except RailyardApiError as exc:
                errors += 1
                if not exc.transient or errors >= self.max_poll_errors:
                    raise
                self.log.warning("reading Railyard job %s failed (%d in a row): %s",
                                 job_id, errors, exc)
        return job

    def _log_tail(self, job_id: str) -> None:
        """Copy the end of a failed job's log into the task log, where its owners look first."""
        try:
            lines = self.hook.get_logs(job_id).splitlines()[-LOG_TAIL_LINES:]
        except RailyardApiError as exc:
            self.log.warning("could not read the log of Railyard job %s: %s", job_id, exc)
            return
        self.log.error("the last %d lines of Railyard job %s's log:\n%s", len(lines), job_id,
                       "\n".join(lines))

    def _finish(self, context: Context, job: dict[str, Any]) -> str:
        """Fail on a FAILED/CANCELLED job; push the holdout metrics of a SUCCEEDED one."""
        job_id = str(job["id"])
        if job["status"] != "SUCCEEDED":
            self._log_tail(job_id)
        metrics = succeeded_metrics(job, self.hook.job_url(job_id))
        self.log.info("Railyard job %s SUCCEEDED; holdout metrics: %s", job_id, metrics)
        context["ti"].xcom_push(key=XCOM_HOLDOUT_METRICS, value=metrics)
        return job_id

