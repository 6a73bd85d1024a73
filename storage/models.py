"""ORM models (SQLAlchemy 2 typed declarative). Other rooms add their tables on `Base` and an Alembic revision
under storage/migrations/versions, so the whole product keeps one schema and one migration history.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Boolean, Float, Integer, LargeBinary, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storage.types import EncryptedDate, EncryptedJSON, EncryptedText, JSONType, UTCDateTime, utcnow

# Deterministic constraint names, so that Alembic can alter or drop them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class CaseStatus(StrEnum):
    """Life cycle of a case; stored as its string value."""

    ANALYZED = "analyzed"
    QUEUED_FOR_REVIEW = "queued_for_review"
    REVIEWED = "reviewed"
    SIGNED = "signed"


def new_case_id() -> str:
    return str(uuid.uuid4())


class Case(Base):
    """One analysed study: who (encrypted), what image, what the model said, and where it stands in review."""

    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_case_id)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    status: Mapped[str] = mapped_column(String(32), default=CaseStatus.ANALYZED.value, index=True)

    # Patient: identifying fields are encrypted at rest; patient_id_hash (keyed HMAC) makes patient_id filterable.
    patient_id: Mapped[str | None] = mapped_column(EncryptedText())
    patient_id_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    patient_name: Mapped[str | None] = mapped_column(EncryptedText())
    patient_birth_date: Mapped[date | None] = mapped_column(EncryptedDate())
    patient_age: Mapped[int | None] = mapped_column(Integer)
    patient_sex: Mapped[str | None] = mapped_column(String(16))
    clinical_history: Mapped[str | None] = mapped_column(EncryptedText())

    # Study: DICOM tags may name the patient, so the whole metadata document is encrypted too.
    study_metadata: Mapped[dict[str, Any]] = mapped_column(EncryptedJSON(), default=dict)
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_format: Mapped[str] = mapped_column(String(16))

    # Model output.
    task: Mapped[str] = mapped_column(String(32), index=True)
    prediction: Mapped[str] = mapped_column(String(64), index=True)
    confidence: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict[str, float]] = mapped_column(JSONType)
    positive_probability: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    uncertainty: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    uncertain: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    ood: Mapped[bool | None] = mapped_column(Boolean)
    ood_reason: Mapped[str | None] = mapped_column(Text)
    # Validated scope (inference.scope): "validated", "outside_validated" (with the reason) or "unchecked".
    scope: Mapped[str | None] = mapped_column(String(32))
    scope_reason: Mapped[str | None] = mapped_column(Text)
    quality_warnings: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    # Free text of "send for review": may name the patient, so encrypted like the patient fields.
    review_reason: Mapped[str | None] = mapped_column(EncryptedText())
    model_version: Mapped[str] = mapped_column(String(128))
    # The second finding (issue 23), made from the same decoded film by its own model: {label, probability,
    # threshold, locations [{x, y, w, h, score}] in the stored image's pixels, model_version, performance}; NULL when
    # no nodule model was served.
    nodule: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    # float32 bytes of the model's embedding (model_version's model): similar cases without another forward pass.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)

    # People (user ids of the security room; no foreign key until its users table exists).
    created_by: Mapped[str | None] = mapped_column(String(64))
    signed_by: Mapped[str | None] = mapped_column(String(64))
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:  # never print patient fields
        return f"Case(id={self.id!r}, status={self.status!r}, prediction={self.prediction!r})"
