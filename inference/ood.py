"""The input gate: is this a frontal chest radiograph like the training data?

A photo, a CT slice, a lateral view or an inverted film would otherwise come back as a confident finding. Two
layers, both cheap (they reuse the prediction's forward pass):
1. Image checks on the decoded pixels (thresholds in settings): near-constant image, extreme aspect ratio, and the
   chest's own layout: on an upright frontal film the mediastinum and spine form a bright vertical band between
   two darker lung fields. An inverted film has that band darker than the lungs, a film turned by 90 degrees has
   it horizontal. (Measured on Kermany: every train and test image passes, every inverted or 90-degree rotated
   one fails; see bench/ood_gate.py.) A film turned by 180 degrees passes those; when its bottom is not brighter
   than its top (diaphragm and abdomen are), the gate embeds the image turned back and calls it upside down if
   that lies clearly closer to the training data (one extra forward pass, for a few percent of real films).
2. Embedding distance: class-conditional Mahalanobis distance (Lee et al. 2018) of the model's pooled embedding to
   the training embeddings, with a Ledoit-Wolf shrunk covariance shared by the classes. The threshold is a high
   percentile (OOD_PERCENTILE, default 99.5) of the distances of held-out training images (patients never seen by
   the fit), so about 0.5% of in-distribution images are expected to be refused.

The reference statistics are fitted by a command and stored inside the checkpoint (`extra["ood"]`), because
serving reads everything from the checkpoint:

    python -m mlops.fit_gate --checkpoint models/pneumonia.pt --data DIR

An input that fails either layer answers `ood: true` with a human-readable reason; the finding must then not be
presented as reliable and the case goes to review (it is also flagged uncertain).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from inference.checkpoint import ModelCheckpoint
from settings import Settings

log = logging.getLogger(__name__)

OOD_EXTRA_KEY = "ood"
REFERENCE_KIND = "mahalanobis-class-conditional-ledoit-wolf"
PROBE_SIZE = 64  # the layout checks look at a 64 x 64 thumbnail: coarse anatomy only
RANGE_PROBE_SIZE = 256  # the intensity spread is read on a thumbnail too: percentiles of 9 MP films are slow
# Bands of the layout check, as fractions of the (stretched, square) image: rows and columns of the mediastinum,
# of the two lung fields, and the same bands transposed for the horizontal comparison.
_MIDDLE = (0.42, 0.58)
_SIDES = ((0.16, 0.34), (0.66, 0.84))
_SPAN = (0.25, 0.75)


class OODError(ValueError):
    """Reference statistics are missing, malformed or do not belong to this model (message safe to show)."""


# --- image checks -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageChecks:
    max_aspect_ratio: float = 2.0
    min_dynamic_range: float = 0.08
    min_orientation_score: float = 0.0
    flip_screen: float = 0.03  # below this bottom-minus-top balance, also test the image turned upside down
    flip_margin: float = 1.0  # upside down when turning it makes the embedding distance drop by more than this

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageChecks:
        return cls(
            max_aspect_ratio=settings.ood_max_aspect_ratio,
            min_dynamic_range=settings.ood_min_dynamic_range,
            min_orientation_score=settings.ood_min_orientation_score,
            flip_screen=settings.ood_flip_screen,
            flip_margin=settings.ood_flip_margin,
        )

    def reason(self, pixels: np.ndarray, layout: ChestLayout | None = None) -> str | None:
        """Why the decoded [0, 1] image (H, W) is not a usable frontal chest radiograph, or None."""
        height, width = pixels.shape[:2]
        aspect = max(height, width) / max(1, min(height, width))
        if aspect > self.max_aspect_ratio:
            return f"aspect ratio {aspect:.1f}:1 is not that of a chest radiograph (at most {self.max_aspect_ratio}:1)"
        low, high = np.percentile(_thumbnail(pixels, RANGE_PROBE_SIZE), [1, 99])
        if high - low < self.min_dynamic_range:
            return f"image is nearly uniform (intensity spread {high - low:.3f} < {self.min_dynamic_range})"
        layout = layout or chest_layout(pixels)
        if layout.orientation_score < self.min_orientation_score:
            if layout.horizontal_contrast > abs(layout.mediastinum_contrast):
                return "not an upright frontal chest view: the bright central band runs horizontally (rotated image?)"
            if layout.mediastinum_contrast < 0:
                return "polarity looks inverted: the mediastinum is darker than the lung fields"
            return "not a frontal chest view: no bright mediastinal band between darker lung fields"
        return None


@dataclass(frozen=True)
class ChestLayout:
    mediastinum_contrast: float  # central vertical band minus lung fields (positive on a frontal film)
    horizontal_contrast: float  # the same measured on the transposed image
    orientation_score: float  # mediastinum_contrast - horizontal_contrast
    vertical_balance: float  # bottom band minus top band (diaphragm and abdomen are brighter than the apices)


def chest_layout(pixels: np.ndarray) -> ChestLayout:
    """Brightness of the central vertical band against the lung fields, and the same across (see module doc)."""
    thumb = cv2.resize(np.asarray(pixels, dtype=np.float32), (PROBE_SIZE, PROBE_SIZE), interpolation=cv2.INTER_AREA)
    vertical = _band_contrast(thumb)
    horizontal = _band_contrast(thumb.T)
    columns = slice(round(PROBE_SIZE * 0.2), round(PROBE_SIZE * 0.8))
    top = thumb[round(PROBE_SIZE * 0.05) : round(PROBE_SIZE * 0.25), columns].mean()
    bottom = thumb[round(PROBE_SIZE * 0.75) : round(PROBE_SIZE * 0.95), columns].mean()
    return ChestLayout(vertical, horizontal, vertical - horizontal, float(bottom - top))


def _thumbnail(pixels: np.ndarray, max_side: int) -> np.ndarray:
    image = np.asarray(pixels, dtype=np.float32)
    scale = max_side / max(image.shape[:2])
    if scale >= 1:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _band_contrast(image: np.ndarray) -> float:
    def cut(lo_hi: tuple[float, float]) -> slice:
        return slice(round(lo_hi[0] * PROBE_SIZE), round(lo_hi[1] * PROBE_SIZE))

    rows = cut(_SPAN)
    middle = image[rows, cut(_MIDDLE)].mean()
    sides = np.concatenate([image[rows, cut(band)].ravel() for band in _SIDES]).mean()
    return float(middle - sides)


# --- embedding reference ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MahalanobisReference:
    class_means: np.ndarray  # (K, D)
    precision: np.ndarray  # (D, D), inverse of the shrunk shared covariance
    threshold: float  # distances above it are out of distribution
    percentile: float
    model_version: str
    fit_images: int
    holdout_images: int
    holdout_quantiles: dict[str, float] = field(default_factory=dict)
    created: str = ""

    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """Distance of each (B, D) embedding to its nearest class mean."""
        x = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
        if x.shape[1] != self.precision.shape[0]:
            raise OODError(f"Embedding size {x.shape[1]} does not match the reference ({self.precision.shape[0]}).")
        diff = x[:, None, :] - self.class_means[None, :, :]
        squared = np.einsum("bkd,de,bke->bk", diff, self.precision, diff)
        return np.sqrt(np.maximum(squared.min(axis=1), 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": REFERENCE_KIND,
            "class_means": self.class_means.astype(np.float32).tolist(),
            "precision": self.precision.astype(np.float32).tolist(),
            "threshold": float(self.threshold),
            "percentile": float(self.percentile),
            "model_version": self.model_version,
            "fit_images": int(self.fit_images),
            "holdout_images": int(self.holdout_images),
            "holdout_quantiles": {k: float(v) for k, v in self.holdout_quantiles.items()},
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MahalanobisReference:
        if not isinstance(data, dict) or data.get("kind") != REFERENCE_KIND:
            raise OODError("The checkpoint's OOD reference is not a class-conditional Mahalanobis reference.")
        try:
            means = np.asarray(data["class_means"], dtype=np.float64)
            precision = np.asarray(data["precision"], dtype=np.float64)
            threshold = float(data["threshold"])
        except (KeyError, TypeError, ValueError) as exc:
            raise OODError(f"The checkpoint's OOD reference is malformed ({type(exc).__name__}).") from None
        if means.ndim != 2 or precision.shape != (means.shape[1], means.shape[1]) or not np.isfinite(threshold):
            raise OODError("The checkpoint's OOD reference has inconsistent shapes.")
        return cls(
            class_means=means,
            precision=precision,
            threshold=threshold,
            percentile=float(data.get("percentile", 0.0)),
            model_version=str(data.get("model_version", "")),
            fit_images=int(data.get("fit_images", 0)),
            holdout_images=int(data.get("holdout_images", 0)),
            holdout_quantiles=dict(data.get("holdout_quantiles") or {}),
            created=str(data.get("created", "")),
        )


def fit_reference(
    fit_embeddings: np.ndarray,
    fit_labels: np.ndarray,
    holdout_embeddings: np.ndarray,
    percentile: float,
    model_version: str,
) -> MahalanobisReference:
    """Class means and a Ledoit-Wolf shared covariance on the fit part; threshold from the held-out distances."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(fit_embeddings, dtype=np.float64)
    labels = np.asarray(fit_labels)
    if len(x) < 10 or len(holdout_embeddings) < 10:
        raise OODError("Fitting the OOD reference needs at least 10 fit and 10 held-out images.")
    if not 50.0 <= percentile < 100.0:
        raise OODError(f"The OOD percentile must lie in [50, 100); got {percentile}.")
    classes = np.unique(labels)
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    centered = x - means[np.searchsorted(classes, labels)]
    precision = LedoitWolf(assume_centered=True).fit(centered).precision_
    reference = MahalanobisReference(
        class_means=means,
        precision=precision,
        threshold=0.0,
        percentile=percentile,
        model_version=model_version,
        fit_images=len(x),
        holdout_images=len(holdout_embeddings),
    )
    return _with_threshold(reference, reference.distances(holdout_embeddings), percentile)


def _with_threshold(reference: MahalanobisReference, held_out: np.ndarray, percentile: float) -> MahalanobisReference:
    quantiles = {f"p{q:g}": float(np.percentile(held_out, q)) for q in (50, 90, 99, 99.5, 100)}
    return MahalanobisReference(
        class_means=reference.class_means,
        precision=reference.precision,
        threshold=float(np.percentile(held_out, percentile)),
        percentile=percentile,
        model_version=reference.model_version,
        fit_images=reference.fit_images,
        holdout_images=reference.holdout_images,
        holdout_quantiles=quantiles,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def reference_from_checkpoint(checkpoint: ModelCheckpoint) -> MahalanobisReference | None:
    """The stored reference, or None when the checkpoint has none; refuses a reference fitted on other weights."""
    raw = checkpoint.extra.get(OOD_EXTRA_KEY)
    if raw is None:
        return None
    reference = MahalanobisReference.from_dict(raw)
    if reference.model_version not in checkpoint.same_backbone_versions:
        raise OODError(
            f"The OOD reference was fitted on model {reference.model_version}, not {checkpoint.version}; "
            "run `python -m mlops.fit_gate` again."
        )
    return reference


def with_reference(checkpoint: ModelCheckpoint, reference: MahalanobisReference) -> ModelCheckpoint:
    """A copy of the checkpoint whose `extra` carries the reference (weights and everything else unchanged)."""
    extra = {**checkpoint.extra, OOD_EXTRA_KEY: reference.to_dict()}
    return ModelCheckpoint(**{**checkpoint.__dict__, "extra": extra})


# --- the gate -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    ood: bool
    reason: str = ""  # human-readable; empty when the input looks like the training radiographs
    distance: float | None = None  # embedding distance (None without a reference)
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class InputGate:
    """Image checks plus the embedding distance; stateless after construction, so safe to share between threads."""

    def __init__(self, reference: MahalanobisReference | None, checks: ImageChecks, enabled: bool = True) -> None:
        self.reference = reference
        self.checks = checks
        self.enabled = enabled

    @classmethod
    def from_settings(cls, checkpoint: ModelCheckpoint, settings: Settings) -> InputGate:
        """The gate of the checkpoint's stored reference; a stale reference must not stop serving, so it falls back
        to the image checks alone (logged)."""
        checks = ImageChecks.from_settings(settings)
        try:
            reference = reference_from_checkpoint(checkpoint)
        except OODError as exc:
            log.error("input gate without embedding reference: %s", exc)
            reference = None
        return cls(reference, checks, settings.ood_enabled)

    def check(
        self, pixels: np.ndarray, embedding: np.ndarray, embed: Callable[[np.ndarray], np.ndarray] | None = None
    ) -> GateResult:
        """Gate one decoded image (H, W) with the embedding of that same image. `embed` (pixels -> embedding, the
        same model) enables the upside-down test, run only when the image's brightness balance is suspicious."""
        if not self.enabled:
            return GateResult(ood=False)
        distance = float(self.reference.distances(embedding)[0]) if self.reference is not None else None
        threshold = self.reference.threshold if self.reference is not None else None
        layout = chest_layout(pixels)
        reason = self.checks.reason(pixels, layout)
        if reason is None and distance is not None and threshold is not None and distance > threshold:
            reason = (
                f"image is unlike the training radiographs (embedding distance {distance:.1f} > {threshold:.1f}); "
                "is it a frontal chest X-ray?"
            )
        if reason is None and distance is not None and embed is not None:
            reason = self._upside_down(pixels, layout, distance, embed)
        return GateResult(ood=reason is not None, reason=reason or "", distance=distance, threshold=threshold)

    def _upside_down(
        self, pixels: np.ndarray, layout: ChestLayout, distance: float, embed: Callable[[np.ndarray], np.ndarray]
    ) -> str | None:
        """A film turned by 180 degrees keeps the layout checks happy; the model itself tells: the same image turned
        back lies clearly closer to the training radiographs (Kermany test split: 99.7% of turned films, 0.3% of
        upright ones at margin 0)."""
        if self.reference is None or layout.vertical_balance >= self.checks.flip_screen:
            return None
        turned = float(self.reference.distances(embed(np.ascontiguousarray(np.rot90(pixels, 2))))[0])
        if distance - turned > self.checks.flip_margin:
            return (
                f"image looks upside down: turned by 180 degrees it matches the training radiographs better "
                f"(embedding distance {turned:.1f} instead of {distance:.1f})"
            )
        return None
