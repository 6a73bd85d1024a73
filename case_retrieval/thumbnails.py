"""Small grayscale PNG previews of library images (what the UI shows next to each similar case)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from case_retrieval.errors import InvalidInputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_thumbnail(pixels: np.ndarray, max_side: int = 128) -> bytes:
    """PNG of a decoded [0, 1] grayscale image, longest side `max_side`, aspect ratio kept, never upscaled."""
    array = np.asarray(pixels, dtype=np.float32)
    if array.ndim != 2 or min(array.shape) < 1:
        raise InvalidInputError(f"A thumbnail needs a 2-D grayscale image, got shape {array.shape}.")
    image = Image.fromarray(np.clip(np.rint(np.nan_to_num(array) * 255.0), 0, 255).astype(np.uint8), mode="L")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def check_png(data: bytes) -> bytes:
    """Refuse anything that is not a PNG before it is stored and later served as image/png."""
    if not isinstance(data, bytes | bytearray) or not bytes(data[:8]) == PNG_SIGNATURE:
        raise InvalidInputError("A thumbnail must be PNG bytes.")
    return bytes(data)
