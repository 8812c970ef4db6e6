"""What a Ray node Railyard starts has in its environment for the next job's supervisor: the
switch for the standby supervisor worker, and Ray's list of modules its Python workers import
as they start.

Ray Jobs runs every job's entrypoint from a ``JobSupervisor`` actor in a Python worker of the
node. The warm runner keeps one such worker idle ahead of need
(railyard.execution.standby_supervisor), but creating the actor in it still imports Ray's job
supervisor module (pydantic models, runtime-env schemas, aiohttp helpers): ~0.2 CPU-seconds,
about half of the actor's creation on a busy node. Ray's ``preload_python_modules`` setting
(``RAY_preload_python_modules`` in the raylet's environment) has every Python worker of the node
import it as the worker starts, so the standby worker has it imported before the job comes.
Each worker of the node pays for it at start: ~0.2 CPU-seconds and ~19 MiB.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

STANDBY_ENV = "RAILYARD_STANDBY_SUPERVISOR"
PRELOAD_ENV = "RAY_preload_python_modules"
JOB_SUPERVISOR_MODULE = "ray.dashboard.modules.job.job_supervisor"


def standby_enabled(env: Mapping[str, str] = os.environ) -> bool:
    """Whether a node's warm runner keeps a standby supervisor worker (default: yes)."""
    return env.get(STANDBY_ENV, "true").strip().lower() not in ("0", "false", "no", "off")


def preload_env(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """For a node's ``ray start``: Ray's preload list with the job supervisor's module added to
    what ``env`` already lists; nothing when standby supervisors are off."""
    if not standby_enabled(env):
        return {}
    modules = [name for name in env.get(PRELOAD_ENV, "").split(",") if name.strip()]
    if JOB_SUPERVISOR_MODULE not in modules:
        modules.append(JOB_SUPERVISOR_MODULE)
    return {PRELOAD_ENV: ",".join(modules)}
