"""Decoded pixels -> 8-bit PNG for display (previews, case images, report figures)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def to_display_png(pixels: np.ndarray, max_side: int = 1024) -> bytes:
    """[0, 1] grayscale -> PNG bytes, downscaled (never upscaled) so the longer side is at most `max_side`."""
    image = Image.fromarray(np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8), mode="L")
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
