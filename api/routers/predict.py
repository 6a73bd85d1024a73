"""Stateless prediction endpoints kept from the original pneumonia service: `POST /predict`, `POST /predict/batch`.

Without `?task` they answer the pneumonia model, as they always did; `?task=nodule` answers the nodule model in the
same shape plus its located marks (`NodulePredictionOut`).
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime

from fastapi import APIRouter, File, Query, Request, Response, UploadFile, status

from api.analysis import reliability_fields, scoped
from api.disconnect import run_until_disconnect
from api.errors import ApiError, imaging_status
from api.observability import MODEL_VERSION_HEADER, observe_predictions
from api.schemas import BatchIn, BatchItemError, BatchOut, NodulePredictionOut, PredictionOut
from api.services import KNOWN_TASKS, Services, ServicesDep
from api.uploads import UPLOAD_ERRORS, decode_base64_image, read_upload
from imaging import DecodedImage, ImagingError, assess_quality, decode_image
from inference import DEFAULT_TASK, NoduleFinding, NodulePredictor, Prediction, Predictor, ScopeResult

router = APIRouter(tags=["prediction"])

Answer = PredictionOut | NodulePredictionOut
TASK_QUERY = Query(DEFAULT_TASK, description=f"Which model answers: {', '.join(KNOWN_TASKS)}", max_length=64)


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


def nodule_prediction_out(finding: NoduleFinding, decoded: DecodedImage, class_names: list[str]) -> NodulePredictionOut:
    """The nodule model's answer in the stateless shape: the probabilities of both classes, the confidence of the
    class the threshold gives, and the marks."""
    negative, positive = class_names
    probabilities = {negative: round(1.0 - finding.probability, 6), positive: round(finding.probability, 6)}
    return NodulePredictionOut(
        prediction=finding.label,
        confidence=probabilities[finding.label],
        probabilities=probabilities,
        processing_time_ms=finding.processing_time_ms,
        model_version=finding.model_version,
        timestamp=datetime.now(UTC),
        threshold=finding.threshold,
        cached=finding.cached,
        quality_warnings=[w.as_dict() for w in assess_quality(decoded)],
        locations=[location.to_dict() for location in finding.locations],
    )


def _nodule_answer(model: NodulePredictor, decoded: DecodedImage, data: bytes) -> NodulePredictionOut:
    finding = model.predict(decoded.pixels, hashlib.sha256(data).hexdigest())
    return nodule_prediction_out(finding, decoded, model.checkpoint.class_names)


def _decode_and_predict(services: Services, data: bytes, task: str, cancel: threading.Event | None = None) -> Answer:
    model = services.model(task)
    decoded = decode_image(data)
    if isinstance(model, NodulePredictor):
        return _nodule_answer(model, decoded, data)
    return _pneumonia_answer(services, model, decoded, data, cancel)


def _pneumonia_answer(
    services: Services, predictor: Predictor, decoded: DecodedImage, data: bytes, cancel: threading.Event | None
) -> PredictionOut:
    prediction = predictor.predict(decoded.pixels, hashlib.sha256(data).hexdigest(), cancel)
    observe_predictions(predictor.checkpoint.task, [prediction])
    verdict = services.scope(model_version=prediction.model_version).check(prediction.embedding)
    return prediction_out(prediction, decoded, predictor.checkpoint.threshold, verdict)


@router.post(
    "/predict",
    response_model=Answer,
    summary="Classify one radiograph (multipart `file`); `?task=nodule`: the nodule model, with its marks",
    responses=UPLOAD_ERRORS,
)
async def predict(
    request: Request,
    response: Response,
    services: ServicesDep,
    file: UploadFile = File(..., description="PNG, JPEG, TIFF or DICOM radiograph"),
    task: str = TASK_QUERY,
) -> Answer:
    data = await read_upload(file, services.settings.max_upload_bytes)
    answer = await run_until_disconnect(request, _decode_and_predict, services, data, task)
    response.headers[MODEL_VERSION_HEADER] = answer.model_version  # the audit record names the model that answered
    return answer


Decoded = tuple[int, bytes, DecodedImage]  # (index in the batch, the bytes sent, the decoded film)


def _predict_batch(
    services: Services, payloads: list[bytes | ApiError], task: str, cancel: threading.Event | None = None
) -> list[Answer | BatchItemError]:
    """Decode every item (bad ones become per-item errors), then run the good ones through the task's model."""
    model = services.model(task)
    results: list[Answer | BatchItemError | None] = [None] * len(payloads)
    good: list[Decoded] = []
    for index, payload in enumerate(payloads):
        if isinstance(payload, ApiError):
            results[index] = BatchItemError(index=index, error=payload.message, status_code=payload.status_code)
            continue
        try:
            good.append((index, payload, decode_image(payload)))
        except ImagingError as exc:
            results[index] = BatchItemError(index=index, error=str(exc), status_code=imaging_status(exc))
    if isinstance(model, NodulePredictor):
        for index, data, decoded in good:  # one film at a time: the nodule model keeps no micro-batcher
            if cancel is not None and cancel.is_set():
                break
            results[index] = _nodule_answer(model, decoded, data)
    else:
        _pneumonia_batch(services, model, good, results, cancel)
    return [r for r in results if r is not None]


def _pneumonia_batch(
    services: Services,
    predictor: Predictor,
    good: list[Decoded],
    results: list[Answer | BatchItemError | None],
    cancel: threading.Event | None,
) -> None:
    predictions = predictor.predict_batch(
        [decoded.pixels for _, _, decoded in good], [hashlib.sha256(data).hexdigest() for _, data, _ in good], cancel
    )
    observe_predictions(predictor.checkpoint.task, predictions)
    for (index, _, decoded), prediction in zip(good, predictions, strict=True):
        verdict = services.scope(model_version=prediction.model_version).check(prediction.embedding)
        results[index] = prediction_out(prediction, decoded, predictor.checkpoint.threshold, verdict)


@router.post("/predict/batch", response_model=BatchOut, summary="Classify several base64-encoded radiographs")
async def predict_batch(
    request: Request, response: Response, body: BatchIn, services: ServicesDep, task: str = TASK_QUERY
) -> BatchOut:
    limit = services.settings.batch_max
    if len(body.images) > limit:
        raise ApiError(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"The batch holds {len(body.images)} images; at most {limit} are allowed (BATCH_MAX).",
        )
    services.model(task)  # answer 4xx/503 for the whole batch when the task's model is not served
    payloads: list[bytes | ApiError] = []
    for text in body.images:
        try:
            payloads.append(decode_base64_image(text, services.settings.max_upload_bytes))
        except ApiError as exc:
            payloads.append(exc)
    predictions = await run_until_disconnect(request, _predict_batch, services, payloads, task)
    versions = {p.model_version for p in predictions if not isinstance(p, BatchItemError)}
    if versions:  # one Predictor made the whole batch
        response.headers[MODEL_VERSION_HEADER] = versions.pop()
    return BatchOut(batch_size=len(predictions), predictions=predictions)
