"""The Predictor: one warm model per task, thread-safe, with a result cache keyed by (image hash, model version).

Probabilities are temperature-calibrated (temperature from the checkpoint); the label is the positive class when
its calibrated probability reaches the checkpoint's threshold. The penultimate-layer embedding comes back with
every prediction for similar-case retrieval.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from cachetools import TTLCache

from imaging import preprocess
from inference.checkpoint import ModelCheckpoint, load_checkpoint


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float  # calibrated probability of `label`
    probabilities: dict[str, float]  # calibrated, one per class
    positive_probability: float  # calibrated probability of the checkpoint's positive class
    embedding: np.ndarray  # penultimate-layer features, float32
    model_version: str
    processing_time_ms: float
    cached: bool = False


class Predictor:
    def __init__(self, checkpoint: ModelCheckpoint, threads: int = 2, cache_size: int = 1024, cache_ttl: float = 3600):
        torch.set_num_threads(max(1, threads))
        self.checkpoint = checkpoint
        self.model = checkpoint.build_model()
        self._model_lock = threading.Lock()  # one forward at a time: intra-op threads already use every core
        self._cache: TTLCache[tuple[str, str], Prediction] = TTLCache(maxsize=max(1, cache_size), ttl=cache_ttl)
        self._cache_lock = threading.Lock()
        self._warm_up()

    @classmethod
    def from_path(cls, path: Path, threads: int = 2, cache_size: int = 1024, cache_ttl: float = 3600) -> Predictor:
        return cls(load_checkpoint(path), threads=threads, cache_size=cache_size, cache_ttl=cache_ttl)

    @property
    def version(self) -> str:
        return self.checkpoint.version

    def _warm_up(self) -> None:
        size = self.checkpoint.preprocess.input_size
        self._forward(np.zeros((1, 1, size, size), dtype=np.float32))

    def predict(self, pixels: np.ndarray, content_hash: str | None = None) -> Prediction:
        return self.predict_batch([pixels], [content_hash])[0]

    def predict_batch(self, images: Sequence[np.ndarray], content_hashes: Sequence[str | None]) -> list[Prediction]:
        """Predict decoded [0, 1] images; cached results are reused, the rest run as one batch."""
        started = time.perf_counter()
        results: list[Prediction | None] = [self._cached(h) for h in content_hashes]
        todo = [i for i, result in enumerate(results) if result is None]
        if todo:
            batch = np.stack([preprocess(images[i], self.checkpoint.preprocess) for i in todo])
            logits, embeddings = self._forward(batch)
            elapsed_ms = (time.perf_counter() - started) * 1000 / len(todo)
            for row, i in enumerate(todo):
                results[i] = self._to_prediction(logits[row], embeddings[row], elapsed_ms)
                self._store(content_hashes[i], results[i])
        return [r for r in results if r is not None]

    def forward_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw logits for an already preprocessed batch (benchmarks, explainability)."""
        with self._model_lock, torch.inference_mode():
            return self.model(batch)

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._model_lock, torch.inference_mode():
            features = self.model.forward_features(torch.from_numpy(batch))
            embeddings = self.model.forward_head(features, pre_logits=True)
            logits = self.model.forward_head(features)
        return logits.float().numpy(), embeddings.float().numpy()

    def _to_prediction(self, logits: np.ndarray, embedding: np.ndarray, elapsed_ms: float) -> Prediction:
        ckpt = self.checkpoint
        scaled = logits.astype(np.float64) / ckpt.temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        positive = float(probs[-1])
        if len(ckpt.class_names) == 2:
            label = ckpt.positive_class if positive >= ckpt.threshold else ckpt.class_names[0]
        else:
            label = ckpt.class_names[int(np.argmax(probs))]
        probabilities = {name: float(p) for name, p in zip(ckpt.class_names, probs, strict=True)}
        return Prediction(
            label=label,
            confidence=probabilities[label],
            probabilities=probabilities,
            positive_probability=positive,
            embedding=embedding.astype(np.float32),
            model_version=ckpt.version,
            processing_time_ms=round(elapsed_ms, 2),
        )

    def _cached(self, content_hash: str | None) -> Prediction | None:
        if content_hash is None:
            return None
        with self._cache_lock:
            hit = self._cache.get((content_hash, self.version))
        if hit is None:
            return None
        return Prediction(**{**hit.__dict__, "cached": True, "processing_time_ms": 0.0})

    def _store(self, content_hash: str | None, prediction: Prediction | None) -> None:
        if content_hash is not None and prediction is not None:
            with self._cache_lock:
                self._cache[(content_hash, self.version)] = prediction
