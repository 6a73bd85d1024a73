"""The result for the hospital's systems: `GET /v1/cases/{case_id}/dicom?kind=sr|pdf|sc` (application/dicom) and
`GET /v1/cases/{case_id}/fhir` (a FHIR R4 Bundle holding the DiagnosticReport, application/fhir+json)."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.exports import Export, dicom_export, fhir_export
from api.services import ServicesDep
from interop import FHIR_MEDIA_TYPE, DicomKind

router = APIRouter(prefix="/v1", tags=["interoperability"])
DICOM_MEDIA_TYPE = "application/dicom"


def _download(export: Export, media_type: str) -> Response:
    headers = {
        "Content-Disposition": f'attachment; filename="{export.filename}"',
        "X-Model-Version": export.model_version,
        "Cache-Control": "no-store",  # names the patient
    }
    return Response(export.content, media_type=media_type, headers=headers)


@router.get(
    "/cases/{case_id}/dicom",
    response_class=Response,
    responses={200: {"content": {DICOM_MEDIA_TYPE: {}}, "description": "A DICOM Part 10 file in the source study"}},
    summary="The result as DICOM: structured report, radiologist PDF (Encapsulated PDF) or heatmap (Secondary Capture)",
)
async def case_dicom(
    case_id: str,
    services: ServicesDep,
    kind: DicomKind = Query("sr", description="sr: structured report | pdf: radiologist PDF | sc: heatmap overlay"),
) -> Response:
    return _download(await run_in_threadpool(dicom_export, services, case_id, kind), DICOM_MEDIA_TYPE)


@router.get(
    "/cases/{case_id}/fhir",
    response_class=Response,
    responses={200: {"content": {FHIR_MEDIA_TYPE: {}}, "description": "FHIR R4 Bundle with the DiagnosticReport"}},
    summary="The result as an HL7 FHIR R4 DiagnosticReport with its Observation (in a Bundle)",
)
async def case_fhir(case_id: str, services: ServicesDep) -> Response:
    return _download(await run_in_threadpool(fhir_export, services, case_id), FHIR_MEDIA_TYPE)
