"""The learning loop seen from the API: which cases go to the experts' queue, what an expert reader may see while
reading blind, and the expert labels the monitoring rules judge the model by.

Domain work is `active_learning`'s (queue, claims, reads, final labels); this module only decides, per request,
what to hand it and what the caller gets back.
"""

from __future__ import annotations

from fastapi import status

from active_learning import Annotation, LearningLoop, NoduleReview, ReviewReason
from api.auth import Principal
from api.errors import ApiError
from api.observability import actor_fields
from api.permissions import REVIEW_NOTE_CODE, sees_patient_identity
from api.schemas import AiFindingOut, CaseOut, NoduleReviewIn, NoduleReviewOut, ReadingCaseOut, Role
from api.services import Services
from monitoring import AuditEntry, LabelledPrediction
from storage import CaseRecord, CaseStatus

IMAGE_WARNING_CODES_EXCLUDED = frozenset({REVIEW_NOTE_CODE})  # notes about the case, not about the film
READING_STATES = frozenset({"open", "adjudication"})  # queue states in which expert reads are still being made


def doubtful_reason(record: CaseRecord) -> ReviewReason | None:
    """Why a freshly analysed case goes to the experts by itself: refused by the input gate, or uncertain
    (which includes films outside the validated scope); None when the model's answer stands."""
    if record.ood:
        return ReviewReason.OOD
    if record.uncertain:
        return ReviewReason.UNCERTAIN
    return None


def queue_if_doubtful(services: Services, record: CaseRecord) -> None:
    reason = doubtful_reason(record)
    if reason is not None:
        services.learning.enqueue(record.id, reason)


def send_for_review(services: Services, case_id: str, reason: str, user: Principal) -> CaseRecord:
    """A radiologist's "send for expert review": the case joins the queue with the reason (stored encrypted: it is
    free text and may name the patient), and the case's status says so."""
    record = services.get_case(case_id)
    notes = list(record.quality_warnings)
    if not any(note.get("code") == REVIEW_NOTE_CODE for note in notes):
        notes.append({"code": REVIEW_NOTE_CODE, "message": f"Sent for expert review by {user.username}."})
    updated = services.storage.cases.update_case(
        case_id, status=CaseStatus.QUEUED_FOR_REVIEW, quality_warnings=notes, review_reason=reason
    )
    services.learning.enqueue(case_id, ReviewReason.MANUAL, requested_by=user.username, note=reason)
    audit(services, user, "queue.add", case_id, {"reason": "manual"})
    return updated


def note_disagreement(services: Services, record: CaseRecord, finding: str | None, user: Principal) -> None:
    """Signing with a finding other than the model's sends the case to the experts: one of the two is wrong."""
    if finding is None or finding == record.prediction:
        return
    services.learning.enqueue(record.id, ReviewReason.DISAGREEMENT, requested_by=user.username)
    detail = {"reason": "disagreement", "ai": record.prediction, "signed": finding}
    audit(services, user, "queue.add", record.id, detail)


def reads_by(loop: LearningLoop, case_id: str, username: str) -> list[Annotation]:
    return [read for read in loop.annotations_for(case_id, viewer_id=username) if read.annotator == username]


def ai_hidden_from(services: Services, user: Principal, case_id: str) -> bool:
    """Blind double reading: an expert reader (annotator, senior) sees neither the model's answer nor its heatmap for
    a queued case until their own read of it is in, unless SHOW_AI_TO_ANNOTATORS. Clinical roles always see it."""
    if sees_patient_identity(user.role) or services.settings.show_ai_to_annotators:
        return False
    if services.learning.queue_state(case_id) not in READING_STATES:
        return False
    return not reads_by(services.learning, case_id, user.username)


def require_ai_visible(services: Services, user: Principal, case_id: str) -> None:
    if ai_hidden_from(services, user, case_id):
        raise ApiError(
            status.HTTP_403_FORBIDDEN,
            "Blind double reading: the model's answer on this case is shown once your own read is in "
            "(SHOW_AI_TO_ANNOTATORS).",
        )


def reading_case(case: CaseOut, show_ai: bool) -> ReadingCaseOut:
    """A claimed case (already redacted: `case_out(record, Role.ANNOTATOR)`) as an expert reader gets it: the film's
    facts, the AI answer only when not blind."""
    warnings = [note for note in case.quality_warnings if note.get("code") not in IMAGE_WARNING_CODES_EXCLUDED]
    return ReadingCaseOut(
        case_id=case.case_id,
        task=case.task,
        age=case.patient.age,
        sex=case.patient.sex,
        study=case.study,
        image_warnings=warnings,
        ai=AiFindingOut.model_validate(case) if show_ai else None,
    )


def review_nodule_marks(services: Services, case_id: str, body: NoduleReviewIn, user: Principal) -> NoduleReview:
    """A clinician's read of the case's nodule marks, kept as an expert label; a read that disagrees with the model
    (a rejected mark, an added box, another finding) also sends the case to the experts' queue."""
    marks = [mark.model_dump() for mark in body.marks]
    review = services.learning.review_nodules(
        case_id, user.username, str(user.role), finding=body.finding, marks=marks, comment=body.comment
    )
    detail = {"finding": review.finding, "disagreement": list(review.disagreement)}
    audit(services, user, "nodule.review", case_id, detail)
    if review.queued:
        audit(services, user, "queue.add", case_id, {"reason": ReviewReason.NODULE_DISAGREEMENT.value})
    return review


def nodule_review_out(review: NoduleReview, role: Role | str) -> NoduleReviewOut:
    """The review as `role` may see it: the comment is free text and may name the patient, so only roles that see
    the patient's identity get it."""
    out = NoduleReviewOut.model_validate(review)
    return out if sees_patient_identity(role) else out.model_copy(update={"comment": None})


def expert_feedback(services: Services, limit: int = 500) -> list[LabelledPrediction]:
    """The most recent final expert labels beside the model's answer: what the accuracy alert rule reads."""
    return [
        LabelledPrediction(predicted=predicted, expert=expert)
        for predicted, expert in services.learning.expert_feedback(limit)
    ]


def audit(services: Services, user: Principal, action: str, case_id: str | None, detail: dict) -> None:
    services.audit.record(AuditEntry(action, case_id=case_id, detail=detail, **actor_fields(user)))
