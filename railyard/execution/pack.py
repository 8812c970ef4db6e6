"""A pack: several jobs' drivers under one Ray job (``RAILYARD_PACK_MAX_JOBS``).

``python -m railyard.execution.entrypoint --pack JOB [JOB ...]`` starts one driver per job at
once (forked by the node's warm runner when it has one, else ``python -m
railyard.execution.driver JOB`` in a child process) and exits when they all have: 0 when every
driver exited 0, else the first other code. Ray's stop reaches every driver (SIGTERM/SIGINT
are passed on). Each driver records its own job, phases, heartbeat and durable log exactly as
alone; Ray's live log of the pack interleaves their output.

Why: each Ray job costs a ``JobSupervisor`` actor in a new Python worker, ~1.8 CPU-seconds on a
2-core node, more than a tiny job's own driver; a pack pays it once for all its jobs.

Standard library only, like the entrypoint.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial

from railyard.execution.warm_runner import forward_signals, start_warm, wait_warm


def run_pack(job_ids: list[str], socket_path: str | None) -> int:
    """Run every job of the pack at once; the pack's exit code."""
    pids: list[int] = []
    forward_signals(pids)          # a stop while the drivers start reaches those started
    waits: list[Callable[[], int]] = []
    for job_id in job_ids:
        started = start_warm([job_id], socket_path) if socket_path else None
        if started is not None:
            client, pid = started
            waits.append(partial(wait_warm, client))
        else:
            child = subprocess.Popen([sys.executable, "-m", "railyard.execution.driver",
                                      job_id])
            pid = child.pid
            waits.append(child.wait)
        pids.append(pid)
    codes = [1] * len(waits)

    def wait(index: int) -> None:
        codes[index] = waits[index]()

    threads = [threading.Thread(target=wait, args=(index,), daemon=True)
               for index in range(len(waits))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return next((code for code in codes if code), 0)
