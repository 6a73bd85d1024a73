"""Expert reviews of a case's nodule marks, inside a write transaction the caller (active_learning/loop.py) holds.

A clinician who sees the model's nodule finding gives each of the model's marks a verdict (confirmed or rejected),
may add boxes the model missed, and states the finding (NODULE or NO_NODULE). Rules:
- A review judges the whole film: every mark of the model gets exactly one verdict, so the boxes it leaves (confirmed
  and added) are all the nodules the reviewer sees, and an unanswered mark never passes for a rejected one.
- A confirmed or rejected mark is the model's own box sent back: x, y, w and h each within MARK_MATCH_PX of it (the
  model's marks are rounded to 0.1 px in the case's JSON, and a viewer may round again).
- Boxes lie on the stored image (its width and height, from the study metadata), within EDGE_TOLERANCE_PX.
- Reviews are never changed; a second review of a case is a new row. The newest one is the case's nodule label.
- A review that rejects a mark, adds one or finds otherwise than the model sends the case to the experts' queue
  (reason nodule_disagreement): one of the two is wrong, and that is the film worth reading again and learning from.
- Its split is the patient's held-back split (active_learning/annotations.py): the one a final label or an earlier
  review of the patient already has, else the patient's hash.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

import active_learning.queue as queue
from active_learning.annotations import MAX_BOXES, checked_box, holdout_split, validated_comment
from active_learning.errors import InvalidAnnotationError, NoNoduleFindingError
from active_learning.models import FinalLabelRow, NoduleReviewRow
from active_learning.records import (
    ADDED,
    CONFIRMED,
    NO_NODULE,
    NODULE,
    REJECTED,
    NoduleMark,
    NoduleReview,
    QueuePolicy,
    ReviewReason,
)
from storage import Case, CaseNotFoundError

VERDICTS = (CONFIRMED, REJECTED, ADDED)
FINDINGS = (NODULE, NO_NODULE)
MARK_MATCH_PX = 1.0
EDGE_TOLERANCE_PX = 1.0
NO_FINDING = (
    "This case has no nodule finding (no nodule model was served when it was analysed): there are no marks to review."
)


def review(
    session: Session,
    policy: QueuePolicy,
    case_id: str,
    reviewer: tuple[str, str],
    body: Mapping[str, Any],
    now: datetime,
) -> NoduleReviewRow:
    """Store a review of the case's nodule marks by `reviewer` (id, role); queue the case when it disagrees."""
    case = session.get(Case, case_id)
    if case is None:
        raise CaseNotFoundError(f"No case with id {case_id}.")
    finding = _model_finding(case)
    size = _image_size(case)
    marks = validated_marks(body.get("marks"), finding.get("locations") or [], size)
    label = validated_finding(body.get("finding"), marks)
    disagreement = disagreement_of(label, str(finding.get("label")), marks)
    patient_key = case.patient_id_hash or case.id
    row = NoduleReviewRow(
        case_id=case.id,
        reviewer_id=reviewer[0],
        reviewer_role=reviewer[1],
        finding=label,
        marks=marks,
        image_width=size[0],
        image_height=size[1],
        comment=validated_comment(body.get("comment")),
        model_label=str(finding.get("label")),
        model_probability=float(finding.get("probability") or 0.0),
        model_version=str(finding.get("model_version") or ""),
        disagreement=disagreement,
        queued=bool(disagreement),
        split=_patient_split(session, patient_key, policy.expert_holdout_fraction),
        patient_key=patient_key,
        created_at=now,
    )
    session.add(row)
    if disagreement:
        queue.enqueue(session, case.id, ReviewReason.NODULE_DISAGREEMENT, reviewer[0], None, now)
    session.flush()
    return row


def reviews_of(session: Session, case_id: str) -> list[NoduleReview]:
    """The case's reviews, newest first."""
    if session.get(Case, case_id) is None:
        raise CaseNotFoundError(f"No case with id {case_id}.")
    query = select(NoduleReviewRow).where(NoduleReviewRow.case_id == case_id)
    rows = session.scalars(query.order_by(NoduleReviewRow.created_at.desc(), NoduleReviewRow.id.desc()))
    return [review_record(row) for row in rows]


def latest_reviews(session: Session) -> list[NoduleReview]:
    """Each reviewed case's newest review (its nodule label), oldest case label first."""
    newest: dict[str, NoduleReviewRow] = {}
    for row in session.scalars(select(NoduleReviewRow).order_by(NoduleReviewRow.created_at, NoduleReviewRow.id)):
        newest[row.case_id] = row
    return [review_record(row) for row in sorted(newest.values(), key=lambda row: (row.created_at, row.id))]


def review_record(row: NoduleReviewRow) -> NoduleReview:
    return NoduleReview(
        id=row.id,
        case_id=row.case_id,
        finding=row.finding,
        marks=tuple(NoduleMark(**mark) for mark in row.marks),
        image_size=(row.image_width, row.image_height),
        comment=row.comment,
        reviewer=row.reviewer_id,
        reviewer_role=row.reviewer_role,
        created_at=row.created_at,
        model_label=row.model_label,
        model_probability=row.model_probability,
        model_version=row.model_version,
        disagreement=tuple(row.disagreement),
        queued=row.queued,
        split=row.split,
        patient_key=row.patient_key,
    )


# --- what a review may say -------------------------------------------------------------------------------------------


def validated_marks(
    marks: Any, model_marks: Sequence[Mapping[str, Any]], size: tuple[float, float]
) -> list[dict[str, Any]]:
    """The review's marks as stored ({x, y, w, h, verdict, score}); InvalidAnnotationError says what is wrong."""
    if isinstance(marks, str | bytes | Mapping) or not isinstance(marks, Sequence):
        raise InvalidAnnotationError("Marks must be a list of {x, y, w, h, verdict} objects.")
    if len(marks) > MAX_BOXES:
        raise InvalidAnnotationError(f"A review may hold at most {MAX_BOXES} marks; this one has {len(marks)}.")
    answered: dict[int, int] = {}  # index of the model's mark -> number of the review's mark that answers it
    checked = []
    for number, mark in enumerate(marks, start=1):
        box, verdict = _mark(number, mark, size)
        score = None
        if verdict != ADDED:
            index = _model_mark(number, box, model_marks)
            if index in answered:
                raise InvalidAnnotationError(
                    f"Marks {answered[index]} and {number} both answer the model's mark {index + 1}: "
                    "give each mark one verdict."
                )
            answered[index] = number
            box = {key: float(model_marks[index][key]) for key in box}  # the model's own box, not a rounded copy
            score = float(model_marks[index].get("score", 0.0))
        checked.append({**box, "verdict": verdict, "score": score})
    unanswered = [index + 1 for index in range(len(model_marks)) if index not in answered]
    if unanswered:
        raise InvalidAnnotationError(
            f"The model's mark(s) {', '.join(map(str, unanswered))} have no verdict: confirm or reject each of the "
            f"model's {len(model_marks)} mark(s)."
        )
    return checked


def _mark(number: int, mark: Any, size: tuple[float, float]) -> tuple[dict[str, float], str]:
    if not isinstance(mark, Mapping) or "verdict" not in mark:
        raise InvalidAnnotationError(f"Mark {number} must have x, y, w, h and a verdict.")
    verdict = mark["verdict"]
    if verdict not in VERDICTS:
        raise InvalidAnnotationError(f"Mark {number}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}.")
    box = checked_box(number, {key: mark.get(key) for key in ("x", "y", "w", "h")})
    width, height = size
    if box["x"] + box["w"] > width + EDGE_TOLERANCE_PX or box["y"] + box["h"] > height + EDGE_TOLERANCE_PX:
        raise InvalidAnnotationError(
            f"Box {number} reaches outside the image ({width:g} x {height:g} pixels): x + w must not exceed the "
            "width, y + h the height."
        )
    return box, verdict


def _model_mark(number: int, box: Mapping[str, float], model_marks: Sequence[Mapping[str, Any]]) -> int:
    for index, model in enumerate(model_marks):
        if all(abs(box[key] - float(model[key])) <= MARK_MATCH_PX for key in ("x", "y", "w", "h")):
            return index
    raise InvalidAnnotationError(
        f"Mark {number} is not one of the model's marks: send a model mark back as received to confirm or reject it, "
        "or give a new box the verdict 'added'."
    )


def validated_finding(finding: Any, marks: Sequence[Mapping[str, Any]]) -> str:
    if finding not in FINDINGS:
        raise InvalidAnnotationError(f"Finding {finding!r} is not one of {', '.join(FINDINGS)}.")
    if finding == NO_NODULE and any(mark["verdict"] != REJECTED for mark in marks):
        raise InvalidAnnotationError(
            "A review that finds no nodule cannot confirm or add a mark: reject the model's marks instead."
        )
    return str(finding)


def disagreement_of(finding: str, model_label: str, marks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Where the review and the model part ways: the finding, a rejected mark, an added box (in that order).

    A mark the model drew on a film it called negative is a candidate below its image threshold: rejecting it agrees
    with the model, so only a positive call's rejected marks count (else every agreeing negative would be queued)."""
    verdicts = {mark["verdict"] for mark in marks}
    parts = [
        ("finding", finding != model_label),
        ("rejected_mark", REJECTED in verdicts and model_label == NODULE),
        ("added_box", ADDED in verdicts),
    ]
    return [name for name, applies in parts if applies]


# --- the case ------------------------------------------------------------------------------------------------------


def _model_finding(case: Case) -> dict[str, Any]:
    if not case.nodule:
        raise NoNoduleFindingError(NO_FINDING)
    return dict(case.nodule)


def _image_size(case: Case) -> tuple[float, float]:
    """Width and height of the stored image, the frame of every box."""
    study = case.study_metadata or {}
    size = (study.get("width"), study.get("height"))
    if not all(isinstance(side, int | float) and math.isfinite(side) and side > 0 for side in size):
        raise NoNoduleFindingError("The stored image's size is unknown for this case, so its marks cannot be checked.")
    return float(size[0]), float(size[1])


def _patient_split(session: Session, patient_key: str, fraction: float) -> str:
    """The split the patient already has (a final label or an earlier review), else the patient's hash."""
    for table in (FinalLabelRow, NoduleReviewRow):
        known = session.scalar(select(table.split).where(table.patient_key == patient_key).limit(1))
        if known is not None:
            return known
    return holdout_split(patient_key, fraction)
