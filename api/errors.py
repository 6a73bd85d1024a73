"""One place that turns domain errors into HTTP answers with readable messages (never a traceback)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

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
    NoNoduleFindingError,
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
    NoNoduleFindingError: status.HTTP_409_CONFLICT,
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


# Error families of the domain rooms whose messages are written for a person: base class -> (status per subclass,
# status of the rest). Storage errors are not here: their 5xx hide the message (see `install_error_handlers`).
DOMAIN_ERRORS: dict[type[Exception], tuple[dict[type, int], int]] = {
    JsonLimitError: ({}, status.HTTP_422_UNPROCESSABLE_CONTENT),
    ImagingError: (IMAGING_STATUS, status.HTTP_422_UNPROCESSABLE_CONTENT),
    ExplainError: ({}, status.HTTP_422_UNPROCESSABLE_CONTENT),
    RetrievalError: (RETRIEVAL_STATUS, status.HTTP_503_SERVICE_UNAVAILABLE),
    ReportError: ({UnknownReportKindError: status.HTTP_400_BAD_REQUEST}, status.HTTP_422_UNPROCESSABLE_CONTENT),
    ExportError: ({}, status.HTTP_422_UNPROCESSABLE_CONTENT),
    ActiveLearningError: (LEARNING_STATUS, status.HTTP_409_CONFLICT),
    RegistryError: (REGISTRY_STATUS, status.HTTP_409_CONFLICT),
}


def _domain_error_handler(
    table: dict[type, int], default: int
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_status_for(exc, table, default))

    return handle


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

    for family, (table, default) in DOMAIN_ERRORS.items():
        app.add_exception_handler(family, _domain_error_handler(table, default))

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
