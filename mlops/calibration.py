"""Post-hoc calibration (temperature scaling) and the operating-threshold rule, both fitted on validation data."""

from __future__ import annotations

import math

import numpy as np
import torch

MIN_TEMPERATURE, MAX_TEMPERATURE = 0.05, 20.0


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> float:
    """Temperature T > 0 minimising the validation negative log-likelihood of softmax(logits / T)."""
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    labels_t = torch.as_tensor(labels, dtype=torch.long)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # optimise log T so T stays positive
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_t / log_t.exp(), labels_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    temperature = float(log_t.detach().exp().clamp(MIN_TEMPERATURE, MAX_TEMPERATURE))
    # On separable validation data the optimum runs off towards T = 0 and LBFGS can step into NaN: fall back to the
    # best temperature on a grid over the allowed range (the likelihood is smooth in log T).
    return temperature if math.isfinite(temperature) else _grid_temperature(logits_t, labels_t)


def fit_platt(logits: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> tuple[float, float]:
    """(scale, shift) minimising the validation log-loss of sigmoid(scale * logit + shift), scale > 0.

    For a single-logit model trained with a class weight: its logits are centred for balanced classes, so a
    temperature alone cannot bring the probabilities down to the real prevalence; the shift does."""
    logits_t = torch.as_tensor(logits, dtype=torch.float64)
    labels_t = torch.as_tensor(labels, dtype=torch.float64)
    log_scale = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    shift = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_scale, shift], lr=0.1, max_iter=max_iter)

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits_t * log_scale.exp() + shift, labels_t)
        loss.backward()
        return loss

    optimizer.step(closure)
    scale = float(log_scale.detach().exp().clamp(1 / MAX_TEMPERATURE, 1 / MIN_TEMPERATURE))
    return scale, float(shift.detach())


def _grid_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    grid = torch.logspace(math.log10(MIN_TEMPERATURE), math.log10(MAX_TEMPERATURE), 400, dtype=torch.float64)
    losses = torch.stack([torch.nn.functional.cross_entropy(logits / t, labels) for t in grid])
    return float(grid[int(torch.nan_to_num(losses, nan=math.inf).argmin())])


def softmax_probs(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return torch.softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, dim=1).numpy()


def choose_threshold(positive_probs: np.ndarray, labels: np.ndarray, min_sensitivity: float) -> float:
    """The HIGHEST threshold whose validation sensitivity is still >= min_sensitivity.

    Taking the highest such threshold (rather than e.g. Youden's J) keeps as much specificity as the sensitivity
    constraint allows; a threshold picked for the best validation trade-off tends to be too low on shifted data.
    A case is called positive when its probability is >= the threshold.
    """
    positives = np.sort(positive_probs[labels == 1])
    if positives.size == 0:
        return 0.5
    # Keeping at least ceil(min_sensitivity * n) positives above the threshold: the k-th largest score.
    keep = int(np.ceil(min_sensitivity * positives.size))
    return float(positives[positives.size - keep])
