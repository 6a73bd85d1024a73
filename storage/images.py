"""Content-addressed image store: each upload lives once, at <root>/ab/cd/<sha256>, named by the hash of its bytes.

Uploads can name the patient (DICOM headers), so every file is sealed with the PHI keys (`PhiCipher.encrypt_file`,
AES-256-GCM, its name authenticated with it): without the key the folder reveals nothing but sizes and hashes.
Files stored before encryption (plain bytes) are still read, and `rotate_phi_key(..., images=store)` seals them.

Writes are crash-safe: the bytes go to a temporary file in the final folder, are fsynced, renamed into place
atomically and the folder is fsynced, so after `put` returns the image survives a process kill or power cut, and a
reader never sees a half-written file. Storing the same bytes twice is a no-op. Keys are validated as 64 hex digits
before any path is built, which also rules out path traversal.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from storage.crypto import FILE_MAGIC, PhiCipher, active_phi_cipher, is_sealed_file
from storage.errors import (
    ImageCorruptedError,
    ImageNotFoundError,
    InvalidImageDataError,
    InvalidImageKeyError,
    StorageUnavailableError,
)
from storage.files import fsync_path, write_durably

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


SEALED_OVERHEAD = len(FILE_MAGIC) + 8 + 12 + 16  # magic, key id, nonce, GCM tag
# A re-stored image older than this gets a fresh modification time: the orphan sweep's grace counts from then.
_TOUCH_AFTER_S = 60


class ImageStore:
    """Images on disk under `root`, addressed by the sha256 hex digest of their bytes, encrypted with `cipher`
    (default: the process-wide PHI cipher)."""

    def __init__(self, root: Path | str, cipher: PhiCipher | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._cipher = cipher

    @property
    def cipher(self) -> PhiCipher:
        return self._cipher or active_phi_cipher()

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
        if self._already_stored(target, len(data)):
            return sha256
        try:
            self._make_dirs(target.parent)
            write_durably(target, self.cipher.encrypt_file(data, sha256))
        except OSError as exc:
            raise StorageUnavailableError(
                "The image store cannot write the image (disk full or not writable)."
            ) from exc
        return sha256

    def get(self, sha256: str, *, verify: bool = True) -> bytes:
        """The stored bytes; with `verify`, checks they still hash to the key (`ImageCorruptedError` if not)."""
        target = self.path(sha256)
        try:
            blob = target.read_bytes()
        except FileNotFoundError as exc:
            raise ImageNotFoundError("No stored image has this sha256.") from exc
        data = self.cipher.decrypt_file(blob, target.name) if is_sealed_file(blob) else blob
        if verify and hashlib.sha256(data).hexdigest() != target.name:
            raise ImageCorruptedError("The stored image no longer matches its sha256; the file is damaged.")
        return data

    def stored_keys(self) -> Iterator[str]:
        """Every stored image's sha256 (files of another shape, e.g. temporary ones, are skipped)."""
        for path in self.root.glob("??/??/*"):
            if _SHA256_HEX.fullmatch(path.name) and path.parent.parent.name == path.name[:2]:
                yield path.name

    def reseal(self, sha256: str) -> bool:
        """Re-encrypt one file under the primary key (a plain file from before encryption too); False if it was."""
        target = self.path(sha256)
        blob = target.read_bytes()
        if is_sealed_file(blob) and self.cipher.sealed_under_primary(blob):
            return False
        write_durably(target, self.cipher.encrypt_file(self.get(sha256), target.name))
        return True

    def _already_stored(self, target: Path, size: int) -> bool:
        """An intact copy exists (sealed, or plain from before); refresh its time if it was stored a while ago."""
        try:
            stat = target.stat()
        except FileNotFoundError:
            return False
        if stat.st_size not in (size + SEALED_OVERHEAD, size):
            return False  # a truncated file is replaced
        if time.time() - stat.st_mtime > _TOUCH_AFTER_S:
            os.utime(target)
        return True

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
