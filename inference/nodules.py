"""The second finding: lung nodules and masses, with an image-level probability and located marks.

`NodulePredictor` runs a nodule checkpoint (`extra["model_kind"] == "nodule-heatmap"`, see inference.nodule_model):
the image-level logit is temperature-calibrated like the pneumonia model's; the heatmap's local peaks become
`NoduleLocation`s in the stored image's pixels. A mark is a box centred on its peak (the point a hit is scored by:
inside a radiologist's box), as wide as the region where the heatmap stays above half the peak. Marks below the
checkpoint's `location_threshold` (chosen on validation for about one false mark per film) are not returned.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from cachetools import TTLCache

from imaging import preprocess
from inference.checkpoint import CheckpointError, ModelCheckpoint
from inference.nodule_model import MODEL_KIND
from inference.runtimes import Runtime, RuntimeRequest, create_runtime
from settings import Settings

NODULE_TASK = "nodule"
MAX_LOCATIONS = 5  # a film with more marks than this reads as noise, not as findings
HALF_PEAK = 0.5  # a mark's extent: the connected region where the heatmap is at least this share of its peak


@dataclass(frozen=True)
class NoduleLocation:
    x: float  # left edge, stored-image pixels
    y: float  # top edge
    w: float
    h: float
    score: float  # heatmap probability at the mark's centre

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2

    def to_dict(self) -> dict[str, float]:
        return {key: round(value, 4 if key == "score" else 1) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class NoduleFinding:
    label: str  # the checkpoint's positive class when `probability` reaches `threshold`
    probability: float  # calibrated image-level probability of a nodule or mass
    threshold: float
    locations: tuple[NoduleLocation, ...]
    model_version: str
    processing_time_ms: float = 0.0
    cached: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The case's `nodule` field: label, probability, threshold, locations [{x, y, w, h, score}], model_version."""
        return {
            "label": self.label,
            "probability": self.probability,
            "threshold": self.threshold,
            "locations": [location.to_dict() for location in self.locations],
            "model_version": self.model_version,
        }


def is_nodule_checkpoint(checkpoint: ModelCheckpoint) -> bool:
    return checkpoint.extra.get("model_kind") == MODEL_KIND


def locate(
    heat: np.ndarray, width: int, height: int, min_score: float, max_locations: int = MAX_LOCATIONS
) -> tuple[NoduleLocation, ...]:
    """Marks from a heatmap of probabilities (h, w) for a stored image of width x height pixels, best first."""
    heat = heat.astype(np.float32, copy=False)  # the peak test compares with cv2's float32 dilation
    grid_h, grid_w = heat.shape
    sx, sy = width / grid_w, height / grid_h
    local_max = heat >= cv2.dilate(heat, np.ones((3, 3), np.uint8))
    rows, cols = np.nonzero(local_max & (heat >= min_score))
    order = np.argsort(-heat[rows, cols])[:max_locations]
    marks = []
    for row, col in zip(rows[order], cols[order], strict=True):
        peak = float(heat[row, col])
        _, regions = cv2.connectedComponents((heat >= HALF_PEAK * peak).astype(np.uint8), connectivity=8)
        region_rows, region_cols = np.nonzero(regions == regions[row, col])
        half_w = max(col - region_cols.min(), region_cols.max() - col) + 0.5  # in cells, centred on the peak
        half_h = max(row - region_rows.min(), region_rows.max() - row) + 0.5
        cx, cy = (col + 0.5) * sx, (row + 0.5) * sy
        half_x, half_y = min(half_w * sx, cx, width - cx), min(half_h * sy, cy, height - cy)  # stays on the film
        marks.append(NoduleLocation(float(cx - half_x), float(cy - half_y), float(2 * half_x), float(2 * half_y), peak))
    return tuple(marks)


class NodulePredictor:
    """Warm, thread-safe nodule model with a result cache keyed by (image hash, model version)."""

    def __init__(
        self,
        checkpoint: ModelCheckpoint,
        threads: int = 2,
        cache_size: int = 1024,
        cache_ttl: float = 3600,
        *,
        runtime: str = "torch",
        precision: str = "fp32",
        runtime_cache_dir: Path = Path("var/runtimes"),
    ):
        """`runtime`/`precision`: a name of inference.runtimes.RUNTIMES and fp32/int8, like the pneumonia Predictor's
        (int8 graphs are made ahead by `python -m mlops.export_runtime --int8`)."""
        if not is_nodule_checkpoint(checkpoint):
            raise CheckpointError(f"Checkpoint {checkpoint.version} is not a nodule model (model_kind {MODEL_KIND!r}).")
        torch.set_num_threads(max(1, threads))
        self.checkpoint = checkpoint
        self.model = checkpoint.build_model()
        request = RuntimeRequest(checkpoint, self.model, precision, Path(runtime_cache_dir), threads)
        self.runtime: Runtime = create_runtime(runtime, request)
        self.location_threshold = float(checkpoint.extra.get("location_threshold", 0.5))
        self._lock = threading.Lock()  # one forward at a time: intra-op threads already use every core
        self._cache: TTLCache[tuple[str, str], NoduleFinding] = TTLCache(maxsize=max(1, cache_size), ttl=cache_ttl)
        self.predict(np.full((64, 64), 0.5, dtype=np.float32))  # warm-up: the first real film is not the slow one

    @classmethod
    def from_settings(cls, checkpoint: ModelCheckpoint, settings: Settings) -> NodulePredictor:
        return cls(
            checkpoint,
            settings.torch_threads,
            settings.cache_size,
            settings.cache_ttl,
            runtime=settings.inference_runtime,
            precision=settings.inference_precision,
            runtime_cache_dir=settings.resolved_runtime_cache_dir,
        )

    @property
    def version(self) -> str:
        return self.checkpoint.version

    def predict(self, pixels: np.ndarray, content_hash: str | None = None) -> NoduleFinding:
        """One decoded film ([0, 1] float, any size) -> its nodule finding, marks in the film's own pixels."""
        key = (content_hash, self.version) if content_hash else None
        if key is not None and (hit := self._cache.get(key)) is not None:
            return replace(hit, cached=True)
        started = time.perf_counter()
        image_logit, heat = self.forward(pixels)
        finding = self.finding(image_logit, heat, pixels.shape[1], pixels.shape[0])
        finding = replace(finding, processing_time_ms=(time.perf_counter() - started) * 1e3)
        if key is not None:
            self._cache[key] = finding
        return finding

    def forward(self, pixels: np.ndarray) -> tuple[float, np.ndarray]:
        """(image logit, heatmap probabilities) for one film, through the one preprocessing path."""
        spec = self.checkpoint.preprocess
        batch = preprocess(pixels, spec)[None]
        with self._lock:
            image_logits, heat_logits = self.runtime.run(batch)
        return float(image_logits[0]), 1.0 / (1.0 + np.exp(-heat_logits[0]))

    def finding(self, image_logit: float, heat: np.ndarray, width: int, height: int) -> NoduleFinding:
        probability = float(1.0 / (1.0 + np.exp(-image_logit / self.checkpoint.temperature)))
        threshold = self.checkpoint.threshold
        return NoduleFinding(
            label=self.checkpoint.class_names[1 if probability >= threshold else 0],
            probability=probability,
            threshold=threshold,
            locations=locate(heat, width, height, self.location_threshold),
            model_version=self.version,
        )
