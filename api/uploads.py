"""Reading uploads with the size limit enforced while streaming (an oversized file is never fully buffered)."""

from __future__ import annotations

import base64
import binascii

from fastapi import UploadFile, status

from api.errors import ApiError

CHUNK_BYTES = 1024 * 1024

# The answers an upload can get before any model runs (OpenAPI `responses` of every route that takes an image).
UPLOAD_ERRORS: dict[int | str, dict[str, str]] = {
    400: {"description": "Empty file"},
    413: {"description": "Too large"},
    415: {"description": "Unsupported format"},
    422: {"description": "Corrupt or unusable image"},
}


def too_large(limit_bytes: int) -> ApiError:
    return ApiError(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"The file is larger than the {limit_bytes / (1024 * 1024):g} MB upload limit (MAX_UPLOAD_MB).",
    )


async def read_upload(upload: UploadFile, limit_bytes: int) -> bytes:
    chunks, total = [], 0
    while chunk := await upload.read(CHUNK_BYTES):
        total += len(chunk)
        if total > limit_bytes:
            raise too_large(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def decode_base64_image(text: str, limit_bytes: int) -> bytes:
    """Base64 (optionally a data: URL) -> bytes, with the same size limit as multipart uploads."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    if len(text) * 3 // 4 > limit_bytes + 3:
        raise too_large(limit_bytes)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(status.HTTP_400_BAD_REQUEST, "The image is not valid base64.") from None
