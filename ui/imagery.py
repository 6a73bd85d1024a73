"""Image work the browser view needs: downsizing for display and re-blending a raw Grad-CAM map at any opacity.

Blending here (rather than asking the backend for a new overlay) keeps the opacity slider instant.
"""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Mapping, Sequence

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

DISPLAY_MAX_SIDE = 720  # pixels: enough for a side-by-side pair in the wide layout, small enough to send fast


class ImageDataError(ValueError):
    """Bytes from the backend that are not a readable image."""


def open_image(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageDataError(f"The backend sent an image this viewer cannot read ({type(exc).__name__}).") from None
    return image


def grayscale_display(data: bytes, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Image bytes -> uint8 grayscale array no larger than `max_side`, ready for `st.image`."""
    image = open_image(data)
    pixels = np.asarray(image)
    if pixels.dtype != np.uint8:  # 16-bit previews: stretch the used range rather than clipping to the low byte
        pixels = pixels.astype(np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        pixels = ((pixels - low) / (high - low or 1.0) * 255).astype(np.uint8)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels[..., :3], cv2.COLOR_RGB2GRAY)
    return fit_within(pixels, max_side)


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height of an image (the stored film: the pixels the backend's coordinates refer to)."""
    return open_image(data).size


def fit_within(pixels: np.ndarray, max_side: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return pixels
    return cv2.resize(
        pixels, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA
    )


def scaled_into(pixels: np.ndarray, max_width: int, max_height: int) -> np.ndarray:
    """The image as large as fits `max_width` x `max_height` at its own aspect ratio: a small stored film is enlarged
    for reading, a large one reduced."""
    height, width = pixels.shape[:2]
    scale = min(max_width / width, max_height / height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def decode_heatmap(data: bytes) -> np.ndarray:
    """A raw heatmap PNG (16-bit or 8-bit grayscale) -> float32 array in [0, 1]."""
    image = open_image(data)
    pixels = np.asarray(image)
    if pixels.ndim == 3:
        pixels = pixels[..., 0]
    full_scale = 255.0 if pixels.dtype == np.uint8 else 65535.0
    return np.clip(pixels.astype(np.float32) / full_scale, 0.0, 1.0)


def blend_heatmap(gray: np.ndarray, heatmap: np.ndarray, opacity: float) -> np.ndarray:
    """Jet-coloured heatmap over the grayscale image: RGB uint8, `opacity` 0 (image only) to 1 (map only)."""
    height, width = gray.shape[:2]
    resized = cv2.resize(heatmap.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap(np.clip(resized * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)
    colored = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    opacity = float(np.clip(opacity, 0.0, 1.0))
    return cv2.addWeighted(colored, opacity, base, 1.0 - opacity, 0.0)


def png_from_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text.split(",", 1)[-1], validate=True)
    except (binascii.Error, ValueError):
        raise ImageDataError("The backend's preview is not valid base64.") from None


def draw_boxes(
    gray: np.ndarray,
    boxes: Sequence[Mapping[str, float]],
    scale: float,
    color: tuple[int, int, int],
    labels: Sequence[str] = (),
) -> np.ndarray:
    """Expert boxes (`x`, `y`, `w`, `h` in stored-image pixels) outlined on a displayed film (RGB out); `scale` is
    displayed / stored pixels. Several readers' boxes go on one film by calling this once per reader. `labels`
    (e.g. the marks' numbers) are written above each box's top-left corner."""
    canvas = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB) if gray.ndim == 2 else gray.copy()
    thickness = max(2, round(max(canvas.shape[:2]) / 300))
    for index, box in enumerate(boxes):
        top_left = (round(box["x"] * scale), round(box["y"] * scale))
        bottom_right = (round((box["x"] + box["w"]) * scale), round((box["y"] + box["h"]) * scale))
        cv2.rectangle(canvas, top_left, bottom_right, color, thickness)
        if index < len(labels):
            corner = (top_left[0] + thickness, max(top_left[1] - 2 * thickness, 14))  # inside the film at the top
            cv2.putText(canvas, labels[index], corner, cv2.FONT_HERSHEY_SIMPLEX, 0.6, color, 2, cv2.LINE_AA)
    return canvas
