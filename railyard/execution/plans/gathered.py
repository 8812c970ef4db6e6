"""The gathered plan: the rows are read into this driver and the workflow trains here (one
process; the workflow may still start its own Ray workers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from railyard.execution.plans.base import InDriverPlan, log, train_context

if TYPE_CHECKING:
    from railyard.training.workflow import TrainingData


class GatheredPlan(InDriverPlan):
    """Fit on the driver's table, evaluate on its holdout, publish."""

    name = "gathered"

    def run(self) -> dict[str, Any]:
        """Split, train, evaluate and publish; the job's results."""
        data = self.split()
        with self.job.phase("train"):
            model = self.train(data)
        with self.job.phase("evaluate"):
            metrics = self.evaluate(model, data)
            log.info("holdout metrics %s", metrics)
            decision = self.promotion(data, metrics)
        with self.job.phase("publish"):
            workflow = self.workflow
            results = self.publish(
                model, metrics=metrics, task=workflow.task(data), schema=data.train.schema,
                reports=lambda directory: workflow.write_reports(model, data, directory))
        if decision is not None:
            results["metrics"]["promotion"] = decision
        return results

    def train(self, data: TrainingData) -> Any:
        """The model (inside the train phase)."""
        return self.workflow.fit(data, train_context(self.job, self.spec))

    def evaluate(self, model: Any, data: TrainingData) -> dict[str, float]:
        """The holdout metrics (inside the evaluate phase)."""
        return self.workflow.evaluate(model, data)
