"""Encryption at rest of patient-identifying fields (Fernet) and the keyed index that keeps them searchable.

One `PhiCipher` serves the whole process: the ORM column types in `storage.types` look it up through
`active_phi_cipher()`. `init_storage()` installs the one built from settings (`load_phi_cipher`); scripts that skip
it get the same cipher lazily on first use.

Keys: the first key encrypts, every key decrypts (cryptography's MultiFernet), so a rotation can run while old rows
still carry the previous key. The patient_id index is an HMAC-SHA256 under a sub-key derived (HKDF) from each Fernet
key; a lookup tries every configured key, so filtering keeps working in the middle of a rotation too.

Stored files that can hold identity (uploaded originals: a DICOM header names the patient) are sealed with
AES-256-GCM under another HKDF sub-key of the same keys (`encrypt_file`/`decrypt_file`); the header names which key,
and the file's name is authenticated with it, so a file cannot be swapped for another one unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import threading
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from settings import Settings, get_settings
from storage.errors import DecryptionError, EncryptionKeyError
from storage.files import create_secret_file_once, write_durably

logger = logging.getLogger(__name__)

KEY_FILE_NAME = "phi.key"
_INDEX_KEY_INFO = b"cxr-workstation/patient-id-index/v1"
_FILE_KEY_INFO = b"cxr-workstation/stored-files/v1"
FILE_MAGIC = b"CXR-ENC1"  # first bytes of every encrypted stored file
_KEY_ID_BYTES = 8
_NONCE_BYTES = 12


def generate_phi_key() -> str:
    """A fresh random Fernet key (url-safe base64 text), suitable for PHI_ENCRYPTION_KEY."""
    return Fernet.generate_key().decode("ascii")


def normalize_patient_id(patient_id: str) -> str:
    """The form hashed for the index: Unicode NFKC, surrounding blanks removed, case folded ("mrn 1" == "MRN 1")."""
    return unicodedata.normalize("NFKC", patient_id).strip().casefold()


def _fernet(key: str, source: str) -> Fernet:
    try:
        return Fernet(key.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:  # the key itself is never put in the message
        raise EncryptionKeyError(f"{source} is not a valid Fernet key (32 url-safe base64-encoded bytes).") from exc


def is_sealed_file(blob: bytes) -> bool:
    """Whether `blob` was written by `PhiCipher.encrypt_file` (anything else is a plain file from before)."""
    return blob.startswith(FILE_MAGIC)


def _file_key(key: str) -> tuple[bytes, AESGCM]:
    raw_key = base64.urlsafe_b64decode(key.strip().encode("ascii"))
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_FILE_KEY_INFO).derive(raw_key)
    return hashlib.sha256(derived).digest()[:_KEY_ID_BYTES], AESGCM(derived)


def _index_key(key: str) -> bytes:
    raw_key = base64.urlsafe_b64decode(key.strip().encode("ascii"))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INDEX_KEY_INFO).derive(raw_key)


class PhiCipher:
    """Encrypts and decrypts patient fields and computes the patient_id index under an ordered list of keys."""

    def __init__(self, keys: Sequence[str], source: str = "PHI encryption key") -> None:
        if not keys:
            raise EncryptionKeyError(f"No {source} is configured.")
        fernets = [_fernet(key, source) for key in keys]
        self._keys = [key.strip() for key in keys]
        self._multi = MultiFernet(fernets)
        self._index_keys = [_index_key(key) for key in self._keys]
        self._file_keys = [_file_key(key) for key in self._keys]  # (key id, AES-GCM) per key, primary first

    @property
    def primary_key(self) -> str:
        return self._keys[0]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def encrypt(self, plaintext: str) -> str:
        return self._multi.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._multi.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise DecryptionError(
                "Stored patient data cannot be decrypted with the configured key(s); "
                "check PHI_ENCRYPTION_KEY and PHI_ENCRYPTION_OLD_KEYS."
            ) from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt a token (made under any configured key) under the primary key."""
        try:
            return self._multi.rotate(token.encode("ascii")).decode("ascii")
        except (InvalidToken, UnicodeError) as exc:
            raise DecryptionError("A stored value cannot be decrypted with any of the given keys.") from exc

    # Whole files (stored uploads): AES-256-GCM under a sub-key of each Fernet key; no base64, so no size overhead.

    def encrypt_file(self, data: bytes | bytearray | memoryview, context: str) -> bytes:
        """`data` sealed under the primary key; `context` (e.g. the file's name) must be given again to open it."""
        key_id, aead = self._file_keys[0]
        nonce = os.urandom(_NONCE_BYTES)
        header = FILE_MAGIC + key_id + nonce
        return header + aead.encrypt(nonce, bytes(data), header + context.encode("utf-8"))

    def decrypt_file(self, blob: bytes, context: str) -> bytes:
        """The plaintext of `encrypt_file`'s output, under whichever configured key sealed it."""
        header_end = len(FILE_MAGIC) + _KEY_ID_BYTES + _NONCE_BYTES
        key_id, nonce = (
            blob[len(FILE_MAGIC) : len(FILE_MAGIC) + _KEY_ID_BYTES],
            blob[header_end - _NONCE_BYTES : header_end],
        )
        for candidate_id, aead in self._file_keys:
            if candidate_id == key_id:
                try:
                    return aead.decrypt(nonce, blob[header_end:], blob[:header_end] + context.encode("utf-8"))
                except InvalidTag:
                    break
        raise DecryptionError(
            "A stored file cannot be decrypted with the configured key(s); check PHI_ENCRYPTION_KEY and "
            "PHI_ENCRYPTION_OLD_KEYS, or the file was altered."
        )

    def sealed_under_primary(self, blob: bytes) -> bool:
        return blob[len(FILE_MAGIC) : len(FILE_MAGIC) + _KEY_ID_BYTES] == self._file_keys[0][0]

    def patient_id_hash(self, patient_id: str) -> str:
        """Index value stored with a case: HMAC-SHA256 (hex) of the normalised id under the primary key."""
        return self.patient_id_hashes(patient_id)[0]

    def patient_id_hashes(self, patient_id: str) -> list[str]:
        """Index values under every configured key, primary first: what a lookup must match."""
        message = normalize_patient_id(patient_id).encode("utf-8")
        return [hmac.new(key, message, hashlib.sha256).hexdigest() for key in self._index_keys]


def _split_keys(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def write_key_file(path: Path, keys: Sequence[str]) -> None:
    """Atomically replace the development key file (one key per line, primary first), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_durably(path, ("\n".join(keys) + "\n").encode("ascii"), mode=0o600)


def read_key_file(path: Path) -> list[str]:
    """Keys from the development key file; tightens its mode to 0600 if it was readable by others."""
    if path.stat().st_mode & 0o077:
        logger.warning("Key file %s was readable by other users; restricting it to mode 0600.", path)
        path.chmod(0o600)
    keys = _split_keys(path.read_text(encoding="ascii").replace("\n", ","))
    if not keys:
        raise EncryptionKeyError(f"The key file {path} is empty; delete it only if no patient data was stored yet.")
    return keys


def _create_key_file_once(path: Path) -> None:
    """Create the key file if absent; when two processes race, exactly one key wins and both use it."""
    if create_secret_file_once(path, generate_phi_key):
        logger.warning("Generated a development PHI encryption key in %s (keep it: the data needs it).", path)


def key_file_path(settings: Settings) -> Path:
    return Path(settings.var_dir) / KEY_FILE_NAME


def load_phi_cipher(settings: Settings | None = None) -> PhiCipher:
    """The cipher the settings describe.

    PHI_ENCRYPTION_KEY (plus PHI_ENCRYPTION_OLD_KEYS) when set; otherwise, in development only, the key file
    var_dir/phi.key, created on first use. Production without PHI_ENCRYPTION_KEY raises `EncryptionKeyError`.
    """
    settings = settings or get_settings()
    old_keys = _split_keys(settings.phi_encryption_old_keys.get_secret_value())
    configured = settings.phi_encryption_key.get_secret_value().strip()
    if configured:
        _fernet(configured, "PHI_ENCRYPTION_KEY")
        for position, old_key in enumerate(old_keys, start=1):
            _fernet(old_key, f"PHI_ENCRYPTION_OLD_KEYS entry {position}")
        return PhiCipher([configured, *old_keys])
    if settings.environment == "production":
        raise EncryptionKeyError(
            "PHI_ENCRYPTION_KEY is not set: in production the workstation refuses to store patient data "
            "without an encryption key. Create one with `python -m storage generate-phi-key` and set it."
        )
    path = key_file_path(settings)
    if not path.exists():
        _create_key_file_once(path)
    return PhiCipher([*read_key_file(path), *old_keys], source=f"key in {path}")


_active_cipher: PhiCipher | None = None
_active_lock = threading.Lock()


def configure_phi_cipher(cipher: PhiCipher | None) -> None:
    """Install the process-wide cipher used by the encrypted column types (None: load from settings on next use)."""
    global _active_cipher
    with _active_lock:
        _active_cipher = cipher


def active_phi_cipher() -> PhiCipher:
    """The process-wide cipher, loaded from `get_settings()` on first use if none was configured."""
    global _active_cipher
    with _active_lock:
        if _active_cipher is None:
            _active_cipher = load_phi_cipher()
        return _active_cipher
