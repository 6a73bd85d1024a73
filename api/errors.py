"""One place that turns domain errors into HTTP answers with readable messages (never a traceback)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from active_learning import (
    ActiveLearningError,
    AlreadyReadError,
    AnnotationNotFoundError,
    AnnotationSupersededError,
    CaseAlreadyFinalError,
    ClaimConflictError,
    ClaimExpiredError,
    ClaimNotFoundError,
    InvalidAnnotationError,
    JobAlreadyActiveError,
    JobNotFoundError,
    NotReadyForAdjudicationError,
    NotYourClaimError,
    QueueItemNotFoundError,
    RetrainingJobError,
)
from api.json_limits import JsonLimitError
from case_retrieval import EntryNotFoundError, InvalidInputError, ModelMismatchError, RetrievalError
from imaging import CorruptImageError, EmptyImageError, ImagingError, UnsupportedFormatError, UnusableImageError
from inference import ExplainError
from interop import ExportError
from mlops.registry import InvalidReasonError, RegistryError, UnknownModelError
from reports import ReportError, UnknownReportKindError
from storage import (
    CaseNotFoundError,
    CaseStateError,
    ImageNotFoundError,
    InvalidCaseDataError,
    InvalidImageDataError,
    InvalidImageKeyError,
    StorageError,
    StorageUnavailableError,
)

logger = logging.getLogger("cxr.api")

IMAGING_STATUS: dict[type[ImagingError], int] = {
    EmptyImageError: status.HTTP_400_BAD_REQUEST,
    UnsupportedFormatError: status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    CorruptImageError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    UnusableImageError: status.HTTP_422_UNPROCESSABLE_CONTENT,
}

STORAGE_STATUS: dict[type[StorageError], int] = {
    CaseNotFoundError: status.HTTP_404_NOT_FOUND,
    ImageNotFoundError: status.HTTP_404_NOT_FOUND,
    InvalidImageKeyError: status.HTTP_404_NOT_FOUND,
    InvalidCaseDataError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    InvalidImageDataError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    CaseStateError: status.HTTP_409_CONFLICT,
    StorageUnavailableError: status.HTTP_503_SERVICE_UNAVAILABLE,
}

RETRIEVAL_STATUS: dict[type[RetrievalError], int] = {
    EntryNotFoundError: status.HTTP_404_NOT_FOUND,
    InvalidInputError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    ModelMismatchError: status.HTTP_409_CONFLICT,
}

LEARNING_STATUS: dict[type[ActiveLearningError], int] = {
    QueueItemNotFoundError: status.HTTP_404_NOT_FOUND,
    ClaimNotFoundError: status.HTTP_404_NOT_FOUND,
    AnnotationNotFoundError: status.HTTP_404_NOT_FOUND,
    ClaimExpiredError: status.HTTP_409_CONFLICT,
    ClaimConflictError: status.HTTP_409_CONFLICT,
    AlreadyReadError: status.HTTP_409_CONFLICT,
    NotReadyForAdjudicationError: status.HTTP_409_CONFLICT,
    CaseAlreadyFinalError: status.HTTP_409_CONFLICT,
    AnnotationSupersededError: status.HTTP_409_CONFLICT,
    NotYourClaimError: status.HTTP_403_FORBIDDEN,  # and NotYourAnnotationError, its subclass
    InvalidAnnotationError: status.HTTP_422_UNPROCESSABLE_CONTENT,
    JobNotFoundError: status.HTTP_404_NOT_FOUND,
    JobAlreadyActiveError: status.HTTP_409_CONFLICT,
    RetrainingJobError: status.HTTP_422_UNPROCESSABLE_CONTENT,
}


REGISTRY_STATUS: dict[type[RegistryError], int] = {
    UnknownModelError: status.HTTP_404_NOT_FOUND,
    InvalidReasonError: status.HTTP_422_UNPROCESSABLE_CONTENT,
}  # any other registry error (nothing to roll back to, a missing checkpoint file): 409


class ApiError(Exception):
    """Raised by routers for a clear 4xx/5xx answer: `{"detail": message}`."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code, self.message = status_code, message


def _status_for(error: Exception, table: dict, default: int) -> int:
    return next((table[cls] for cls in type(error).__mro__ if cls in table), default)


def imaging_status(error: ImagingError) -> int:
    return _status_for(error, IMAGING_STATUS, status.HTTP_422_UNPROCESSABLE_CONTENT)


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "Invalid request."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status_code)

    @app.exception_handler(JsonLimitError)
    async def _json_limit_error(_: Request, exc: JsonLimitError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(ImagingError)
    async def _imaging_error(_: Request, exc: ImagingError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=imaging_status(exc))

    @app.exception_handler(ExplainError)
    async def _explain_error(_: Request, exc: ExplainError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(RetrievalError)
    async def _retrieval_error(_: Request, exc: RetrievalError) -> JSONResponse:
        code = _status_for(exc, RETRIEVAL_STATUS, status.HTTP_503_SERVICE_UNAVAILABLE)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(ReportError)
    async def _report_error(_: Request, exc: ReportError) -> JSONResponse:
        code = 400 if isinstance(exc, UnknownReportKindError) else status.HTTP_422_UNPROCESSABLE_CONTENT
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(ExportError)
    async def _export_error(_: Request, exc: ExportError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(ActiveLearningError)
    async def _learning_error(_: Request, exc: ActiveLearningError) -> JSONResponse:
        code = _status_for(exc, LEARNING_STATUS, status.HTTP_409_CONFLICT)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(RegistryError)
    async def _registry_error(_: Request, exc: RegistryError) -> JSONResponse:
        code = _status_for(exc, REGISTRY_STATUS, status.HTTP_409_CONFLICT)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(StorageError)
    async def _storage_error(request: Request, exc: StorageError) -> JSONResponse:
        code = _status_for(exc, STORAGE_STATUS, status.HTTP_500_INTERNAL_SERVER_ERROR)
        if code >= 500:
            logger.error("storage failure %s on %s", type(exc).__name__, request.url.path)
            return JSONResponse({"detail": "Storage error; it has been logged."}, status_code=code)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _describe_validation(exc)}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Log the type and path only: messages may carry patient data.
        logger.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "Internal error; it has been logged."}, status_code=500)
