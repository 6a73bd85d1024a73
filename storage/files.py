"""Durable file writes, the one way every room writes a file that must survive a crash or a concurrent reader.

`write_durably`: temp file in the target's folder, fsync, rename over the target, fsync the folder: a reader sees
the old or the new content, never a part, and after it returns the new content survives a power cut.
`create_secret_file_once`: publish a new secret only if none exists yet (hard link, never overwrite): when processes
race on first start, exactly one secret wins and every process reads that one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def fsync_path(path: Path) -> None:
    """fsync a file, or a folder (which makes the renames and new entries inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(target: Path, data: bytes | bytearray | memoryview, *, mode: int = 0o640, sync: bool = True) -> None:
    """Replace `target` with `data` atomically (and durably unless `sync=False`: the caller fsyncs a batch later)."""
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if sync:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)  # atomic; identical content if another writer got there first
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync:
        fsync_path(target.parent)


def create_secret_file_once(path: Path, make_secret: Callable[[], str]) -> bool:
    """Write `make_secret()` (one line, mode 0600) to `path` unless it exists; True if this call created it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")  # mode 0600
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write((make_secret() + "\n").encode("ascii"))
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # fails if another process published its secret first: never overwrite one
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    fsync_path(path.parent)
    return True


def copy_durably(source: Path, target: Path, *, mode: int = 0o640) -> None:
    """Copy `source` over `target` the way `write_durably` writes bytes, without holding the whole file in memory."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle, source.open("rb") as original:
            shutil.copyfileobj(original, handle, 1 << 20)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)
