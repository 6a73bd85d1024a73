"""Errors of the similar-case library, each with a message fit to show a user.

Suggested HTTP mapping for the API: `EntryNotFoundError` and `LibraryNotFoundError` 404 (or 503 when the library
is simply not built yet), `DuplicateEntryError` and `LibraryConflictError` 409, `InvalidInputError` 422,
`ModelMismatchError` 409 (or 503 at start-up until the library is rebuilt), `LibraryCorruptError` 500.
"""

from __future__ import annotations


class RetrievalError(ValueError):
    """Base class: anything the similar-case library refuses to do, with a user-facing message."""


class LibraryNotFoundError(RetrievalError):
    """No library has been saved in the directory yet."""


class LibraryCorruptError(RetrievalError):
    """The saved library is unreadable or inconsistent (damaged file, wrong format)."""


class LibraryConflictError(RetrievalError):
    """Saving would overwrite a library that another process saved (or that already exists)."""


class ModelMismatchError(RetrievalError):
    """The library's embeddings come from a different model than the one asking: its neighbours would be wrong."""

    def __init__(self, message: str, library_version: str, requested_version: str) -> None:
        super().__init__(message)
        self.library_version = library_version
        self.requested_version = requested_version


class EntryNotFoundError(RetrievalError):
    """No entry with this id (or it was removed)."""


class DuplicateEntryError(RetrievalError):
    """An entry with this id is already in the library."""


class InvalidInputError(RetrievalError):
    """Bad input: malformed id or label, embedding of the wrong size or with non-finite values, k out of range."""
