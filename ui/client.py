"""The one HTTP client between the workstation UI and the backend (httpx; JSON and bytes, never backend imports).

Every failure becomes a `BackendError` carrying the backend's own readable `detail` message (or a plain sentence
for transport failures), so pages can show it next to what caused it instead of a traceback.
"""

from __future__ import annotations

import json
import mimetypes
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

REPORT_KINDS: tuple[str, ...] = ("radiologist", "clinical", "patient")
DICOM_KINDS: tuple[str, ...] = ("sr", "pdf", "sc")  # structured report, radiologist PDF, heatmap overlay
FILE_REJECTED_STATUSES: frozenset[int] = frozenset({400, 413, 415, 422})  # the upload itself is unusable
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom")
# FastAPI's answers for a route (or method) the backend does not have yet, as opposed to "Case abc not found".
ROUTE_MISSING_DETAILS: frozenset[str] = frozenset({"Not Found", "Method Not Allowed"})
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=3.0)
UPLOAD_NOT_HELD = 409  # POST /v1/studies: the inspected upload expired on the backend; send the file
NOTHING_TO_CLAIM = 204  # POST /v1/queue/claim: no case is left that this annotator may read


class BackendError(Exception):
    """A request the backend refused or could not answer; `message` is fit to show to the user."""

    def __init__(self, message: str, status_code: int | None = None, path: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.path = path

    @property
    def route_missing(self) -> bool:
        """The backend has no such endpoint (it is older than this UI), not a missing record."""
        return self.status_code in (404, 405) and self.message in ROUTE_MISSING_DETAILS

    @property
    def file_rejected(self) -> bool:
        """The backend refused the uploaded file itself (empty, too large, unsupported, corrupt, unusable)."""
        return self.status_code in FILE_REJECTED_STATUSES

    @property
    def unauthorized(self) -> bool:
        return self.status_code == 401

    @property
    def forbidden(self) -> bool:
        return self.status_code == 403

    @property
    def unreachable(self) -> bool:
        return self.status_code is None


@dataclass(frozen=True)
class LoginResult:
    access_token: str
    token_type: str
    expires_in: float
    role: str

    @property
    def expires_at(self) -> float:
        return time.time() + self.expires_in


def detail_of(response: httpx.Response) -> str:
    """The readable message of an error answer: `{"detail": ...}` when present, else a short status line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str) and detail.strip():
        return detail.strip()
    if isinstance(detail, list):  # FastAPI's default validation shape: [{"loc": [...], "msg": "..."}]
        parts = [str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail]
        return "; ".join(parts)
    return f"The backend answered {response.status_code} {response.reason_phrase}."


def upload_mime_type(filename: str) -> str:
    if filename.lower().endswith(DICOM_SUFFIXES):
        return "application/dicom"
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


class BackendClient:
    """Typed calls to the backend contract; sends `Authorization: Bearer` whenever it holds a token."""

    def __init__(self, base_url: str, token: str | None = None, http: httpx.Client | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = http or httpx.Client(timeout=DEFAULT_TIMEOUT)

    # --- plumbing ---------------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def request(self, method: str, path: str, *, accept: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """Send one request; any status outside 2xx (and `accept`) raises `BackendError` with the detail."""
        try:
            response = self._http.request(method, self._url(path), headers=self._headers(), **kwargs)
        except httpx.TimeoutException:
            raise BackendError(f"The backend at {self.base_url} did not answer in time.", None, path) from None
        except httpx.TransportError as exc:
            reason = type(exc).__name__
            raise BackendError(f"Cannot reach the backend at {self.base_url} ({reason}).", None, path) from None
        if response.is_success or response.status_code in accept:
            return response
        raise BackendError(detail_of(response), response.status_code, path)

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._body(self.request(method, path, **kwargs), path)

    @staticmethod
    def _body(response: httpx.Response, path: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            raise BackendError(
                f"The backend sent an unreadable answer for {path}.", response.status_code, path
            ) from None
        if not isinstance(body, dict):
            raise BackendError(f"The backend sent an unexpected answer for {path}.", response.status_code, path)
        return body

    def get_bytes(self, path_or_url: str, params: Mapping[str, Any] | None = None) -> bytes:
        """GET binary content by backend path (e.g. a `thumbnail_url`); refuses other hosts (the token stays home)."""
        return self.request("GET", self.backend_path(path_or_url), params=params).content

    def backend_path(self, path_or_url: str) -> str:
        absolute = urljoin(self.base_url + "/", path_or_url)
        base, target = urlsplit(self.base_url), urlsplit(absolute)
        if (target.scheme, target.netloc) != (base.scheme, base.netloc):
            raise BackendError(f"Refusing to fetch {path_or_url}: it is not on the backend at {self.base_url}.")
        return absolute[len(f"{base.scheme}://{base.netloc}") :] or "/"

    def routes(self) -> dict[str, set[str]]:
        """Path template -> HTTP methods the backend serves, from its OpenAPI document."""
        spec = self._json("GET", "/openapi.json")
        paths = spec.get("paths") if isinstance(spec.get("paths"), dict) else {}
        return {path: {method.upper() for method in ops} for path, ops in paths.items() if isinstance(ops, dict)}

    # --- authentication ---------------------------------------------------------------------------------------
    def auth_enabled(self) -> bool:
        """Whether the backend has user accounts: its login route exists (a GET answers 405, not 404)."""
        try:
            self.request("GET", "/v1/auth/login")
        except BackendError as exc:
            if exc.unreachable:
                raise
            return not (exc.status_code == 404 and exc.route_missing)  # 405 = the POST-only route exists
        return True

    def login(self, username: str, password: str) -> LoginResult:
        body = self._json("POST", "/v1/auth/login", json={"username": username, "password": password})
        try:
            return LoginResult(
                access_token=str(body["access_token"]),
                token_type=str(body.get("token_type", "bearer")),
                expires_in=float(body.get("expires_in", 0)),
                role=str(body["role"]),
            )
        except (KeyError, TypeError, ValueError):
            raise BackendError("The backend's login answer lacks a token or role.", 200, "/v1/auth/login") from None

    def logout(self) -> None:
        """End this token on the backend (every server), so a copy of it is useless from now on."""
        if self.token:
            self.request("POST", "/v1/auth/logout", accept=(401,))  # 401: it had already ended

    # --- health -----------------------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._json("GET", "/health")

    def ready(self) -> dict[str, Any]:
        return self._json("GET", "/ready", accept=(503,))  # 503 carries the failing checks: a result, not an error

    def model_info(self, task: str | None = None) -> dict[str, Any]:
        """The served model's card; `task` names another finding's model (e.g. "nodule"), whose absence is a 404
        or 503 whose detail says why."""
        return self._json("GET", "/model/info", params={"task": task} if task else None)

    def system_stats(self) -> dict[str, Any]:
        return self._json("GET", "/v1/system/stats")

    # --- studies and cases ------------------------------------------------------------------------------------
    def inspect(self, filename: str, data: bytes) -> dict[str, Any]:
        files = {"file": (filename, data, upload_mime_type(filename))}
        return self._json("POST", "/v1/dicom/inspect", files=files)

    def create_study(
        self, filename: str, data: bytes, patient: Mapping[str, Any], upload_id: str | None = None
    ) -> dict[str, Any]:
        """Analyse a study. With the `upload_id` of its inspection the bytes are not sent again, unless the backend
        no longer holds them (409: expired, or another replica inspected it)."""
        form = {"patient": json.dumps(dict(patient))}
        if upload_id:
            try:
                return self._json("POST", "/v1/studies", data={**form, "upload_id": upload_id})
            except BackendError as error:
                if error.status_code != UPLOAD_NOT_HELD:
                    raise
        files = {"file": (filename, data, upload_mime_type(filename))}
        return self._json("POST", "/v1/studies", files=files, data=form)

    def list_cases(self, *, limit: int = 20, offset: int = 0, **filters: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        params.update({name: value for name, value in filters.items() if value not in (None, "")})
        return self._json("GET", "/v1/cases", params=params)

    def get_case(self, case_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/cases/{case_id}")

    def case_image(self, case_id: str) -> bytes:
        return self.get_bytes(f"/v1/cases/{case_id}/image")

    def heatmap_overlay(self, case_id: str, alpha: float) -> bytes:
        return self.get_bytes(f"/v1/cases/{case_id}/heatmap", params={"alpha": round(alpha, 2)})

    def heatmap_raw(self, case_id: str) -> bytes:
        return self.get_bytes(f"/v1/cases/{case_id}/heatmap", params={"format": "raw"})

    def similar(self, case_id: str, k: int = 5) -> dict[str, Any]:
        return self._json("GET", f"/v1/cases/{case_id}/similar", params={"k": k})

    def report(self, case_id: str, kind: str) -> bytes:
        if kind not in REPORT_KINDS:
            raise BackendError(f"Unknown report kind {kind!r}; choose one of {', '.join(REPORT_KINDS)}.")
        return self.get_bytes(f"/v1/cases/{case_id}/report", params={"kind": kind})

    def dicom(self, case_id: str, kind: str) -> bytes:
        """The result as a DICOM file of the source study (GET /v1/cases/{id}/dicom)."""
        if kind not in DICOM_KINDS:
            raise BackendError(f"Unknown DICOM kind {kind!r}; choose one of {', '.join(DICOM_KINDS)}.")
        return self.get_bytes(f"/v1/cases/{case_id}/dicom", params={"kind": kind})

    def fhir(self, case_id: str) -> bytes:
        """The result as a FHIR R4 Bundle holding the DiagnosticReport (GET /v1/cases/{id}/fhir)."""
        return self.get_bytes(f"/v1/cases/{case_id}/fhir")

    def submit_nodule_review(
        self, case_id: str, marks: Sequence[Mapping[str, Any]], finding: str, comment: str | None = None
    ) -> dict[str, Any]:
        """A radiologist's read of the nodule marks: each mark `{x, y, w, h, verdict}` (confirmed, rejected, added)
        in stored-image pixels, the finding (NODULE / NO_NODULE) and a comment; answers the stored review."""
        body = {"marks": [dict(mark) for mark in marks], "finding": finding, "comment": comment}
        return self._json("POST", f"/v1/cases/{case_id}/nodule-review", json=body)

    def nodule_reviews(self, case_id: str) -> list[dict[str, Any]]:
        """Every expert read of the case's nodule marks, newest first."""
        path = f"/v1/cases/{case_id}/nodule-review"
        try:
            body = self.request("GET", path).json()
        except ValueError:
            raise BackendError(f"The backend sent an unreadable answer for {path}.", 200, path) from None
        reviews = body.get("reviews", body.get("items")) if isinstance(body, dict) else body
        if not isinstance(reviews, list):
            raise BackendError(f"The backend sent an unexpected answer for {path}.", 200, path)
        return [review for review in reviews if isinstance(review, dict)]

    def send_for_review(self, case_id: str, reason: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/cases/{case_id}/review", json={"reason": reason})

    def sign(self, case_id: str, finding: str | None = None) -> dict[str, Any]:
        """Sign off; with the radiologist's own `finding` (one other than the model's queues the case for experts)."""
        return self._json("POST", f"/v1/cases/{case_id}/sign", json={"finding": finding})

    # --- monitoring (admins) ----------------------------------------------------------------------------------
    def monitoring_summary(self, window: str) -> dict[str, Any]:
        return self._json("GET", "/v1/monitoring/summary", params={"window": window})

    def drift(self) -> dict[str, Any]:
        return self._json("GET", "/v1/monitoring/drift")

    def alerts(self, state: str | None = None) -> dict[str, Any]:
        return self._json("GET", "/v1/alerts", params={"state": state} if state else None)

    def acknowledge_alert(self, alert_id: int) -> dict[str, Any]:
        return self._json("POST", f"/v1/alerts/{alert_id}/acknowledge")

    def audit_events(self, **filters: str | int | None) -> dict[str, Any]:
        params = {key: value for key, value in filters.items() if value not in (None, "")}
        return self._json("GET", "/v1/audit", params=params)

    def audit_verify(self) -> dict[str, Any]:
        return self._json("GET", "/v1/audit/verify")

    def audit_export(self, export_format: str = "csv", **filters: str | None) -> bytes:
        """The filtered events as CSV (with hashes) or as a PDF (with the chain's verdict and head hash)."""
        params = {key: value for key, value in filters.items() if value not in (None, "")}
        return self.get_bytes("/v1/audit/export", params={**params, "format": export_format})

    # --- learning loop: annotation queue, expert reads, retraining --------------------------------------------------
    def queue(self, state: str | None = None, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        params = {"state": state, "limit": limit, "offset": offset} if state else {"limit": limit, "offset": offset}
        return self._json("GET", "/v1/queue", params=params)

    def enqueue(self, case_id: str, reason: str) -> dict[str, Any]:
        return self._json("POST", "/v1/queue", json={"case_id": case_id, "reason": reason})

    def claim_next(self) -> dict[str, Any] | None:
        """Lock the next case for this annotator; None when nothing is left for them (204)."""
        response = self.request("POST", "/v1/queue/claim")
        return None if response.status_code == NOTHING_TO_CLAIM else self._body(response, "/v1/queue/claim")

    def renew_claim(self, claim_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/queue/claims/{claim_id}/renew")

    def release_claim(self, claim_id: str) -> None:
        self.request("POST", f"/v1/queue/claims/{claim_id}/release")

    def submit_annotation(
        self,
        case_id: str,
        label: str,
        confidence: int,
        *,
        comment: str | None = None,
        boxes: Sequence[Mapping[str, float]] = (),
        corrects: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"case_id": case_id, "label": label, "confidence": confidence, "boxes": list(boxes)}
        body.update({name: value for name, value in (("comment", comment), ("corrects", corrects)) if value})
        return self._json("POST", "/v1/annotations", json=body)

    def case_annotations(self, case_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/annotations/{case_id}")

    def adjudicate(self, case_id: str, label: str, comment: str | None = None) -> dict[str, Any]:
        body = {"label": label, "comment": comment} if comment else {"label": label}
        return self._json("POST", f"/v1/annotations/{case_id}/adjudicate", json=body)

    def annotation_stats(self) -> dict[str, Any]:
        return self._json("GET", "/v1/annotations/stats")

    def annotations_export(self) -> bytes:
        return self.get_bytes("/v1/annotations/export")

    def start_retraining(self, reason: str | None = None) -> dict[str, Any]:
        return self._json("POST", "/v1/retraining", json={"reason": reason} if reason else {})

    def retraining_jobs(self, *, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        return self._json("GET", "/v1/retraining", params={"limit": limit, "offset": offset})

    def retraining_job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/retraining/{job_id}")
