"""Retraining jobs, for admins: `POST /v1/retraining` (start one now), `GET /v1/retraining` (all, newest first) and
`GET /v1/retraining/{job_id}` (its progress until promoted, rejected with the reason, or failed with the error).
Jobs also start by themselves once RETRAIN_MIN_NEW_LABELS new final expert labels exist (api/retraining.py)."""

from __future__ import annotations

from fastapi import APIRouter, Query, status

from api.auth import CurrentUser
from api.learning import audit
from api.schemas import RetrainingIn, RetrainingJobOut, RetrainingPageOut
from api.services import ServicesDep

router = APIRouter(prefix="/v1/retraining", tags=["retraining"])


@router.post("", response_model=RetrainingJobOut, status_code=status.HTTP_202_ACCEPTED, summary="Start a retraining")
def start_retraining(body: RetrainingIn, services: ServicesDep, user: CurrentUser) -> RetrainingJobOut:
    job = services.retraining_jobs.start("admin", requested_by=user.username, note=body.reason)
    audit(services, user, "retraining.start", None, {"job_id": job.id, "reason": body.reason})
    services.wake_retraining()
    return RetrainingJobOut.model_validate(job.to_dict())


@router.get("", response_model=RetrainingPageOut, summary="Retraining jobs, newest first")
def list_jobs(
    services: ServicesDep, limit: int = Query(20, ge=1, le=200), offset: int = Query(0, ge=0)
) -> RetrainingPageOut:
    page = services.retraining_jobs.list(limit=limit, offset=offset)
    jobs = [RetrainingJobOut.model_validate(job.to_dict()) for job in page.jobs]
    return RetrainingPageOut(jobs=jobs, total=page.total)


@router.get("/{job_id}", response_model=RetrainingJobOut, summary="One job's state and progress")
def job_status(job_id: str, services: ServicesDep) -> RetrainingJobOut:
    return RetrainingJobOut.model_validate(services.retraining_jobs.get(job_id).to_dict())
