"""Database engine, sessions and migrations (Alembic scripts live in railyard/migrations)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

log = logging.getLogger(__name__)
T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def normalise_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def get_engine(url: str) -> Engine:
    """One pooled engine per URL per process."""
    url = normalise_url(url)
    with _lock:
        if url not in _engines:
            _engines[url] = _create_engine(url)
        return _engines[url]


def _create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL lets the runner write while the API reads
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20,
                         connect_args={"connect_timeout": 5})


def alembic_config(url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and the given database."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def migrate(url: str) -> None:
    """Bring the database schema to the newest revision."""
    engine = get_engine(url)
    cfg = alembic_config(url)
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


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
        except Exception as exc:  # noqa: BLE001 - filtered just below
            if not is_disconnect(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable (%s); retrying in %.1fs",
                        str(exc).splitlines()[0][:200], delay)
            time.sleep(delay)
            delay = min(max_delay_s, delay * 2)


class RetryingStore:
    """``railyard.store``'s functions bound to one engine, each call retried while the
    database is unreachable: ``RetryingStore(engine).update_job(job_id=..., phase=...)``."""

    def __init__(self, engine: Engine, *, deadline_s: float = 300.0) -> None:
        self.engine, self.deadline_s = engine, deadline_s

    def __getattr__(self, name: str) -> Callable[..., Any]:
        from railyard import store

        fn = getattr(store, name)

        def call(**kwargs: Any) -> Any:
            return call_with_db_retry(lambda: fn(self.engine, **kwargs),
                                      deadline_s=self.deadline_s)

        call.__name__ = name
        return call
