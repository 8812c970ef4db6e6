"""Training checkpoints in the artifact store, so that a retried attempt resumes a long training.

Layout under one prefix per job (the same for every attempt of the job)::

    <root>/<job_id>/checkpoints/
        step-20/booster.ubj        files of one checkpoint, written first
        step-40/booster.ubj
        latest.json                the pointer, written last: step, files, meta, fingerprint,
                                   and the checkpoints kept (newest first)

A checkpoint is taken only once the pointer names it, so one whose files were half written
when the process died is never read. On S3 the pointer's PUT is atomic; on a local directory it
is written beside and renamed over the old one. Only the newest ``keep`` checkpoints are kept.

Finding the newest checkpoint costs one read of ``latest.json`` (no listing). Saving is best
effort: a failed save is logged and training goes on. A workflow uses it through TrainContext::

    fingerprint = training_fingerprint(self, data)            # railyard.training.resume
    checkpoint = context.resume_checkpoint(fingerprint)      # None: start from scratch
    ...
    if context.should_checkpoint(step):                      # throttled by time
        context.save_checkpoint(step, {"model.bin": raw}, meta={...}, fingerprint=fingerprint)

A checkpoint whose fingerprint differs from the training's (other parameters, features, data)
is ignored, and the next save replaces it.

The pointer lists the SHA-256 of each file of a checkpoint, and ``Checkpoint.read`` refuses a
file that does not match (an ArtifactIntegrityError: the built-in workflows then log why and
train from scratch). The pointer sits in the same store, so this catches a damaged or
half-replaced checkpoint, not someone who can rewrite the pointer too: checkpoint files must be
formats that load no code (XGBoost UBJSON, LightGBM text, torch tensors read with
``weights_only=True``), never a pickle (railyard.artifacts.integrity).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from railyard.artifacts.artifact_store import ArtifactStore, join, resolve
from railyard.artifacts.integrity import check_digest, sha256_hex

log = logging.getLogger(__name__)

POINTER = "latest.json"
FORMAT = 1


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint: its step, the workflow's metadata and its files."""

    step: int
    meta: dict[str, Any]
    files: list[str]
    uri: str  # the checkpoint's directory
    fingerprint: str | None = None
    created_at: float = 0.0
    digests: dict[str, str] = field(default_factory=dict)  # SHA-256 by file (from the pointer)
    _store: CheckpointStore | None = field(default=None, repr=False, compare=False)

    def read(self, name: str) -> bytes:
        """The bytes of one of the checkpoint's files; an ArtifactIntegrityError when they are
        not the bytes that were saved."""
        if name not in self.files:
            raise KeyError(f"checkpoint step {self.step} has no file {name!r}; "
                           f"it has {self.files}")
        fs, path = self._fs_path(name)
        with fs.open_input_stream(path) as src:
            data = src.read()
        if name in self.digests:
            check_digest(join(self.uri, name), data, self.digests[name])
        return data

    def download(self, directory: str | Path) -> Path:
        """Copy every file of the checkpoint into a local directory; return it."""
        target = Path(directory)
        for name in self.files:
            out = target / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(self.read(name))
        return target

    def _fs_path(self, name: str) -> tuple[pafs.FileSystem, str]:
        fs, path = resolve(join(self.uri, name))
        return (self._store.fs if self._store is not None else fs), path


class CheckpointStore:
    """Checkpoints under ``artifacts.uri(*prefix)``, e.g. ``CheckpointStore(store, job_id,
    "checkpoints")``; the newest ``keep`` are kept."""

    def __init__(self, artifacts: ArtifactStore, *prefix: str, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("CheckpointStore keep must be at least 1")
        self.artifacts, self.keep = artifacts, keep
        self.uri = artifacts.uri(*prefix) if prefix else artifacts.root
        self.fs, self._base = resolve(self.uri)
        self._pointer: dict[str, Any] | None = None
        self._pointer_read = False

    def __repr__(self) -> str:
        return f"CheckpointStore({self.uri!r}, keep={self.keep})"

    # ------------------------------------------------------------------ reading
    def latest(self, fingerprint: str | None = None) -> Checkpoint | None:
        """The newest complete checkpoint, or None when there is none, it cannot be read, or
        (when ``fingerprint`` is given) it was saved by a different training."""
        self._pointer_read = False  # one read of latest.json per call
        entries = self._read_pointer().get("checkpoints") or []
        if not entries:
            return None
        checkpoint = self._checkpoint(entries[0])
        if fingerprint is not None and checkpoint.fingerprint != fingerprint:
            log.info("ignoring checkpoint at step %d in %s: saved by a different training "
                     "(fingerprint %s, this one %s)", checkpoint.step, self.uri,
                     checkpoint.fingerprint, fingerprint)
            return None
        return checkpoint

    def _checkpoint(self, entry: dict[str, Any]) -> Checkpoint:
        return Checkpoint(step=int(entry["step"]), meta=dict(entry.get("meta") or {}),
                          files=list(entry.get("files") or []),
                          uri=join(self.uri, entry["dir"]),
                          fingerprint=entry.get("fingerprint"),
                          created_at=float(entry.get("created_at") or 0.0),
                          digests=dict(entry.get("sha256") or {}), _store=self)

    def _read_pointer(self) -> dict[str, Any]:
        """latest.json; saves keep a cached copy current (this process is its only writer
        while the attempt runs), so a save costs no read after the first."""
        if self._pointer_read:
            return self._pointer or {}
        self._pointer_read = True
        try:
            with self.fs.open_input_stream(f"{self._base}/{POINTER}") as src:
                pointer = json.loads(src.read())
            if not isinstance(pointer, dict) or not isinstance(pointer.get("checkpoints"), list):
                raise ValueError("not a checkpoint pointer")
        except FileNotFoundError:
            pointer = {}
        except Exception as exc:  # noqa: BLE001 - an unreadable pointer means: start afresh
            log.warning("ignoring unreadable checkpoint pointer %s: %s",
                        join(self.uri, POINTER), exc)
            pointer = {}
        self._pointer = pointer
        return pointer

    # ------------------------------------------------------------------ writing
    def save(self, step: int, files: dict[str, bytes] | str | Path, *,
             meta: dict[str, Any] | None = None,
             fingerprint: str | None = None) -> Checkpoint | None:
        """Write a checkpoint (bytes by file name, or every file of a local directory), then
        point ``latest.json`` at it, then delete checkpoints beyond ``keep``. Best effort:
        returns None (and logs) when it could not be written."""
        started = time.perf_counter()
        try:
            checkpoint = self._save(step, files, meta or {}, fingerprint)
        except Exception:
            log.exception("could not save the checkpoint at step %d to %s", step, self.uri)
            return None
        log.info("checkpoint at step %d saved to %s in %.3fs", step, checkpoint.uri,
                 time.perf_counter() - started)
        return checkpoint

    def _save(self, step: int, files: dict[str, bytes] | str | Path, meta: dict[str, Any],
              fingerprint: str | None) -> Checkpoint:
        blobs = _read_directory(Path(files)) if isinstance(files, (str, Path)) else dict(files)
        previous = [e for e in self._read_pointer().get("checkpoints") or []
                    if e.get("fingerprint") == fingerprint]
        name = f"step-{int(step)}"
        if any(e.get("dir") == name for e in previous):  # never overwrite a kept checkpoint
            name = f"{name}-{uuid.uuid4().hex[:8]}"
        for rel, data in blobs.items():
            self._put(f"{self._base}/{name}/{rel}", data)
        entry = {"step": int(step), "dir": name, "files": sorted(blobs), "meta": meta,
                 "fingerprint": fingerprint, "created_at": time.time(),
                 "sha256": {rel: sha256_hex(data) for rel, data in sorted(blobs.items())}}
        kept = [entry, *previous][:self.keep]
        pointer = {"format": FORMAT, "checkpoints": kept}
        self._write_pointer(json.dumps(pointer, indent=1).encode())
        self._pointer, self._pointer_read = pointer, True
        self._prune({e["dir"] for e in kept})
        return self._checkpoint(entry)

    def _put(self, path: str, data: bytes) -> None:
        if self._local:
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    @property
    def _local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def _write_pointer(self, data: bytes) -> None:
        path = f"{self._base}/{POINTER}"
        if self._local:  # a rename is atomic; a rewrite in place is not
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            self._put(tmp, data)
            self.fs.move(tmp, path)
        else:  # an S3 PUT replaces the object at once
            self._put(path, data)

    def _prune(self, keep: set[str]) -> None:
        """Delete checkpoint directories not in ``keep`` (older ones, and half-written ones
        a killed attempt left behind)."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self._base, allow_not_found=True))
            for info in infos:
                if info.type == pafs.FileType.Directory and info.base_name.startswith("step-") \
                        and info.base_name not in keep:
                    self.fs.delete_dir(info.path)
        except Exception:
            log.warning("could not delete old checkpoints under %s", self.uri, exc_info=True)

    def clear(self) -> None:
        """Delete every checkpoint and the pointer (e.g. once the job has succeeded)."""
        try:
            if self.fs.get_file_info(self._base).type != pafs.FileType.NotFound:
                self.fs.delete_dir(self._base)
        except Exception:
            log.warning("could not delete checkpoints under %s", self.uri, exc_info=True)
        self._pointer, self._pointer_read = {}, True


def _read_directory(directory: Path) -> dict[str, bytes]:
    if not directory.is_dir():
        raise NotADirectoryError(f"checkpoint source {directory} is not a directory")
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}
