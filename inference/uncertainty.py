"""Predictive uncertainty for every prediction, and the one policy that flags a case as uncertain.

Methods (`UNCERTAINTY_METHOD`, `UNCERTAINTY_PASSES` in settings):
- `mc_dropout` (default): Monte Carlo dropout on the head only. The backbone runs once; its pooled features (the
  embedding) go N times through a fresh dropout mask (p = the model's own drop rate, 0.2 for the shipped model)
  and the linear classifier. Cost: N tiny matrix products, not N forward passes.
- `tta`: N forward passes over small random shifts and zooms of the model input (N times the backbone cost).
- `none`: no sampling; entropy of the calibrated distribution alone, std 0.
Every sample is temperature-scaled exactly like the reported probabilities. Masks and augmentations come from a
fixed seed, so the same image always gets the same numbers (audit, cache consistency).

Numbers reported (`Uncertainty`):
- `entropy`: predictive entropy of the mean calibrated distribution divided by log(K), so it lies in [0, 1] for
  any class count (binary: 1.0 at p = 0.5, 0.72 at p = 0.8, 0.29 at p = 0.95).
- `std`: standard deviation over the passes of the calibrated probability of the positive (last) class.
- `mutual_information`: entropy of the mean minus mean entropy of the passes (the model's own, epistemic, part),
  on the same log(K) scale.

Policy (`UncertaintyPolicy.is_uncertain`): a case is uncertain when the input gate rejected it (OOD), or its
calibrated confidence is below `CONFIDENCE_THRESHOLD`, or its entropy exceeds `ENTROPY_THRESHOLD`, or its std
exceeds `UNCERTAINTY_STD_THRESHOLD`. Uncertain cases are the ones the annotation queue receives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from settings import Settings

UncertaintyMethod = Literal["mc_dropout", "tta", "none"]
UNCERTAINTY_METHODS: tuple[str, ...] = get_args(UncertaintyMethod)
TTA_MAX_SHIFT = 0.04  # fraction of the image side: positioning differences between radiographs are of this order
TTA_MAX_ZOOM = 0.06


class UncertaintyError(ValueError):
    """The requested uncertainty method cannot run on this model (message safe to show)."""


@dataclass(frozen=True)
class Uncertainty:
    entropy: float  # normalized predictive entropy in [0, 1]
    std: float  # std of the positive-class calibrated probability over the passes
    mutual_information: float  # epistemic part of the entropy, same scale
    method: str
    passes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class UncertaintyPolicy:
    method: UncertaintyMethod = "mc_dropout"
    passes: int = 20
    confidence_threshold: float = 0.8
    entropy_threshold: float = 0.8
    std_threshold: float = 0.15
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in UNCERTAINTY_METHODS:
            raise UncertaintyError(f"Unknown uncertainty method {self.method!r}; choose one of {UNCERTAINTY_METHODS}.")
        if self.passes < 1:
            raise UncertaintyError("The number of uncertainty passes must be at least 1.")

    @classmethod
    def from_settings(cls, settings: Settings) -> UncertaintyPolicy:
        return cls(
            method=settings.uncertainty_method,
            passes=settings.uncertainty_passes,
            confidence_threshold=settings.confidence_threshold,
            entropy_threshold=settings.entropy_threshold,
            std_threshold=settings.uncertainty_std_threshold,
            seed=settings.uncertainty_seed,
        )

    def reasons(self, confidence: float, uncertainty: Uncertainty | None, ood: bool = False) -> tuple[str, ...]:
        """Why a case is uncertain (empty when it is not); each reason is one short human-readable line."""
        found: list[str] = []
        if ood:
            found.append("input is not like the training radiographs (out of distribution)")
        if confidence < self.confidence_threshold:
            found.append(f"confidence {confidence:.2f} < {self.confidence_threshold:.2f}")
        if uncertainty is not None and uncertainty.entropy > self.entropy_threshold:
            found.append(f"entropy {uncertainty.entropy:.2f} > {self.entropy_threshold:.2f}")
        if uncertainty is not None and uncertainty.std > self.std_threshold:
            found.append(f"probability std {uncertainty.std:.2f} > {self.std_threshold:.2f} ({uncertainty.method})")
        return tuple(found)

    def is_uncertain(self, confidence: float, uncertainty: Uncertainty | None, ood: bool = False) -> bool:
        return bool(self.reasons(confidence, uncertainty, ood))


# --- calibrated probabilities and the decision rule ---------------------------------------------------------------


def calibrated_probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Softmax of logits / temperature over the last axis, in float64."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    return exp / exp.sum(axis=-1, keepdims=True)


def decide_class(probabilities: np.ndarray, threshold: float) -> int:
    """Index of the predicted class: binary models compare the positive (last) class with the checkpoint's
    threshold; models with more classes take the most probable class."""
    if len(probabilities) == 2:
        return 1 if float(probabilities[-1]) >= threshold else 0
    return int(np.argmax(probabilities))


def summarize(sample_probabilities: np.ndarray, method: str) -> Uncertainty:
    """(passes, K) calibrated probabilities of one image -> entropy, std and mutual information."""
    probs = np.asarray(sample_probabilities, dtype=np.float64)
    scale = math.log(probs.shape[-1])
    mean = probs.mean(axis=0)
    entropy = _entropy(mean) / scale
    expected_entropy = float(np.mean([_entropy(p) for p in probs])) / scale
    return Uncertainty(
        entropy=round(float(entropy), 6),
        std=round(float(probs[:, -1].std()), 6),
        mutual_information=round(max(0.0, float(entropy - expected_entropy)), 6),
        method=method,
        passes=int(probs.shape[0]),
    )


def _entropy(p: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1.0)
    return float(-(p * np.log(p)).sum())


# --- sampling --------------------------------------------------------------------------------------------------------


def drop_rate_of(model: nn.Module) -> float:
    """The dropout probability timm applies before the classifier (0 when the model has none)."""
    return float(getattr(model, "drop_rate", 0.0) or 0.0)


def head_is_linear_on_embedding(model: nn.Module, embeddings: torch.Tensor, logits: torch.Tensor) -> bool:
    """True when logits == classifier(pre-logits embedding), i.e. dropout + classifier can be resampled alone."""
    classifier = model.get_classifier() if hasattr(model, "get_classifier") else None
    if not isinstance(classifier, nn.Linear) or embeddings.ndim != 2:
        return False
    with torch.inference_mode():
        return bool(torch.allclose(classifier(embeddings), logits, atol=1e-4, rtol=1e-4))


def mc_dropout_logits(
    classifier: nn.Module, embeddings: torch.Tensor, passes: int, drop_rate: float, seed: int = 0
) -> torch.Tensor:
    """(passes, B, K) logits from dropout masks on the (B, D) embeddings; inverted dropout like F.dropout.

    Every image of the batch gets the same N masks, so an image's numbers never depend on what it was batched with.
    """
    generator = torch.Generator().manual_seed(seed)
    keep = 1.0 - drop_rate
    masks = torch.bernoulli(torch.full((passes, 1, embeddings.shape[-1]), keep), generator=generator) / keep
    dropped = embeddings.unsqueeze(0) * masks.to(embeddings.dtype)
    return classifier(dropped.reshape(-1, embeddings.shape[-1])).reshape(passes, embeddings.shape[0], -1)


def tta_logits(model: nn.Module, batch: torch.Tensor, passes: int, seed: int = 0) -> torch.Tensor:
    """(passes, B, K) logits over random small shifts and zooms (the first pass is the unchanged input). Each pass
    moves every image of the batch the same way, so an image's numbers never depend on its batch."""
    generator = torch.Generator().manual_seed(seed)
    outputs = [model(batch)]
    for _ in range(passes - 1):
        outputs.append(model(_random_affine(batch, generator)))
    return torch.stack(outputs)


def _random_affine(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    zoom = 1.0 + (float(torch.rand(1, generator=generator)) * 2 - 1) * TTA_MAX_ZOOM
    shift = (torch.rand(2, generator=generator) * 2 - 1) * TTA_MAX_SHIFT * 2  # grid units span [-1, 1]
    theta = torch.zeros(batch.shape[0], 2, 3)
    theta[:, 0, 0] = 1.0 / zoom
    theta[:, 1, 1] = 1.0 / zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(batch.dtype), list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)


def sample_logits(
    model: nn.Module,
    policy: UncertaintyPolicy,
    batch: torch.Tensor,
    embeddings: torch.Tensor,
    logits: torch.Tensor,
    head_ok: bool,
) -> tuple[torch.Tensor, str]:
    """(passes, B, K) logits for the policy's method and the method actually used; call under inference mode
    with the model in eval mode. MC dropout on a model without dropout is reported as "none" (one pass)."""
    if policy.method == "none" or (policy.method == "mc_dropout" and drop_rate_of(model) <= 0.0):
        return logits.unsqueeze(0), "none"
    if policy.method == "mc_dropout":
        if not head_ok:
            raise UncertaintyError(
                "MC dropout on the head needs a linear classifier on the pooled features; "
                "this architecture has another head: set UNCERTAINTY_METHOD=tta."
            )
        sampled = mc_dropout_logits(model.get_classifier(), embeddings, policy.passes, drop_rate_of(model), policy.seed)
        return sampled, "mc_dropout"
    return tta_logits(model, batch, policy.passes, policy.seed), "tta"


def uncertainties_from_logits(sampled: np.ndarray, temperature: float, method: str) -> list[Uncertainty]:
    """(passes, B, K) raw logits -> one `Uncertainty` per image, temperature-calibrated."""
    probs = calibrated_probabilities(sampled, temperature)
    return [summarize(probs[:, i, :], method) for i in range(probs.shape[1])]
