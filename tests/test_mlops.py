"""mlops end to end: train -> checkpoint -> Predictor -> evaluate -> MLflow registry, plus data validation/splits.

One tiny training run on a synthetic, learnable dataset (striped vs smooth 64 px images) feeds every model test;
MLflow points at a temporary SQLite store so the real one under var/ is never touched.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
import torch

import labelled_data as datasets
from imaging import decode_image
from inference import CheckpointError, Predictor, load_checkpoint, save_checkpoint
from labelled_data import DataOptions, DatasetError, Sample
from mlops import evaluate as evaluation
from mlops import registry
from mlops.calibration import fit_platt, fit_temperature
from mlops.populations import balanced_weights, population_metrics, selection_score
from mlops.train import TrainConfig, parse_args, train
from mlops.validate import validate_dataset
from settings import get_settings
from tests.conftest import require_dataset

torch.set_num_threads(1)

IMAGE_PX = 64  # the decoder refuses images below 64 px per side
MANIFEST_FIELDS = ["file", "label", "split", "patient_id"]


# --- synthetic data ----------------------------------------------------------------------------------------------


def _synthetic_image(positive: bool, rng: np.random.Generator) -> np.ndarray:
    """Positive: stripes (a texture equalisation and flips keep); negative: smooth blobs."""
    if positive:
        period, angle = rng.uniform(5, 9), rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:IMAGE_PX, 0:IMAGE_PX]
        wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform(0, 6))
        image = 0.5 + 0.35 * wave
    else:
        image = cv2.GaussianBlur(rng.random((IMAGE_PX, IMAGE_PX)), (0, 0), sigmaX=8)
        image = (image - image.min()) / max(1e-6, float(np.ptp(image)))
    image = image + rng.normal(0, 0.04, image.shape)
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def _write_manifest(root: Path, rows: list[dict[str, str]], fields: list[str] = MANIFEST_FIELDS) -> None:
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def make_synthetic_dataset(root: Path, train_patients: int = 24, test_patients: int = 8, seed: int = 0) -> Path:
    """Two images per patient; manifest with explicit patient ids; one dropped-duplicate listing for `test`."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, patients in (("train", train_patients), ("test", test_patients)):
        for p in range(patients):
            label = "POSITIVE" if p % 2 else "NEGATIVE"
            for k in range(2):
                name = f"{split}/{label}/{split}-p{p:03d}_{k}.png"
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / name), _synthetic_image(label == "POSITIVE", rng))
                rows.append({"file": name, "label": label, "split": split, "patient_id": f"{split}-p{p:03d}"})
    _write_manifest(root, rows)
    test_rows = [r for r in rows if r["split"] == "test"]
    with (root / evaluation.DUPLICATES_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dropped_original_path", "split", "label", "reason", "kept_original_path", "kept_file"])
        for kept in test_rows[:2]:
            writer.writerow(["orig/dup-" + Path(kept["file"]).name, "test", kept["label"], "exact duplicate",
                             "orig/" + kept["file"], kept["file"]])  # fmt: skip
    return root


def make_adult_dataset(root: Path, seed: int = 1) -> Path:
    """An RSNA-like manifest: train/val/test splits, a view_position column and three source labels, where
    OTHER_ABNORMAL (smooth, like NEGATIVE) must become a negative. One image per patient."""
    rng = np.random.default_rng(seed)
    rows = []
    labels = ("POSITIVE", "NEGATIVE", "OTHER_ABNORMAL")
    for split, patients in (("train", 24), ("val", 12), ("test", 6)):
        for p in range(patients):
            label, view = labels[p % 3], ("AP", "PA")[(p // 3) % 2]
            name = f"{label}/{split}-a{p:03d}.png"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / name), _synthetic_image(label == "POSITIVE", rng))
            rows.append({"file": name, "label": label, "split": split, "patient_id": f"a-{split}-{p:03d}",
                         "view_position": view})  # fmt: skip
    _write_manifest(root, rows, [*MANIFEST_FIELDS, "view_position"])
    return root


# --- fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def isolated_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    var_dir = tmp_path_factory.mktemp("var")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VAR_DIR", str(var_dir))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{var_dir / 'mlflow.db'}")
        patch.setenv("MLFLOW_EXPERIMENT", "test-mlops")
        get_settings.cache_clear()
        yield var_dir
        mlflow.set_tracking_uri(None)  # forget the temporary store before the environment is restored
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="module")
def trained(isolated_mlflow: Path, synthetic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    output = tmp_path_factory.mktemp("model") / "model.pt"
    config = TrainConfig(
        data=synthetic_dir,
        task="synthetic",
        architecture="resnet10t",
        image_size=32,
        epochs=3,
        batch_size=8,
        lr=3e-3,
        ema_decay=0.8,  # 12 steps: the default 0.995 EMA would still be mostly the initial weights
        val_fraction=0.25,
        seed=7,
        device="cpu",
        output=output,
        register_name="test-synthetic",
    )
    logs: list[str] = []
    checkpoint, summary = train(config, log=logs.append)
    return {"config": config, "checkpoint": checkpoint, "summary": summary, "path": output, "logs": logs}


# --- training ----------------------------------------------------------------------------------------------------


def test_training_lowers_loss_and_writes_a_servable_checkpoint(trained: dict, synthetic_dir: Path) -> None:
    losses = [epoch["train_loss"] for epoch in trained["summary"]["history"]]
    assert len(losses) == 3
    assert losses[-1] < losses[0], f"training loss did not go down: {losses}"

    checkpoint = load_checkpoint(trained["path"])
    assert checkpoint.class_names == ["NEGATIVE", "POSITIVE"]
    assert checkpoint.preprocess.input_size == 32
    assert 0.0 < checkpoint.threshold <= 1.0 and checkpoint.temperature > 0
    assert DataOptions.from_dict(checkpoint.extra["data_options"]) == trained["config"].data_options()
    assert "validation" in checkpoint.metrics

    predictor = Predictor(checkpoint, threads=1, cache_size=4)
    image = decode_image(next((synthetic_dir / "test" / "POSITIVE").glob("*.png")).read_bytes())
    prediction = predictor.predict(image.pixels)
    assert prediction.label in checkpoint.class_names
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert prediction.model_version == checkpoint.version


def test_training_is_tracked_and_registered_in_mlflow(trained: dict) -> None:
    tracking = trained["summary"]["tracking"]
    client = registry.mlflow_client()
    run = client.get_run(tracking["run_id"])
    assert run.data.params["architecture"] == "resnet10t"
    assert {"train_loss", "val_auroc", "final_val_sensitivity", "temperature"} <= set(run.data.metrics)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3]
    versions = registry.list_versions("test-synthetic")
    assert [v.version for v in versions] == [int(tracking["model_version"])]
    assert versions[0].checkpoint_version == trained["checkpoint"].version
    assert registry.resolve_checkpoint("test-synthetic", versions[0].version).is_file()


def test_train_refuses_a_missing_split_clearly(synthetic_dir: Path, tmp_path: Path) -> None:
    config = TrainConfig(data=synthetic_dir, train_split="nope", track=False, output=tmp_path / "x.pt")
    with pytest.raises(DatasetError, match="no images in split 'nope'"):
        train(config, log=lambda _: None)


def test_cli_keeps_old_options_and_parses_task_definition() -> None:
    old = parse_args(["--data", "d", "--epochs", "2", "--classes", "NORMAL,PNEUMONIA", "--no-track"])
    assert (old.epochs, old.class_names, old.track, old.positive_labels) == (2, ["NORMAL", "PNEUMONIA"], False, [])
    assert old.data_options() == DataOptions(positive_name="PNEUMONIA", negative_name="NO_PNEUMONIA")
    nodule = parse_args(
        ["--data", "d", "--task", "nodule", "--positive-labels", "NODULE_OR_MASS", "--split-column", "col"]
    )
    options = nodule.data_options()
    assert options.class_names == ["NO_NODULE", "NODULE"]
    assert options.split_column == "col" and options.positive_labels == ("NODULE_OR_MASS",)


# --- several datasets in one run --------------------------------------------------------------------------------

ADULT_TASK = ":population=adults:positive=POSITIVE:positive-name=POSITIVE:negative=NEGATIVE+OTHER_ABNORMAL:negative-name=NEGATIVE"  # noqa: E501


def test_source_spec_overrides_the_task_for_its_dataset_only() -> None:
    defaults = DataOptions(positive_name="PNEUMONIA", negative_name="NO_PNEUMONIA")
    plain = datasets.parse_source("../data/kermany-pneumonia", defaults)
    assert (plain.population, plain.val_split, plain.options) == ("kermany-pneumonia", "auto", defaults)

    rsna = datasets.parse_source(
        "../data/rsna:population=adults:positive=PNEUMONIA:negative=NORMAL+OTHER_ABNORMAL:negative-name=NORMAL:val=carve",
        defaults,
    )
    assert (rsna.path, rsna.population, rsna.val_split) == (Path("../data/rsna"), "adults", "carve")
    assert rsna.options.positive_labels == ("PNEUMONIA",)
    assert rsna.options.negative_labels == ("NORMAL", "OTHER_ABNORMAL")
    assert rsna.options.class_names == ["NORMAL", "PNEUMONIA"]
    with pytest.raises(DatasetError, match="unknown data source option 'populaton'"):
        datasets.parse_source("d:populaton=adults", defaults)
    with pytest.raises(DatasetError, match="'adults' in 'd:adults' is not key=value"):
        datasets.parse_source("d:adults", defaults)


def test_adult_manifest_keeps_view_and_population_and_validates_on_its_own_val_split(tmp_path: Path) -> None:
    root = make_adult_dataset(tmp_path / "adults")
    source = datasets.parse_source(f"{root}{ADULT_TASK}", DataOptions())
    samples = datasets.load_source(source)
    assert {s.population for s in samples} == {"adults"}
    assert {s.view for s in samples} == {"AP", "PA"}
    assert {s.label for s in samples} == {"NEGATIVE", "POSITIVE"}  # OTHER_ABNORMAL became a negative

    classes = ["NEGATIVE", "POSITIVE"]
    train_part, val_part = datasets.train_val_split(source, samples, classes, "train", 0.25, seed=0)
    assert (len(train_part), len(val_part)) == (24, 12)
    assert {s.split for s in val_part} == {"val"}
    carved = dataclasses.replace(source, val_split="carve")
    train_part, val_part = datasets.train_val_split(carved, samples, classes, "train", 0.25, seed=0)
    assert {s.split for s in val_part} == {"train"} and len(train_part) + len(val_part) == 24
    assert not {s.patient_id for s in train_part} & {s.patient_id for s in val_part}


def _tagged(population: str, view: str, label: str, count: int) -> list[Sample]:
    return [Sample(Path(f"{population}-{view}-{label}-{i}.png"), label, "train", f"{population}{view}{label}{i}",
                   population, view) for i in range(count)]  # fmt: skip


def test_balanced_sampling_gives_populations_equal_shares_and_removes_the_view_shortcut() -> None:
    samples = [
        *_tagged("children", "", "NORMAL", 3),
        *_tagged("children", "", "PNEUMONIA", 1),
        *_tagged("adults", "AP", "PNEUMONIA", 2),
        *_tagged("adults", "AP", "NORMAL", 1),
        *_tagged("adults", "PA", "PNEUMONIA", 1),
        *_tagged("adults", "PA", "NORMAL", 4),
    ]
    weights = balanced_weights(samples)
    expected = [1 / 12] * 3 + [1 / 4] + [1 / 16] * 2 + [1 / 8] + [1 / 8] + [1 / 32] * 4
    assert weights == pytest.approx(expected)

    def share(**fields: str) -> float:
        return sum(
            w for s, w in zip(samples, weights, strict=True) if all(getattr(s, k) == v for k, v in fields.items())
        )

    assert share(population="children") == pytest.approx(0.5)
    # in what the model is shown, an AP film is no likelier to be pneumonia than a PA film
    for view in ("AP", "PA"):
        assert share(view=view, label="PNEUMONIA") / share(view=view) == pytest.approx(0.5)


def test_within_view_auroc_exposes_a_model_that_only_reads_the_projection() -> None:
    samples = [*_tagged("adults", "AP", "x", 4), *_tagged("adults", "PA", "x", 4), *_tagged("children", "", "x", 2)]
    labels = np.array([1, 1, 1, 0, 1, 0, 0, 0, 1, 0])
    probs = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.9, 0.1])  # AP -> 0.9, PA -> 0.1
    by_population = population_metrics(labels, probs, samples, threshold=0.5)
    adults = by_population["adults"]
    assert adults["auroc"] == pytest.approx(0.75)  # the pooled adult number looks useful...
    assert (adults["auroc_AP"], adults["auroc_PA"]) == (0.5, 0.5)  # ...but within each projection it is chance
    assert (adults["n_AP"], adults["n_PA"], adults["n"]) == (4, 4, 8)
    assert "auroc_AP" not in by_population["children"] and by_population["children"]["auroc"] == 1.0
    assert selection_score(by_population) == pytest.approx((0.75 + 1.0) / 2)


def test_joint_training_validates_each_population_and_fine_tunes_from_a_checkpoint(
    trained: dict, synthetic_dir: Path, tmp_path: Path
) -> None:
    adults = make_adult_dataset(tmp_path / "rsna-like")
    config = TrainConfig(
        data=[f"{synthetic_dir}:population=children", f"{adults}{ADULT_TASK}"],
        task="synthetic",
        architecture="resnet10t",
        image_size=32,
        epochs=2,
        batch_size=8,
        lr=1e-9,  # so small that the final weights must still be the starting checkpoint's
        ema_decay=0.8,
        val_fraction=0.25,
        seed=7,
        device="cpu",
        output=tmp_path / "joint.pt",
        track=False,
        balanced_sampling=True,
        epoch_samples=32,
        init_from=trained["path"],
    )
    logs: list[str] = []
    _, summary = train(config, log=logs.append)
    checkpoint = load_checkpoint(config.output)

    assert checkpoint.class_names == ["NEGATIVE", "POSITIVE"]
    assert checkpoint.extra["validated_populations"] == ["adults", "children"]
    by_population = checkpoint.metrics["validation_by_population"]
    assert by_population["adults"]["n"] == 12  # the adult set's own val split
    assert (by_population["adults"]["n_AP"], by_population["adults"]["n_PA"]) == (6, 6)
    assert by_population["children"]["n"] == 12  # 3 + 3 of 24 train patients carved out, 2 images each
    assert "auroc_AP" not in by_population["children"]
    assert checkpoint.extra["init_from"]["version"] == trained["checkpoint"].version
    assert [s["population"] for s in checkpoint.extra["sources"]] == ["children", "adults"]
    assert any("epoch 1/2 step 4/4" in line for line in logs)  # 32 draws per epoch, batch 8

    for record in summary["history"]:
        assert {"val_auroc_children", "val_auroc_adults", "val_auroc_adults_AP", "val_auroc_adults_PA"} <= set(record)
        expected = np.nanmean([record["val_auroc_children"], record["val_auroc_adults"]])
        assert record["val_selection_auroc"] == pytest.approx(expected)
    start = trained["checkpoint"].state_dict
    for name, tensor in checkpoint.state_dict.items():
        if name.endswith("weight") and tensor.dim() == 4:  # conv kernels: untouched by batch-norm statistics
            torch.testing.assert_close(tensor, start[name], atol=1e-5, rtol=0)

    # evaluation rebuilds each dataset's own task from the checkpoint: the adult test split is relabelled
    options = evaluation.task_options(checkpoint, adults)
    test_labels = [s.label for s in evaluation.evaluation_samples(adults, "test", options).samples]
    assert sorted(set(test_labels)) == ["NEGATIVE", "POSITIVE"] and len(test_labels) == 6
    assert evaluation.task_options(checkpoint, synthetic_dir) == DataOptions.from_dict(
        checkpoint.extra["sources"][0]["options"]
    )


def test_init_from_refuses_a_checkpoint_of_another_architecture(
    trained: dict, synthetic_dir: Path, tmp_path: Path
) -> None:
    config = TrainConfig(
        data=synthetic_dir, architecture="resnet18", image_size=32, track=False, output=tmp_path / "x.pt",
        init_from=trained["path"],
    )  # fmt: skip
    with pytest.raises(CheckpointError, match="is resnet10t with classes"):
        train(config, log=lambda _: None)


def test_cli_repeats_data_for_a_joint_run() -> None:
    config = parse_args(
        ["--data", "kermany:population=children", "--data", "rsna:population=adults:positive=PNEUMONIA",
         "--balanced-sampling", "--epoch-samples", "64", "--init-from", "models/pneumonia.pt"]
    )  # fmt: skip
    assert config.data == ["kermany:population=children", "rsna:population=adults:positive=PNEUMONIA"]
    assert (config.balanced_sampling, config.epoch_samples, config.init_from) == (
        True,
        64,
        Path("models/pneumonia.pt"),
    )
    assert [s.population for s in config.sources()] == ["children", "adults"]
    assert parse_args(["--data", "d"]).data == Path("d")  # one dataset: the old single-folder config


# --- evaluation --------------------------------------------------------------------------------------------------


def test_evaluate_cli_writes_reports_and_updates_checkpoint_and_registry(
    trained: dict, synthetic_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / trained["path"].name  # a copy: the registry test below needs the untouched original too
    shutil.copy(trained["path"], model)
    out = tmp_path / "eval"
    argv = ["--checkpoint", str(model), "--data", str(synthetic_dir), "--out", str(out)]
    assert evaluation.main([*argv, "--bootstrap-rounds", "60", "--threads", "1", "--update-checkpoint"]) == 0
    printed = capsys.readouterr().out
    assert "official list: 16 stored images + 2 byte-identical duplicates" in printed

    for name in ("metrics.json", "report.md", "predictions.csv", "roc.png", "reliability.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "metrics.json").read_text())
    assert report["data"]["n_images"] == 18 and report["data"]["restored_duplicates"] == 2
    assert set(report["metrics"]) == set(evaluation.METRIC_LABELS)
    c = report["confusion"]
    assert c["tp"] + c["fn"] == report["data"]["n_positive"] and c["tn"] + c["fp"] == report["data"]["n_negative"]
    for key in ("accuracy", "sensitivity", "specificity", "brier"):
        low, high = report["intervals"][key]
        assert low <= report["metrics"][key] <= high, key
    assert "| AUROC |" in (out / "report.md").read_text()

    stored = load_checkpoint(model).metrics["test"]
    assert stored["n_images"] == 18 and stored["split"] == "test"
    assert stored["metrics"]["auroc"] == pytest.approx(report["metrics"]["auroc"])
    assert stored["data_fingerprint"] == report["data"]["fingerprint"]
    # the registry version made from this checkpoint now carries the same metrics
    version = int(trained["summary"]["tracking"]["model_version"])
    in_registry = registry.stored_test_metrics("test-synthetic", version)
    assert in_registry["metrics"]["auroc"] == pytest.approx(stored["metrics"]["auroc"])
    assert in_registry["data_fingerprint"] == stored["data_fingerprint"]


def test_evaluate_refuses_bad_requests(trained: dict, synthetic_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(evaluation.EvaluationError, match="no images in split 'val'"):
        evaluation.evaluate(trained["path"], synthetic_dir, "val", bootstrap_rounds=5, threads=1)
    plain = tmp_path / "plain"
    shutil.copytree(synthetic_dir, plain)
    (plain / evaluation.DUPLICATES_FILE).unlink()
    with pytest.raises(evaluation.EvaluationError, match="cannot rebuild the official list"):
        evaluation.evaluation_samples(plain, "test", DataOptions(), restore_duplicates=True)
    assert len(evaluation.evaluation_samples(plain, "test", DataOptions()).samples) == 16


def test_official_kermany_test_list_has_624_images() -> None:
    kermany = require_dataset("kermany-pneumonia")
    chosen = evaluation.evaluation_samples(kermany, "test", DataOptions())
    labels = [s.label for s in chosen.samples]
    assert (chosen.stored, chosen.restored, len(labels)) == (618, 6, 624)
    assert (labels.count("PNEUMONIA"), labels.count("NORMAL")) == (390, 234)
    assert len(evaluation.evaluation_samples(kermany, "test", DataOptions(), restore_duplicates=False).samples) == 618


# --- registry ----------------------------------------------------------------------------------------------------


def _register_variant(source: Path, folder: Path, tag: str, auroc: float, fingerprint: str | None = None) -> int:
    """A registry version whose checkpoint carries the given stored test AUROC (the gate's input)."""
    checkpoint = load_checkpoint(source)
    checkpoint.version = f"{checkpoint.version}-{tag}"
    block = {"metrics": {"auroc": auroc}, "data_fingerprint": fingerprint or "synthetic-test", "n_images": 18}
    checkpoint.metrics["test"] = block
    path = folder / f"{tag}.pt"
    save_checkpoint(checkpoint, path)
    return registry.register_checkpoint_file(path, "test-gate")


def test_registry_alias_promotion_gate_and_rollback(trained: dict, tmp_path: Path) -> None:
    v1 = _register_variant(trained["path"], tmp_path, "a", auroc=0.80)
    v2 = _register_variant(trained["path"], tmp_path, "b", auroc=0.85)
    v3 = _register_variant(trained["path"], tmp_path, "c", auroc=0.84)
    v4 = _register_variant(trained["path"], tmp_path, "d", auroc=0.99, fingerprint="other-test-set")
    v5 = _register_variant(trained["path"], tmp_path, "e", auroc=0.855)

    assert registry.promote_if_better("test-gate", v1).promoted  # no champion yet
    decision = registry.promote_if_better("test-gate", v2, metric="auroc")
    assert decision.promoted and decision.champion_before == v1 and decision.champion_value == pytest.approx(0.80)
    assert not registry.promote_if_better("test-gate", v3).promoted  # worse
    assert "different test data" in registry.promote_if_better("test-gate", v4).reason
    assert not registry.promote_if_better("test-gate", v5, min_delta=0.01).promoted  # better, but not by enough
    assert not registry.promote_if_better("test-gate", v3, metric="brier").promoted  # metric never stored
    assert registry.get_alias("test-gate") == v2

    resolved = registry.resolve_model_reference("models:/test-gate@champion")
    assert load_checkpoint(resolved).version.endswith("-b")
    assert registry.resolve_model_reference(f"models:/test-gate/{v3}") == registry.resolve_checkpoint("test-gate", v3)
    assert registry.resolve_model_reference(str(trained["path"])) == trained["path"]

    assert registry.rollback("test-gate") == v1
    assert registry.get_alias("test-gate") == v1
    assert [v.aliases for v in registry.list_versions("test-gate") if v.version == v1] == [["champion"]]
    with pytest.raises(registry.RegistryError, match="No earlier"):
        registry.rollback("test-gate")
    assert registry.rollback("test-gate", to_version=v5) == v5


def test_registry_errors_are_user_facing(isolated_mlflow: Path, tmp_path: Path) -> None:
    with pytest.raises(registry.RegistryError, match="Model file not found"):
        registry.resolve_model_reference(tmp_path / "missing.pt")
    with pytest.raises(registry.RegistryError, match="Not a model reference"):
        registry.parse_model_uri("models:/only-a-name")
    with pytest.raises(registry.RegistryError, match="No registered model"):
        registry.get_alias("no-such-model")
    assert registry.main(["resolve", "models:/no-such-model@champion"]) == 2


def test_serving_reference_prefers_the_alias_setting() -> None:
    settings = get_settings().model_copy(update={"model_alias": "models:/cxr-pneumonia@champion"})
    assert registry.serving_model_reference(settings) == "models:/cxr-pneumonia@champion"
    settings = get_settings().model_copy(update={"model_alias": "", "model_path": Path("/models/a.pt")})
    assert registry.serving_model_reference(settings) == "/models/a.pt"


# --- data validation and splits ----------------------------------------------------------------------------------


def test_validator_flags_unreadable_files_and_duplicates(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = []
    for name, split in (("a", "train"), ("b", "train"), ("c", "test")):
        cv2.imwrite(str(tmp_path / f"{name}.png"), _synthetic_image(False, rng))
        rows.append({"file": f"{name}.png", "label": "NEGATIVE", "split": split, "patient_id": name})
    shutil.copy(tmp_path / "a.png", tmp_path / "a_copy.png")  # same split duplicate
    shutil.copy(tmp_path / "b.png", tmp_path / "b_in_test.png")  # crosses train/test
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    rows += [
        {"file": "a_copy.png", "label": "NEGATIVE", "split": "train", "patient_id": "a"},
        {"file": "b_in_test.png", "label": "NEGATIVE", "split": "test", "patient_id": "b2"},
        {"file": "garbage.png", "label": "NEGATIVE", "split": "train", "patient_id": "g"},
        {"file": "missing.png", "label": "NEGATIVE", "split": "train", "patient_id": "m"},
    ]
    _write_manifest(tmp_path, rows)
    samples = datasets.discover(tmp_path)

    quick = validate_dataset(samples)
    assert [p.name for p in quick.unreadable_paths] == ["missing.png"]
    report = validate_dataset(samples, decode=True)
    assert {p.name for p in report.unreadable_paths} == {"missing.png", "garbage.png"}
    assert [sorted(p.name for p in group) for group in report.duplicate_groups] == [["a.png", "a_copy.png"]]
    assert [sorted(p.name for p in group) for group in report.cross_split_duplicates] == [["b.png", "b_in_test.png"]]
    assert any("more than one split" in error for error in report.errors)
    assert any("unreadable" in line for line in report.summary_lines())

    kept, images, failed = datasets.cache_images(samples, 32, workers=1)
    assert {p.name for p, _ in failed} == {"missing.png", "garbage.png"}
    assert images.shape == (len(kept), 32, 32) and len(kept) == len(samples) - 2


def _random_samples(rng: random.Random, n: int) -> list[Sample]:
    return [
        Sample(Path(f"img{i}.png"), rng.choice(["A", "B", "C"]), "all", f"patient{rng.randrange(n // 3 + 1)}")
        for i in range(n)
    ]


@pytest.mark.parametrize("seed", range(8))
def test_patient_splits_never_share_a_patient(seed: int) -> None:
    rng = random.Random(seed)
    samples = _random_samples(rng, rng.randint(10, 200))
    train_part, val_part = datasets.split_by_patient(samples, 0.2, seed)
    assert not {s.patient_id for s in train_part} & {s.patient_id for s in val_part}
    assert len(train_part) + len(val_part) == len(samples)

    assigned = datasets.assign_test_split(samples, 0.3, seed)
    by_split = {split: {s.patient_id for s in assigned if s.split == split} for split in ("train", "test")}
    assert not by_split["train"] & by_split["test"]
    assert {s.split for s in assigned} <= {"train", "test"}
    assert datasets.assign_test_split(list(reversed(samples)), 0.3, seed) == list(reversed(assigned))  # deterministic


def test_patient_ids_from_file_names() -> None:
    names = {
        "person123_bacteria_456.jpg": "person123",
        "IM-0117-0001.jpeg": "IM-0117",
        "NORMAL2-IM-0588-0001-0002.jpeg": "NORMAL2-IM-0588",
        "00000013_005.png": "00000013",
        "other.png": "other",
    }
    assert {name: datasets.patient_id_from_name(Path(name)) for name in names} == names


def test_label_mapping_defines_a_binary_task(synthetic_dir: Path) -> None:
    samples = datasets.discover(synthetic_dir)
    options = DataOptions(positive_labels=("POSITIVE",), positive_name="HIT", negative_name="MISS")
    mapped = datasets.relabel(samples, options)
    assert {s.label for s in mapped} == {"HIT", "MISS"} and len(mapped) == len(samples)
    assert DataOptions.from_dict(options.to_dict()) == options
    only = DataOptions(positive_labels=("POSITIVE",), negative_labels=("NOPE",))
    with pytest.raises(DatasetError, match="no sample has label"):
        datasets.relabel(samples, only)
    with pytest.raises(DatasetError, match="has no column"):
        datasets.discover(synthetic_dir, split_column="official")
    with pytest.raises(DatasetError, match="both positive and negative"):
        DataOptions(positive_labels=("A",), negative_labels=("A",))


def test_nodule_manifest_becomes_a_patient_split_binary_task() -> None:
    nodule = require_dataset("nih-nodule")
    official = DataOptions(
        split_column="nih_official_split", positive_labels=("NODULE_OR_MASS",), positive_name="NODULE",
        negative_name="NO_NODULE",
    )  # fmt: skip
    samples = datasets.load_samples(nodule, official)
    assert len(samples) == 556 and sum(s.label == "NODULE" for s in samples) == 145
    assert {s.split for s in samples} == {"train_val", "test"} and len(datasets.select(samples, "test")) == 74

    carved = datasets.load_samples(nodule, DataOptions(test_fraction=0.2, positive_labels=("NODULE_OR_MASS",)))
    test_patients = {s.patient_id for s in carved if s.split == "test"}
    assert not test_patients & {s.patient_id for s in carved if s.split == "train"}
    assert 0.15 < sum(s.split == "test" for s in carved) / len(carved) < 0.25
    assert carved == datasets.load_samples(nodule, DataOptions(test_fraction=0.2, positive_labels=("NODULE_OR_MASS",)))


def test_temperature_never_comes_back_nan_when_the_optimiser_diverges(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 2)) * 3, rng.integers(0, 2, 50)
    fitted = fit_temperature(logits, labels)

    def diverge(optimizer: torch.optim.LBFGS, closure: object) -> None:  # what LBFGS did on separable toy data
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.data.fill_(float("nan"))

    monkeypatch.setattr(torch.optim.LBFGS, "step", diverge)
    fallback = fit_temperature(logits, labels)
    assert np.isfinite(fallback) and fallback == pytest.approx(fitted, rel=0.03)  # the grid finds the same optimum


def test_platt_scaling_recovers_the_scale_and_the_prevalence_shift() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, 20_000)
    labels = (rng.random(logits.size) < 1 / (1 + np.exp(-(0.5 * logits - 1.0)))).astype(int)
    scale, shift = fit_platt(logits, labels)
    assert scale == pytest.approx(0.5, abs=0.03) and shift == pytest.approx(-1.0, abs=0.06)
