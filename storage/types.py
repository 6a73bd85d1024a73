"""Column types shared by every table: UTC timestamps, portable JSON, and encrypted patient fields.

Encrypted columns hold Fernet tokens (ASCII text) in the database; the ORM sees plain Python values. They cannot be
compared in SQL (each encryption is randomised): filter on a keyed index column instead (see `storage.crypto`).

The type is what marks a column as made with the PHI key: the key rotation (storage/rotation.py) re-encrypts every
column of the `ENCRYPTED_TYPES` and re-keys every `PatientPseudonym` column, on whichever table of `Base` it sits.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from sqlalchemy import JSON, DateTime, Dialect, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine

from storage.crypto import active_phi_cipher

# JSONB on PostgreSQL (compact, indexable), JSON text elsewhere.
JSONType: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive value is taken to be UTC already."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive, always in UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc_value = as_utc(value)
        return utc_value.replace(tzinfo=None) if dialect.name == "sqlite" else utc_value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class EncryptedText(TypeDecorator[str]):
    """A string stored as a Fernet token under the process-wide PHI key."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else active_phi_cipher().encrypt(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> str | None:
        return None if value is None else active_phi_cipher().decrypt(value)


class EncryptedDate(TypeDecorator[date]):
    """A date stored encrypted (ISO 8601 inside the token)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: date | None, dialect: Dialect) -> str | None:
        return None if value is None else active_phi_cipher().encrypt(value.isoformat())

    def process_result_value(self, value: str | None, dialect: Dialect) -> date | None:
        return None if value is None else date.fromisoformat(active_phi_cipher().decrypt(value))


class EncryptedJSON(TypeDecorator[Any]):
    """A JSON document stored encrypted: used where free-form metadata may carry patient tags (DICOM)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return active_phi_cipher().encrypt(json.dumps(value, separators=(",", ":"), allow_nan=False))

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None else json.loads(active_phi_cipher().decrypt(value))


# Whose values are PHI-key tokens: a new encrypted type joins this tuple, so that the key rotation re-encrypts it.
ENCRYPTED_TYPES: tuple[type[TypeDecorator[Any]], ...] = (EncryptedText, EncryptedDate, EncryptedJSON)


class PatientPseudonym(TypeDecorator[str]):
    """A copy of a case's keyed patient-id index (`cases.patient_id_hash`, or the case id when it has none), kept to
    group one patient's rows (the held-back split). The index depends on the PHI key, so the key rotation re-keys
    these columns along with it; a plain String(64) in the database."""

    impl = String(64)
    cache_ok = True


RecordT = TypeVar("RecordT")


def record_from_row(record_type: type[RecordT], row: object, **derived: Any) -> RecordT:
    """A frozen record dataclass from an ORM row: each field read from the column of the same name (JSON documents
    deep-copied, so a caller cannot change the session's objects), except the `derived` values given."""
    values = {
        f.name: derived[f.name] if f.name in derived else copy.deepcopy(getattr(row, f.name))
        for f in dataclasses.fields(record_type)  # type: ignore[arg-type]
    }
    return record_type(**values)
