"""Train the nodule/mass model: `python -m mlops.nodule_train --init-from models/pneumonia.pt --out models/nodule.pt`.

The backbone comes from the project's own pneumonia model and stays frozen: 74 boxed films cannot retrain it, and on
two CPU cores a frozen backbone lets every film's feature maps be computed once (original and mirrored) and cached,
so the heads train in seconds per epoch. The heatmap learns from located films (boxed positives, negatives) with a
CenterNet-style focal loss around each box centre; the image-level head learns from every film, the weakly labelled
`nih-nodule` films included. The epoch is chosen on validation (mean of image AUROC and sensitivity at one false
mark per film), then the temperature, the image threshold and the mark threshold are fitted on validation, and the
test split is scored once with patient-bootstrap intervals.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from imaging import PreprocessSpec, decode_image, to_model_input, to_square_uint8
from inference import (
    NODULE_MODEL_KIND,
    NODULE_TASK,
    ModelCheckpoint,
    NoduleNet,
    load_checkpoint,
    locate,
    save_checkpoint,
)
from labelled_data import NoduleSample, load_boxed_set, load_weak_set, read_expert_nodule_reads
from mlops.calibration import choose_threshold, fit_platt
from mlops.nodule_metrics import FilmResult, froc, image_auroc, sensitivity_at, summarise, threshold_for

CLASS_NAMES = ["NO_NODULE", "NODULE"]
FEATURE_STRIDE = 16  # the heatmap's cell size in model-input pixels (resnet-style backbones)
MIN_SIGMA_CELLS = 0.75


@dataclass
class NoduleTrainConfig:
    boxed_data: Path
    weak_data: Path | None
    init_from: Path
    expert_labels: list[Path]  # export folders of the workstation's nodule reviews (python -m active_learning export)
    output: Path
    image_size: int = 512
    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    head_width: int = 128
    drop_rate: float = 0.2
    seed: int = 42
    min_sensitivity: float = 0.8  # image threshold: highest one keeping this validation sensitivity
    false_mark_budget: float = 1.0  # mark threshold: most lenient one within this many false marks per film
    heat_target: str = "centre"  # centre | box, see heat_target
    cache_dir: Path = Path("var/nodule-features")
    track: bool = True


@dataclass
class FeatureSet:
    """Cached backbone outputs of one split (one row per film and variant) and what the losses need."""

    fine: torch.Tensor  # (N, C, G, G) float16
    coarse: torch.Tensor  # (N, C', G/2, G/2) float16
    samples: list[NoduleSample]
    sizes: list[tuple[int, int]]  # stored (width, height) per row
    flipped: list[bool]

    def joined(self, other: FeatureSet) -> FeatureSet:
        if not other.samples:
            return self
        return FeatureSet(
            torch.cat([self.fine, other.fine]),
            torch.cat([self.coarse, other.coarse]),
            self.samples + other.samples,
            self.sizes + other.sizes,
            self.flipped + other.flipped,
        )

    def boxes(self, row: int) -> tuple[tuple[float, float, float, float], ...]:
        width = self.sizes[row][0]
        boxes = self.samples[row].boxes
        return tuple((width - x - w, y, w, h) for x, y, w, h in boxes) if self.flipped[row] else boxes


def extract_features(
    model: NoduleNet,
    samples: Sequence[NoduleSample],
    spec: PreprocessSpec,
    variants: Sequence[bool],
    cache: Path | None,
) -> FeatureSet:
    """Backbone feature maps of every sample (mirrored too where `variants` has True), cached on disk unless
    `cache` is None."""
    if cache is not None and cache.is_file():
        stored = torch.load(cache, weights_only=False)
        return FeatureSet(**{**stored, "samples": [NoduleSample(**sample) for sample in stored["samples"]]})
    fine, coarse, sizes, rows, flipped = [], [], [], [], []
    for sample in samples:
        pixels = decode_image(sample.path.read_bytes()).pixels
        square = to_square_uint8(pixels, spec.input_size)
        for flip in variants:
            image = np.ascontiguousarray(square[:, ::-1]) if flip else square
            with torch.inference_mode():
                f, c = model.backbone(torch.from_numpy(to_model_input(image, spec)[None]))
            fine.append(f.half())
            coarse.append(c.half())
            sizes.append((pixels.shape[1], pixels.shape[0]))
            rows.append(sample)
            flipped.append(flip)
    if not rows:
        return FeatureSet(torch.empty(0, 0, 0, 0), torch.empty(0, 0, 0, 0), [], [], [])
    features = FeatureSet(torch.cat(fine), torch.cat(coarse), rows, sizes, flipped)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(asdict(features), cache)
    return features


def heat_target(
    boxes: Sequence[tuple[float, float, float, float]], size: tuple[int, int], grid: int, shape: str = "centre"
) -> np.ndarray:
    """Training target of the heatmap for one film: `centre` puts a Gaussian peak (1 at the cell holding each box
    centre) spread by the box's size; `box` marks every cell whose centre lies in a box (at least the centre cell),
    which rewards a peak anywhere a radiologist's loose box says the lesion may be, as the hit rule scores it."""
    target = np.zeros((grid, grid), dtype=np.float32)
    cols, rows = np.meshgrid(np.arange(grid) + 0.5, np.arange(grid) + 0.5)
    sx, sy = grid / size[0], grid / size[1]
    for x, y, w, h in boxes:
        cx, cy = (x + w / 2) * sx, (y + h / 2) * sy
        if shape == "box":
            inside = (cols >= x * sx) & (cols <= (x + w) * sx) & (rows >= y * sy) & (rows <= (y + h) * sy)
            target = np.maximum(target, inside.astype(np.float32))
        else:
            sigma_x, sigma_y = max(MIN_SIGMA_CELLS, w * sx / 4), max(MIN_SIGMA_CELLS, h * sy / 4)
            peak = np.exp(-((cols - cx) ** 2) / (2 * sigma_x**2) - ((rows - cy) ** 2) / (2 * sigma_y**2))
            target = np.maximum(target, peak)
        target[min(int(cy), grid - 1), min(int(cx), grid - 1)] = 1.0
    return target


def focal_heat_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, averaged over the peaks in the batch (at least one)."""
    prob = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    peaks = target >= 1.0
    positive = -((1 - prob) ** 2) * torch.log(prob) * peaks
    negative = -((1 - target) ** 4) * prob**2 * torch.log(1 - prob) * ~peaks
    return (positive.sum() + negative.sum()) / peaks.sum().clamp(min=1)


def train_heads(
    model: NoduleNet, train: FeatureSet, val: FeatureSet, config: NoduleTrainConfig, log: Callable[[str], None]
) -> tuple[list[dict[str, float]], dict[str, Any]]:
    """Fit the heads on cached features; keep the epoch with the best validation selection score."""
    grid = train.fine.shape[-1]
    targets = torch.from_numpy(
        np.stack(
            [heat_target(train.boxes(i), train.sizes[i], grid, config.heat_target) for i in range(len(train.samples))]
        )
    )
    labels = torch.tensor([float(s.positive) for s in train.samples])
    located = torch.tensor([s.located for s in train.samples])
    pos_weight = (labels == 0).sum() / (labels == 1).sum().clamp(min=1)
    head = model.head
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.lr, total_steps=config.epochs * -(-len(labels) // config.batch_size)
    )
    generator = torch.Generator().manual_seed(config.seed)
    history, best = [], {"score": -1.0}
    for epoch in range(1, config.epochs + 1):
        head.train()
        for batch in torch.randperm(len(labels), generator=generator).split(config.batch_size):
            image_logits, heat_logits = head(train.fine[batch].float(), train.coarse[batch].float())
            image_loss = F.binary_cross_entropy_with_logits(image_logits, labels[batch], pos_weight=pos_weight)
            mask = located[batch]
            heat_loss = focal_heat_loss(heat_logits[mask], targets[batch][mask]) if mask.any() else 0.0
            optimizer.zero_grad()
            (image_loss + heat_loss).backward()
            optimizer.step()
            schedule.step()
        films = score_features(head, val, config.image_size)
        points = froc(films)
        record = {
            "epoch": epoch,
            "val_auroc": image_auroc(films),
            "val_sensitivity_at_1_fp": sensitivity_at(points, 1.0),
            "val_sensitivity_at_0.5_fp": sensitivity_at(points, 0.5),
        }
        record["val_selection"] = (record["val_auroc"] + record["val_sensitivity_at_1_fp"]) / 2
        history.append(record)
        log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if record["val_selection"] > best["score"]:
            best = {"score": record["val_selection"], "epoch": epoch, "state": copy.deepcopy(head.state_dict())}
    head.load_state_dict(best["state"])
    return history, {"epoch": best["epoch"], "selection": best["score"]}


def score_features(head: torch.nn.Module, features: FeatureSet, image_size: int) -> list[FilmResult]:
    """Image logits and every mark (threshold 0) per film, marks in stored pixels as serving makes them."""
    head.eval()
    results = []
    with torch.inference_mode():
        for start in range(0, len(features.samples), 64):
            rows = slice(start, start + 64)
            image_logits, heat_logits = head(features.fine[rows].float(), features.coarse[rows].float())
            for offset, (logit, heat) in enumerate(zip(image_logits, torch.sigmoid(heat_logits), strict=True)):
                results.append(_film(features, start + offset, float(logit), heat.numpy()))
    return results


def _film(features: FeatureSet, row: int, logit: float, heat: np.ndarray) -> FilmResult:
    sample, (width, height) = features.samples[row], features.sizes[row]
    marks = tuple((*mark.centre, mark.score) for mark in locate(heat, width, height, 0.0))
    return FilmResult(sample.patient_id, sample.positive, sample.located, logit, features.boxes(row), marks)


def calibrate(head: torch.nn.Module, films: list[FilmResult], config: NoduleTrainConfig) -> tuple[float, float, float]:
    """(temperature, image threshold, mark threshold) from validation films (their probability field holds the raw
    logit). Platt scaling: its shift is folded into the image head's bias, so the checkpoint's temperature alone
    turns the served logit into the calibrated probability."""
    logits = np.array([f.probability for f in films])
    labels = np.array([f.positive for f in films], dtype=int)
    scale, shift = fit_platt(logits, labels)
    with torch.no_grad():
        head.image.bias += shift / scale
    probs = 1 / (1 + np.exp(-(scale * logits + shift)))
    threshold = choose_threshold(probs, labels, config.min_sensitivity)
    return 1 / scale, threshold, threshold_for(froc(films), config.false_mark_budget)


def with_probabilities(films: list[FilmResult], temperature: float) -> list[FilmResult]:
    return [replace(f, probability=float(1 / (1 + np.exp(-f.probability / temperature)))) for f in films]


def train(config: NoduleTrainConfig, log: Callable[[str], None] = print) -> ModelCheckpoint:
    started = time.time()
    torch.manual_seed(config.seed)
    boxed = load_boxed_set(config.boxed_data)
    weak = load_weak_set(config.weak_data) if config.weak_data else []
    experts = [sample for folder in config.expert_labels for sample in read_expert_nodule_reads(folder)]
    init = load_checkpoint(config.init_from)
    model = NoduleNet(init.architecture, head_width=config.head_width, drop_rate=config.drop_rate).eval()
    missing = model.load_classifier_backbone(init.state_dict)
    if missing:
        raise SystemExit(f"error: {config.init_from} lacks backbone weights: {', '.join(missing[:5])} ...")
    spec = PreprocessSpec(config.image_size, init.preprocess.mean, init.preprocess.std, init.preprocess.equalize)
    cache = config.cache_dir / f"{init.version}-{config.image_size}"
    log(f"features: {len(boxed)} boxed-set and {len(weak)} weak films, backbone {init.version}, {spec.input_size} px")
    train_set = extract_features(model, _split(boxed + weak, "train"), spec, (False, True), cache / "train.pt")
    val_set = extract_features(model, _split(boxed, "val"), spec, (False,), cache / "val.pt")
    if experts:  # the expert reads change with every export: their features are never cached
        log(f"expert reads: {len(experts)} films from {len(config.expert_labels)} export(s)")
        train_set = train_set.joined(extract_features(model, _split(experts, "train"), spec, (False, True), None))
        val_set = val_set.joined(extract_features(model, _split(experts, "val"), spec, (False,), None))
    test_set = extract_features(model, _split(boxed, "test"), spec, (False,), cache / "test.pt")
    log(f"features ready after {time.time() - started:.0f} s: {len(train_set.samples)} train rows")
    history, best = train_heads(model, train_set, val_set, config, log)
    raw_val = score_features(model.head, val_set, config.image_size)
    temperature, threshold, mark_threshold = calibrate(model.head, raw_val, config)
    val_films = with_probabilities(score_features(model.head, val_set, config.image_size), temperature)
    test_films = with_probabilities(score_features(model.head, test_set, config.image_size), temperature)
    metrics = {"validation": summarise(val_films, mark_threshold), "test": summarise(test_films, mark_threshold)}
    metrics["test"]["by_view"] = _by_view(test_films, test_set)
    provenance = {
        "init_from": init.version,
        "best_epoch": best["epoch"],
        "training_films": {"boxed": len(_split(boxed, "train")), "weak": len(_split(weak, "train"))}
        | {"expert_reads": len(_split(experts, "train"))},
        "training_seconds": round(time.time() - started, 1),
    }
    checkpoint = _checkpoint(model, init, spec, config, metrics, (temperature, threshold, mark_threshold), provenance)
    save_checkpoint(checkpoint, config.output)
    log(f"saved {config.output}: test {metrics['test']}")
    if config.track:
        _track(checkpoint, config, history)
    return checkpoint


def _split(samples: Sequence[NoduleSample], split: str) -> list[NoduleSample]:
    return [s for s in samples if s.split == split]


def _by_view(films: list[FilmResult], features: FeatureSet) -> dict[str, float]:
    views = sorted({s.view for s in features.samples if s.view})
    return {
        view: image_auroc([f for f, s in zip(films, features.samples, strict=True) if s.view == view]) for view in views
    }


def _checkpoint(
    model: NoduleNet,
    init: ModelCheckpoint,
    spec: PreprocessSpec,
    config: NoduleTrainConfig,
    metrics: dict[str, Any],
    calibration: tuple[float, float, float],
    provenance: dict[str, Any],
) -> ModelCheckpoint:
    """The trained model in the checkpoint contract; `calibration` = (temperature, image threshold, mark threshold)."""
    temperature, threshold, mark_threshold = calibration
    test = metrics["test"]
    fingerprint = hashlib.sha256(
        str(sorted(str(s.path) for s in load_boxed_set(config.boxed_data))).encode()
    ).hexdigest()
    return ModelCheckpoint(
        architecture=init.architecture,
        task=NODULE_TASK,
        class_names=list(CLASS_NAMES),
        preprocess=spec,
        state_dict=model.state_dict(),
        threshold=threshold,
        temperature=temperature,
        version=f"nodule-{init.architecture}-{time.strftime('%Y%m%d-%H%M%S')}",
        metrics=metrics,
        data_fingerprint=fingerprint[:16],
        model_kwargs={"head_width": config.head_width, "drop_rate": config.drop_rate},
        extra={
            "model_kind": NODULE_MODEL_KIND,
            "location_threshold": mark_threshold,
            "operating_point": {
                "sensitivity": test["sensitivity_at_threshold"],
                "false_positives_per_film": test["false_positives_per_film_at_threshold"],
                "split": "test",
                "films": test["films"],
                "boxes": test["boxes"],
            },
            **provenance,
            "train_config": {k: str(v) for k, v in asdict(config).items()},
            "validated_populations": [{"population": "adults", "site": "NIH Clinical Center"}],
        },
    )


def _track(checkpoint: ModelCheckpoint, config: NoduleTrainConfig, history: list[dict[str, float]]) -> None:
    from mlops.tracking import RunTracker  # mlflow is heavy: only when tracking

    tracker = RunTracker.start(f"nodule-{checkpoint.version}", asdict(config), "cxr-nodule")
    for record in history:
        tracker.log_epoch(record)
    tracker.finish(checkpoint, config.output, history)


def parse_args(argv: Sequence[str] | None = None) -> NoduleTrainConfig:
    parser = argparse.ArgumentParser(prog="python -m mlops.nodule_train", description=__doc__.splitlines()[0])
    parser.add_argument("--boxed-data", type=Path, default=Path("../shared/datasets/nih-nodule-boxes"))
    parser.add_argument("--weak-data", type=Path, default=Path("../shared/datasets/nih-nodule"), help="'' for none")
    parser.add_argument("--init-from", type=Path, required=True, help="a pneumonia checkpoint whose backbone to reuse")
    parser.add_argument(
        "--expert-labels", type=Path, action="append", default=[], help="export folder of nodule reviews (repeatable)"
    )
    parser.add_argument("--out", dest="output", type=Path, default=Path("models/nodule.pt"))
    for name, default in (("image-size", 512), ("epochs", 40), ("batch-size", 32), ("head-width", 128), ("seed", 42)):
        parser.add_argument(f"--{name}", type=int, default=default)
    for name, default in (("lr", 1e-3), ("weight-decay", 1e-4), ("drop-rate", 0.2), ("min-sensitivity", 0.8)):
        parser.add_argument(f"--{name}", type=float, default=default)
    parser.add_argument("--false-mark-budget", type=float, default=1.0)
    parser.add_argument("--heat-target", choices=("centre", "box"), default="centre")
    parser.add_argument("--cache-dir", type=Path, default=Path("var/nodule-features"))
    parser.add_argument("--no-track", dest="track", action="store_false")
    args = vars(parser.parse_args(argv))
    args["weak_data"] = args["weak_data"] if str(args["weak_data"]) not in ("", ".") else None
    return NoduleTrainConfig(**args)


def main(argv: Sequence[str] | None = None) -> None:
    from settings import get_settings

    torch.set_num_threads(get_settings().torch_threads)
    train(parse_args(argv))


if __name__ == "__main__":
    main()
