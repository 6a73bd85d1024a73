"""Content-addressed image store: each upload lives once, at <root>/ab/cd/<sha256>, named by its own hash.

Writes are crash-safe: the bytes go to a temporary file in the final folder, are fsynced, renamed into place
atomically and the folder is fsynced, so after `put` returns the image survives a process kill or power cut, and a
reader never sees a half-written file. Storing the same bytes twice is a no-op. Keys are validated as 64 hex digits
before any path is built, which also rules out path traversal.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

from storage.errors import (
    ImageCorruptedError,
    ImageNotFoundError,
    InvalidImageDataError,
    InvalidImageKeyError,
    StorageUnavailableError,
)
from storage.files import fsync_path, write_durably

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class ImageStore:
    """Images on disk under `root`, addressed by the sha256 hex digest of their bytes."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(sha256: str) -> str:
        """The canonical (lower-case) key; `InvalidImageKeyError` unless it is a sha256 hex digest."""
        if not isinstance(sha256, str) or not _SHA256_HEX.fullmatch(sha256.lower()):
            raise InvalidImageKeyError("An image key must be a sha256 hex digest (64 hexadecimal characters).")
        return sha256.lower()

    def path(self, sha256: str) -> Path:
        """Where the image with this hash lives (whether or not it exists)."""
        key = self.key(sha256)
        return self.root / key[:2] / key[2:4] / key

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def put(self, data: bytes) -> str:
        """Store `data` durably and return its sha256; idempotent for identical bytes."""
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
            raise InvalidImageDataError("Refusing to store an empty image.")
        sha256 = hashlib.sha256(data).hexdigest()
        target = self.path(sha256)
        if target.is_file() and target.stat().st_size == len(data):
            return sha256
        try:
            self._make_dirs(target.parent)
            write_durably(target, data)
        except OSError as exc:
            raise StorageUnavailableError(
                "The image store cannot write the image (disk full or not writable)."
            ) from exc
        return sha256

    def get(self, sha256: str, *, verify: bool = True) -> bytes:
        """The stored bytes; with `verify`, checks they still hash to the key (`ImageCorruptedError` if not)."""
        target = self.path(sha256)
        try:
            data = target.read_bytes()
        except FileNotFoundError as exc:
            raise ImageNotFoundError("No stored image has this sha256.") from exc
        if verify and hashlib.sha256(data).hexdigest() != target.name:
            raise ImageCorruptedError("The stored image no longer matches its sha256; the file is damaged.")
        return data

    def check_writable(self) -> None:
        """Raise `StorageUnavailableError` unless the store folder exists and accepts files (readiness checks)."""
        try:
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as exc:
            raise StorageUnavailableError("The image store folder is missing or not writable.") from exc

    def _make_dirs(self, directory: Path) -> None:
        """Create ab/ and ab/cd/ and fsync each parent, so the new folders themselves survive a crash."""
        for folder in (directory.parent, directory):
            if not folder.is_dir():
                folder.mkdir(exist_ok=True)
                fsync_path(folder.parent)
