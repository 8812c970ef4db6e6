"""SHA-256 digests of artifacts, checked before anything read back from the artifact store is
loaded, so that whoever can write to the store cannot make a driver or a model server unpickle
their bytes.

Whoever can write to the store can also rewrite any digest kept beside an artifact there, so a
digest only counts when it comes from somewhere the store's writers cannot change: the job
database, or the memory of the process that wrote the files. The chains in use:

- a published model: ``Job.artifacts["manifest_sha256"]`` (job database) → ``manifest.json``
  → its ``digests`` of every other file of the model directory (railyard.execution.publish
  writes them, railyard.serving.published checks them); a fan-out job's manifest holds each
  partition's digests;
- a sweep trial's checkpoint: the digests the trial reports with its final result, through
  Ray's object store (railyard.training.sweeps.ray_tune). A retried sweep resumes from the
  trial records in the job database and reads nothing of the earlier attempt's Tune state;
- training checkpoints (railyard.artifacts.checkpoints) hold framework files that are never
  unpickled (XGBoost UBJSON, LightGBM text, torch tensors read with ``weights_only=True``);
  their pointer's digests catch a damaged file, not an attacker, and a workflow must not
  store a pickle there.

Loading copies exactly the files that were checked into a private directory and loads from
there, so a file changed after the check is never read. A file whose name ends in one of
``PICKLE_SUFFIXES`` is never loaded without a trusted digest.
"""

from __future__ import annotations

import hashlib
import hmac
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pyarrow.fs as pafs

from railyard.artifacts.artifact_store import resolve
from railyard.errors import RailyardError

# Files a loader unpickles (joblib, pickle): never loaded unless a trusted digest vouches.
PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


class ArtifactIntegrityError(RailyardError):
    """An artifact read back from the store is not the one that was written (or nothing
    trusted says what was written); it was not loaded."""


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data``, as 64 hex digits."""
    return hashlib.sha256(data).hexdigest()


def directory_digests(directory: Path) -> dict[str, str]:
    """The SHA-256 of every file directly in ``directory``, by file name."""
    return {p.name: sha256_hex(p.read_bytes())
            for p in sorted(directory.iterdir()) if p.is_file()}


def is_pickle(name: str) -> bool:
    """Whether a loader unpickles a file of this name."""
    return name.lower().endswith(PICKLE_SUFFIXES)


def check_digest(where: str, data: bytes, expected: str) -> None:
    """An ArtifactIntegrityError naming ``where`` unless ``data`` has the digest ``expected``."""
    actual = sha256_hex(data)
    if not hmac.compare_digest(actual, str(expected).lower()):
        raise ArtifactIntegrityError(
            f"{where} does not match the SHA-256 digest recorded when it was written "
            f"(recorded {str(expected)[:16]}…, now {actual[:16]}…): it was changed in the "
            "artifact store after it was written; refusing to load it",
            details=[{"file": where, "expected_sha256": expected, "actual_sha256": actual}])


def read_files(uri: str, filesystem: pafs.FileSystem | None = None) -> dict[str, bytes]:
    """Every file directly under ``uri`` (a local directory or an ``s3://`` prefix; a path in
    ``filesystem`` when given), by name; empty when there is nothing there."""
    fs, path = (filesystem, uri) if filesystem is not None else resolve(uri)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    files = {}
    for info in sorted(infos, key=lambda i: i.base_name):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as src:
                files[info.base_name] = src.read()
    return files


def checked_copy(where: str, files: Mapping[str, bytes], expected: Mapping[str, str] | None,
                 into: Path | None = None) -> Path:
    """Write ``files`` (read from ``where``) into ``into`` or a new private directory, after
    checking them; return the directory.

    With ``expected`` (file name → SHA-256, from a trusted place), only the files it lists are
    written, each checked, and every file it lists must be there. Without it, nothing vouches
    for the files: a pickle among them is refused, the others are written as they are."""
    if expected is not None:
        missing = sorted(set(expected) - set(files))
        if missing:
            raise ArtifactIntegrityError(
                f"{where}: {', '.join(missing)} recorded when it was written is gone from the "
                "artifact store; refusing to load it",
                details=[{"file": f"{where}/{name}"} for name in missing])
        for name, digest in sorted(expected.items()):
            check_digest(f"{where.rstrip('/')}/{name}", files[name], digest)
        chosen = {name: files[name] for name in expected}
    else:
        pickles = sorted(name for name in files if is_pickle(name))
        if pickles:
            raise ArtifactIntegrityError(
                f"{where.rstrip('/')}/{pickles[0]} is a pickle and no SHA-256 digest is "
                "recorded for it in the job database (the model was published before digests "
                "were recorded, or its job cannot be looked up from here); refusing to load it",
                details=[{"file": f"{where.rstrip('/')}/{name}"} for name in pickles])
        chosen = dict(files)
    target = into or Path(tempfile.mkdtemp(prefix="railyard-verified-"))
    target.mkdir(parents=True, exist_ok=True)
    stale = sorted(p.name for p in target.iterdir() if p.name not in chosen)
    if stale:  # they would be loaded beside the checked files, unchecked
        raise ArtifactIntegrityError(
            f"{target} already holds {', '.join(stale[:5])}, which are not files of the model "
            f"at {where}; load it into an empty directory")
    for name, data in chosen.items():
        if "/" in name or name in ("", ".", ".."):
            raise ArtifactIntegrityError(f"{where}: unexpected file name {name!r}")
        (target / name).write_bytes(data)
    return target
