"""Documents and sign-off: `GET /v1/cases/{case_id}/report?kind=...` (PDF), `POST /v1/cases/{case_id}/sign`,
`POST /v1/cases/{case_id}/review` (send for expert review)."""

from __future__ import annotations

from fastapi import APIRouter, Query, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.analysis import case_out, report_context
from api.auth import CurrentUser
from api.errors import ApiError
from api.learning import note_disagreement, send_for_review
from api.report_cases import report_case
from api.schemas import CaseOut, ReviewIn, SignIn
from api.services import Services, ServicesDep
from reports import ReportKind, render_report, report_filename

router = APIRouter(prefix="/v1", tags=["reports"])


def _render(services: Services, case_id: str, kind: ReportKind) -> Response:
    case = report_case(services, services.get_case(case_id))
    pdf = render_report(kind, case, report_context(services.settings))
    headers = {
        "Content-Disposition": f'attachment; filename="{report_filename(kind, case)}"',
        "X-Report-Id": case.report_id,
        "X-Model-Version": case.model.version,  # the audit record of the download carries it (api/observability.py)
        "Cache-Control": "no-store",
    }
    return Response(pdf, media_type="application/pdf", headers=headers)


@router.get(
    "/cases/{case_id}/report",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "The PDF report"}},
    summary="PDF report for the radiologist, the referring clinician or the patient",
)
async def case_report(
    case_id: str,
    services: ServicesDep,
    kind: ReportKind = Query("radiologist", description="radiologist | clinical | patient"),
) -> Response:
    return await run_in_threadpool(_render, services, case_id, kind)


@router.post("/cases/{case_id}/sign", response_model=CaseOut, summary="Radiologist sign-off; the case is then final")
def sign_case(case_id: str, services: ServicesDep, user: CurrentUser, body: SignIn | None = None) -> CaseOut:
    """With the radiologist's own `finding`: one other than the model's sends the case to the experts' queue."""
    finding = body.finding if body else None
    record = services.get_case(case_id)
    if finding is not None and finding not in record.probabilities:
        known = ", ".join(record.probabilities)
        raise ApiError(status.HTTP_422_UNPROCESSABLE_CONTENT, f"finding must be one of the model's classes: {known}.")
    record = services.storage.cases.sign_case(case_id, user.username)
    note_disagreement(services, record, finding, user)
    return case_out(record, user.role)


@router.post("/cases/{case_id}/review", response_model=CaseOut, summary="Send the case for expert review")
def review_case(case_id: str, body: ReviewIn, services: ServicesDep, user: CurrentUser) -> CaseOut:
    """The same as `POST /v1/queue {case_id, reason}`, answered with the case."""
    return case_out(send_for_review(services, case_id, body.reason, user), user.role)
