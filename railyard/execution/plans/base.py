"""What every plan shares: the job services a plan uses, the ``Plan`` interface, the fetch and
split of the plans that read the rows into this driver, recording the split, the train
context, and publishing a model.

A plan's log lines go to the driver's logger (``railyard.execution.driver``), as they did when
the driver ran every mode itself.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from railyard.artifacts.artifact_store import ArtifactStore
from railyard.config import Settings
from railyard.execution.publish import ReportWriter, publish_model
from railyard.jobstore.retrying_store import RetryingStore
from railyard.spec import TrainingSpec

if TYPE_CHECKING:
    import pyarrow as pa
    from sqlalchemy.engine import Engine

    from railyard.data.fetch import DatasetStats
    from railyard.data.read_plan import ReadPlan
    from railyard.training.workflow import TrainContext, TrainingData, Workflow

log = logging.getLogger("railyard.execution.driver")


class JobServices(Protocol):
    """What a plan uses of the job's run (railyard.execution.driver.JobRun)."""

    job_id: str
    engine: Engine
    settings: Settings
    db: RetryingStore
    artifacts: ArtifactStore
    workdir: Path

    def phase(self, name: str) -> AbstractContextManager[None]:
        """Record a phase's start and end on the job's timeline."""
        ...

    def worker_placement(self) -> dict[str, Any]:
        """Ray options that keep the job's tasks and training workers on its pool."""
        ...

    def progress(self, message: str) -> None:
        """A throttled progress line from the workflow."""
        ...


class Plan(ABC):
    """One way to run a job: its data read in the fetch phase, then split → train → evaluate
    → publish, each recorded on the job's timeline."""

    name: ClassVar[str]

    def __init__(self, job: JobServices, spec: TrainingSpec, workflow: Workflow,
                 read: ReadPlan) -> None:
        self.job, self.spec, self.workflow, self.read = job, spec, workflow, read

    @abstractmethod
    def fetch(self) -> None:
        """Read the job's data; called inside the fetch phase."""

    @abstractmethod
    def run(self) -> dict[str, Any]:
        """The phases after fetch; the job's results (``metrics`` and ``artifacts``)."""

    def promotion(self, data: TrainingData, metrics: dict[str, float]) -> dict[str, Any] | None:
        """The spec's promotion gate decision (railyard.execution.promotion), recorded on the
        job's timeline; None without a gate."""
        from railyard.execution.promotion import decide

        decision = decide(self.job.engine, self.spec, data, metrics)
        if decision is not None:
            self.job.db.add_event(job_id=self.job.job_id, kind="promotion", phase="evaluate",
                                  message=f"{'promote' if decision['promoted'] else 'keep'} "
                                          f"{decision['alias']}: {decision['reason']}")
        return decision

    def publish(self, model: Any, *, metrics: dict[str, float], task: str, schema: pa.Schema,
                reports: ReportWriter) -> dict[str, Any]:
        """Publish the model to ``<job>/model`` (railyard.execution.publish); the results."""
        return publish_model(self.job.artifacts, self.job.job_id, self.job.workdir / "model",
                             self.spec, self.workflow, model, metrics=metrics, task=task,
                             schema=schema, reports=reports)


class InDriverPlan(Plan):
    """The rows are read into this driver (the fetch and split of the gathered, sweep and
    fan-out plans)."""

    table: pa.Table
    read_engine: str

    def fetch(self) -> None:
        """Read the source into an Arrow table here (or through Ray Data for a large one)
        and derive the workflow's columns."""
        from railyard.data import fetch as data_plane

        raw, engine = data_plane.read_table(
            self.read, in_process_max_bytes=self.job.settings.in_process_read_max_bytes,
            ray_remote_args=self.job.worker_placement())
        table = self.workflow.prepare(raw)
        log.info("fetched %d rows with %s, columns %s", table.num_rows, engine,
                 table.column_names)
        self.table, self.read_engine = table, engine

    def split(self) -> TrainingData:
        """The split phase: the holdout split off, its statistics recorded on the job."""
        from railyard.data import fetch as data_plane
        from railyard.training.workflow import TrainingData

        spec = self.spec
        with self.job.phase("split"):
            train, holdout = data_plane.split_holdout(self.table, spec.data)
            stats = data_plane.describe(self.table, train, holdout, spec.train.label,
                                        plan=self.read)
            stats.read_engine = self.read_engine
            store_split(self.job, stats)
        return TrainingData(train=train, holdout=holdout,
                            features=list(spec.train.classifier_features),
                            label=spec.train.label)


def store_split(job: JobServices, stats: DatasetStats) -> None:
    """Record the split's row counts and statistics on the job; no training rows is an
    error the spec's author can fix."""
    job.db.update_job(job_id=job.job_id, train_rows=stats.train_rows,
                      holdout_rows=stats.holdout_rows, dataset_stats=stats.to_dict())
    log.info("train rows %d, holdout rows %d", stats.train_rows, stats.holdout_rows)
    if stats.train_rows == 0:
        raise ValueError("no training rows left after filters and holdout split; "
                         "loosen data.filters or the holdout range")


def train_context(job: JobServices, spec: TrainingSpec) -> TrainContext:
    """What the workflow gets besides data: resources, progress, where Ray Train keeps
    its state, pool placement and the job's checkpoints."""
    from railyard.artifacts.checkpoints import CheckpointStore
    from railyard.training.workflow import TrainContext

    return TrainContext(resources=spec.train.resources.model_dump(),
                        on_progress=job.progress,
                        storage_path=job.artifacts.uri(job.job_id, "ray-train"),
                        worker_placement=job.worker_placement(),
                        # The same prefix for every attempt: a retry resumes from the
                        # last checkpoint of the attempt before it.
                        checkpoints=CheckpointStore(job.artifacts, job.job_id, "checkpoints"),
                        checkpoint_interval_s=float(spec.lifecycle.checkpoint_interval_s
                                                    or job.settings.checkpoint_interval_s))
