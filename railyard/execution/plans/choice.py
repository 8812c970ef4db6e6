"""Which plan runs a job, decided in the fetch phase once the read is planned and the number
of training workers is final (``right_size``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from railyard.execution.plans.base import JobServices, Plan, log
from railyard.execution.plans.fanout import FanoutPlan
from railyard.execution.plans.gathered import GatheredPlan
from railyard.execution.plans.streamed import StreamedPlan
from railyard.execution.plans.sweep import SweepPlan
from railyard.spec import TrainingSpec

if TYPE_CHECKING:
    from railyard.data.read_plan import ReadPlan
    from railyard.training.workflow import Workflow


def choose_plan(spec: TrainingSpec, workflow: Workflow) -> type[Plan]:
    """The plan for a (right-sized) spec: streamed when a streaming workflow has several
    workers and neither a sweep nor partitions; else fan-out for ``train.partition_by``,
    a sweep for ``train.tune``, else gathered."""
    train = spec.train
    if train.resources.num_workers > 1 and workflow.streams_ray_datasets \
            and train.tune is None and not train.partition_by:
        return StreamedPlan
    if train.partition_by:
        return FanoutPlan
    if train.tune is not None:
        return SweepPlan
    return GatheredPlan


def right_size(job: JobServices, spec: TrainingSpec, workflow: Workflow,
               read: ReadPlan) -> TrainingSpec:
    """The spec with the number of training workers Railyard chose for a large Parquet
    source (railyard.cluster.placement.training_workers, from the bytes the read plan will
    read); recorded on the job's timeline."""
    from railyard.cluster.placement import training_workers

    first = read.sources[0]
    if spec.train.resources.num_workers > 1 or not workflow.streams_ray_datasets \
            or first.kind != "parquet":
        return spec
    workers, reason = training_workers(
        spec, streams=True, data_bytes=first.estimated_bytes(),
        min_bytes=job.settings.distributed_min_bytes,
        auto_workers=job.settings.auto_num_workers)
    if reason is None:
        return spec
    log.info("right-sized: %s", reason)
    job.db.add_event(job_id=job.job_id, kind="right_sized", message=reason)
    resources = spec.train.resources.model_copy(update={"num_workers": workers})
    return spec.model_copy(update={"train": spec.train.model_copy(
        update={"resources": resources})})
