"""The operator extra link: the Railyard job's page in its UI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

from railyard_airflow.api import XCOM_JOB_URL

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey


class RailyardJobLink(BaseOperatorLink):
    """"Railyard job": ``<api_url>/jobs/<job_id>``, as the task pushed it to XCom."""

    name = "Railyard job"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The job's URL, or "" before the task submitted (or found) a job."""
        url = XCom.get_value(ti_key=ti_key, key=XCOM_JOB_URL)
        return str(url) if url else ""
