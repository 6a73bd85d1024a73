"""Classification metrics for a binary task, with percentile-bootstrap 95% intervals.

`labels` are 0/1 (1 = the positive class), `probs` the calibrated probability of the positive class.
Sensitivity is recall of the positive class; metrics undefined on the data (a zero denominator, AUROC with one
class) are NaN rather than an exception, so a bootstrap resample can skip them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

MetricFn = Callable[[np.ndarray, np.ndarray, float], float]
CONFUSION_KEYS = ("tp", "fp", "tn", "fn")


def confusion(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, int]:
    """Counts at `threshold`; a case is called positive when its probability is >= the threshold."""
    predicted = probs >= threshold
    actual = labels == 1
    return {
        "tp": int(np.sum(predicted & actual)),
        "fp": int(np.sum(predicted & ~actual)),
        "tn": int(np.sum(~predicted & ~actual)),
        "fn": int(np.sum(~predicted & actual)),
    }


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else float("nan")


def accuracy(labels: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    c = confusion(labels, probs, threshold)
    return _ratio(c["tp"] + c["tn"], len(labels))


def precision(labels: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    c = confusion(labels, probs, threshold)
    return _ratio(c["tp"], c["tp"] + c["fp"])


def sensitivity(labels: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    c = confusion(labels, probs, threshold)
    return _ratio(c["tp"], c["tp"] + c["fn"])


def specificity(labels: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    c = confusion(labels, probs, threshold)
    return _ratio(c["tn"], c["tn"] + c["fp"])


def f1(labels: np.ndarray, probs: np.ndarray, threshold: float) -> float:
    c = confusion(labels, probs, threshold)
    return _ratio(2 * c["tp"], 2 * c["tp"] + c["fp"] + c["fn"])


def auroc(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(roc_auc_score(labels, probs)) if len(np.unique(labels)) == 2 else float("nan")


def auprc(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(average_precision_score(labels, probs)) if len(np.unique(labels)) == 2 else float("nan")


def brier(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    return float(np.mean((probs - labels) ** 2))


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray, threshold: float = 0.5, bins: int = 10) -> float:
    """ECE over equal-width bins of the positive-class probability (reliability-diagram definition)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(probs[mask].mean() - labels[mask].mean())
    return float(error)


METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "precision": precision,
    "sensitivity": sensitivity,
    "specificity": specificity,
    "f1": f1,
    "auroc": auroc,
    "auprc": auprc,
    "brier": brier,
    "ece": expected_calibration_error,
}


def compute_all(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, float]:
    return {name: fn(labels, probs, threshold) for name, fn in METRICS.items()}


def bootstrap_intervals(
    labels: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    rounds: int = 1000,
    seed: int = 0,
    include_confusion: bool = False,
) -> dict[str, tuple[float, float]]:
    """Percentile 95% intervals from resampling cases with replacement.

    A resample on which a metric is undefined (e.g. AUROC with one class drawn) is skipped for that metric.
    With `include_confusion`, the confusion counts tp/fp/tn/fn get intervals too.
    """
    rng = np.random.default_rng(seed)
    names = [*METRICS, *(CONFUSION_KEYS if include_confusion else ())]
    draws: dict[str, list[float]] = {name: [] for name in names}
    n = len(labels)
    for _ in range(rounds):
        idx = rng.integers(0, n, n)
        values: dict[str, float] = compute_all(labels[idx], probs[idx], threshold)
        if include_confusion:
            values |= {k: float(v) for k, v in confusion(labels[idx], probs[idx], threshold).items()}
        for name, value in values.items():
            if np.isfinite(value):
                draws[name].append(value)
    return {
        name: (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5)))
        for name, values in draws.items()
        if values
    }
