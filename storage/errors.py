"""Why a storage operation failed. Messages are safe to show to a user: they never contain patient data.

The API maps the classes by their second base: `LookupError` -> 404, `ValueError` -> 422 (or 400),
`CaseStateError` -> 409, `StorageUnavailableError` -> 503, anything else -> 500.
"""


class StorageError(Exception):
    """Base class of every error raised by the storage room."""


class CaseNotFoundError(StorageError, LookupError):
    """No case has the requested id."""


class InvalidCaseDataError(StorageError, ValueError):
    """A case field, filter or page request is not acceptable (wrong type, out of range, unknown field)."""


class CaseStateError(StorageError):
    """The case is in a state that forbids the change (for example, it is already signed)."""


class InvalidImageKeyError(StorageError, ValueError):
    """An image key is not a sha256 hex digest (this also rules out any path traversal)."""


class InvalidImageDataError(StorageError, ValueError):
    """The bytes offered to the image store cannot be stored (for example, they are empty)."""


class ImageNotFoundError(StorageError, LookupError):
    """The image store holds no image with that sha256."""


class ImageCorruptedError(StorageError):
    """An image file on disk no longer matches its sha256 (damaged disk or tampering)."""


class EncryptionKeyError(StorageError):
    """The patient-data encryption key is missing or malformed; the backend must not start."""


class DecryptionError(StorageError):
    """Stored patient data cannot be decrypted with the configured key(s)."""


class StorageUnavailableError(StorageError):
    """The database cannot be reached or answered with an operational error."""


class BackupError(StorageError):
    """A backup cannot be made, is damaged or incomplete, or cannot be restored here; the message says which file."""


class UnknownTablesError(StorageError):
    """The database holds tables whose models this process has not loaded: a key rotation would miss their columns."""
