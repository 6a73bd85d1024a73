"""Tables of the learning loop, on storage's `Base` (revision storage/migrations/versions/0007_learning_loop.py).

- `queue_items`: one per case sent for expert reading, with every reason it was sent for and where it stands
  (`open` for reads, `adjudication` after disagreeing reads, `final`).
- `queue_claims`: expiring locks on a case for one annotator. At most one `active` claim per case, enforced by a
  partial unique index as well as by the locking in active_learning/queue.py.
- `annotations`: expert reads, never updated: a correction is a new row whose `supersedes_id` names the read it
  replaces. One current read per annotator and case (partial unique index).
- `final_labels`: the label a case ends with (reads that agree, or an adjudication), with its train/val split,
  fixed when the row is written.
- `nodule_reviews` (revision 0010_nodule_reviews): a clinician's verdicts on a case's nodule marks, its own boxes and
  finding; never updated (a second review is a new row). Each one is an expert label of the nodule task.
Free text (a note, a comment) may name a patient, so it is encrypted like `cases.review_reason`; `patient_key` is
a `PatientPseudonym`. Both types depend on the PHI key, and the key rotation (storage/rotation.py) finds them by type.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ColumnElement, Float, ForeignKey, Index, Integer, String, exists, text
from sqlalchemy.orm import Mapped, aliased, mapped_column

from storage import Base, EncryptedText, JSONType, PatientPseudonym, UTCDateTime, utcnow

OPEN, ADJUDICATION, FINAL = "open", "adjudication", "final"  # queue item states
ACTIVE, RELEASED, EXPIRED, SUBMITTED = "active", "released", "expired", "submitted"  # claim states


def new_id() -> str:
    return str(uuid.uuid4())


class QueueItemRow(Base):
    __tablename__ = "queue_items"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(String(36), ForeignKey("cases.id"), unique=True)
    state: Mapped[str] = mapped_column(String(16), default=OPEN, index=True)
    # Every time the case was sent, oldest first: {"code": ReviewReason value, "requested_by": str | None, "at": ISO}.
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    note: Mapped[str | None] = mapped_column(EncryptedText())  # why it was sent by hand, in the sender's words
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class ClaimRow(Base):
    __tablename__ = "queue_claims"
    __table_args__ = (
        Index(
            "ix_queue_claims_one_active_per_case",
            "case_id",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    item_id: Mapped[str] = mapped_column(String(36), ForeignKey("queue_items.id"), index=True)
    case_id: Mapped[str] = mapped_column(String(36), ForeignKey("cases.id"))
    annotator_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16), default=ACTIVE)
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # released, expired or submitted


class AnnotationRow(Base):
    __tablename__ = "annotations"
    __table_args__ = (
        Index(
            "ix_annotations_one_current_read",
            "case_id",
            "annotator_id",
            unique=True,
            sqlite_where=text("supersedes_id IS NULL"),
            postgresql_where=text("supersedes_id IS NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(String(36), ForeignKey("cases.id"), index=True)
    item_id: Mapped[str] = mapped_column(String(36), ForeignKey("queue_items.id"))
    annotator_id: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str] = mapped_column(String(64))
    confidence: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(EncryptedText())
    boxes: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)  # {x, y, w, h}, stored-image pixels
    claim_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("queue_claims.id"))  # None: a correction
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # start of the read (time per read)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)  # submitted
    # The first read of a chain has none; a correction names the row it replaces (each row is replaced once).
    supersedes_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("annotations.id"), unique=True)


class FinalLabelRow(Base):
    __tablename__ = "final_labels"

    case_id: Mapped[str] = mapped_column(String(36), ForeignKey("cases.id"), primary_key=True)
    item_id: Mapped[str] = mapped_column(String(36), ForeignKey("queue_items.id"))
    label: Mapped[str] = mapped_column(String(64))
    split: Mapped[str] = mapped_column(String(8), index=True)  # train | val (held back), never changed
    patient_key: Mapped[str] = mapped_column(PatientPseudonym(), index=True)  # the case's pseudonym, never identity
    source: Mapped[str] = mapped_column(String(16))  # agreement | adjudication
    annotators: Mapped[list[str]] = mapped_column(JSONType, default=list)  # the readers, then the adjudicator
    adjudicator_id: Mapped[str | None] = mapped_column(String(64))
    comment: Mapped[str | None] = mapped_column(EncryptedText())  # the adjudicator's
    model_version: Mapped[str] = mapped_column(String(128), index=True)
    prediction: Mapped[str] = mapped_column(String(64))  # the model's answer the label is compared with
    finalized_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class NoduleReviewRow(Base):
    __tablename__ = "nodule_reviews"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    case_id: Mapped[str] = mapped_column(String(36), ForeignKey("cases.id"), index=True)
    reviewer_id: Mapped[str] = mapped_column(String(64), index=True)
    reviewer_role: Mapped[str] = mapped_column(String(16))
    finding: Mapped[str] = mapped_column(String(16))  # NODULE | NO_NODULE
    # {x, y, w, h, verdict, score}: stored-image pixels; score is the model's for its marks, None for an added box.
    marks: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    image_width: Mapped[float] = mapped_column(Float)  # the stored image's size: the frame of the marks
    image_height: Mapped[float] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(EncryptedText())
    model_label: Mapped[str] = mapped_column(String(64))  # the model's finding the review judged
    model_probability: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(128))
    disagreement: Mapped[list[str]] = mapped_column(JSONType, default=list)  # finding | rejected_mark | added_box
    queued: Mapped[bool] = mapped_column(Boolean, default=False)
    split: Mapped[str] = mapped_column(String(8))  # train | val, the patient's (as for final labels), never changed
    patient_key: Mapped[str] = mapped_column(PatientPseudonym(), index=True)  # the case's pseudonym, never identity
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


def is_current_read() -> ColumnElement[bool]:
    """SQL condition: the annotation row is the latest version of its read (no correction names it)."""
    newer = aliased(AnnotationRow)
    return ~exists().where(newer.supersedes_id == AnnotationRow.id)
