"""Grad-CAM heatmaps of a stored case: `GET /v1/cases/{case_id}/heatmap` (overlay PNG or raw 16-bit PNG).

A heatmap is computed once per (case, model version, method) and kept (api.case_media); later requests (other
opacities or colormaps) only re-blend it.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.auth import CurrentUser
from api.learning import require_ai_visible
from api.services import Services, ServicesDep
from inference import COLORMAPS, heatmap_from_png16, overlay_png

router = APIRouter(prefix="/v1", tags=["explainability"])
HeatmapMethod = Literal["gradcam", "gradcam++"]


def _heatmap_response(
    services: Services, case_id: str, method: str, output: str, alpha: float, colormap: str, max_side: int
) -> Response:
    record = services.get_case(case_id)
    predictor = services.predictor_for(record.task, record.model_version)  # the model that made the finding
    raw = services.media.heatmap(record, predictor, method)
    headers = {
        "X-Model-Version": predictor.version,
        "X-Heatmap-Method": method,
        "Cache-Control": "private, max-age=3600",
    }
    if output == "raw":
        return Response(raw, media_type="image/png", headers=headers)
    pixels = services.media.pixels(record)
    png = overlay_png(pixels, heatmap_from_png16(raw), opacity=alpha, colormap=colormap, max_side=max_side)
    return Response(png, media_type="image/png", headers=headers)


@router.get(
    "/cases/{case_id}/heatmap",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "Overlay PNG, or 16-bit heatmap with format=raw"}},
    summary="Where the model looked: Grad-CAM overlay on the radiograph",
)
async def case_heatmap(
    case_id: str,
    services: ServicesDep,
    user: CurrentUser,
    alpha: float = Query(0.4, ge=0.0, le=1.0, description="Opacity of the heatmap over the image"),
    colormap: str = Query("jet", description=f"One of: {', '.join(COLORMAPS)}"),
    method: HeatmapMethod = Query("gradcam"),
    output_format: Literal["png", "raw"] = Query(
        "png", alias="format", description="png: overlay; raw: 16-bit PNG heatmap (0..65535)"
    ),
    max_side: int = Query(1024, ge=64, le=4096),
) -> Response:
    await run_in_threadpool(require_ai_visible, services, user, case_id)  # blind double reading
    return await run_in_threadpool(
        _heatmap_response, services, case_id, method, output_format, alpha, colormap, max_side
    )
