"""Stateless prediction endpoints kept from the original pneumonia service: `POST /predict`, `POST /predict/batch`."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime

from fastapi import APIRouter, File, Request, Response, UploadFile, status

from api.analysis import reliability_fields, scoped
from api.disconnect import run_until_disconnect
from api.errors import ApiError, imaging_status
from api.observability import MODEL_VERSION_HEADER, observe_predictions
from api.schemas import BatchIn, BatchItemError, BatchOut, PredictionOut
from api.services import Services, ServicesDep
from api.uploads import UPLOAD_ERRORS, decode_base64_image, read_upload
from imaging import DecodedImage, ImagingError, assess_quality, decode_image
from inference import Prediction, ScopeResult

router = APIRouter(tags=["prediction"])


def prediction_out(
    prediction: Prediction, decoded: DecodedImage, threshold: float, verdict: ScopeResult
) -> PredictionOut:
    """The stateless answer; the scope is judged from the film alone (no age is sent to these routes)."""
    prediction = scoped(prediction, verdict)
    return PredictionOut(
        prediction=prediction.label,
        confidence=round(prediction.confidence, 6),
        probabilities={k: round(v, 6) for k, v in prediction.probabilities.items()},
        processing_time_ms=prediction.processing_time_ms,
        model_version=prediction.model_version,
        timestamp=datetime.now(UTC),
        threshold=threshold,
        cached=prediction.cached,
        quality_warnings=[w.as_dict() for w in assess_quality(decoded)],
        **reliability_fields(prediction, verdict),
    )


def _decode_and_predict(services: Services, data: bytes, cancel: threading.Event | None = None) -> PredictionOut:
    predictor = services.predictor()
    decoded = decode_image(data)
    prediction = predictor.predict(decoded.pixels, hashlib.sha256(data).hexdigest(), cancel)
    observe_predictions(predictor.checkpoint.task, [prediction])
    verdict = services.scope(model_version=prediction.model_version).check(prediction.embedding)
    return prediction_out(prediction, decoded, predictor.checkpoint.threshold, verdict)


@router.post(
    "/predict",
    response_model=PredictionOut,
    summary="Classify one radiograph (multipart `file`)",
    responses=UPLOAD_ERRORS,
)
async def predict(
    request: Request,
    response: Response,
    services: ServicesDep,
    file: UploadFile = File(..., description="PNG, JPEG, TIFF or DICOM radiograph"),
) -> PredictionOut:
    data = await read_upload(file, services.settings.max_upload_bytes)
    answer = await run_until_disconnect(request, _decode_and_predict, services, data)
    response.headers[MODEL_VERSION_HEADER] = answer.model_version  # the audit record names the model that answered
    return answer


def _predict_batch(
    services: Services, payloads: list[bytes | ApiError], cancel: threading.Event | None = None
) -> list[PredictionOut | BatchItemError]:
    """Decode every item (bad ones become per-item errors), then run the good ones as model batches."""
    predictor = services.predictor()
    results: list[PredictionOut | BatchItemError | None] = [None] * len(payloads)
    good: list[tuple[int, bytes, DecodedImage]] = []
    for index, payload in enumerate(payloads):
        if isinstance(payload, ApiError):
            results[index] = BatchItemError(index=index, error=payload.message, status_code=payload.status_code)
            continue
        try:
            good.append((index, payload, decode_image(payload)))
        except ImagingError as exc:
            results[index] = BatchItemError(index=index, error=str(exc), status_code=imaging_status(exc))
    predictions = predictor.predict_batch(
        [decoded.pixels for _, _, decoded in good], [hashlib.sha256(data).hexdigest() for _, data, _ in good], cancel
    )
    observe_predictions(predictor.checkpoint.task, predictions)
    for (index, _, decoded), prediction in zip(good, predictions, strict=True):
        verdict = services.scope(model_version=prediction.model_version).check(prediction.embedding)
        results[index] = prediction_out(prediction, decoded, predictor.checkpoint.threshold, verdict)
    return [r for r in results if r is not None]


@router.post("/predict/batch", response_model=BatchOut, summary="Classify several base64-encoded radiographs")
async def predict_batch(request: Request, response: Response, body: BatchIn, services: ServicesDep) -> BatchOut:
    limit = services.settings.batch_max
    if len(body.images) > limit:
        raise ApiError(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"The batch holds {len(body.images)} images; at most {limit} are allowed (BATCH_MAX).",
        )
    services.predictor()  # answer 503 for the whole batch when no model is loaded
    payloads: list[bytes | ApiError] = []
    for text in body.images:
        try:
            payloads.append(decode_base64_image(text, services.settings.max_upload_bytes))
        except ApiError as exc:
            payloads.append(exc)
    predictions = await run_until_disconnect(request, _predict_batch, services, payloads)
    versions = {p.model_version for p in predictions if isinstance(p, PredictionOut)}
    if versions:  # one Predictor made the whole batch
        response.headers[MODEL_VERSION_HEADER] = versions.pop()
    return BatchOut(batch_size=len(predictions), predictions=predictions)
