"""Crash-safe persistence of a library directory.

Layout of a library directory:

    CURRENT                 name of the published snapshot, e.g. "snap-000007" (replaced atomically)
    snap-000007/index.faiss the FAISS index (ids = row numbers)
    snap-000007/library.json header (model version, embedding size, index checksum) and one row per entry
    snap-000006/...         the previous snapshot, kept for manual rollback
    thumbnails/<id>.png     one small PNG per entry (immutable, shared by all snapshots)
    .lock                   serialises writers across processes

A save writes a new snapshot into a staging folder, fsyncs every file and the folder, renames it into place and
only then replaces CURRENT (itself written to a temp file, fsynced and renamed). A crash at any point leaves
CURRENT naming a complete earlier snapshot; leftovers of the interrupted save are removed by the next save.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss

from case_retrieval.errors import LibraryConflictError, LibraryCorruptError, LibraryNotFoundError
from storage import fsync_path, write_durably

FORMAT_NAME = "cxr-case-library"
FORMAT_VERSION = 1
CURRENT_FILE = "CURRENT"
INDEX_FILE = "index.faiss"
META_FILE = "library.json"
THUMBNAIL_DIR = "thumbnails"
LOCK_FILE = ".lock"
_SNAPSHOT_NAME = re.compile(r"^snap-(\d{6,})$")
_STAGING_PREFIX = ".staging-"


def current_generation(directory: Path) -> int:
    """Generation number of the published snapshot; 0 when nothing has been published."""
    pointer = Path(directory) / CURRENT_FILE
    if not pointer.is_file():
        return 0
    return _generation_of(pointer.read_text(encoding="utf-8").strip())


def read_snapshot(directory: Path) -> tuple[faiss.Index, dict[str, Any], int]:
    """Load the published snapshot: (index, metadata, generation). The index file is checked against its checksum."""
    directory = Path(directory)
    generation = current_generation(directory)
    if generation == 0:
        raise LibraryNotFoundError(
            f"No similar-case library in {directory}: build one with `python -m case_retrieval build`."
        )
    snapshot = directory / _snapshot_name(generation)
    meta = _read_meta(snapshot / META_FILE)
    index_path = snapshot / INDEX_FILE
    expected = meta.get("index", {})
    if not index_path.is_file() or index_path.stat().st_size != expected.get("bytes"):
        raise LibraryCorruptError(f"The index file of {snapshot} is missing or truncated; rebuild the library.")
    if _sha256(index_path) != expected.get("sha256"):
        raise LibraryCorruptError(f"The index file of {snapshot} fails its checksum; rebuild the library.")
    try:
        index = faiss.read_index(str(index_path))
    except RuntimeError:
        raise LibraryCorruptError(
            f"The index file of {snapshot} cannot be read by FAISS; rebuild the library."
        ) from None
    return index, meta, generation


def write_snapshot(directory: Path, index: faiss.Index, meta: dict[str, Any], expected_generation: int) -> int:
    """Publish a new snapshot and return its generation.

    `expected_generation` is the generation the caller's copy was loaded from: if another writer published since,
    saving would silently drop that writer's changes, so it is refused instead.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with writer_lock(directory):
        published = current_generation(directory)
        if published != expected_generation:
            raise LibraryConflictError(
                f"The library in {directory} was changed by another writer (snapshot {published}, this copy was "
                f"loaded from {expected_generation}); reload it and apply the change again."
            )
        generation = max(published, _highest_snapshot(directory)) + 1
        staging = directory / f"{_STAGING_PREFIX}{generation:06d}"
        _write_staging(staging, index, meta)
        final = directory / _snapshot_name(generation)
        os.replace(staging, final)
        fsync_path(directory)
        _publish(directory, final.name)
        _prune(directory, keep={final.name, _snapshot_name(published)})
    return generation


@contextmanager
def writer_lock(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on the library directory (released if the process dies)."""
    with (Path(directory) / LOCK_FILE).open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_staging(staging: Path, index: faiss.Index, meta: dict[str, Any]) -> None:
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    index_path = staging / INDEX_FILE
    faiss.write_index(index, str(index_path))
    header = {
        **meta,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "index": {**meta.get("index", {}), "bytes": index_path.stat().st_size, "sha256": _sha256(index_path)},
    }
    (staging / META_FILE).write_text(json.dumps(header, separators=(",", ":")), encoding="utf-8")
    fsync_path(index_path)
    fsync_path(staging / META_FILE)
    fsync_path(staging)


def _publish(directory: Path, snapshot_name: str) -> None:
    """The commit point of a save: CURRENT names the new snapshot."""
    write_durably(directory / CURRENT_FILE, f"{snapshot_name}\n".encode())


def _prune(directory: Path, keep: set[str]) -> None:
    """Remove older snapshots and leftovers of interrupted saves (we hold the writer lock)."""
    for child in directory.iterdir():
        stale_snapshot = _SNAPSHOT_NAME.match(child.name) and child.name not in keep
        if child.is_dir() and (stale_snapshot or child.name.startswith(_STAGING_PREFIX)):
            shutil.rmtree(child, ignore_errors=True)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise LibraryCorruptError(f"The library metadata {path} is missing or damaged; rebuild the library.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise LibraryCorruptError(f"{path} is not a similar-case library file.")
    if meta.get("format_version") != FORMAT_VERSION:
        raise LibraryCorruptError(
            f"{path} has format version {meta.get('format_version')}; this code reads version {FORMAT_VERSION}."
        )
    return meta


def _highest_snapshot(directory: Path) -> int:
    numbers = [int(m.group(1)) for child in directory.iterdir() if (m := _SNAPSHOT_NAME.match(child.name))]
    return max(numbers, default=0)


def _snapshot_name(generation: int) -> str:
    return f"snap-{generation:06d}"


def _generation_of(name: str) -> int:
    match = _SNAPSHOT_NAME.match(name)
    if not match:
        raise LibraryCorruptError(f"The library pointer names {name!r}, which is not a snapshot.")
    return int(match.group(1))


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
