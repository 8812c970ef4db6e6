"""Packs: the jobs one release of the queue admits to the same pool, grouped so that up to
``RAILYARD_PACK_MAX_JOBS`` of them run in one Ray job (railyard.execution.pack).

Only jobs Ray would place alike share a pack: the same pool and the same submit arguments
(label selector, entrypoint resources). A group of one is submitted as an ordinary Ray job.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from railyard.cluster.placement import Placement
from railyard.jobstore.tables import Job
from railyard.spec import TrainingSpec


@dataclass(frozen=True)
class Admitted:
    """A job the queue released and its pool admitted, not yet submitted."""

    job: Job
    spec: TrainingSpec
    where: Placement


@dataclass
class Packer:
    """Collects admitted jobs during one release; ``packs()`` then yields them in groups."""

    max_jobs: int
    _groups: dict[str, list[Admitted]] = field(default_factory=dict)
    _ids: set[str] = field(default_factory=set)

    def add(self, job: Job, spec: TrainingSpec, where: Placement) -> None:
        """Hold an admitted job for a pack."""
        key = json.dumps([where.pool, where.submit_kwargs], sort_keys=True, default=str)
        self._groups.setdefault(key, []).append(Admitted(job, spec, where))
        self._ids.add(job.id)

    def holds(self, job_id: str) -> bool:
        """Whether ``job_id`` was admitted in this release."""
        return job_id in self._ids

    def packs(self) -> Iterator[list[Admitted]]:
        """The held jobs, in groups of at most ``max_jobs`` placed alike, in admission
        order."""
        for group in self._groups.values():
            for start in range(0, len(group), self.max_jobs):
                yield group[start:start + self.max_jobs]
