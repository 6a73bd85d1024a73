"""Rendering a decoded radiograph for people: the UI preview and the case image endpoint."""

from __future__ import annotations

import cv2
import numpy as np


def to_display_png(pixels: np.ndarray, max_side: int | None = None) -> bytes:
    """8-bit grayscale PNG of decoded [0, 1] pixels, shrunk (aspect kept, never enlarged) to `max_side` px."""
    if pixels.ndim != 2 or pixels.size == 0:
        raise ValueError(f"expected a non-empty 2-D image, got shape {pixels.shape}")
    image = pixels.astype(np.float32, copy=False)
    height, width = image.shape
    if max_side is not None and max(height, width) > max_side:
        if max_side < 1:
            raise ValueError("max_side must be >= 1")
        scale = max_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    quantised = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", quantised)
    if not ok:  # cv2 reports failure instead of raising
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()
