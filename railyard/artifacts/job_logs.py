"""Durable job logs: the driver's output streams to the artifact store while the job runs.

How the runner uses it: call ``log_to_stdout()`` instead of adding a logging FileHandler (the
shipper is the only writer of the local file; log records reach it through stdout), then
run the attempt inside ``with LogShipper(artifacts, job_id, attempt, log_path) as shipper:``
and take the logs URI from ``shipper.flush()`` just before storing the terminal status;
leaving the block uploads once more and restores ``sys.stdout``/``sys.stderr``.

What lands in the file is what Python writes to ``sys.stdout``/``sys.stderr`` in the driver:
prints, log records, and worker output that Ray forwards to the driver (Ray looks the streams
up when it prints). Output written straight to file descriptors 1/2 (C extensions,
subprocesses) bypasses it; Ray's own driver log still has that.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, Any

from railyard.artifacts.artifact_store import ArtifactStore

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 64 * 1024 * 1024
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# First line of an upload whose head was cut off; it says how many bytes were dropped, so
# readers keep byte offsets of the whole log (see read_from).
TRUNCATION_MARKER = "[railyard: log truncated, the first {dropped} bytes were dropped]\n"
_MARKER_RE = re.compile(rb"\A\[railyard: log truncated, the first (\d+) bytes were dropped\]\n")


def log_key(attempt: int) -> tuple[str, ...]:
    """Where an attempt's log lives under its job in the artifact store."""
    return ("logs", f"attempt-{attempt}.log")


def log_uri(artifacts: ArtifactStore, job_id: str, attempt: int) -> str:
    """The URI of an attempt's durable log."""
    return artifacts.uri(job_id, *log_key(attempt))


class LogText(str):
    """Log text read from some byte offset on; ``size`` is the whole log's length in bytes (the
    next offset of a follower) and ``source`` says which copy it came from (``durable``,
    ``artifact``, ``ray`` or ``none``)."""

    size: int
    source: str

    def __new__(cls, text: str, size: int, source: str) -> LogText:
        obj = super().__new__(cls, text)
        obj.size, obj.source = size, source
        return obj


def read_from(data: bytes, offset: int, source: str = "durable") -> LogText:
    """The text of a log from byte ``offset`` on (offset past the end: ""). A truncated
    upload keeps the offsets of the whole log: its marker counts the dropped bytes."""
    match = _MARKER_RE.match(data)
    if match is None:
        return LogText(data[offset:].decode(errors="replace"), len(data), source)
    dropped, rest = int(match.group(1)), data[match.end():]
    chunk = data[:match.end()] + rest if offset < dropped else rest[offset - dropped:]
    return LogText(chunk.decode(errors="replace"), dropped + len(rest), source)


class _Tee:
    """A text stream that writes to the original stream and appends to the shipper's file."""

    def __init__(self, original: IO[str], sink: IO[str], lock: threading.RLock) -> None:
        self._original, self._sink, self._lock = original, sink, lock

    def write(self, text: str) -> int:
        with self._lock:
            if not self._sink.closed:
                self._sink.write(text)
            return self._original.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        with self._lock:
            if not self._sink.closed:
                self._sink.flush()
            self._original.flush()

    def isatty(self) -> bool:
        return self._original.isatty()

    def fileno(self) -> int:
        return self._original.fileno()

    def __getattr__(self, name: str) -> Any:  # encoding, errors, buffer, ...
        return getattr(self._original, name)


class _StdoutHandler(logging.StreamHandler):
    """Log records to whatever ``sys.stdout`` is when they are emitted (the tee, inside the
    shipper)."""

    @property
    def stream(self) -> IO[str]:
        return sys.stdout

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def log_to_stdout(level: int = logging.INFO) -> logging.Handler:
    """Send the root logger's records, in the runner's format, to whatever ``sys.stdout`` is
    when each is emitted (inside a LogShipper: the tee, so into the file once). Idempotent."""
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if isinstance(handler, _StdoutHandler):
            return handler
    handler = _StdoutHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(handler)
    return handler


class LogShipper:
    """Tees the driver's stdout/stderr into ``path`` and copies the file to the artifact store
    every ``interval_s`` while it grows, once more on ``flush()`` and on exit. Upload failures
    are logged, never raised."""

    def __init__(self, artifacts: ArtifactStore, job_id: str, attempt: int,
                 path: str | Path, *, interval_s: float | None = None,
                 max_bytes: int = MAX_UPLOAD_BYTES) -> None:
        if interval_s is None:
            from railyard.config import get_settings

            interval_s = get_settings().log_flush_interval_s
        self.artifacts, self.job_id, self.attempt = artifacts, job_id, attempt
        self.path, self.interval_s, self.max_bytes = Path(path), interval_s, max_bytes
        self.uri = log_uri(artifacts, job_id, attempt)
        self.uploaded_uri: str | None = None  # set once an upload succeeded
        self._lock = threading.RLock()         # writes to the file
        self._upload_lock = threading.Lock()   # one upload at a time
        self._stop = threading.Event()
        self._uploaded_size = 0
        self._failures = 0
        self._file: IO[str] | None = None
        self._thread: threading.Thread | None = None
        self._saved: tuple[Any, Any] | None = None

    def __enter__(self) -> LogShipper:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", errors="replace")
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = _Tee(sys.stdout, self._file, self._lock)
        sys.stderr = _Tee(sys.stderr, self._file, self._lock)
        self._thread = threading.Thread(target=self._loop, name=f"log-shipper-{self.job_id}",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(30.0, self.interval_s))
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None
        if exc_type is not None and not issubclass(exc_type, SystemExit):
            # Python prints an escaping exception after the streams are restored: keep it.
            with self._lock:
                if self._file is not None and not self._file.closed:
                    self._file.write("".join(traceback.format_exception(exc_type, exc, tb)))
        self.flush()
        with self._lock:
            if self._file is not None:
                self._file.close()

    def flush(self) -> str | None:
        """Upload the file now if it grew; the URI once any upload has succeeded, else None."""
        with self._upload_lock:
            with self._lock:  # writers wait only for this, never for the upload
                if self._file is None:
                    return self.uploaded_uri
                if not self._file.closed:
                    self._file.flush()
            size = self.path.stat().st_size if self.path.exists() else 0
            if size <= self._uploaded_size:
                return self.uploaded_uri
            try:
                self.artifacts.put_bytes(self._snapshot(size), self.job_id,
                                         *log_key(self.attempt))
            except Exception as exc:  # noqa: BLE001 - a lost log copy must not fail the job
                self._failures += 1
                if self._failures == 1 or self._failures % 20 == 0:
                    log.warning("could not upload the job log to %s (%d failures in a row): "
                                "%s", self.uri, self._failures, exc)
                return self.uploaded_uri
            self._uploaded_size, self._failures = size, 0
            self.uploaded_uri = self.uri
            return self.uploaded_uri

    def _snapshot(self, size: int) -> bytes:
        # S3 has no append: every upload puts the whole file again. Past max_bytes only the
        # tail goes, starting at a line and led by a marker counting the bytes dropped.
        with open(self.path, "rb") as src:
            if size <= self.max_bytes:
                return src.read(size)
            src.seek(size - self.max_bytes)
            tail = src.read(self.max_bytes)
        cut = tail.find(b"\n") + 1
        tail = tail[cut:] if 0 < cut < len(tail) else tail
        dropped = size - len(tail)
        return TRUNCATION_MARKER.format(dropped=dropped).encode() + tail

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()
