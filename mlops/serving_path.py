"""Dataset samples through the serving path: the upload decoder and the serving Predictor, in model batches.

The commands that fit or judge what serving will do (the input gate's and the scope's references, the population
report) read films exactly as an upload is read, so what they measure is what the workstation answers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from imaging import decode_image
from inference import Prediction, Predictor
from labelled_data import Sample


def sample_pixels(sample: Sample) -> np.ndarray:
    return decode_image(sample.path.read_bytes()).pixels


def predict_samples(predictor: Predictor, samples: Sequence[Sample], batch_size: int = 32) -> list[Prediction]:
    predictions: list[Prediction] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        predictions.extend(predictor.predict_batch([sample_pixels(s) for s in chunk], [None] * len(chunk)))
    return predictions


def embed_samples(predictor: Predictor, samples: Sequence[Sample], batch_size: int = 32) -> np.ndarray:
    """(N, D) embeddings of the samples."""
    return np.stack([p.embedding for p in predict_samples(predictor, samples, batch_size)])
