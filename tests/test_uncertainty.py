"""Uncertainty: the summary maths, MC dropout on the head, the policy, the Predictor fields, and (on the shipped model)
that near-threshold radiographs are more uncertain than clear-cut ones."""

from __future__ import annotations

import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from imaging import decode_image
from inference import ModelCheckpoint, Predictor, load_checkpoint
from inference.uncertainty import (
    Uncertainty,
    UncertaintyError,
    UncertaintyPolicy,
    calibrated_probabilities,
    decide_class,
    mc_dropout_logits,
    summarize,
)
from tests.factories import random_checkpoint

torch.set_num_threads(1)


def tiny_checkpoint(drop_rate: float = 0.2) -> ModelCheckpoint:
    return random_checkpoint(version=f"tiny-{drop_rate}", drop_rate=drop_rate, temperature=1.5)


def radiograph_like(seed: int) -> np.ndarray:
    """Bright vertical band between two darker fields, so the input gate's layout check passes."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.15, 0.35, (96, 96)).astype(np.float32)
    image[:, 40:56] += 0.5
    return np.clip(image, 0, 1)


# --- maths --------------------------------------------------------------------------------------------------------


def test_summary_of_identical_passes_has_no_spread_and_entropy_of_the_probability() -> None:
    result = summarize(np.array([[0.2, 0.8]] * 10), "mc_dropout")
    expected = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8)) / math.log(2)
    assert result.entropy == pytest.approx(expected, abs=1e-5)
    assert result.std == 0.0
    assert result.mutual_information == pytest.approx(0.0, abs=1e-6)
    assert result.passes == 10


def test_disagreeing_passes_give_std_and_mutual_information() -> None:
    result = summarize(np.array([[0.0, 1.0], [1.0, 0.0]]), "tta")
    assert result.entropy == pytest.approx(1.0, abs=1e-5)  # mean 0.5/0.5
    assert result.std == pytest.approx(0.5)
    assert result.mutual_information == pytest.approx(1.0, abs=1e-4)  # every pass itself is certain


def test_entropy_is_normalized_for_more_classes() -> None:
    assert summarize(np.full((3, 4), 0.25), "none").entropy == pytest.approx(1.0, abs=1e-6)


def test_calibration_and_decision_rule() -> None:
    probs = calibrated_probabilities(np.array([0.0, 2.0]), temperature=2.0)
    assert probs[1] == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert decide_class(np.array([0.7, 0.3]), threshold=0.25) == 1  # binary: threshold on the positive class
    assert decide_class(np.array([0.7, 0.3]), threshold=0.5) == 0
    assert decide_class(np.array([0.2, 0.5, 0.3]), threshold=0.9) == 1  # more classes: argmax


def test_mc_dropout_is_seeded_and_unbiased_for_a_linear_head() -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 2)
    embeddings = torch.rand(3, 64)
    first = mc_dropout_logits(head, embeddings, passes=4000, drop_rate=0.2, seed=7)
    again = mc_dropout_logits(head, embeddings, passes=4000, drop_rate=0.2, seed=7)
    assert first.shape == (4000, 3, 2)
    assert torch.equal(first, again)
    assert not torch.equal(first[0], first[1])  # masks differ between passes
    with torch.no_grad():
        assert torch.allclose(first.mean(dim=0), head(embeddings), atol=0.03)  # inverted dropout keeps the mean


def test_policy_reasons() -> None:
    policy = UncertaintyPolicy(confidence_threshold=0.8, entropy_threshold=0.8, std_threshold=0.1)
    calm = Uncertainty(entropy=0.2, std=0.01, mutual_information=0.0, method="mc_dropout", passes=20)
    shaky = Uncertainty(entropy=0.9, std=0.2, mutual_information=0.1, method="mc_dropout", passes=20)
    assert policy.reasons(0.95, calm) == ()
    assert not policy.is_uncertain(0.95, calm)
    assert len(policy.reasons(0.95, shaky)) == 2
    assert policy.is_uncertain(0.7, calm)
    assert policy.is_uncertain(0.99, calm, ood=True)


def test_policy_rejects_bad_configuration() -> None:
    with pytest.raises(UncertaintyError, match="Unknown uncertainty method"):
        UncertaintyPolicy(method="magic")  # type: ignore[arg-type]
    with pytest.raises(UncertaintyError, match="at least 1"):
        UncertaintyPolicy(passes=0)


def test_policy_reads_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNCERTAINTY_METHOD", "tta")
    monkeypatch.setenv("UNCERTAINTY_PASSES", "5")
    monkeypatch.setenv("CONFIDENCE_THRESHOLD", "0.9")
    from settings import Settings

    policy = UncertaintyPolicy.from_settings(Settings())
    assert (policy.method, policy.passes, policy.confidence_threshold) == ("tta", 5, 0.9)


# --- the Predictor --------------------------------------------------------------------------------------------------


def test_every_prediction_carries_uncertainty_and_the_flag() -> None:
    policy = UncertaintyPolicy(method="mc_dropout", passes=16)
    predictor = Predictor(tiny_checkpoint(), threads=1, uncertainty=policy, gate=False)
    images = [radiograph_like(i) for i in range(3)]
    results = predictor.predict_batch(images, [None] * 3)
    for result in results:
        assert result.uncertainty is not None
        assert result.uncertainty.method == "mc_dropout" and result.uncertainty.passes == 16
        assert 0.0 <= result.uncertainty.entropy <= 1.0
        assert result.uncertain == policy.is_uncertain(result.confidence, result.uncertainty, result.ood)
        assert result.uncertain == bool(result.uncertain_reasons)
    again = predictor.predict(images[0])  # alone this time: seeded masks shared by the batch give the same numbers
    assert again.uncertainty.entropy == pytest.approx(results[0].uncertainty.entropy, abs=1e-5)
    assert again.uncertainty.std == pytest.approx(results[0].uncertainty.std, abs=1e-5)


def test_batch_and_single_predictions_agree() -> None:
    predictor = Predictor(tiny_checkpoint(), threads=1, uncertainty=UncertaintyPolicy(passes=8), gate=False)
    images = [radiograph_like(i) for i in range(2)]
    batch = predictor.predict_batch(images, [None, None])
    single = predictor.predict(images[1])
    assert single.uncertainty.entropy == pytest.approx(batch[1].uncertainty.entropy, abs=1e-4)
    assert single.positive_probability == pytest.approx(batch[1].positive_probability, abs=1e-5)


def test_model_without_dropout_reports_no_sampling() -> None:
    predictor = Predictor(tiny_checkpoint(drop_rate=0.0), threads=1, uncertainty=UncertaintyPolicy(), gate=False)
    result = predictor.predict(radiograph_like(0))
    assert result.uncertainty.method == "none" and result.uncertainty.passes == 1
    assert result.uncertainty.std == 0.0


def test_tta_runs_full_passes() -> None:
    predictor = Predictor(
        tiny_checkpoint(), threads=1, uncertainty=UncertaintyPolicy(method="tta", passes=4), gate=False
    )
    result = predictor.predict(radiograph_like(1))
    assert result.uncertainty.method == "tta" and result.uncertainty.passes == 4
    assert result.uncertainty.std > 0.0  # shifted and zoomed inputs move a random model's output


def test_cached_prediction_keeps_uncertainty() -> None:
    predictor = Predictor(tiny_checkpoint(), threads=1, uncertainty=UncertaintyPolicy(passes=8), gate=False)
    first = predictor.predict(radiograph_like(2), content_hash="abc")
    second = predictor.predict(radiograph_like(2), content_hash="abc")
    assert second.cached and second.uncertainty == first.uncertainty and second.uncertain == first.uncertain


# --- the shipped model ----------------------------------------------------------------------------------------------


def test_near_threshold_radiographs_are_more_uncertain_than_clear_cut_ones(
    kermany_dir: Path, shipped_model: Path
) -> None:
    predictor = Predictor(
        load_checkpoint(shipped_model), threads=1, uncertainty=UncertaintyPolicy(method="mc_dropout", passes=30)
    )
    files = sorted((kermany_dir / "test").glob("*/*"))
    files = random.Random(0).sample(files, min(240, len(files)))
    images = [decode_image(f.read_bytes()).pixels for f in files]
    results = [
        r
        for start in range(0, len(images), 16)
        for r in predictor.predict_batch(images[start : start + 16], [None] * len(images[start : start + 16]))
    ]
    threshold = predictor.checkpoint.threshold
    margin = np.array([abs(r.positive_probability - threshold) for r in results])
    near = margin <= np.quantile(margin, 0.2)
    clear = margin >= np.quantile(margin, 0.8)
    entropy = np.array([r.uncertainty.entropy for r in results])
    std = np.array([r.uncertainty.std for r in results])
    assert results[0].uncertainty.method == "mc_dropout"
    assert entropy[near].mean() > entropy[clear].mean()
    assert std[near].mean() > std[clear].mean()
    assert np.mean([r.uncertain for r, n in zip(results, near, strict=True) if n]) > np.mean(
        [r.uncertain for r, c in zip(results, clear, strict=True) if c]
    )
