"""Evaluation metrics, calibration and the threshold rule against values computed by hand on tiny examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlops.calibration import choose_threshold, fit_temperature, softmax_probs
from mlops.metrics import (
    accuracy,
    auprc,
    auroc,
    bootstrap_intervals,
    brier,
    compute_all,
    confusion,
    expected_calibration_error,
    f1,
    precision,
    sensitivity,
    specificity,
)

torch.set_num_threads(1)

# 5 negatives, 3 positives; no probability sits on a bin edge of the 10-bin ECE.
LABELS = np.array([0, 0, 0, 0, 0, 1, 1, 1])
PROBS = np.array([0.12, 0.33, 0.62, 0.24, 0.57, 0.45, 0.71, 0.93])


def test_confusion_at_threshold() -> None:
    # >= 0.5 is positive: negatives 0.62 and 0.57 are false positives, positive 0.45 is a false negative.
    assert confusion(LABELS, PROBS, 0.5) == {"tp": 2, "fp": 2, "tn": 3, "fn": 1}
    assert confusion(LABELS, PROBS, 0.45) == {"tp": 3, "fp": 2, "tn": 3, "fn": 0}  # the threshold itself counts
    assert confusion(LABELS, PROBS, 0.0) == {"tp": 3, "fp": 5, "tn": 0, "fn": 0}


def test_threshold_metrics_by_hand() -> None:
    assert accuracy(LABELS, PROBS, 0.5) == pytest.approx(5 / 8)
    assert precision(LABELS, PROBS, 0.5) == pytest.approx(2 / 4)
    assert sensitivity(LABELS, PROBS, 0.5) == pytest.approx(2 / 3)
    assert specificity(LABELS, PROBS, 0.5) == pytest.approx(3 / 5)
    assert f1(LABELS, PROBS, 0.5) == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert np.isnan(precision(LABELS, PROBS, 0.99))  # nothing called positive: undefined, not an exception


def test_ranking_metrics_by_hand() -> None:
    # Of the 15 positive/negative pairs, the positive scores higher in 3 (for 0.45) + 5 + 5 = 13.
    assert auroc(LABELS, PROBS) == pytest.approx(13 / 15)
    # Ranked: 0.93 P, 0.71 P, 0.62 N, 0.57 N, 0.45 P -> AP = (1 + 1 + 3/5) / 3.
    assert auprc(LABELS, PROBS) == pytest.approx((1 + 1 + 3 / 5) / 3)
    assert np.isnan(auroc(np.ones(4), np.linspace(0.1, 0.9, 4)))


def test_brier_by_hand() -> None:
    squared = [0.12**2, 0.33**2, 0.62**2, 0.24**2, 0.57**2, 0.55**2, 0.29**2, 0.07**2]
    assert brier(LABELS, PROBS) == pytest.approx(sum(squared) / 8)
    assert brier(LABELS, PROBS) == pytest.approx(0.1602125)


def test_expected_calibration_error_by_hand() -> None:
    # One case per bin: ECE is the mean |p - y|.
    assert expected_calibration_error(LABELS, PROBS) == pytest.approx(2.79 / 8)
    # Two bins of two: [0.12, 0.18] with labels [0, 1] -> |0.15 - 0.5| = 0.35; [0.82, 0.88] all positive -> 0.15.
    labels, probs = np.array([0, 1, 1, 1]), np.array([0.12, 0.18, 0.82, 0.88])
    assert expected_calibration_error(labels, probs) == pytest.approx(0.5 * 0.35 + 0.5 * 0.15)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == pytest.approx(0.0)


def test_compute_all_names_every_metric() -> None:
    values = compute_all(LABELS, PROBS, 0.5)
    assert set(values) == {
        "accuracy",
        "precision",
        "sensitivity",
        "specificity",
        "f1",
        "auroc",
        "auprc",
        "brier",
        "ece",
    }
    assert values["specificity"] == pytest.approx(0.6)


def test_threshold_rule_keeps_the_highest_threshold_meeting_sensitivity() -> None:
    labels = np.array([1, 1, 1, 1, 0, 0, 0])
    probs = np.array([0.2, 0.5, 0.7, 0.9, 0.1, 0.3, 0.6])
    assert choose_threshold(probs, labels, 0.75) == pytest.approx(0.5)  # keeps 3 of 4 positives
    assert choose_threshold(probs, labels, 1.0) == pytest.approx(0.2)
    assert choose_threshold(probs, labels, 0.5) == pytest.approx(0.7)
    assert choose_threshold(probs[4:], labels[4:], 0.9) == 0.5  # no positives: the neutral default

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    probs = np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1)
    for target in (0.8, 0.9, 0.97):
        chosen = choose_threshold(probs, labels, target)
        assert sensitivity(labels, probs, chosen) >= target
        assert sensitivity(labels, probs, np.nextafter(chosen, 1.0)) < target  # any higher threshold fails


def test_temperature_fit_recovers_a_known_temperature() -> None:
    rng = np.random.default_rng(0)
    margin = rng.normal(0.0, 3.0, 20000)
    logits = np.stack([np.zeros_like(margin), margin], axis=1)
    labels = (rng.random(margin.size) < 1 / (1 + np.exp(-margin / 2.0))).astype(np.int64)  # true T = 2
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(2.0, rel=0.08)
    assert fit_temperature(3 * logits, labels) == pytest.approx(3 * fitted, rel=1e-3)  # T scales with the logits
    probs = softmax_probs(logits[:3], fitted)
    assert probs.sum(axis=1) == pytest.approx(np.ones(3))
    assert probs[:, 1] == pytest.approx(1 / (1 + np.exp(-margin[:3] / fitted)))


def test_bootstrap_intervals_bracket_the_estimate_and_repeat() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 200)
    probs = np.clip(labels * 0.4 + rng.random(200) * 0.6, 0, 1)
    intervals = bootstrap_intervals(labels, probs, 0.5, rounds=100, seed=1, include_confusion=True)
    point = compute_all(labels, probs, 0.5) | {k: float(v) for k, v in confusion(labels, probs, 0.5).items()}
    for name in ("accuracy", "sensitivity", "specificity", "auroc", "brier", "tp", "fn"):
        low, high = intervals[name]
        assert low <= point[name] <= high, name
        assert low < high, name
    assert intervals == bootstrap_intervals(labels, probs, 0.5, rounds=100, seed=1, include_confusion=True)
    assert "tp" not in bootstrap_intervals(labels, probs, 0.5, rounds=20, seed=1)


def test_bootstrap_skips_resamples_where_a_metric_is_undefined() -> None:
    labels, probs = np.array([0, 0, 0, 1]), np.array([0.1, 0.2, 0.3, 0.9])
    intervals = bootstrap_intervals(labels, probs, 0.5, rounds=100, seed=0)
    assert intervals["auroc"] == (1.0, 1.0)  # every resample with both classes ranks them perfectly
