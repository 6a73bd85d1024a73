"""Image quality checks: warnings shown to the radiologist next to the result, never reasons to refuse an image.

Each check looks at the decoded display image (float [0, 1], MONOCHROME2 convention) and its metadata. The
thresholds were calibrated so that real radiographs rarely trip them: on the 618 Kermany test images (pediatric,
8-bit JPEG) no check fires on any image, and on 556 NIH ChestX-ray14 images (adult) the polarity check fires on
1 and the over-exposure check on 2. Inverted copies are flagged 618/618 (Kermany) and 545/556 (NIH).
tests/test_imaging.py re-measures the Kermany figures on every run.

Checks and codes:
- near_constant / low_contrast: the 1st-99th percentile spread of the pixels is tiny / small.
- overexposed / underexposed: large areas clipped to black / white (or the whole image too dark / too bright).
- small_image: the shorter side is below what the model uses, so detail is interpolated.
- extreme_aspect_ratio: far from any chest film format; the model input stretches it.
- possibly_inverted: the mediastinum is darker than the lung fields and the borders brighter, typical of an
  inverted (negative) radiograph, e.g. MONOCHROME1 shown without inversion.
- color_source: the source image holds real colour (annotations, a photo of a screen, a colour map).
- multiple_frames: only the first page of a multi-page file was analysed.
- lateral_view / not_chest: the DICOM header says it is not a frontal chest radiograph.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from imaging.image import DecodedImage

__all__ = ["QualityThresholds", "QualityWarning", "assess_quality", "polarity_score"]

_SAMPLE_PIXELS = 1_000_000  # histogram statistics on a strided sample: exact enough, bounded cost
_GRID = 64  # the polarity check compares regions of a 64 x 64 thumbnail
_LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL", "LLD", "RLD"})
_CHEST_WORDS = ("CHEST", "THORA", "LUNG", "TORSO")


@dataclass(frozen=True)
class QualityWarning:
    code: str  # stable machine-readable identifier
    message: str  # one sentence for the radiologist
    value: float | None = None  # the measured quantity that tripped the check

    def as_dict(self) -> dict[str, str | float | None]:
        return asdict(self)


@dataclass(frozen=True)
class QualityThresholds:
    """Where each check fires. Defaults are calibrated on real radiographs (module docstring)."""

    near_constant_spread: float = 0.02
    low_contrast_spread: float = 0.2
    clipped_dark_fraction: float = 0.35  # Kermany max 0.29: children's films have wide black backgrounds
    clipped_bright_fraction: float = 0.08  # Kermany and NIH max 0.01
    dark_p99: float = 0.3  # nothing in the image is brighter than this: no bone or mediastinum visible
    bright_p1: float = 0.6  # nothing in the image is darker than this: no air or lung visible
    min_side_px: int = 224  # pass the model's input size to warn exactly when the image is upsampled
    max_aspect_ratio: float = 2.0
    inverted_polarity_score: float = -0.05
    colored_pixel_fraction: float = 0.01


def assess_quality(decoded: DecodedImage, thresholds: QualityThresholds | None = None) -> list[QualityWarning]:
    """All quality warnings for one decoded image, in a stable order (empty when nothing looks wrong)."""
    limits = thresholds or QualityThresholds()
    pixels = decoded.pixels
    sample = _strided_sample(pixels)
    warnings = [
        *_contrast_warnings(sample, limits),
        *_exposure_warnings(sample, limits),
        *_geometry_warnings(decoded, limits),
        *_polarity_warnings(decoded, limits),
        *_source_warnings(decoded, limits),
    ]
    return warnings


def _strided_sample(pixels: np.ndarray) -> np.ndarray:
    step = max(1, int(np.ceil(np.sqrt(pixels.size / _SAMPLE_PIXELS))))
    return pixels[::step, ::step]


def _contrast_warnings(sample: np.ndarray, limits: QualityThresholds) -> list[QualityWarning]:
    p1, p99 = (float(v) for v in np.percentile(sample, [1, 99]))
    spread = p99 - p1
    if spread < limits.near_constant_spread:
        return [
            QualityWarning(
                "near_constant", "The image is almost uniform: it shows no anatomy to analyse.", round(spread, 4)
            )
        ]
    if spread < limits.low_contrast_spread:
        return [
            QualityWarning(
                "low_contrast",
                f"Very low contrast (98% of pixels lie within {spread:.0%} of the grey range); findings may be missed.",
                round(spread, 4),
            )
        ]
    return []


def _exposure_warnings(sample: np.ndarray, limits: QualityThresholds) -> list[QualityWarning]:
    warnings: list[QualityWarning] = []
    dark = float(np.mean(sample <= 2 / 255))
    bright = float(np.mean(sample >= 253 / 255))
    p1, p99 = (float(v) for v in np.percentile(sample, [1, 99]))
    if dark > limits.clipped_dark_fraction:
        reason = f"{dark:.0%} of pixels are clipped to black"
        warnings.append(_exposure("overexposed", "over-exposed or too dark", reason, "the lung fields", dark))
    elif p99 < limits.dark_p99:
        reason = f"99% of pixels are darker than {p99:.0%} grey"
        warnings.append(_exposure("overexposed", "over-exposed or too dark", reason, "the lung fields", p99))
    if bright > limits.clipped_bright_fraction:
        reason = f"{bright:.0%} of pixels are clipped to white"
        warnings.append(_exposure("underexposed", "under-exposed or washed out", reason, "dense regions", bright))
    elif p1 > limits.bright_p1:
        reason = f"99% of pixels are brighter than {p1:.0%} grey"
        warnings.append(_exposure("underexposed", "under-exposed or washed out", reason, "dense regions", p1))
    return warnings


def _exposure(code: str, looks: str, reason: str, where: str, value: float) -> QualityWarning:
    return QualityWarning(code, f"The image looks {looks}: {reason}; detail in {where} may be lost.", round(value, 4))


def _geometry_warnings(decoded: DecodedImage, limits: QualityThresholds) -> list[QualityWarning]:
    warnings: list[QualityWarning] = []
    short_side, long_side = sorted((decoded.height, decoded.width))
    if short_side < limits.min_side_px:
        warnings.append(
            QualityWarning(
                "small_image",
                f"The image is only {decoded.width}x{decoded.height} px; it is enlarged for analysis, which cannot"
                " add detail (an original-resolution file is better).",
                float(short_side),
            )
        )
    aspect = long_side / short_side
    if aspect > limits.max_aspect_ratio:
        warnings.append(
            QualityWarning(
                "extreme_aspect_ratio",
                f"The image is {aspect:.1f} times longer than wide, unlike a chest radiograph; it may be cropped or"
                " a composite, and is distorted for analysis.",
                round(aspect, 3),
            )
        )
    return warnings


def polarity_score(pixels: np.ndarray) -> float:
    """How much a frontal chest image looks normally displayed (> 0) rather than inverted (< 0).

    (mediastinum - lungs) - 0.5 * (border - lungs) on a 64 x 64 thumbnail: in a normal PA/AP film the central
    mediastinum is brighter than the lung fields on either side and the image border is not brighter than the
    lungs; inversion flips both signs.
    """
    thumb = cv2.resize(pixels.astype(np.float32, copy=False), (_GRID, _GRID), interpolation=cv2.INTER_AREA)
    lungs = np.concatenate([thumb[16:40, 10:26].ravel(), thumb[16:40, 38:54].ravel()]).mean()
    mediastinum = thumb[16:44, 28:36].mean()
    ring = np.ones((_GRID, _GRID), dtype=bool)
    ring[4:-4, 4:-4] = False  # a 4-px frame around the thumbnail
    border = thumb[ring].mean()
    return float((mediastinum - lungs) - 0.5 * (border - lungs))


def _polarity_warnings(decoded: DecodedImage, limits: QualityThresholds) -> list[QualityWarning]:
    if _view_position(decoded) in _LATERAL_VIEWS:
        return []  # the mediastinum/lung layout the score relies on is that of a frontal view
    score = polarity_score(decoded.pixels)
    if score >= limits.inverted_polarity_score:
        return []
    return [
        QualityWarning(
            "possibly_inverted",
            "The image may be inverted (negative): the mediastinum looks darker than the lung fields. Check the"
            " display polarity before reading.",
            round(score, 4),
        )
    ]


def _view_position(decoded: DecodedImage) -> str:
    return str(decoded.metadata.get("ViewPosition", "")).strip().upper()


def _source_warnings(decoded: DecodedImage, limits: QualityThresholds) -> list[QualityWarning]:
    warnings: list[QualityWarning] = []
    meta = decoded.metadata
    colored = float(meta.get("colored_pixel_fraction", 0.0) or 0.0)
    if colored > limits.colored_pixel_fraction:
        warnings.append(
            QualityWarning(
                "color_source",
                f"The source image is in colour ({colored:.0%} of pixels clearly coloured); it was converted to"
                " grey. A photo, screenshot or annotated image is a poor substitute for the original radiograph.",
                round(colored, 4),
            )
        )
    if meta.get("multi_frame"):
        warnings.append(
            QualityWarning("multiple_frames", "The file holds several images; only the first one was analysed.")
        )
    view = _view_position(decoded)
    if view in _LATERAL_VIEWS:
        warnings.append(
            QualityWarning(
                "lateral_view",
                f"The DICOM header gives view position {view}; the model was trained on frontal (PA/AP) views.",
            )
        )
    body_part = str(meta.get("BodyPartExamined", "")).strip().upper()
    if body_part and not any(word in body_part for word in _CHEST_WORDS):
        warnings.append(
            QualityWarning(
                "not_chest",
                f"The DICOM header gives body part {body_part}; the model analyses chest radiographs only.",
            )
        )
    return warnings
