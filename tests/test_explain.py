"""Grad-CAM: target layer from the architecture, localisation on a learnable toy task, the Adebayo et al. model
randomisation sanity check (shipped model), renderers and thread-safety next to the Predictor."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from imaging import PreprocessSpec, decode_image, preprocess
from inference import ModelCheckpoint, Predictor, create_model, load_checkpoint
from inference.explain import (
    Explainer,
    ExplainError,
    find_target_layer,
    heatmap_from_png16,
    heatmap_to_png16,
    overlay_png,
    overlay_rgb,
)
from inference.uncertainty import UncertaintyPolicy

torch.set_num_threads(1)

HEIGHT, WIDTH = 72, 96  # not square: the model sees a stretched 64 x 64 square, heatmaps come back at 72 x 96
BLOB_RADIUS = 11
DISTRACTORS = 1  # equally bright lines in every image, both classes
SPEC = PreprocessSpec(input_size=64, mean=0.5, std=0.25, equalize=False)
ARCHITECTURE, MODEL_KWARGS = "test_resnet", {"output_stride": 8}  # a tiny timm ResNet with an 8 x 8 feature map


def blob_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noise plus equally bright lines (distractors) in every image; class 1 adds a bright disc somewhere.
    The disc is the only class signal, so a heatmap that just follows brightness fails the tests."""
    rng = np.random.default_rng(seed)
    images = np.empty((count, HEIGHT, WIDTH), dtype=np.float32)
    labels = rng.integers(0, 2, count)
    centres = np.full((count, 2), -1.0)
    for i in range(count):
        image = cv2.GaussianBlur(rng.normal(0.4, 0.12, (HEIGHT, WIDTH)).astype(np.float32), (0, 0), 1.5)
        shapes = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        for _ in range(DISTRACTORS):
            middle = (int(rng.uniform(10, WIDTH - 10)), int(rng.uniform(6, HEIGHT - 6)))
            angle = rng.uniform(0, np.pi)
            half = (int(14 * np.cos(angle)), int(14 * np.sin(angle)))
            cv2.line(
                shapes, (middle[0] - half[0], middle[1] - half[1]), (middle[0] + half[0], middle[1] + half[1]), 1, 2
            )
        if labels[i]:
            centres[i] = (
                rng.uniform(BLOB_RADIUS + 2, HEIGHT - BLOB_RADIUS - 2),
                rng.uniform(BLOB_RADIUS + 2, WIDTH - BLOB_RADIUS - 2),
            )
            cv2.circle(shapes, (round(centres[i, 1]), round(centres[i, 0])), BLOB_RADIUS, 1, -1)
        images[i] = np.clip(image + 0.45 * shapes, 0, 1)
    return images, labels, centres


def checkpoint_with(state_dict: dict[str, torch.Tensor], version: str) -> ModelCheckpoint:
    return ModelCheckpoint(
        architecture=ARCHITECTURE,
        task="blob",
        class_names=["CLEAR", "BLOB"],
        preprocess=SPEC,
        state_dict=state_dict,
        version=version,
        model_kwargs=dict(MODEL_KWARGS),
    )


@pytest.fixture(scope="module")
def blob_model() -> ModelCheckpoint:
    """A few hundred steps of AdamW on the toy task (about 20 s on one core)."""
    torch.manual_seed(0)
    images, labels, _ = blob_images(512, seed=0)
    inputs = torch.from_numpy(np.stack([preprocess(image, SPEC) for image in images]))
    targets = torch.from_numpy(labels)
    model = create_model(ARCHITECTURE, 2, **MODEL_KWARGS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        order = torch.randperm(len(targets), generator=generator)
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return checkpoint_with({k: v.detach().clone() for k, v in model.state_dict().items()}, "blob-trained")


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return blob_images(120, seed=1)


def test_target_layer_is_found_for_common_architectures() -> None:
    expected = {
        "resnet18": "layer4",
        "efficientnet_b0": "bn2",
        "convnext_atto": "norm_pre",
        "test_byobnet": "final_conv",
    }
    for architecture, layer in expected.items():
        assert find_target_layer(create_model(architecture, 2), 64).name == layer


def test_channels_last_feature_maps_are_permuted() -> None:
    kwargs = {"img_size": 64, "window_size": 2}
    model = create_model("swin_tiny_patch4_window7_224", 2, **kwargs)
    assert find_target_layer(model, 64).reshape_transform is not None  # Swin's feature map is NHWC
    checkpoint = ModelCheckpoint(
        architecture="swin_tiny_patch4_window7_224",
        task="t",
        class_names=["A", "B"],
        preprocess=SPEC,
        state_dict=model.state_dict(),
        model_kwargs=kwargs,
    )
    heatmap = Explainer(checkpoint).heatmap(np.random.default_rng(0).random((80, 70), dtype=np.float32))
    assert heatmap.values.shape == (80, 70)


def test_token_models_are_refused_clearly() -> None:
    with pytest.raises(ExplainError, match="spatial"):
        find_target_layer(create_model("test_vit", 2), 64)


def test_localisation_peak_falls_inside_the_blob(blob_model: ModelCheckpoint, held_out: tuple) -> None:
    images, labels, centres = held_out
    explainer = Explainer(blob_model)
    hits, positives = 0, 0
    for image, label, centre in zip(images, labels, centres, strict=True):
        heatmap = explainer.heatmap(image)
        assert heatmap.values.shape == (HEIGHT, WIDTH)
        if label != 1 or heatmap.target_class != "BLOB":
            continue
        positives += 1
        row, col = heatmap.peak()
        hits += (row - centre[0]) ** 2 + (col - centre[1]) ** 2 <= BLOB_RADIUS**2
    assert positives >= 0.8 * labels.sum()  # the toy model must have learnt the task for the test to mean anything
    assert hits / positives >= 0.8, f"peak inside the blob for {hits}/{positives} held-out images"


def test_randomised_weights_change_the_heatmap(kermany_dir: Path, shipped_model: Path) -> None:
    """Adebayo et al. 2018, model parameter randomisation, on the shipped model and test radiographs: an
    explanation that survives losing the learnt weights explains the image, not the model. Randomise the classifier
    alone, and then every weight; the heatmap's rank correlation with the trained one must drop below 0.5.

    (Not run on the toy blob model: with one salient bright disc per image, Grad-CAM of a freshly initialised
    network peaks on the disc too, rank correlation 0.56-0.70 over 4 seeds, which says more about the toy images.)"""
    checkpoint = load_checkpoint(shipped_model)
    files = random.Random(0).sample(sorted((kermany_dir / "test").glob("*/*.jpg")), 12)
    images = [decode_image(f.read_bytes()).pixels for f in files]
    trained = Explainer(checkpoint)
    references = [trained.heatmap(image) for image in images]
    torch.manual_seed(1)
    fresh = create_model(checkpoint.architecture, len(checkpoint.class_names), **checkpoint.model_kwargs).state_dict()
    classifier = {name for name, _ in trained.model.named_parameters() if _is_classifier(trained.model, name)}
    head_only = {k: (fresh[k] if k in classifier else v) for k, v in checkpoint.state_dict.items()}
    assert classifier, "the classifier parameters were not found"
    for name, weights in (("classifier", head_only), ("all weights", fresh)):
        randomised = Explainer(ModelCheckpoint(**{**checkpoint.__dict__, "state_dict": weights}))
        correlations = [
            rank_correlation(reference.values, randomised.heatmap(image, target_class=reference.target_class).values)
            for image, reference in zip(images, references, strict=True)
        ]
        assert np.mean(correlations) < 0.5, f"{name}: mean rank correlation {np.mean(correlations):.2f}"


def _is_classifier(model: torch.nn.Module, parameter_name: str) -> bool:
    classifier_ids = {id(p) for p in model.get_classifier().parameters()}
    return id(dict(model.named_parameters())[parameter_name]) in classifier_ids


def rank_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Spearman correlation; a constant heatmap (no ranking at all) counts as uncorrelated."""
    if np.ptp(first) == 0 or np.ptp(second) == 0:
        return 0.0
    return float(spearmanr(first.ravel(), second.ravel()).statistic)


def test_heatmap_options_and_errors(blob_model: ModelCheckpoint, held_out: tuple) -> None:
    explainer = Explainer(blob_model)
    image = held_out[0][0]
    plus = explainer.heatmap(image, method="gradcam++", target_class="CLEAR")
    assert plus.method == "gradcam++" and plus.target_class == "CLEAR"
    assert plus.values.dtype == np.float32 and plus.values.min() >= 0.0 and plus.values.max() <= 1.0
    with pytest.raises(ExplainError, match="Unknown heatmap method"):
        explainer.heatmap(image, method="lime")
    with pytest.raises(ExplainError, match="Unknown class"):
        explainer.heatmap(image, target_class="PNEUMONIA")
    with pytest.raises(ExplainError, match="grayscale"):
        explainer.heatmap(np.zeros((4, 64, 64), dtype=np.float32))
    with pytest.raises(ExplainError, match="non-finite"):
        explainer.heatmap(np.full((64, 64), np.nan, dtype=np.float32))


def test_renderers() -> None:
    rng = np.random.default_rng(0)
    image, heat = rng.random((50, 80), dtype=np.float32), rng.random((50, 80), dtype=np.float32)
    rgb = overlay_rgb(image, heat, opacity=0.0)
    assert rgb.shape == (50, 80, 3) and rgb.dtype == np.uint8
    assert np.array_equal(rgb[..., 0], rgb[..., 1])  # no heat at opacity 0: still grayscale
    coloured = overlay_rgb(image, heat, opacity=0.7, colormap="inferno")
    assert not np.array_equal(coloured[..., 0], coloured[..., 2])
    decoded = cv2.imdecode(np.frombuffer(overlay_png(image, heat, max_side=40), np.uint8), cv2.IMREAD_UNCHANGED)
    assert decoded.shape == (25, 40, 3)
    assert np.abs(heatmap_from_png16(heatmap_to_png16(heat)) - heat).max() <= 1 / 65535
    with pytest.raises(ExplainError, match="Opacity"):
        overlay_rgb(image, heat, opacity=1.5)
    with pytest.raises(ExplainError, match="colormap"):
        overlay_rgb(image, heat, colormap="rainbowish")
    with pytest.raises(ExplainError, match="16-bit"):
        heatmap_from_png16(overlay_png(image, heat))


def test_heatmaps_run_beside_predictions_without_changing_them(blob_model: ModelCheckpoint, held_out: tuple) -> None:
    predictor = Predictor(blob_model, threads=1, uncertainty=UncertaintyPolicy(method="none"), gate=False)
    images = list(held_out[0][:6])
    expected = [p.positive_probability for p in predictor.predict_batch(images, [None] * 6)]
    reference_heatmap = predictor.heatmap(images[0]).values
    errors: list[BaseException] = []
    heatmaps: list[np.ndarray] = []

    def explain() -> None:
        try:
            heatmaps.extend(predictor.heatmap(images[0]).values for _ in range(3))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=explain) for _ in range(2)]
    for thread in threads:
        thread.start()
    during = [[p.positive_probability for p in predictor.predict_batch(images, [None] * 6)] for _ in range(3)]
    for thread in threads:
        thread.join()
    assert not errors
    assert all(np.allclose(row, expected, atol=1e-6) for row in during)
    assert all(np.allclose(h, reference_heatmap, atol=1e-5) for h in heatmaps)
    assert predictor.explainer().model is not predictor.model  # gradients run on a private copy
