"""The streamed plan: several Ray Train workers fed by Ray Data; the rows never come to this
driver (railyard.training.streamed). Chosen when a streaming workflow has more than one
training worker, asked for or right-sized (railyard.execution.plans.choice)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from railyard.execution.plans.base import Plan, log, store_split, train_context

if TYPE_CHECKING:
    from railyard.training.streamed import StreamedData


class StreamedPlan(Plan):
    """Read into the cluster's object store, train with ``fit_streamed``, evaluate with
    ``evaluate_streamed``, publish."""

    name = "streamed"
    streamed: StreamedData

    def fetch(self) -> None:
        """Read, derive and split in Ray tasks; keep the summaries of both sides."""
        from railyard.data import fetch as data_plane
        from railyard.training.streamed import read_streamed

        spec = self.spec
        data_plane.ensure_ray()
        self.streamed = read_streamed(self.read, self.workflow,
                                      features=list(spec.train.classifier_features),
                                      label=spec.train.label,
                                      ray_remote_args=self.job.worker_placement())

    def run(self) -> dict[str, Any]:
        """Split (the statistics only), train, evaluate and publish; the job's results."""
        job, streamed = self.job, self.streamed
        workflow: Any = self.workflow   # fit_streamed, evaluate_streamed: streaming workflows
        with job.phase("split"):
            store_split(job, streamed.stats(self.read))
        with job.phase("train"):
            model = workflow.fit_streamed(streamed, train_context(job, self.spec))
        reports_dir = job.workdir / "reports"
        reports_dir.mkdir()
        with job.phase("evaluate"):
            metrics, reports = workflow.evaluate_streamed(model, streamed, reports_dir)
            log.info("holdout metrics %s", metrics)
        with job.phase("publish"):
            def copy_reports(directory: Path) -> dict[str, Any]:
                for path in reports_dir.iterdir():
                    path.rename(directory / path.name)
                return reports

            return self.publish(model, metrics=metrics, task=streamed.task(),
                                schema=streamed.schema, reports=copy_reports)
