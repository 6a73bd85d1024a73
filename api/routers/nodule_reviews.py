"""Expert reads of a case's nodule marks: `POST /v1/cases/{id}/nodule-review` (a verdict on each of the model's marks,
the boxes it missed and the finding; kept as an expert label, and a read that disagrees with the model queues the
case) and `GET /v1/cases/{id}/nodule-review` (the case's reads, newest first). Radiologists, seniors and admins;
annotators read queued cases through their claims (access: api/permissions.py). Blind double reading holds here
too: a senior who has yet to read a queued case gets neither its marks nor the reads of them (api/learning.py)."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.auth import CurrentUser
from api.learning import nodule_review_out, require_ai_visible, review_nodule_marks
from api.schemas import NoduleReviewIn, NoduleReviewOut, NoduleReviewsOut
from api.services import ServicesDep

router = APIRouter(prefix="/v1/cases", tags=["nodule reviews"])


@router.post(
    "/{case_id}/nodule-review",
    response_model=NoduleReviewOut,
    status_code=status.HTTP_201_CREATED,
    summary="Confirm, reject or add nodule marks and state the finding (an expert label)",
)
def review_nodules(case_id: str, body: NoduleReviewIn, services: ServicesDep, user: CurrentUser) -> NoduleReviewOut:
    require_ai_visible(services, user, case_id)  # a senior reading the queued case blind has not seen the marks
    return nodule_review_out(review_nodule_marks(services, case_id, body, user), user.role)


@router.get(
    "/{case_id}/nodule-review", response_model=NoduleReviewsOut, summary="The case's nodule reads, newest first"
)
def nodule_reviews(case_id: str, services: ServicesDep, user: CurrentUser) -> NoduleReviewsOut:
    require_ai_visible(services, user, case_id)  # the reads name the model's finding and marks
    reviews = services.learning.nodule_reviews(case_id)
    return NoduleReviewsOut(case_id=case_id, reviews=[nodule_review_out(review, user.role) for review in reviews])
