"""Rendering a decoded radiograph for people (the UI preview, the case image) and keeping its pixels.

`to_pixels_png16` keeps a decoded image as a lossless 16-bit grayscale PNG (downscaled to a working size): the
form in which a case's pixels are stored after its one decode, free of every tag of the upload, so the image,
heatmap and report requests of a case never decode the original again.
"""

from __future__ import annotations

import cv2
import numpy as np

PNG16_SCALE = 65535  # full scale of a 16-bit PNG


def to_display_png(pixels: np.ndarray, max_side: int | None = None) -> bytes:
    """8-bit grayscale PNG of decoded [0, 1] pixels, shrunk (aspect kept, never enlarged) to `max_side` px."""
    return _encode_png(np.clip(np.rint(shrink(pixels, max_side) * 255.0), 0, 255).astype(np.uint8))


def to_pixels_png16(pixels: np.ndarray, max_side: int | None = None) -> bytes:
    """Lossless 16-bit grayscale PNG (0..65535 = 0..1) of decoded [0, 1] pixels, shrunk like `to_display_png`."""
    return encode_pixels_png16(pixels, max_side)[0]


def encode_pixels_png16(pixels: np.ndarray, max_side: int | None = None) -> tuple[bytes, np.ndarray]:
    """`to_pixels_png16`, plus the float32 pixels a reader of that PNG gets back (to keep them without a decode)."""
    stored = np.clip(np.rint(shrink(pixels, max_side) * PNG16_SCALE), 0, PNG16_SCALE).astype(np.uint16)
    return _encode_png(stored), stored.astype(np.float32) / PNG16_SCALE


def from_pixels_png16(data: bytes) -> np.ndarray:
    """Inverse of `to_pixels_png16`: float32 (H, W) in [0, 1]; ValueError for anything else."""
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None or decoded.ndim != 2 or decoded.dtype != np.uint16:
        raise ValueError("the data is not a 16-bit grayscale PNG")
    return decoded.astype(np.float32) / PNG16_SCALE


def shrink(pixels: np.ndarray, max_side: int | None) -> np.ndarray:
    """float32 copy-free view of a 2-D image, resized (area) so that its longer side is at most `max_side`."""
    if pixels.ndim != 2 or pixels.size == 0:
        raise ValueError(f"expected a non-empty 2-D image, got shape {pixels.shape}")
    image = pixels.astype(np.float32, copy=False)
    height, width = image.shape
    if max_side is None or max(height, width) <= max_side:
        return image
    if max_side < 1:
        raise ValueError("max_side must be >= 1")
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _encode_png(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:  # cv2 reports failure instead of raising
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()
