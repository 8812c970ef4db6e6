"""The /v1/queue route: the jobs waiting for Ray, per pool, in the order the queue releases
them (:mod:`railyard.control.queue`). A team token sees its own jobs (their positions are still
among every team's), an admin token every job."""

from __future__ import annotations

from fastapi import APIRouter

from railyard.control import team_limits
from serve_app.deps import CurrentCaller, Service
from serve_app.schemas import PoolQueuePublic, QueuedJobPublic, QueuePublic

router = APIRouter(prefix="/v1/queue")


@router.get("", response_model=QueuePublic)
def get_queue(svc: Service, caller: CurrentCaller) -> QueuePublic:
    """Each pool's queued jobs in order: id, owner, priority, position, why it waits."""
    pools, stored = team_limits.visible_queue(svc.engine, svc.settings, caller=caller)
    return QueuePublic(pools=[
        PoolQueuePublic(pool=pool, queued=total, jobs=[
            QueuedJobPublic(job_id=p.job.id, owner=p.job.owner, priority=p.job.priority,
                            position=p.position, created_at=p.job.created_at,
                            reason=p.reason or stored.get(p.job.id))
            for p in places])
        for pool, (total, places) in pools.items()])
