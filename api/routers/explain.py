"""Grad-CAM heatmaps of a stored case: `GET /v1/cases/{case_id}/heatmap` (overlay PNG or raw 16-bit PNG).

A heatmap is computed once per (case, model version, method) and kept in the artifact store; later requests
(other opacities or colormaps) only re-blend it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from api.services import Services, get_services
from imaging import decode_image
from inference import COLORMAPS, heatmap_from_png16, heatmap_to_png16, overlay_png
from storage import CaseRecord, safe_artifact_name

router = APIRouter(prefix="/v1", tags=["explainability"])
HeatmapMethod = Literal["gradcam", "gradcam++"]


def stored_heatmap(services: Services, record: CaseRecord, pixels: np.ndarray, method: str) -> tuple[bytes, str]:
    """Raw 16-bit PNG heatmap for the case's predicted class, computing and storing it on first use."""
    predictor = services.predictor(record.task)
    name = safe_artifact_name("heatmap", method, predictor.version) + ".png"
    raw = services.storage.artifacts.get(record.id, name)
    if raw is None:
        target = record.prediction if record.prediction in predictor.checkpoint.class_names else None
        raw = heatmap_to_png16(predictor.heatmap(pixels, method=method, target_class=target).values)
        services.storage.artifacts.put(record.id, name, raw)
    return raw, predictor.version


def _heatmap_response(
    services: Services, case_id: str, method: str, output: str, alpha: float, colormap: str, max_side: int
) -> Response:
    record = services.get_case(case_id)
    pixels = decode_image(services.storage.images.get(record.image_sha256)).pixels
    raw, version = stored_heatmap(services, record, pixels, method)
    headers = {"X-Model-Version": version, "X-Heatmap-Method": method, "Cache-Control": "private, max-age=3600"}
    if output == "raw":
        return Response(raw, media_type="image/png", headers=headers)
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
    alpha: float = Query(0.4, ge=0.0, le=1.0, description="Opacity of the heatmap over the image"),
    colormap: str = Query("jet", description=f"One of: {', '.join(COLORMAPS)}"),
    method: HeatmapMethod = Query("gradcam"),
    output_format: Literal["png", "raw"] = Query(
        "png", alias="format", description="png: overlay; raw: 16-bit PNG heatmap (0..65535)"
    ),
    max_side: int = Query(1024, ge=64, le=4096),
    services: Services = Depends(get_services),
) -> Response:
    return await run_in_threadpool(
        _heatmap_response, services, case_id, method, output_format, alpha, colormap, max_side
    )
