"""Waiting for jobs to change: the API's long poll (``GET /v1/jobs/{id}?wait_s=``).

A client that waits for a job (the SDK's and CLI's ``wait``, a scheduler's sensor) used to ask
every 0.25–0.5 s, and learnt of the job's end that much late on average; fifty waiting clients
were 100–200 requests a second, each reading the job and its timeline. A long poll holds the
request until the job's status or phase differs from what the client last saw, the job ends,
or ``wait_s`` passes. However many requests wait, one query every ``interval_s`` reads the
status and phase of every job waited on (:meth:`JobWatch.wait` shares the last answer while it
is fresh). At most ``max_waiters`` requests wait at once per API process: each holds one of
the Serve replica's ``max_ongoing_requests``; beyond that the request is answered at once and
the client polls as before.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection

from sqlalchemy.engine import Engine

from railyard.jobstore import jobs
from railyard.jobstore.tables import JobStatus

log = logging.getLogger(__name__)
MAX_WAIT_S = 60.0
State = tuple[str, str | None]


def state_key(status: str, phase: str | None) -> str:
    """How a client names the state it saw: ``STATUS`` or ``STATUS:PHASE``."""
    return f"{status}:{phase}" if phase else status


def is_settled(state: State | None, seen: str) -> bool:
    """True when a waiter need not wait: the job is gone, ended, or not in state ``seen``."""
    return state is None or JobStatus(state[0]).is_terminal() or state_key(*state) != seen


class JobWatch:
    """The long poll's waiters in one API process, and the one query that serves them all."""

    def __init__(self, engine: Engine, *, interval_s: float = 0.1, max_waiters: int = 32,
                 read_states: Callable[[Collection[str]], dict[str, State]] | None = None
                 ) -> None:
        self.interval_s, self.max_waiters = interval_s, max_waiters
        self._read = read_states or (lambda ids: jobs.job_states(engine, ids))
        self._lock = threading.Lock()          # the waiters and the last answer
        self._query_lock = threading.Lock()    # one query at a time; the others reuse it
        self._waiting: Counter[str] = Counter()
        self._answer: tuple[float, frozenset[str], dict[str, State]] = (0.0, frozenset(), {})

    @property
    def waiting(self) -> int:
        """Requests waiting now."""
        with self._lock:
            return sum(self._waiting.values())

    async def wait(self, job_id: str, seen: str, timeout_s: float) -> bool:
        """Return once job ``job_id`` is no longer in state ``seen`` (or has ended, or is gone),
        or after ``timeout_s`` (at most MAX_WAIT_S); False at once when ``max_waiters``
        requests wait already."""
        with self._lock:
            if sum(self._waiting.values()) >= self.max_waiters:
                return False
            self._waiting[job_id] += 1
        try:
            deadline = time.monotonic() + min(timeout_s, MAX_WAIT_S)
            while (left := deadline - time.monotonic()) > 0:
                await asyncio.sleep(min(self.interval_s, left))
                try:
                    state = await self._state(job_id)
                except Exception:  # the caller's own read reports the error
                    log.warning("long poll: job states not read", exc_info=True)
                    break
                if is_settled(state, seen):
                    break
            return True
        finally:
            with self._lock:
                self._waiting[job_id] -= 1
                if self._waiting[job_id] <= 0:
                    del self._waiting[job_id]

    async def _state(self, job_id: str) -> State | None:
        """The job's state from an answer at most ``interval_s`` old that covers it."""
        taken_at, covered, states = self._answer
        if time.monotonic() - taken_at < self.interval_s and job_id in covered:
            return states.get(job_id)
        return (await asyncio.to_thread(self._refresh, job_id)).get(job_id)

    def _refresh(self, job_id: str) -> dict[str, State]:
        with self._query_lock:
            taken_at, covered, states = self._answer
            if time.monotonic() - taken_at < self.interval_s and job_id in covered:
                return states                  # another waiter's query, just now
            with self._lock:
                ids = frozenset(self._waiting) | {job_id}
            states = self._read(ids)
            self._answer = (time.monotonic(), ids, states)
            return states
