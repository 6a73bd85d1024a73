"""Training and validating across populations (children, adults) and projections (AP, PA).

Two reasons to look below the pooled numbers. A pooled validation AUROC is dominated by the larger dataset, so a
model can look fine while it fails the smaller population. And in the adult data the projection predicts the
label (RSNA pneumonia films are mostly AP bedside films, normals mostly PA), so a model can score by reading the
projection; balanced sampling takes that reward away and within-view AUROC shows whether it was taken.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from labelled_data import Sample
from mlops.metrics import auroc, compute_all


def _cell(sample: Sample) -> tuple[str, str, str]:
    return sample.population, sample.view, sample.label


def balanced_weights(samples: Sequence[Sample]) -> np.ndarray:
    """Sampling weight of each sample: every population gets the same share of the draws, and within a
    population every (view, class) cell gets the same share, so neither the bigger dataset nor the
    projection-label shortcut dominates the gradient. Weights sum to 1."""
    cells = Counter(_cell(s) for s in samples)
    cells_per_population = Counter(population for population, _, _ in cells)
    populations = len(cells_per_population)
    weights = [1.0 / (populations * cells_per_population[s.population] * cells[_cell(s)]) for s in samples]
    return np.asarray(weights, dtype=np.float64)


def population_metrics(
    labels: np.ndarray, probs: np.ndarray, samples: Sequence[Sample], threshold: float
) -> dict[str, dict[str, float]]:
    """All metrics per population, plus AUROC within each projection (`auroc_AP`, ...) where views are known."""
    populations = np.array([s.population for s in samples])
    views = np.array([s.view for s in samples])
    result: dict[str, dict[str, float]] = {}
    for population in sorted(set(populations)):
        mask = populations == population
        metrics = compute_all(labels[mask], probs[mask], threshold) | {"n": int(mask.sum())}
        for view in sorted(set(views[mask]) - {""}):
            in_view = mask & (views == view)
            metrics[f"auroc_{view}"] = auroc(labels[in_view], probs[in_view])
            metrics[f"n_{view}"] = int(in_view.sum())
        result[population] = metrics
    return result


def selection_score(by_population: dict[str, dict[str, float]]) -> float:
    """Mean of the per-population AUROCs (NaN ones left out), the quantity early stopping maximises."""
    values = [m["auroc"] for m in by_population.values() if np.isfinite(m["auroc"])]
    return float(np.mean(values)) if values else float("nan")


def auroc_record(by_population: dict[str, dict[str, float]], prefix: str = "val_") -> dict[str, float]:
    """Flat `val_auroc_<population>[_<view>]` entries for the epoch log and MLflow."""
    record = {}
    for population, metrics in by_population.items():
        for key, value in metrics.items():
            if key.startswith("auroc"):
                record[f"{prefix}{key.replace('auroc', f'auroc_{population}', 1)}"] = value
    return record
