"""The Predictor: one warm model per task, thread-safe, with a result cache keyed by (image hash, model version).

Probabilities are temperature-calibrated (temperature from the checkpoint); the label is the positive class when
its calibrated probability reaches the checkpoint's threshold. The penultimate-layer embedding comes back with
every prediction for similar-case retrieval.

Every prediction also carries its uncertainty (MC dropout on the head by default, see inference.uncertainty), the
`uncertain` flag of the settings' policy, and the input gate's verdict (`ood`, `ood_reason`, see inference.ood).
Both reuse the one backbone pass. Heatmaps (`Predictor.heatmap`) run on a separate model copy (inference.explain),
so gradients never touch the inference path.

The backbone runs on the runtime chosen by name (inference.runtimes: torch, onnxruntime, openvino; fp32 or int8);
MC dropout resamples the torch linear head on that runtime's embedding. With batching on (inference.batching),
concurrent requests share model passes; `cancel` events withdraw a request's images before they reach the model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from cachetools import TTLCache

from imaging import preprocess
from inference.batching import BatchPolicy, MicroBatcher, PredictionCancelled
from inference.checkpoint import ModelCheckpoint
from inference.explain import Explainer, Heatmap
from inference.ood import GateResult, ImageChecks, InputGate, reference_from_checkpoint
from inference.runtimes import Runtime, RuntimeRequest, create_runtime
from inference.uncertainty import (
    Uncertainty,
    UncertaintyPolicy,
    calibrated_probabilities,
    decide_class,
    head_is_linear_on_embedding,
    sample_logits,
    uncertainties_from_logits,
)
from settings import Settings

log = logging.getLogger(__name__)

# One image's share of a model pass: logits (K,), embedding (D,), uncertainty samples (passes, K), method used.
Row = tuple[np.ndarray, np.ndarray, np.ndarray, str]


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
    uncertainty: Uncertainty | None = None  # entropy, std, mutual information over the policy's passes
    uncertain: bool = False  # the settings' policy (see inference.uncertainty): goes to the annotation queue
    uncertain_reasons: tuple[str, ...] = ()
    ood: bool = False  # the input gate refused the image: the finding is not reliable, the case needs review
    ood_reason: str = ""
    ood_distance: float | None = None  # embedding distance to the training data (None without a reference)


class Predictor:
    def __init__(
        self,
        checkpoint: ModelCheckpoint,
        threads: int = 2,
        cache_size: int = 1024,
        cache_ttl: float = 3600,
        *,
        uncertainty: UncertaintyPolicy | None = None,
        gate: InputGate | bool = True,
        runtime: str = "torch",
        precision: str = "fp32",
        runtime_cache_dir: Path = Path("var/runtimes"),
        batching: BatchPolicy | None = None,
    ):
        """Plain arguments (see `from_settings` for the serving configuration). `uncertainty`: None is the policy's
        defaults. `gate`: an `InputGate`, True for the checkpoint's reference with default image checks, or False.
        `runtime`/`precision`: a name of inference.runtimes.RUNTIMES and fp32/int8, ONNX graphs cached in
        `runtime_cache_dir`. `batching`: None runs each call alone (still in chunks of at most 32 images)."""
        torch.set_num_threads(max(1, threads))
        self.checkpoint = checkpoint
        self.model = checkpoint.build_model()
        request = RuntimeRequest(checkpoint, self.model, precision, Path(runtime_cache_dir), threads)
        self.runtime: Runtime = create_runtime(runtime, request)
        self.batching = batching or BatchPolicy()
        self._model_lock = threading.Lock()  # one forward at a time: intra-op threads already use every core
        self._cache: TTLCache[tuple[str, str], Prediction] = TTLCache(maxsize=max(1, cache_size), ttl=cache_ttl)
        self._cache_lock = threading.Lock()
        self.policy = uncertainty or UncertaintyPolicy()
        self.gate = self._make_gate(gate)
        self._head_ok = False  # set by the warm-up: can MC dropout resample the head alone?
        self._explainer: Explainer | None = None
        self._explainer_lock = threading.Lock()
        self._warm_up()
        self._batcher: MicroBatcher[Row] | None = None
        if self.batching.enabled:
            self._batcher = MicroBatcher(self._forward_rows, self.batching, name=f"batcher-{checkpoint.task}")

    @classmethod
    def from_settings(cls, checkpoint: ModelCheckpoint, settings: Settings, **overrides: Any) -> Predictor:
        """The serving Predictor: threads, cache, uncertainty policy and input gate from `settings`; keyword
        `overrides` (e.g. `cache_size=1`, `gate=False` for offline embedding) replace single arguments."""
        arguments: dict[str, Any] = {
            "threads": settings.torch_threads,
            "cache_size": settings.cache_size,
            "cache_ttl": settings.cache_ttl,
            "uncertainty": UncertaintyPolicy.from_settings(settings),
            "runtime": settings.inference_runtime,
            "precision": settings.inference_precision,
            "runtime_cache_dir": settings.resolved_runtime_cache_dir,
            "batching": BatchPolicy.from_settings(settings),
        } | overrides
        if "gate" not in arguments:
            arguments["gate"] = InputGate.from_settings(checkpoint, settings)
        return cls(checkpoint, **arguments)

    @property
    def version(self) -> str:
        return self.checkpoint.version

    def close(self) -> None:
        """Stop the batching worker after the images already queued."""
        if self._batcher is not None:
            self._batcher.close()

    def _make_gate(self, gate: InputGate | bool) -> InputGate:
        if isinstance(gate, InputGate):
            return gate
        if not gate:
            return InputGate(None, ImageChecks(), enabled=False)
        return InputGate(reference_from_checkpoint(self.checkpoint), ImageChecks())

    def _warm_up(self) -> None:
        size = self.checkpoint.preprocess.input_size
        batch = torch.zeros((1, 1, size, size))
        with self._model_lock, torch.inference_mode():
            features = self.model.forward_features(batch)
            embeddings = self.model.forward_head(features, pre_logits=True)
            self._head_ok = head_is_linear_on_embedding(self.model, embeddings, self.model.forward_head(features))
        if self.policy.method == "mc_dropout" and not self._head_ok:
            log.warning(
                "%s has no linear head on its embedding: uncertainty falls back to TTA", self.checkpoint.version
            )
            self.policy = UncertaintyPolicy(**{**self.policy.__dict__, "method": "tta"})
        self._forward(batch.numpy())
        if self.gate.enabled and self.gate.reference is None:
            log.warning(
                "checkpoint %s has no OOD reference (run `python -m mlops.fit_gate`): image checks only",
                self.checkpoint.version,
            )

    def predict(
        self, pixels: np.ndarray, content_hash: str | None = None, cancel: threading.Event | None = None
    ) -> Prediction:
        return self.predict_batch([pixels], [content_hash], cancel)[0]

    def predict_batch(
        self,
        images: Sequence[np.ndarray],
        content_hashes: Sequence[str | None],
        cancel: threading.Event | None = None,
    ) -> list[Prediction]:
        """Predict decoded [0, 1] images; cached results are reused, the rest run as model batches (shared with
        other requests when batching is on). Setting `cancel` withdraws the images not yet in a model pass
        (`PredictionCancelled`)."""
        started = time.perf_counter()
        results: list[Prediction | None] = [self._cached(h) for h in content_hashes]
        todo = [i for i, result in enumerate(results) if result is None]
        if todo:
            _raise_if_cancelled(cancel)
            batch = np.stack([preprocess(images[i], self.checkpoint.preprocess) for i in todo])
            rows = self._run(batch, cancel)
            verdicts = [self.gate.check(images[i], rows[row][1], self._embed) for row, i in enumerate(todo)]
            elapsed_ms = (time.perf_counter() - started) * 1000 / len(todo)
            for (logits, embedding, sampled, method), verdict, i in zip(rows, verdicts, todo, strict=True):
                uncertainty = uncertainties_from_logits(sampled[:, None], self.checkpoint.temperature, method)[0]
                results[i] = self._to_prediction(logits, embedding, elapsed_ms, uncertainty, verdict)
                self._store(content_hashes[i], results[i])
        return [r for r in results if r is not None]

    def forward_tensor(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw logits of the serving runtime for an already preprocessed batch (benchmarks, explainability)."""
        with self._model_lock:
            return torch.from_numpy(self.runtime.run(np.ascontiguousarray(batch.numpy(), dtype=np.float32))[1])

    def heatmap(self, pixels: np.ndarray, method: str = "gradcam", target_class: str | None = None) -> Heatmap:
        """Grad-CAM heatmap of decoded [0, 1] pixels for the predicted class (see inference.explain)."""
        return self.explainer().heatmap(pixels, method=method, target_class=target_class)

    def explainer(self) -> Explainer:
        """The Grad-CAM explainer on a private copy of this model, built on first use."""
        with self._explainer_lock:
            if self._explainer is None:
                with self._model_lock:  # copy the weights while no forward runs
                    self._explainer = Explainer(self.checkpoint, self.model)
            return self._explainer

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        """Embedding of one more decoded image (the input gate's upside-down test)."""
        batch = preprocess(pixels, self.checkpoint.preprocess)[None]
        with self._model_lock:
            return self.runtime.run(batch)[0]

    def _run(self, batch: np.ndarray, cancel: threading.Event | None) -> list[Row]:
        """Rows of a preprocessed batch: through the shared batching worker, or here in chunks of the batch size."""
        if self._batcher is not None:
            return self._batcher.run(batch, cancel)
        rows: list[Row] = []
        for start in range(0, len(batch), self.batching.max_batch_size):
            _raise_if_cancelled(cancel)
            rows.extend(self._forward_rows(batch[start : start + self.batching.max_batch_size]))
        return rows

    def _forward_rows(self, batch: np.ndarray) -> list[Row]:
        logits, embeddings, sampled, method = self._forward(batch)
        return [(logits[i], embeddings[i], sampled[:, i], method) for i in range(len(batch))]

    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """Logits, embeddings and the (passes, B, K) uncertainty samples of one backbone pass of the runtime; the
        samples resample the torch head on the runtime's embedding (TTA reruns the torch model)."""
        with self._model_lock:
            embeddings, logits = self.runtime.run(batch)
            with torch.inference_mode():
                sampled, method = sample_logits(
                    self.model,
                    self.policy,
                    torch.from_numpy(batch),
                    torch.from_numpy(embeddings),
                    torch.from_numpy(logits),
                    self._head_ok,
                )
        return logits, embeddings, sampled.float().numpy(), method

    def _to_prediction(
        self,
        logits: np.ndarray,
        embedding: np.ndarray,
        elapsed_ms: float,
        uncertainty: Uncertainty | None = None,
        verdict: GateResult | None = None,
    ) -> Prediction:
        ckpt = self.checkpoint
        probs = calibrated_probabilities(logits, ckpt.temperature)
        label = ckpt.class_names[decide_class(probs, ckpt.threshold)]
        probabilities = {name: float(p) for name, p in zip(ckpt.class_names, probs, strict=True)}
        verdict = verdict or GateResult(ood=False)
        reasons = self.policy.reasons(probabilities[label], uncertainty, verdict.ood)
        return Prediction(
            label=label,
            confidence=probabilities[label],
            probabilities=probabilities,
            positive_probability=float(probs[-1]),
            embedding=embedding.astype(np.float32),
            model_version=ckpt.version,
            processing_time_ms=round(elapsed_ms, 2),
            uncertainty=uncertainty,
            uncertain=bool(reasons),
            uncertain_reasons=reasons,
            ood=verdict.ood,
            ood_reason=verdict.reason,
            ood_distance=verdict.distance,
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


def _raise_if_cancelled(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise PredictionCancelled("the request was cancelled before it reached the model")
