"""What the API tells the monitoring room: every request (route template, status, latency), every prediction, and
the audit events that follow from a request (case views, report downloads, refused access).

`ObservabilityMiddleware` is the outermost layer, so it also counts the answers the security layers give before a
route runs (401, 429, 504). Requests are labelled by route template (`/v1/cases/{case_id}`), never by raw path: a
label per case id would grow without bound and would put identifiers into the metrics. Each request gets an id
(the caller's `X-Request-ID` when it is a plain token, else a new one), returned in the `X-Request-ID` header and
kept with its audit events.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qs

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Principal
from api.permissions import ROUTE_PERMISSIONS
from inference import DEFAULT_TASK, Prediction
from monitoring import (
    REQUEST_CONTEXT,
    UNMATCHED_ROUTE,
    AuditEntry,
    AuditTrail,
    PredictionSample,
    RequestContext,
    record_predictions,
    record_request,
)

logger = logging.getLogger("cxr.observability")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
# Successful requests audited here: (method, route template) -> (audit action, what). POST /v1/studies is audited
# where the case is created (api/analysis.py), as it needs the new case's id.
AUDITED_ROUTES: dict[tuple[str, str], tuple[str, str]] = {
    ("POST", "/predict"): ("prediction", "one image, not stored"),
    ("POST", "/predict/batch"): ("prediction", "batch, not stored"),
    ("GET", "/v1/cases"): ("case.list", "case list"),
    ("GET", "/v1/cases/{case_id}"): ("case.view", "case"),
    ("GET", "/v1/cases/{case_id}/image"): ("case.view", "image"),
    ("GET", "/v1/cases/{case_id}/heatmap"): ("case.view", "heatmap"),
    ("GET", "/v1/cases/{case_id}/report"): ("report.download", "report"),
    ("GET", "/v1/cases/{case_id}/dicom"): ("report.download", "DICOM"),  # names the patient, as the PDFs do
    ("GET", "/v1/cases/{case_id}/fhir"): ("report.download", "FHIR"),
    ("GET", "/v1/cases/{case_id}/similar"): ("case.view", "similar cases"),
    ("GET", "/similar-cases/{case_id}"): ("case.view", "similar cases"),
    ("GET", "/v1/audit/export"): ("audit.export", "audit trail"),
}
REPORT_KINDS = frozenset({"radiologist", "clinical", "patient"})
DOWNLOAD_KINDS = {"report": ("radiologist", REPORT_KINDS), "DICOM": ("sr", frozenset({"sr", "pdf", "sc"}))}
MODEL_VERSION_HEADER = "X-Model-Version"  # set by the routes whose answer a model made (prediction, heatmap, report)
PROBE_ROUTES = frozenset({"/health", "/ready", "/metrics"})  # logged at DEBUG: monitors poll them
SELF_AUDITED = frozenset({("POST", "/v1/auth/login")})  # the login route records its own outcome

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


def request_id_of(scope: Scope) -> str:
    offered = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
    return offered if _REQUEST_ID.match(offered) else uuid.uuid4().hex


class ObservabilityMiddleware:
    """Gives each HTTP request an id, records its method, route template, status and duration (to the end of the
    body), and appends the audit event it calls for."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_of(scope)
        client = scope.get("client")
        context = REQUEST_CONTEXT.set(RequestContext(request_id, client[0] if client else None))
        status = 500  # an exception that escapes every handler ends as a 500 from the server
        model_version: str | None = None  # the answer's X-Model-Version: the model that made what was served

        async def send_recording(message: Message) -> None:
            nonlocal status, model_version
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                model_version = headers.get(MODEL_VERSION_HEADER)
            await send(message)

        try:
            await self.app(scope, receive, send_recording)
        finally:
            route, seconds = route_label(scope), time.perf_counter() - started
            record_request(scope["method"], route, status, seconds)
            fields = {
                "method": scope["method"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 1),
            }
            logger.log(logging.DEBUG if route in PROBE_ROUTES else logging.INFO, "request", extra={"fields": fields})
            entry = audit_entry(scope, route, status, model_version)
            services = getattr(scope["app"].state, "services", None)
            if entry is not None and services is not None:
                await run_in_threadpool(record_safely, services.audit, entry)
            REQUEST_CONTEXT.reset(context)


def audit_entry(scope: Scope, route: str, status: int, model_version: str | None = None) -> AuditEntry | None:
    """The audit event a finished request calls for: refused access (401/403), or a successful read of patient data,
    with the version of the model that made what was served (the answer's X-Model-Version; a prediction without
    one: the model serving now)."""
    method = "GET" if scope["method"] == "HEAD" else scope["method"]
    principal = scope.get("state", {}).get("principal")
    actor = actor_fields(principal) if isinstance(principal, Principal) else {}
    if status in (401, 403) and (method, route) not in SELF_AUDITED:
        detail = {"method": method, "route": route, "status": status}
        case_id = scope.get("path_params", {}).get("case_id")  # known when the route was found (403, not 401)
        return AuditEntry("access.denied", outcome="denied", case_id=case_id, detail=detail, **actor)
    audited = AUDITED_ROUTES.get((method, route))
    if audited is None or status >= 400:
        return None
    action, what = audited
    detail = {"what": what}
    if action == "prediction":
        return AuditEntry(action, model_version=model_version or served_version(scope), detail=detail, **actor)
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    if what in DOWNLOAD_KINDS:  # (default, known kinds) of a download
        default, known = DOWNLOAD_KINDS[what]
        kind = query.get("kind", [default])[0]
        detail["kind"] = kind if kind in known else "other"
    if action == "audit.export":
        detail["format"] = "pdf" if query.get("format") == ["pdf"] else "csv"  # anything else was answered 422
    case_id = scope.get("path_params", {}).get("case_id")
    return AuditEntry(action, case_id=case_id, model_version=model_version, detail=detail, **actor)


def served_version(scope: Scope) -> str | None:
    services = getattr(scope["app"].state, "services", None)
    predictor = services.predictors.get(DEFAULT_TASK) if services is not None else None
    return predictor.version if predictor is not None else None


def actor_fields(principal: Principal) -> dict[str, str]:
    return {"actor_id": principal.id, "actor_name": principal.username, "actor_role": principal.role.value}


def record_safely(audit: AuditTrail, entry: AuditEntry) -> None:
    """Append after the answer has gone out: a failure is logged loudly, it cannot take the answer back."""
    try:
        audit.record(entry)
    except Exception:  # the database driver can raise anything; the request itself already succeeded
        logger.exception("audit event %s could not be recorded", entry.action)


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
