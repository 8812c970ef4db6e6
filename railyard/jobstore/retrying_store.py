"""Job-store calls that survive a database outage.

The job's driver writes its state through these, so a Postgres restart in the middle of a
training delays those writes instead of failing the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.engine import Engine

from railyard.jobstore import jobs

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


def is_disconnect(error: BaseException) -> bool:
    """True for errors that mean "the database could not be reached", not a bad statement."""
    from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

    if isinstance(error, (OperationalError, InterfaceError, DisconnectionError)):
        return True
    return isinstance(error, DBAPIError) and bool(error.connection_invalidated)


def call_with_db_retry(fn: Callable[[], T], *, deadline_s: float = 300.0,
                       first_delay_s: float = 0.5, max_delay_s: float = 5.0) -> T:
    """Run ``fn``; while the database is unreachable, retry with backoff for up to
    ``deadline_s`` seconds, then give up with the last error. Other errors pass at once.

    The job's driver writes its state through this, so a Postgres restart in the middle of a
    training delays those writes instead of failing the job.
    """
    deadline = time.monotonic() + deadline_s
    delay = first_delay_s
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_disconnect(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable (%s); retrying in %.1fs",
                        str(exc).splitlines()[0][:200], delay)
            time.sleep(delay)
            delay = min(max_delay_s, delay * 2)


def _retried(fn: Callable[Concatenate[Engine, P], T]) -> Callable[Concatenate[RetryingStore, P], T]:
    """``fn`` (a ``jobs`` function taking the engine first) as a method of RetryingStore."""

    def method(self: RetryingStore, *args: P.args, **kwargs: P.kwargs) -> T:
        return call_with_db_retry(lambda: fn(self.engine, *args, **kwargs),
                                  deadline_s=self.deadline_s)

    method.__name__ = fn.__name__
    method.__doc__ = fn.__doc__
    return method


class RetryingStore:
    """The job store's calls bound to one engine, each retried while the database is
    unreachable: ``RetryingStore(engine).update_job(job_id=..., phase=...)``."""

    def __init__(self, engine: Engine, *, deadline_s: float = 300.0) -> None:
        self.engine, self.deadline_s = engine, deadline_s

    get_job = _retried(jobs.get_job)
    update_job = _retried(jobs.update_job)
    transition = _retried(jobs.transition)
    add_event = _retried(jobs.add_event)
    start_attempt = _retried(jobs.start_attempt)
    finish_attempt = _retried(jobs.finish_attempt)
    record_partition_model = _retried(jobs.record_partition_model)
