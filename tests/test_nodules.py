"""The nodule/mass model's own parts: marks from a heatmap, the predictor, FROC scoring and the training command."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from imaging import PreprocessSpec
from inference import CheckpointError, NoduleNet, NodulePredictor, load_checkpoint, locate
from labelled_data import DatasetError, load_boxed_set, parse_boxes
from mlops.export_runtime import main as export_runtime
from mlops.nodule_metrics import FilmResult, froc, operating_point, sensitivity_at, threshold_for
from mlops.nodule_train import extract_features, heat_target, parse_args, train
from tests.conftest import make_tiny_checkpoint
from tests.factories import png_bytes, synthetic_radiograph
from tests.nodule_fixtures import make_nodule_checkpoint


def gaussian_heat(grid: tuple[int, int], peaks: list[tuple[int, int, float]], sigma: float = 1.0) -> np.ndarray:
    rows, cols = np.mgrid[0 : grid[0], 0 : grid[1]]
    heat = np.zeros(grid, dtype=np.float32)
    for row, col, height in peaks:
        heat = np.maximum(heat, height * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma**2)))
    return heat


def test_a_mark_is_centred_on_its_peak_in_the_stored_image_pixels() -> None:
    heat = gaussian_heat((16, 16), [(5, 10, 0.9)])
    (mark,) = locate(heat, width=320, height=160, min_score=0.5)
    assert mark.centre == pytest.approx((10.5 * 20, 5.5 * 10))
    assert mark.score == pytest.approx(0.9)
    assert 20 < mark.w < 200 and 10 < mark.h < 100  # the half-peak region, a few cells wide


def test_marks_come_best_first_and_stay_on_the_film() -> None:
    heat = gaussian_heat((16, 16), [(0, 0, 0.6), (8, 8, 0.95), (14, 3, 0.3)])
    marks = locate(heat, width=160, height=160, min_score=0.5)
    assert [round(m.score, 2) for m in marks] == [0.95, 0.6]
    for mark in marks:
        assert mark.x >= 0 and mark.y >= 0 and mark.x + mark.w <= 160 and mark.y + mark.h <= 160


def test_at_most_five_marks() -> None:
    heat = gaussian_heat((32, 32), [(4 * i + 2, 4 * j + 2, 0.5 + 0.01 * i) for i in range(7) for j in range(7)], 0.7)
    assert len(locate(heat, 512, 512, min_score=0.1)) == 5


@pytest.fixture(scope="module")
def nodule_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nodule") / "nodule.pt"
    make_nodule_checkpoint(path, threshold=0.5)
    return path


def test_predictor_answers_the_threshold_class_and_caches(nodule_checkpoint: Path) -> None:
    predictor = NodulePredictor(load_checkpoint(nodule_checkpoint), threads=1)
    pixels = synthetic_radiograph(200, 300).astype(np.float32)
    finding = predictor.predict(pixels, "sha-1")
    expected = "NODULE" if finding.probability >= 0.5 else "NO_NODULE"
    assert finding.label == expected and finding.model_version == "nodule-fixture-1"
    assert finding.locations and all(m.x + m.w <= 300 and m.y + m.h <= 200 for m in finding.locations)
    again = predictor.predict(pixels, "sha-1")
    assert again.cached and again.probability == finding.probability


def test_a_pneumonia_checkpoint_is_not_a_nodule_model(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a nodule model"):
        NodulePredictor(load_checkpoint(make_tiny_checkpoint(tmp_path / "p.pt")), threads=1)


def film(marks: list[tuple[float, float, float]], boxes=(), positive=None, located=True, patient="p") -> FilmResult:
    positive = bool(boxes) if positive is None else positive
    return FilmResult(patient, positive, located, 0.5, tuple(boxes), tuple(marks))


def test_froc_counts_a_box_once_and_marks_outside_boxes_as_false() -> None:
    films = [
        film([(15, 15, 0.9), (18, 18, 0.8), (80, 80, 0.7)], boxes=[(10, 10, 10, 10)]),  # hit twice, one false
        film([(50, 50, 0.6)], boxes=[(0, 0, 5, 5)]),  # a miss: one false
        film([(30, 30, 0.95)]),  # a negative film: one false
        film([(1, 1, 0.99)], positive=True, located=False),  # not located: neither hit nor false
    ]
    points = froc(films)
    assert [(p.threshold, p.sensitivity, round(p.false_positives_per_film, 3)) for p in points] == [
        (0.95, 0.0, 0.333),
        (0.9, 0.5, 0.333),
        (0.8, 0.5, 0.333),
        (0.7, 0.5, 0.667),
        (0.6, 0.5, 1.0),
    ]
    assert sensitivity_at(points, 0.5) == 0.5 and sensitivity_at(points, 0.3) == 0.0
    assert threshold_for(points, 0.5) == 0.8
    assert operating_point(films, 0.8).false_positives_per_film == pytest.approx(1 / 3)


def test_heat_target_peaks_at_the_box_centre() -> None:
    target = heat_target([(64, 128, 32, 32)], size=(256, 256), grid=16)
    assert np.unravel_index(target.argmax(), target.shape) == (9, 5) and target.max() == 1.0
    assert target[0, 15] < 0.01


def test_malformed_boxes_are_refused_with_the_reason() -> None:
    assert parse_boxes("1,2,3,4; 5,6,7,8") == ((1, 2, 3, 4), (5, 6, 7, 8))
    with pytest.raises(DatasetError, match="positive width"):
        parse_boxes("1,2,0,4")


def write_boxed_set(root: Path, per_split: int = 6) -> Path:
    """A nih-nodule-boxes-shaped folder: bright round 'nodules' inside their boxes on synthetic films."""
    rows = []
    for split in ("train", "val", "test"):
        for i in range(per_split):
            pixels = synthetic_radiograph(96, 96, seed=hash((split, i)) % 1000)
            label = "NODULE_MASS" if i % 2 == 0 else "OTHER_FINDING"
            box = ""
            if label == "NODULE_MASS":
                cx, cy = 30 + 8 * (i % 3), 40 + 6 * (i % 2)
                yy, xx = np.mgrid[0:96, 0:96]
                pixels = np.where((xx - cx) ** 2 + (yy - cy) ** 2 < 36, 0.95, pixels)
                box = f"{cx - 8},{cy - 8},16,16"
            path = root / label / f"{split}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png_bytes((pixels * 255).astype(np.uint8)))
            rows.append(
                {
                    "file": f"{label}/{path.name}",
                    "split": split,
                    "label": label,
                    "patient_id": f"{split}{i}",
                    "view_position": "PA",
                    "nodule_mass_bboxes_xywh": box,
                }
            )
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def write_expert_export(root: Path) -> Path:
    """An export folder as `python -m active_learning export` writes it: two reviewed cases, one with a box."""
    rows = []
    for i, (label, boxes) in enumerate([("NODULE", "[[20, 30, 16, 16]]"), ("NO_NODULE", "[]")]):
        path = root / "images" / f"case{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes((synthetic_radiograph(96, 96, seed=50 + i) * 255).astype(np.uint8)))
        rows.append(
            {
                "file": f"images/{path.name}",
                "label": label,
                "split": "train",
                "patient_id": f"pseudo{i}",
                "boxes": boxes,
                "located": "true",
                "width": "96",
                "height": "96",
            }
        )
    with (root / "nodule_manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_training_writes_a_servable_nodule_checkpoint_with_test_figures(tmp_path: Path) -> None:
    data = write_boxed_set(tmp_path / "boxes")
    export = write_expert_export(tmp_path / "export")
    assert sum(s.positive for s in load_boxed_set(data)) == 9
    init = make_tiny_checkpoint(tmp_path / "pneumonia.pt", input_size=64)
    config = parse_args(
        [
            "--boxed-data",
            str(data),
            "--weak-data",
            "",
            "--init-from",
            str(init),
            "--image-size",
            "64",
            "--epochs",
            "2",
            "--head-width",
            "16",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "nodule.pt"),
            "--no-track",
            "--expert-labels",
            str(export),
        ]
    )
    trained = train(config, log=lambda line: None)
    checkpoint = load_checkpoint(tmp_path / "nodule.pt")
    assert checkpoint.version == trained.version and checkpoint.task == "nodule"
    assert checkpoint.metrics["test"]["films"] == 6 and checkpoint.metrics["test"]["boxes"] == 3
    assert 0.0 <= checkpoint.metrics["test"]["auroc"] <= 1.0
    assert checkpoint.extra["operating_point"]["split"] == "test"
    assert checkpoint.extra["training_films"] == {"boxed": 6, "weak": 0, "expert_reads": 2}
    finding = NodulePredictor(checkpoint, threads=1).predict(synthetic_radiograph(96, 96).astype(np.float32))
    assert finding.model_version == trained.version and 0.0 <= finding.probability <= 1.0


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_the_fast_runtimes_give_the_torch_finding(nodule_checkpoint: Path, tmp_path: Path, runtime: str) -> None:
    checkpoint = load_checkpoint(nodule_checkpoint)
    pixels = synthetic_radiograph(200, 300).astype(np.float32)
    reference = NodulePredictor(checkpoint, threads=1).predict(pixels)
    fast = NodulePredictor(checkpoint, threads=1, runtime=runtime, runtime_cache_dir=tmp_path).predict(pixels)
    assert fast.probability == pytest.approx(reference.probability, abs=1e-4)
    assert [m.centre for m in fast.locations] == [m.centre for m in reference.locations]
    assert [m.score for m in fast.locations] == pytest.approx([m.score for m in reference.locations], abs=1e-4)


def test_an_int8_nodule_graph_is_calibrated_on_boxed_training_films(nodule_checkpoint: Path, tmp_path: Path) -> None:

    data = write_boxed_set(tmp_path / "boxes")
    argv = ["--checkpoint", str(nodule_checkpoint), "--cache-dir", str(tmp_path / "rt"), "--int8", "--data", str(data)]
    assert export_runtime(argv) == 0
    checkpoint = load_checkpoint(nodule_checkpoint)
    pixels = synthetic_radiograph(200, 300).astype(np.float32)
    reference = NodulePredictor(checkpoint, threads=1).predict(pixels)
    int8 = NodulePredictor(
        checkpoint, threads=1, runtime="onnxruntime", precision="int8", runtime_cache_dir=tmp_path / "rt"
    ).predict(pixels)
    assert int8.probability == pytest.approx(reference.probability, abs=0.05)


def test_a_box_target_covers_the_cells_inside_the_radiologists_box() -> None:
    target = heat_target([(64, 128, 48, 32)], size=(256, 256), grid=16, shape="box")
    rows, cols = np.nonzero(target == 1.0)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 9, 4, 6)
    assert target.sum() == 6


def test_cached_features_come_back_as_the_same_films(tmp_path: Path) -> None:
    samples = load_boxed_set(write_boxed_set(tmp_path / "boxes", per_split=2))[:2]
    model = NoduleNet("resnet18", head_width=16).eval()
    spec = PreprocessSpec(64)
    first = extract_features(model, samples, spec, (False, True), tmp_path / "cache.pt")
    again = extract_features(model, samples, spec, (False, True), tmp_path / "cache.pt")
    assert again.samples == first.samples and again.flipped == [False, True, False, True]
    assert torch.equal(again.fine, first.fine) and again.boxes(1) == first.boxes(1)
