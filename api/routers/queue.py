"""The experts' work list: `/v1/queue` (list, send a case) and claims on its cases (`POST /v1/queue/claim`, renew,
release). A claim is a lock on one case for one reader until it expires (CLAIM_TTL_S), so two experts never make
the same read at once (access: api/permissions.py)."""

from __future__ import annotations

from fastapi import APIRouter, Query, status
from fastapi.responses import Response

from active_learning import Claim
from api.analysis import case_out
from api.auth import CurrentUser
from api.learning import audit, reading_case, send_for_review
from api.schemas import ClaimOut, QueueIn, QueueItemOut, QueuePageOut, Role
from api.services import Services, ServicesDep

router = APIRouter(prefix="/v1/queue", tags=["annotation queue"])


@router.get("", response_model=QueuePageOut, summary="Cases waiting for expert reads, in the strategy's order")
def list_queue(
    services: ServicesDep,
    state: str | None = Query(None, pattern="^(open|adjudication|final)$", description="open | adjudication | final"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> QueuePageOut:
    page = services.learning.list_queue(state=state, limit=limit, offset=offset)
    items = [QueueItemOut.model_validate(item) for item in page.items]
    return QueuePageOut(items=items, total=page.total, strategy=services.settings.active_learning_strategy)


@router.post("", response_model=QueueItemOut, status_code=status.HTTP_201_CREATED, summary="Send a case for review")
def send_case(body: QueueIn, services: ServicesDep, user: CurrentUser) -> QueueItemOut:
    send_for_review(services, body.case_id, body.reason, user)
    return QueueItemOut.model_validate(services.learning.queue_item(body.case_id))


@router.post(
    "/claim",
    response_model=ClaimOut,
    summary="Claim the next case to read (204: nothing left for you)",
    responses={204: {"description": "No case is waiting for a read by this annotator"}},
)
def claim_next(services: ServicesDep, user: CurrentUser) -> ClaimOut | Response:
    claim = services.learning.claim_next(user.username)
    if claim is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    audit(services, user, "queue.claim", claim.case_id, {"claim_id": claim.id})
    return claim_out(services, claim, user)


@router.post("/claims/{claim_id}/renew", response_model=ClaimOut, summary="Keep the claim while still reading")
def renew_claim(claim_id: str, services: ServicesDep, user: CurrentUser) -> ClaimOut:
    return claim_out(services, services.learning.renew(claim_id, user.username), user)


@router.post("/claims/{claim_id}/release", status_code=status.HTTP_204_NO_CONTENT, summary="Give the case back")
def release_claim(claim_id: str, services: ServicesDep, user: CurrentUser) -> Response:
    services.learning.release(claim_id, user.username)
    audit(services, user, "queue.release", None, {"claim_id": claim_id})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def claim_out(services: Services, claim: Claim, user: CurrentUser) -> ClaimOut:
    show_ai = services.settings.show_ai_to_annotators
    case = case_out(services.get_case(claim.case_id), Role.ANNOTATOR)  # a reading never shows identity, to anyone
    return ClaimOut(
        case_id=claim.case_id,
        claim_id=claim.id,
        expires_at=claim.expires_at,
        claimed_at=claim.claimed_at,
        labels=services.learning.labels_for(claim.case_id),
        show_ai=show_ai,
        case=reading_case(case, show_ai),
    )
