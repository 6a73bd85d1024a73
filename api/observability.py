"""What the API tells the monitoring room: every request (route template, status, latency) and every prediction.

`ObservabilityMiddleware` is the outermost layer, so it also counts the answers the security layers give before a
route runs (401, 429, 504). Requests are labelled by route template (`/v1/cases/{case_id}`), never by raw path: a
label per case id would grow without bound and would put identifiers into the metrics.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Sequence

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.permissions import ROUTE_PERMISSIONS
from inference import Prediction
from monitoring import UNMATCHED_ROUTE, PredictionSample, record_predictions, record_request

_TEMPLATES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (compile_path(path)[0], path) for path in sorted({path for _, path in ROUTE_PERMISSIONS})
)


def route_label(scope: Scope) -> str:
    """The route template FastAPI selected; for answers given before routing (401, 429), the permission table's
    template matching the path; otherwise UNMATCHED_ROUTE."""
    route = scope.get("route")
    template = getattr(route, "path_format", None)
    if template:
        return str(template)
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return next((template for pattern, template in _TEMPLATES if pattern.match(path)), UNMATCHED_ROUTE)


class ObservabilityMiddleware:
    """Records each HTTP request's method, route template, status and duration (to the end of the body)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler ends as a 500 from the server

        async def send_recording(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            record_request(scope["method"], route_label(scope), status, time.perf_counter() - started)


def prediction_samples(task: str, predictions: Sequence[Prediction]) -> list[PredictionSample]:
    return [
        PredictionSample(
            task=task,
            label=p.label,
            model_version=p.model_version,
            confidence=p.confidence,
            seconds=p.processing_time_ms / 1000,
            cached=p.cached,
            entropy=p.uncertainty.entropy if p.uncertainty else None,
            uncertain=p.uncertain,
            out_of_scope=p.ood,
        )
        for p in predictions
    ]


def observe_predictions(task: str, predictions: Iterable[Prediction]) -> None:
    """Record one Predictor call's results (a single image or a batch) in the metrics."""
    record_predictions(prediction_samples(task, list(predictions)))
