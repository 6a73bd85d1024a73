"""Expert reads and the final label of a case, inside a write transaction the caller (active_learning/loop.py) holds.

- A read needs the reader's unexpired claim; a reader never reads a case twice. Reads are never changed: a
  correction is a new row that supersedes the old one, which stays as history.
- Double reading: after READS_PER_CASE reads by different annotators, reads that agree make the final label (source
  "agreement"); otherwise the case awaits adjudication. The adjudicator (the API allows seniors and admins) must not
  be one of the readers: a disagreement is settled by a third expert, not by one side of it. Their label is final
  (source "adjudication"). A correction never changes the state: once all reads are in, a reader who saw that the
  reads disagree could otherwise "correct" their way to an agreement.
- Blindness (`visible_annotations`): a reader sees their own reads; the others' reads only once the case is final,
  or, for someone who did not read it (the adjudicator), once it awaits adjudication, when no blind read remains to
  be made.
- The held-back split: a final label goes to "val" for a share EXPERT_HOLDOUT_FRACTION of patients, decided by a hash
  of the patient's pseudonym (every case of a patient already labelled keeps that patient's split), stored with the
  label and never changed afterwards.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from active_learning.errors import (
    AlreadyReadError,
    AnnotationNotFoundError,
    AnnotationSupersededError,
    CaseAlreadyFinalError,
    InvalidAnnotationError,
    NotReadyForAdjudicationError,
    NotYourAnnotationError,
)
from active_learning.models import (
    ADJUDICATION,
    FINAL,
    OPEN,
    SUBMITTED,
    AnnotationRow,
    FinalLabelRow,
    QueueItemRow,
    is_current_read,
)
from active_learning.queue import item_for_update, live_claim
from active_learning.records import (
    ADJUDICATION_SOURCE,
    AGREEMENT,
    OTHER,
    TRAIN,
    UNGRADABLE,
    VAL,
    Annotation,
    FinalLabel,
    QueuePolicy,
)
from storage import Case

MAX_BOXES = 20
MAX_COMMENT_LENGTH = 2000
CONFIDENCES = range(1, 6)  # 1: a guess ... 5: certain


# --- what a read may say ---------------------------------------------------------------------------------------------


def labels_for(case: Case) -> list[str]:
    """The labels a read of `case` may give: the model's classes, then OTHER and UNGRADABLE."""
    return list(dict.fromkeys([*case.probabilities, OTHER, UNGRADABLE]))


def validated_read(case: Case, label: Any, confidence: Any, comment: Any, boxes: Any) -> dict[str, Any]:
    """The columns of a read, checked; InvalidAnnotationError says what is wrong."""
    if isinstance(confidence, bool) or not isinstance(confidence, int) or confidence not in CONFIDENCES:
        raise InvalidAnnotationError("Confidence must be a whole number from 1 (a guess) to 5 (certain).")
    return {
        "label": validated_label(case, label),
        "confidence": confidence,
        "comment": validated_comment(comment),
        "boxes": validated_boxes(boxes),
    }


def validated_label(case: Case, label: Any) -> str:
    labels = labels_for(case)
    if not isinstance(label, str) or label not in labels:
        raise InvalidAnnotationError(f"Label {label!r} is not one of this case's labels: {', '.join(labels)}.")
    return label


def validated_comment(comment: Any) -> str | None:
    if comment is not None and not isinstance(comment, str):
        raise InvalidAnnotationError("The comment must be text.")
    comment = (comment or "").strip()
    if len(comment) > MAX_COMMENT_LENGTH:
        raise InvalidAnnotationError(f"The comment is longer than {MAX_COMMENT_LENGTH} characters.")
    return comment or None


def validated_boxes(boxes: Any) -> list[dict[str, float]]:
    """Boxes as {x, y, w, h} in pixels of the stored image: corner not negative, size positive, at most MAX_BOXES."""
    if isinstance(boxes, str | bytes | Mapping) or not isinstance(boxes, Sequence):
        raise InvalidAnnotationError("Boxes must be a list of {x, y, w, h} objects.")
    if len(boxes) > MAX_BOXES:
        raise InvalidAnnotationError(f"A read may mark at most {MAX_BOXES} boxes; this one has {len(boxes)}.")
    return [checked_box(number, box) for number, box in enumerate(boxes, start=1)]


def checked_box(number: int, box: Any) -> dict[str, float]:
    if not isinstance(box, Mapping) or set(box) != {"x", "y", "w", "h"}:
        raise InvalidAnnotationError(f"Box {number} must have exactly the fields x, y, w and h.")
    values = {key: box[key] for key in ("x", "y", "w", "h")}
    if any(isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) for v in values.values()):
        raise InvalidAnnotationError(f"Box {number}: x, y, w and h must be finite numbers (pixels).")
    if values["x"] < 0 or values["y"] < 0:
        raise InvalidAnnotationError(f"Box {number} starts outside the image (x and y must not be negative).")
    if values["w"] <= 0 or values["h"] <= 0:
        raise InvalidAnnotationError(f"Box {number} has no area (w and h must be positive).")
    return {key: float(value) for key, value in values.items()}


# --- reads -----------------------------------------------------------------------------------------------------------


def submit(
    session: Session, policy: QueuePolicy, annotator_id: str, case_id: str, read: Mapping[str, Any], now: datetime
) -> AnnotationRow:
    """Record a read under the annotator's claim, close the claim, and settle the case once its reads are in."""
    item = item_for_update(session, case_id)
    _require_not_final(item)
    if _current_read_of(session, case_id, annotator_id) is not None:
        raise AlreadyReadError("You have already read this case; correct your read instead of reading it again.")
    claim = live_claim(session, annotator_id, case_id, now)
    case = _case(session, case_id)
    row = AnnotationRow(
        case_id=case_id,
        item_id=item.id,
        annotator_id=annotator_id,
        **validated_read(case, **read),
        claim_id=claim.id,
        claimed_at=claim.claimed_at,
        created_at=now,
    )
    session.add(row)
    claim.state, claim.ended_at = SUBMITTED, now
    session.flush()
    _settle(session, policy, item, case, now)
    return row


def correct(
    session: Session, annotation_id: str, annotator_id: str, read: Mapping[str, Any], now: datetime
) -> AnnotationRow:
    """A new version of the annotator's latest read of a case that is not final yet; the old one stays."""
    old = session.get(AnnotationRow, annotation_id)
    if old is None:
        raise AnnotationNotFoundError(f"No annotation with id {annotation_id}.")
    if old.annotator_id != annotator_id:
        raise NotYourAnnotationError("Only the annotator who made a read may correct it.")
    item = item_for_update(session, old.case_id)
    _require_not_final(item)
    if session.scalar(select(AnnotationRow.id).where(AnnotationRow.supersedes_id == old.id)) is not None:
        raise AnnotationSupersededError("That read has been corrected already: correct its latest version.")
    row = AnnotationRow(
        case_id=old.case_id,
        item_id=old.item_id,
        annotator_id=annotator_id,
        **validated_read(_case(session, old.case_id), **read),
        created_at=now,
        supersedes_id=old.id,
    )
    session.add(row)
    session.flush()
    return row


def adjudicate(
    session: Session,
    policy: QueuePolicy,
    case_id: str,
    adjudicator_id: str,
    label: Any,
    comment: Any,
    now: datetime,
) -> FinalLabelRow:
    item = item_for_update(session, case_id)
    _require_not_final(item)
    reads = current_reads(session, case_id)
    if item.state != ADJUDICATION:
        raise NotReadyForAdjudicationError(
            f"This case has {len(reads)} of {policy.reads_per_case} reads and no disagreement: nothing to adjudicate."
        )
    readers = [read.annotator_id for read in reads]
    if adjudicator_id in readers:
        raise AlreadyReadError("You read this case yourself: a disagreement is settled by a third expert.")
    case = _case(session, case_id)
    return _finalize(
        session,
        policy,
        item,
        case,
        label=validated_label(case, label),
        source=ADJUDICATION_SOURCE,
        annotators=[*readers, adjudicator_id],
        adjudicator=adjudicator_id,
        comment=validated_comment(comment),
        now=now,
    )


def current_reads(session: Session, case_id: str) -> list[AnnotationRow]:
    """The latest version of each annotator's read of the case, first read first."""
    query = select(AnnotationRow).where(AnnotationRow.case_id == case_id, is_current_read())
    return sorted(session.scalars(query), key=lambda row: (_first_read_at(session, row), row.id))


def _first_read_at(session: Session, row: AnnotationRow) -> datetime:
    """When the chain of corrections `row` ends started: a corrected read keeps its place in the reading order."""
    while row.supersedes_id is not None:
        previous = session.get(AnnotationRow, row.supersedes_id)
        assert previous is not None  # a foreign key
        row = previous
    return row.created_at


def _settle(session: Session, policy: QueuePolicy, item: QueueItemRow, case: Case, now: datetime) -> None:
    reads = current_reads(session, item.case_id)
    if item.state != OPEN or len(reads) < policy.reads_per_case:
        return
    labels = {read.label for read in reads}
    if len(labels) > 1:
        item.state = ADJUDICATION
        return
    readers = [read.annotator_id for read in reads]
    _finalize(session, policy, item, case, labels.pop(), AGREEMENT, readers, None, None, now)


def _finalize(
    session: Session,
    policy: QueuePolicy,
    item: QueueItemRow,
    case: Case,
    label: str,
    source: str,
    annotators: list[str],
    adjudicator: str | None,
    comment: str | None,
    now: datetime,
) -> FinalLabelRow:
    patient_key = case.patient_id_hash or case.id
    known = session.scalar(select(FinalLabelRow.split).where(FinalLabelRow.patient_key == patient_key).limit(1))
    final = FinalLabelRow(
        case_id=case.id,
        item_id=item.id,
        label=label,
        split=known or holdout_split(patient_key, policy.expert_holdout_fraction),
        patient_key=patient_key,
        source=source,
        annotators=annotators,
        adjudicator_id=adjudicator,
        comment=comment,
        model_version=case.model_version,
        prediction=case.prediction,
        finalized_at=now,
    )
    session.add(final)
    item.state, item.updated_at = FINAL, now
    session.flush()
    return final


def holdout_split(patient_key: str, fraction: float) -> str:
    """VAL for a share `fraction` of patients, the same answer for the same patient on every machine and run."""
    digest = hashlib.sha256(f"cxr-expert-holdout:{patient_key}".encode()).digest()
    return VAL if int.from_bytes(digest[:8], "big") / 2**64 < fraction else TRAIN


def _current_read_of(session: Session, case_id: str, annotator_id: str) -> AnnotationRow | None:
    query = select(AnnotationRow).where(
        AnnotationRow.case_id == case_id, AnnotationRow.annotator_id == annotator_id, is_current_read()
    )
    return session.scalar(query)


def _require_not_final(item: QueueItemRow) -> None:
    if item.state == FINAL:
        raise CaseAlreadyFinalError("This case has its final label already; it does not change afterwards.")


def _case(session: Session, case_id: str) -> Case:
    case = session.get(Case, case_id)
    assert case is not None  # a queue item's foreign key
    return case


# --- what a viewer may see --------------------------------------------------------------------------------------------


def visible_annotations(session: Session, case_id: str, viewer_id: str | None) -> list[Annotation]:
    """The reads of the case `viewer_id` may see (see the module docstring), oldest first, corrections and
    superseded reads included, then the adjudication. `viewer_id=None`: someone who never reads blind (a clinician,
    an audit): everything."""
    item = session.scalar(select(QueueItemRow).where(QueueItemRow.case_id == case_id))
    if item is None:
        return []
    rows = session.scalars(
        select(AnnotationRow).where(AnnotationRow.case_id == case_id).order_by(AnnotationRow.created_at)
    ).all()
    readers = {row.annotator_id for row in rows}
    sees_all = viewer_id is None or item.state == FINAL or (item.state == ADJUDICATION and viewer_id not in readers)
    replaced = {row.supersedes_id for row in rows if row.supersedes_id}
    visible = [annotation_record(row, row.id in replaced) for row in rows if sees_all or row.annotator_id == viewer_id]
    final = session.get(FinalLabelRow, case_id)
    if sees_all and final is not None and final.adjudicator_id is not None:
        visible.append(adjudication_record(final))
    return visible


def annotation_record(row: AnnotationRow, superseded: bool) -> Annotation:
    seconds = (row.created_at - row.claimed_at).total_seconds() if row.claimed_at else None
    return Annotation(
        id=row.id,
        case_id=row.case_id,
        annotator=row.annotator_id,
        kind="read",
        label=row.label,
        confidence=row.confidence,
        comment=row.comment,
        boxes=tuple(dict(box) for box in row.boxes),
        created_at=row.created_at,
        seconds=seconds,
        supersedes=row.supersedes_id,
        superseded=superseded,
    )


def adjudication_record(final: FinalLabelRow) -> Annotation:
    assert final.adjudicator_id is not None
    return Annotation(
        id=f"adjudication-{final.case_id}",
        case_id=final.case_id,
        annotator=final.adjudicator_id,
        kind="adjudication",
        label=final.label,
        confidence=None,
        comment=final.comment,
        boxes=(),
        created_at=final.finalized_at,
        seconds=None,
    )


# --- final labels -----------------------------------------------------------------------------------------------------


def final_labels(session: Session, since: datetime | None, split: str | None) -> list[FinalLabel]:
    if split is not None and split not in (TRAIN, VAL):
        raise InvalidAnnotationError(f"Unknown split {split!r}; choose {TRAIN} or {VAL}.")
    query = select(FinalLabelRow).order_by(FinalLabelRow.finalized_at, FinalLabelRow.case_id)
    if since is not None:
        query = query.where(FinalLabelRow.finalized_at > since)
    if split is not None:
        query = query.where(FinalLabelRow.split == split)
    return [final_record(row) for row in session.scalars(query)]


def count_final_labels(session: Session, since: datetime | None) -> int:
    query = select(func.count()).select_from(FinalLabelRow)
    if since is not None:
        query = query.where(FinalLabelRow.finalized_at > since)
    return int(session.scalar(query) or 0)


def final_record(row: FinalLabelRow) -> FinalLabel:
    return FinalLabel(
        case_id=row.case_id,
        label=row.label,
        split=row.split,
        patient_key=row.patient_key,
        source=row.source,
        annotators=tuple(row.annotators),
        finalized_at=row.finalized_at,
        model_version=row.model_version,
        prediction=row.prediction,
        adjudicator=row.adjudicator_id,
    )
