"""The fan-out plan (``train.partition_by``): the rows are read into this driver, then one
model per partition is trained, evaluated and published in parallel Ray tasks
(railyard.training.partitioned); the job publishes a manifest pointing at them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from railyard.execution.plans.base import InDriverPlan, log
from railyard.execution.publish import publish_partitioned

if TYPE_CHECKING:
    from railyard.training.partitioned import PartitionModel


class FanoutPlan(InDriverPlan):
    """One model per value of ``train.partition_by``, each recorded on the job as it ends."""

    name = "fanout"

    def run(self) -> dict[str, Any]:
        """Split, train every partition, summarise and publish; the job's results."""
        from railyard.training.partitioned import run_fanout, summarise

        job, spec = self.job, self.spec
        data = self.split()

        def on_model(record: PartitionModel) -> None:
            from dataclasses import asdict

            job.db.record_partition_model(job_id=job.job_id, model=asdict(record))

        column = spec.train.partition_by
        assert column, "the fan-out plan needs train.partition_by"
        with job.phase("train"):
            records = run_fanout(data, spec.train, column=column,
                                 artifact_root=job.settings.resolved_artifact_root,
                                 job_id=job.job_id, on_model=on_model,
                                 placement=job.worker_placement())
        with job.phase("evaluate"):
            summary = summarise(records)
            log.info("fan-out over %s: %s", column, summary)
        with job.phase("publish"):
            return publish_partitioned(job.artifacts, job.job_id, spec, column=column,
                                       records=records, summary=summary)
