"""Removal of files no case owns: what a crash between "image stored" and "case row committed" leaves behind.

A study stores its image, then its case files (decoded pixels), then commits the case row (api/analysis.py), so a
process killed in between leaves an image and a case folder that nothing refers to. `sweep_orphans` removes those
older than a grace period (long enough for any analysis still running), and temporary files of interrupted writes.
`OrphanSweeper` runs it at start and then on a schedule, in a background thread.

Re-storing the same bytes refreshes an old file's time (`ImageStore.put`), so the grace period protects an image
that a study in progress is about to refer to.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import InstrumentedAttribute

from storage.bootstrap import Storage
from storage.models import Case

logger = logging.getLogger(__name__)

_CASE_FOLDER = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_TEMPORARY = re.compile(r"^\..+\.tmp$")  # storage.files.write_durably's temporary files
_QUERY_BATCH = 500


@dataclass(frozen=True)
class SweepResult:
    images: int = 0
    case_folders: int = 0
    temporary_files: int = 0


def sweep_orphans(storage: Storage, grace_s: float, *, now: float | None = None) -> SweepResult:
    """Remove images no case refers to, case folders of cases that do not exist, and temporary files, each only
    when older than `grace_s` seconds."""
    cutoff = (time.time() if now is None else now) - grace_s
    images = _sweep_images(storage, cutoff)
    folders = _sweep_case_folders(storage, cutoff)
    temporary = sum(_remove_file(path, cutoff) for path in _temporary_files(storage))
    result = SweepResult(images, folders, temporary)
    if images or folders or temporary:
        logger.info("orphan sweep removed %d image(s), %d case folder(s), %d temporary file(s)", *_counts(result))
    return result


def _counts(result: SweepResult) -> tuple[int, int, int]:
    return result.images, result.case_folders, result.temporary_files


def _sweep_images(storage: Storage, cutoff: float) -> int:
    old = [key for key in storage.images.stored_keys() if _older(storage.images.path(key), cutoff)]
    removed = 0
    for batch in _batches(old):
        referenced = _existing(storage, Case.image_sha256, batch)
        removed += sum(_remove_file(storage.images.path(key), cutoff) for key in batch if key not in referenced)
    return removed


def _sweep_case_folders(storage: Storage, cutoff: float) -> int:
    root = storage.artifacts.root
    folders = (
        [path for path in root.iterdir() if path.is_dir() and _CASE_FOLDER.match(path.name)] if root.is_dir() else []
    )
    old = [path for path in folders if all(_older(item, cutoff) for item in (path, *path.iterdir()))]
    removed = 0
    for batch in _batches(old):
        existing = _existing(storage, Case.id, [path.name for path in batch])
        for path in batch:
            if path.name not in existing:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed


def _temporary_files(storage: Storage) -> Iterator[Path]:
    for root, pattern in ((storage.images.root, "??/??/.*"), (storage.artifacts.root, "*/.*")):
        yield from (path for path in root.glob(pattern) if _TEMPORARY.match(path.name))


def _existing(storage: Storage, column: InstrumentedAttribute[str], values: list[str]) -> set[str]:
    with storage.database.session() as session:
        return set(session.scalars(select(column).where(column.in_(values)).distinct()))


def _older(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def _remove_file(path: Path, cutoff: float) -> bool:
    """Unlink `path` if it is still older than the cutoff (a study may have re-stored it meanwhile)."""
    if not _older(path, cutoff):
        return False
    path.unlink(missing_ok=True)
    return True


def _batches(items: list, size: int = _QUERY_BATCH) -> Iterable[list]:
    return (items[start : start + size] for start in range(0, len(items), size))


class OrphanSweeper:
    """`sweep_orphans` in a daemon thread: once at start, then every `interval_s` seconds (0: only at start)."""

    def __init__(self, storage: Storage, grace_s: float, interval_s: float) -> None:
        self.storage, self.grace_s, self.interval_s = storage, grace_s, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="orphan-sweep", daemon=True)

    def start(self) -> OrphanSweeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sweep_orphans(self.storage, self.grace_s)
            except Exception as exc:  # the file system or the database driver: log it, the next round tries again
                logger.warning("orphan sweep failed: %s", type(exc).__name__)
            if self.interval_s <= 0 or self._stop.wait(self.interval_s):
                return
