"""One reconciler at a time: with several API replicas, only the holder of a database lock
runs the background reconcile loop (reads still reconcile the job they return).

On Postgres the lock is a session-level advisory lock held on one dedicated connection: it
is released by the server the moment that connection (or its replica) dies, so another
replica takes over on its next tick. SQLite is the embedded single-process default: always
the leader.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

# An arbitrary 64-bit key naming "the Railyard reconciler" among advisory locks.
RECONCILER_LOCK_KEY = 0x7261696C79617264  # "railyard"


class ReconcilerLease:
    """``held()`` says whether this process may run the reconcile loop now."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Any = None

    def held(self) -> bool:
        """Take the lock if it is free; keep it while our connection lives."""
        if self.engine.dialect.name != "postgresql":
            return True
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))
                return True
            except Exception:  # noqa: BLE001 - the connection died, and the lock with it
                self._drop()
        try:
            connection = self.engine.connect()
            got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"),
                                     {"key": RECONCILER_LOCK_KEY}).scalar()
            connection.commit()
        except Exception as exc:  # noqa: BLE001 - database down: nobody leads until it is up
            log.warning("reconciler lock not taken: %s", str(exc).splitlines()[0][:200])
            return False
        if got:
            self._connection = connection
            log.info("this replica now runs the background reconciler")
            return True
        connection.close()
        return False

    def release(self) -> None:
        """Give the lock up (a replica shutting down)."""
        self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                # Close the database connection itself rather than hand it back to the pool,
                # which would keep the session's lock on it.
                self._connection.invalidate()
                self._connection.close()
            except Exception:  # noqa: BLE001
                pass
            self._connection = None
