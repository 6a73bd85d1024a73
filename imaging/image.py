"""The decoded image type and the array helpers every decoder shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imaging.errors import CorruptImageError, UnusableImageError

MIN_SIDE_PX = 64  # below this a chest radiograph carries too little detail to analyse
# Detector and film formats run from 24 x 30 cm to 35 x 43 cm (about 1.25:1); beyond 4:1 it is not a chest film.
MAX_ASPECT_RATIO = 4.0
# Largest image we agree to decode. Flat-panel chest detectors reach ~4300 x 4300 (18 MP) and full-field
# mammography ~25 MP; 50 MP leaves headroom while bounding memory (50 MP as float32 is 200 MB).
MAX_PIXELS = 50_000_000
# A pixel counts as coloured when its channels differ by more than this (in [0, 1] units): well above the
# chroma noise JPEG leaves on a grayscale image saved as RGB.
COLOR_DIFFERENCE = 0.1


@dataclass(frozen=True)
class DecodedImage:
    """One radiograph as the rest of the workstation sees it.

    `pixels`: float32, shape (H, W), values in [0, 1], 0 = black, displayed the way a radiologist reads it
    (MONOCHROME2 convention: bone bright, air dark).
    `format`: one of `SUPPORTED_FORMATS`.
    `metadata`: always `width`, `height`, `source_bits`, `channels`, `colored_pixel_fraction` and `multi_frame`;
    raster files add `source_mode` (the Pillow mode); DICOM adds the patient/study tags by DICOM keyword
    (see `imaging.dicom.DICOM_TAGS`), `PhotometricInterpretation`, `TransferSyntaxUID`, `voi`
    ("lut", "window" or "none") and, when derivable, `patient_age_years`.
    """

    pixels: np.ndarray
    format: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def is_decoder_panic(error: BaseException) -> bool:
    """A Rust decoder (pylibjpeg-rle, via pyo3) that panics on hostile data raises `PanicException`, which derives
    from BaseException, not Exception: it must be caught explicitly, and nothing else of that kind may be."""
    return type(error).__name__ == "PanicException"


def check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    """Refuse images too large to decode safely, before any pixel memory is allocated."""
    if width <= 0 or height <= 0:
        raise CorruptImageError(f"The image declares an invalid size of {width}x{height} px.")
    if width * height > max_pixels:
        raise UnusableImageError(
            f"The image declares {width}x{height} px ({width * height / 1e6:.0f} MP); at most"
            f" {max_pixels / 1e6:.0f} MP can be analysed."
        )


def check_min_side(image: DecodedImage, min_side: int) -> None:
    if min(image.height, image.width) < min_side:
        raise UnusableImageError(
            f"Image is {image.width}x{image.height} px; at least {min_side} px per side is needed for analysis."
        )


def check_chest_shape(image: DecodedImage) -> None:
    """Refuse a shape no chest radiograph has (a strip, a banner): it gets a 422, never a finding."""
    aspect = max(image.height, image.width) / max(1, min(image.height, image.width))
    if aspect > MAX_ASPECT_RATIO:
        raise UnusableImageError(
            f"The image is {aspect:.3g} times longer than wide; no chest radiograph is more than "
            f"{MAX_ASPECT_RATIO:g} times longer than wide."
        )


def scale_to_unit(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Min-max scale to float32 [0, 1]; `valid` marks the pixels that define the range (others end up clipped).

    A constant image maps to zeros (the quality checks then flag it), never to a division by zero.
    """
    array = np.asarray(values, dtype=np.float32)
    reference = array if valid is None else array[valid]
    if reference.size == 0:
        return np.zeros(array.shape, dtype=np.float32)
    lo, hi = float(np.min(reference)), float(np.max(reference))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise CorruptImageError("The image holds non-finite pixel values.")
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.float32)
    scaled = (array - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(scaled, 0.0, 1.0, out=scaled)


def colored_pixel_fraction(rgb: np.ndarray, max_value: float) -> float:
    """Share of pixels whose colour channels differ by more than `COLOR_DIFFERENCE` of the full range."""
    channels = rgb[..., :3]
    spread = channels.max(axis=-1).astype(np.float32) - channels.min(axis=-1).astype(np.float32)
    return float(np.mean(spread > COLOR_DIFFERENCE * max_value))


def rgb_to_gray(rgb: np.ndarray, max_value: float) -> np.ndarray:
    """ITU-R BT.601 luma (the weights Pillow's "L" conversion uses), scaled to float32 [0, 1]."""
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32) / np.float32(max_value)
    gray = rgb[..., :3].astype(np.float32) @ weights
    return np.clip(gray, 0.0, 1.0, out=gray)
