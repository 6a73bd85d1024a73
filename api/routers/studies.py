"""Cases: `POST /v1/studies` (analyse and store a study), `GET /v1/cases`, `GET /v1/cases/{case_id}`."""

from __future__ import annotations

import json
from datetime import date

from fastapi import APIRouter, File, Form, Query, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from api.analysis import analyze_study, case_out
from api.auth import CurrentUser
from api.errors import ApiError
from api.json_limits import JsonLimits
from api.learning import require_ai_visible
from api.schemas import CaseOut, CasePageOut, PatientIn
from api.services import ServicesDep
from api.uploads import UPLOAD_ERRORS, read_upload
from storage import MAX_PAGE_SIZE

router = APIRouter(prefix="/v1", tags=["cases"])


def parse_patient(raw: str | None, limits: JsonLimits) -> PatientIn:
    if not raw:
        return PatientIn()
    limits.check(raw.encode("utf-8", "surrogatepass"), "The `patient` field")  # before json.loads recurses
    try:
        return PatientIn.model_validate(json.loads(raw))
    except json.JSONDecodeError:
        raise ApiError(status.HTTP_422_UNPROCESSABLE_CONTENT, "The `patient` field is not valid JSON.") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'patient'}: {e['msg']}" for e in exc.errors())
        raise ApiError(status.HTTP_422_UNPROCESSABLE_CONTENT, f"Invalid patient data: {problems}") from None


@router.post(
    "/studies",
    response_model=CaseOut,
    status_code=status.HTTP_201_CREATED,
    summary="Analyse a radiograph and store it as a case",
    responses={
        **UPLOAD_ERRORS,
        409: {"description": "The named upload is no longer held: send the file"},
        422: {"description": "Corrupt/unusable image, bad patient, or neither/both of file and upload_id"},
    },
)
async def create_study(
    services: ServicesDep,
    user: CurrentUser,
    file: UploadFile | None = File(default=None, description="PNG, JPEG, TIFF or DICOM chest radiograph"),
    upload_id: str | None = Form(
        default=None,
        pattern="^[0-9a-fA-F]{64}$",
        description="Instead of `file`: the upload_id that POST /v1/dicom/inspect returned for the same file",
    ),
    patient: str | None = Form(
        default=None,
        description='JSON {"patient_id", "name", "age", "sex", "birth_date", "clinical_history"}; DICOM tags fill gaps',
        examples=['{"patient_id": "MRN-0042", "name": "Jane Doe", "age": 4, "sex": "F"}'],
    ),
) -> CaseOut:
    patient_in = parse_patient(patient, JsonLimits.from_settings(services.settings))
    if (file is None) == (upload_id is None):
        raise ApiError(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            "Send either the image `file` or the `upload_id` of an inspected one.",
        )
    upload = upload_id or await read_upload(file, services.settings.max_upload_bytes)
    return await run_in_threadpool(analyze_study, services, upload, patient_in, user)


@router.get("/cases", response_model=CasePageOut, summary="List cases, newest first, with filters")
def list_cases(
    services: ServicesDep,
    user: CurrentUser,
    limit: int = Query(50, ge=1, le=MAX_PAGE_SIZE),
    offset: int = Query(0, ge=0, le=1_000_000_000),
    # bounded: a larger one overflowed SQLite's integer (500)
    patient_id: str | None = Query(None, max_length=64),
    prediction: str | None = Query(None, max_length=64),
    date_from: date | None = Query(None, description="First day included (UTC)"),
    date_to: date | None = Query(None, description="Last day included (UTC)", le=date(9999, 12, 30)),
    # +1 day fits
    case_status: str | None = Query(None, alias="status"),
) -> CasePageOut:
    if date_from and date_to and date_from > date_to:
        raise ApiError(status.HTTP_422_UNPROCESSABLE_CONTENT, "date_from is after date_to.")
    page = services.storage.cases.list_cases(
        limit=limit,
        offset=offset,
        patient_id=patient_id,
        prediction=prediction,
        date_from=date_from,
        date_to=date_to,
        status=case_status,
    )
    items = [case_out(r, user.role) for r in page.items]
    return CasePageOut(items=items, total=page.total, limit=page.limit, offset=page.offset)


@router.get("/cases/{case_id}", response_model=CaseOut, summary="One case with its stored result")
def get_case(case_id: str, services: ServicesDep, user: CurrentUser) -> CaseOut:
    record = services.get_case(case_id)
    require_ai_visible(services, user, case_id)  # a blind reader gets the case's facts from their claim instead
    return case_out(record, user.role)
