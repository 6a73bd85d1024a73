"""The one preprocessing path from a decoded radiograph to a model input, shared by training and serving.

Two stages, so training can cache the first and augment between them:
1. `to_square_uint8`: resize to the model's square input size (stretching, not padding, because the shipped
   training data was stored stretched to a square) and quantise to 8 bits.
2. `to_model_input`: optional global histogram equalisation (removes most exposure and scanner differences, the
   main shift between the Kermany train and test splits), then mean/std normalisation.
The parameters come from the checkpoint (`PreprocessSpec`), never from constants here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class PreprocessSpec:
    input_size: int = 224
    mean: float = 0.5
    std: float = 0.25
    equalize: bool = True

    def __post_init__(self) -> None:
        # A checkpoint carrying nonsense here would otherwise fail deep inside cv2 or produce inf/nan inputs.
        if not 8 <= self.input_size <= 4096:
            raise ValueError(f"input_size must be 8..4096 px, got {self.input_size}")
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"mean must be finite and std finite and > 0, got mean={self.mean}, std={self.std}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """Inverse of `to_dict`; raises ValueError naming what is missing or invalid.

        `equalize` defaults to False: checkpoints written before it existed were trained without it.
        """
        try:
            return cls(
                input_size=int(data["input_size"]),
                mean=float(data["mean"]),
                std=float(data["std"]),
                equalize=bool(data.get("equalize", False)),
            )
        except KeyError as exc:
            raise ValueError(f"preprocessing spec lacks {exc.args[0]!r}") from None
        except TypeError as exc:
            raise ValueError(f"preprocessing spec is malformed: {exc}") from None


def to_square_uint8(pixels: np.ndarray, size: int) -> np.ndarray:
    """Resize a [0, 1] float image to size x size and quantise to uint8."""
    interpolation = cv2.INTER_AREA if min(pixels.shape[:2]) > size else cv2.INTER_LINEAR
    resized = cv2.resize(pixels.astype(np.float32, copy=False), (size, size), interpolation=interpolation)
    return np.clip(np.rint(resized * 255.0), 0, 255).astype(np.uint8)


def to_model_input(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 square image -> float32 array of shape (1, size, size), ready to batch."""
    if spec.equalize:
        image = cv2.equalizeHist(image)
    scaled = image.astype(np.float32) / 255.0
    return ((scaled - spec.mean) / spec.std)[None, :, :]


def preprocess(
    pixels: np.ndarray, spec: PreprocessSpec, augment: Callable[[np.ndarray], np.ndarray] | None = None
) -> np.ndarray:
    """Decoded [0, 1] pixels -> model input; `augment` (training only) acts on the uint8 square image."""
    image = to_square_uint8(pixels, spec.input_size)
    if augment is not None:
        image = augment(image)
    return to_model_input(image, spec)
