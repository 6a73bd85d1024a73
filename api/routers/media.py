"""Images for display: `GET /v1/cases/{case_id}/image` and `POST /v1/dicom/inspect` (preview + tags for the form)."""

from __future__ import annotations

import base64

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.schemas import InspectOut
from api.services import Services, ServicesDep
from api.uploads import read_upload
from imaging import to_display_png

router = APIRouter(prefix="/v1", tags=["images"])
PNG_RESPONSE = {200: {"content": {"image/png": {}}, "description": "PNG image"}}


def _inspect(services: Services, data: bytes, max_side: int) -> InspectOut:
    upload_id, decoded = services.media.decode_upload(data)
    return InspectOut(
        upload_id=upload_id,
        format=decoded.format,
        width=decoded.width,
        height=decoded.height,
        metadata=decoded.metadata,
        preview_png_base64=base64.b64encode(to_display_png(decoded.pixels, max_side)).decode(),
    )


@router.post("/dicom/inspect", response_model=InspectOut, summary="Decode an upload: tags and a windowed preview")
async def inspect_upload(
    services: ServicesDep, file: UploadFile = File(...), max_side: int = Query(512, ge=64, le=2048)
) -> InspectOut:
    data = await read_upload(file, services.settings.max_upload_bytes)
    return await run_in_threadpool(_inspect, services, data, max_side)


def _case_png(services: Services, case_id: str, max_side: int) -> bytes:
    return to_display_png(services.media.pixels(services.get_case(case_id), detail=max_side), max_side)


@router.get(
    "/cases/{case_id}/image",
    response_class=Response,
    responses=PNG_RESPONSE,
    summary="The case's radiograph as displayed (PNG)",
)
async def case_image(case_id: str, services: ServicesDep, max_side: int = Query(1024, ge=64, le=4096)) -> Response:
    png = await run_in_threadpool(_case_png, services, case_id, max_side)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
