"""Train a classifier: `python -m mlops.train --data DIR [--data DIR2 ...] [options]`.

Pipeline: discover each dataset (and define its task: label mapping, splits, population; see labelled_data.DataOptions
and labelled_data.sources) -> validate it -> take its own validation split, or carve a patient-level one out of
train -> cache decoded images -> train with augmentation, class weighting (or population/view/class-balanced
sampling), AdamW + one-cycle and a weight EMA, early stopping on the mean of the per-population validation AUROCs
-> temperature-scale and pick the operating threshold on validation -> write the checkpoint (model contract, see
inference.checkpoint) -> track everything in MLflow and register the model version.
The test split is never read here: `mlops.evaluate` reports on it once.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

import labelled_data as datasets
from imaging import PreprocessSpec, to_model_input
from inference import DEFAULT_TASK, CheckpointError, ModelCheckpoint, create_model, load_checkpoint, save_checkpoint
from mlops.augment import radiograph_augmentation
from mlops.calibration import choose_threshold, fit_temperature, softmax_probs
from mlops.metrics import compute_all
from mlops.populations import auroc_record, balanced_weights, population_metrics, selection_score
from mlops.validate import validate_dataset

PROGRESS_EVERY_STEPS = 20


@dataclass
class TrainConfig:
    # One dataset folder, or a list of source specs `DIR[:key=value]...` (see labelled_data.sources) trained jointly.
    data: Path | str | list[str]
    task: str = DEFAULT_TASK
    architecture: str = "resnet18"
    image_size: int = 224
    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.05
    drop_rate: float = 0.2
    label_smoothing: float = 0.05
    ema_decay: float = 0.995
    patience: int = 4
    val_fraction: float = 0.15
    min_sensitivity: float = 0.97
    seed: int = 42
    device: str = "auto"
    output: Path = Path("models/pneumonia.pt")
    train_split: str = "train"
    class_names: list[str] = field(default_factory=list)  # empty: sorted labels of the train split
    max_images: int = 0  # 0: all; >0 caps each dataset's train split (smoke tests)
    track: bool = True
    register_name: str = ""  # empty: "cxr-<task>"
    balanced_sampling: bool = False  # draw populations, and view x class cells within each, equally often
    epoch_samples: int = 0  # images drawn per epoch when sampling; 0: the size of the train set
    init_from: Path | None = None  # start from this checkpoint's weights (fine-tuning) instead of from scratch
    # Task definition (labelled_data.DataOptions); the defaults use the dataset's own labels and splits.
    # A source spec can override each of them for its dataset.
    split_column: str = ""  # manifest column holding the split, e.g. nih_official_split
    test_fraction: float = 0.0  # >0: ignore stored splits and assign train/test by patient (seeded)
    split_seed: int = 42  # seed of that assignment, kept apart from `seed` so reruns share one test set
    positive_labels: list[str] = field(default_factory=list)  # set: binary task, these source labels are positive
    positive_name: str = ""  # empty: TASK in upper case, e.g. NODULE
    negative_name: str = ""  # empty: NO_<TASK>
    negative_labels: list[str] = field(default_factory=list)  # empty: every non-positive label is negative

    def data_options(self) -> datasets.DataOptions:
        """The run-wide task definition; each source starts from it."""
        return datasets.DataOptions(
            split_column=self.split_column,
            test_fraction=self.test_fraction,
            split_seed=self.split_seed,
            positive_labels=tuple(self.positive_labels),
            positive_name=self.positive_name or self.task.upper(),
            negative_name=self.negative_name or f"NO_{self.task.upper()}",
            negative_labels=tuple(self.negative_labels),
        )

    def sources(self) -> list[datasets.DataSource]:
        specs = self.data if isinstance(self.data, list) else [self.data]
        defaults = self.data_options()
        return [datasets.parse_source(str(spec), defaults) for spec in specs]


@dataclass
class TrainingData:
    """Decoded train and validation images of every source, with the samples they came from."""

    sources: list[datasets.DataSource]
    class_names: list[str]
    train_samples: list[datasets.Sample]
    train_images: np.ndarray
    val_samples: list[datasets.Sample]
    val_images: np.ndarray
    fingerprint: str
    skipped: int  # undecodable files left out


class ArrayDataset(Dataset):
    """Cached uint8 images -> (model input, label), augmenting on the fly."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        spec: PreprocessSpec,
        augment: Callable[[np.ndarray], np.ndarray] | None,
    ) -> None:
        self.images, self.labels, self.spec, self.augment = images, labels, spec, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.augment is not None:
            image = self.augment(image)
        return torch.from_numpy(to_model_input(image, self.spec)), int(self.labels[index])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def predict_logits(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    outputs, targets = [], []
    for inputs, labels in loader:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            outputs.append(model(inputs.to(device, non_blocking=True)).float().cpu())
        targets.append(labels)
    return torch.cat(outputs).numpy(), torch.cat(targets).numpy()


def _format_seconds(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(max(0.0, seconds)))


def train(config: TrainConfig, log: Callable[[str], None] = print) -> tuple[ModelCheckpoint, dict]:
    started = time.time()
    seed_everything(config.seed)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    data = prepare_data(config, log)
    class_names = data.class_names
    train_labels = datasets.label_indices(data.train_samples, class_names)
    val_labels = datasets.label_indices(data.val_samples, class_names)
    spec = PreprocessSpec(input_size=config.image_size)
    train_loader, draw_weights = _train_loader(config, data, train_labels, spec, device)
    val_loader = DataLoader(
        ArrayDataset(data.val_images, val_labels, spec, None),
        batch_size=config.batch_size * 2,
        pin_memory=device.type == "cuda",
    )

    model_kwargs = {"drop_rate": config.drop_rate}
    model, init_info = _initial_model(config, class_names, model_kwargs, log)
    model.to(device)
    # Expected class mix of what the loader draws: with balanced sampling the weights come out near 1.
    counts = np.maximum(np.bincount(train_labels, weights=draw_weights, minlength=len(class_names)), 1e-12)
    class_weights = torch.tensor(counts.sum() / (len(class_names) * counts), dtype=torch.float32)
    criterion = nn.CrossEntropyLoss(weight=class_weights.to(device), label_smoothing=config.label_smoothing)

    tracker = _make_tracker(config, class_names, len(data.train_samples), len(data.val_samples), data.fingerprint)
    history, best_state, best_epoch = _fit(config, model, criterion, train_loader, val_loader, data, tracker, log)

    final = create_model(config.architecture, len(class_names), **model_kwargs)
    final.load_state_dict(best_state)
    final.to(device)
    calibration = _calibrate(config, final, val_loader, data.val_samples, device, log)
    checkpoint = ModelCheckpoint(
        architecture=config.architecture,
        task=config.task,
        class_names=list(class_names),
        preprocess=spec,
        state_dict={k: v.detach().cpu() for k, v in final.state_dict().items()},
        threshold=calibration["threshold"],
        temperature=calibration["temperature"],
        version=f"{config.task}-{config.architecture}-{time.strftime('%Y%m%d-%H%M%S')}",
        metrics={
            "validation": calibration["validation"],
            "validation_by_population": calibration["by_population"],
            "validation_selection_auroc": selection_score(calibration["by_population"]),
            "best_epoch": best_epoch,
        },
        data_fingerprint=data.fingerprint,
        model_kwargs=model_kwargs,
        extra=_checkpoint_extra(config, data, tracker, started, device) | {"init_from": init_info},
    )
    save_checkpoint(checkpoint, config.output)
    log(f"checkpoint written: {config.output} ({config.output.stat().st_size / 1e6:.1f} MB)")
    tracker.finish(checkpoint, config.output, history)
    return checkpoint, {"history": history, "tracking": tracker.summary()}


def prepare_data(config: TrainConfig, log: Callable[[str], None]) -> TrainingData:
    """Load, validate and split every source, then decode the train and validation images once."""
    sources = config.sources()
    loaded = [_load_validated(source, log) for source in sources]
    class_names = config.class_names or sources[0].options.class_names
    if not class_names:
        class_names = sorted({s.label for samples, _ in loaded for s in datasets.select(samples, config.train_split)})
    train_samples: list[datasets.Sample] = []
    val_samples: list[datasets.Sample] = []
    for source, (samples, _) in zip(sources, loaded, strict=True):
        chosen = _cap_train(samples, class_names, config)
        train, val = datasets.train_val_split(
            source, chosen, class_names, config.train_split, config.val_fraction, config.seed
        )
        log(f"[data] {source.path.name} (population {source.population}): train={len(train)} val={len(val)}")
        train_samples += train
        val_samples += val
    log(f"[data] classes={class_names} train={len(train_samples)} val={len(val_samples)} (split by patient)")

    t0 = time.time()
    workers = max(1, torch.get_num_threads())  # decode with the cores training may use, no more
    train_samples, train_images, dropped = datasets.cache_images(train_samples, config.image_size, workers)
    val_samples, val_images, dropped_val = datasets.cache_images(val_samples, config.image_size, workers)
    for path, reason in (dropped + dropped_val)[:5]:
        log(f"[data] skipped undecodable {path.name}: {reason}")
    _check_split_usable(train_samples, val_samples, class_names)
    log(f"[data] decoded {len(train_images) + len(val_images)} images in {time.time() - t0:.0f}s")
    fingerprints = [fingerprint for _, fingerprint in loaded]
    return TrainingData(
        sources=sources,
        class_names=list(class_names),
        train_samples=train_samples,
        train_images=train_images,
        val_samples=val_samples,
        val_images=val_images,
        fingerprint=_combined_fingerprint(sources, fingerprints),
        skipped=len(dropped) + len(dropped_val),
    )


def _load_validated(source: datasets.DataSource, log: Callable[[str], None]) -> tuple[list[datasets.Sample], str]:
    samples = datasets.load_source(source)
    report = validate_dataset(samples)
    for line in report.summary_lines():
        log(f"[data] {source.path.name}: {line}")
    if report.errors:
        raise SystemExit(f"Dataset validation failed for {source.path}: " + "; ".join(report.errors))
    return [s for s in samples if s.path not in report.unreadable_paths], report.fingerprint


def _cap_train(
    samples: list[datasets.Sample], class_names: Sequence[str], config: TrainConfig
) -> list[datasets.Sample]:
    """With --max-images, keep a seeded random subset of the train split (validation splits stay whole)."""
    if not config.max_images:
        return samples
    pool = datasets.select(samples, config.train_split, class_names)
    random.Random(config.seed).shuffle(pool)
    kept = set(pool[: config.max_images])
    return [s for s in samples if s.split != config.train_split or s in kept]


def _combined_fingerprint(sources: Sequence[datasets.DataSource], fingerprints: Sequence[str]) -> str:
    """One source keeps its own fingerprint (unchanged for single-dataset runs); several are hashed together."""
    if len(fingerprints) == 1:
        return fingerprints[0]
    joined = "\n".join(f"{s.path.name}|{s.population}|{f}" for s, f in zip(sources, fingerprints, strict=True))
    return hashlib.sha256(joined.encode()).hexdigest()


def _train_loader(
    config: TrainConfig, data: TrainingData, labels: np.ndarray, spec: PreprocessSpec, device: torch.device
) -> tuple[DataLoader, np.ndarray]:
    """The training loader and the relative weight with which it draws each sample."""
    dataset = ArrayDataset(data.train_images, labels, spec, radiograph_augmentation(spec.input_size))
    common: dict[str, Any] = {
        "batch_size": config.batch_size,
        "drop_last": len(labels) > config.batch_size,
        "num_workers": 0 if device.type == "cpu" else 4,
        "pin_memory": device.type == "cuda",
        "generator": torch.Generator().manual_seed(config.seed),
    }
    if not (config.balanced_sampling or config.epoch_samples):
        return DataLoader(dataset, shuffle=True, **common), np.ones(len(labels))
    weights = balanced_weights(data.train_samples) if config.balanced_sampling else np.ones(len(labels))
    sampler = WeightedRandomSampler(
        weights.tolist(),
        num_samples=config.epoch_samples or len(labels),
        replacement=True,
        generator=common["generator"],
    )
    return DataLoader(dataset, sampler=sampler, **common), weights


def _initial_model(
    config: TrainConfig, class_names: Sequence[str], model_kwargs: dict[str, Any], log: Callable[[str], None]
) -> tuple[nn.Module, dict[str, str]]:
    """A fresh model, or one carrying the weights of `config.init_from` (same architecture and classes)."""
    model = create_model(config.architecture, len(class_names), **model_kwargs)
    if config.init_from is None:
        return model, {}
    start = load_checkpoint(config.init_from)
    if start.architecture != config.architecture or list(start.class_names) != list(class_names):
        raise CheckpointError(
            f"--init-from {config.init_from} is {start.architecture} with classes {start.class_names}; "
            f"this run trains {config.architecture} with classes {list(class_names)}"
        )
    model.load_state_dict(start.state_dict)
    if start.preprocess.input_size != config.image_size:
        log(f"[model] note: {config.init_from} was trained at {start.preprocess.input_size} px, this run uses "
            f"{config.image_size} px")  # fmt: skip
    log(f"[model] initialised from {config.init_from} (version {start.version})")
    return model, {"path": str(config.init_from), "version": start.version}


def _fit(
    config: TrainConfig,
    model: nn.Module,
    criterion: nn.Module,
    train_loader: DataLoader,
    val_loader: DataLoader,
    data: TrainingData,
    tracker: Any,
    log: Callable[[str], None],
) -> tuple[list[dict], dict[str, torch.Tensor], int]:
    """Train with early stopping on the validation selection AUROC; returns the history and the best EMA weights."""
    device = next(model.parameters()).device
    ema = ModelEmaV3(model, decay=config.ema_decay)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(train_loader))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")
    history: list[dict] = []
    best_score, best_state, best_epoch, stale = -1.0, None, 0, 0
    train_started = time.time()
    for epoch in range(1, config.epochs + 1):
        model.train()
        running, seen, epoch_started = 0.0, 0, time.time()
        for step, (inputs, labels) in enumerate(train_loader, start=1):
            inputs, labels = inputs.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                loss = criterion(model(inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            ema.update(model)
            running += loss.item() * len(labels)
            seen += len(labels)
            if step % PROGRESS_EVERY_STEPS == 0 or step == steps_per_epoch:
                done = (epoch - 1) * steps_per_epoch + step
                eta = (time.time() - train_started) / done * (config.epochs * steps_per_epoch - done)
                log(
                    f"epoch {epoch}/{config.epochs} step {step}/{steps_per_epoch} loss {running / seen:.4f} "
                    f"{seen / max(1e-9, time.time() - epoch_started):.1f} img/s "
                    f"time left {_format_seconds(eta)}"
                )
        record = {"epoch": epoch, "train_loss": running / max(1, seen)}
        record |= _validation_record(ema.module, val_loader, data.val_samples, device)
        history.append(record)
        tracker.log_epoch(record)
        log(f"epoch {epoch} done: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        # A single-class validation set has no AUROC (nan): then the first epoch's weights are kept.
        score = record["val_selection_auroc"]
        if score > best_score + 1e-4 or best_state is None:
            best_score, best_epoch, stale = score, epoch, 0
            best_state = copy.deepcopy(ema.module.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                log(f"early stop: val selection AUROC has not improved for {stale} epochs "
                    f"(best {best_score:.4f} @ {best_epoch})")  # fmt: skip
                break
    return history, best_state, best_epoch


def _validation_record(
    model: nn.Module, loader: DataLoader, samples: Sequence[datasets.Sample], device: torch.device
) -> dict[str, float]:
    """Pooled metrics at 0.5, AUROC per population and per view, and the selection score (their mean)."""
    logits, true = predict_logits(model, loader, device)
    probs = softmax_probs(logits)[:, -1]
    by_population = population_metrics(true, probs, samples, 0.5)
    val_loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(true)))
    return (
        {"val_loss": val_loss}
        | {f"val_{k}": v for k, v in compute_all(true, probs, 0.5).items()}
        | auroc_record(by_population)
        | {"val_selection_auroc": selection_score(by_population)}
    )


def _calibrate(
    config: TrainConfig,
    model: nn.Module,
    loader: DataLoader,
    samples: Sequence[datasets.Sample],
    device: torch.device,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Temperature and threshold fitted on the pooled validation set, and the metrics they give per population."""
    logits, true = predict_logits(model, loader, device)
    temperature = fit_temperature(logits, true)
    calibrated = softmax_probs(logits, temperature)[:, -1]
    threshold = choose_threshold(calibrated, true, config.min_sensitivity)
    validation = compute_all(true, calibrated, threshold)
    by_population = population_metrics(true, calibrated, samples, threshold)
    log(
        f"calibration: temperature {temperature:.3f}; threshold {threshold:.4f} (val sensitivity >= "
        f"{config.min_sensitivity}); val metrics {json.dumps({k: round(v, 4) for k, v in validation.items()})}"
    )
    for population, metrics in by_population.items():
        log(f"validation {population}: {json.dumps({k: round(v, 4) for k, v in metrics.items()})}")
    return {
        "temperature": temperature,
        "threshold": threshold,
        "validation": validation,
        "by_population": by_population,
    }


def _checkpoint_extra(
    config: TrainConfig, data: TrainingData, tracker: Any, started: float, device: torch.device
) -> dict[str, Any]:
    return {
        "train_config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "train_images": len(data.train_samples),
        "val_images": len(data.val_samples),
        "training_seconds": round(time.time() - started, 1),
        "device": str(device),
        "torch": str(torch.__version__),
        "rule": f"threshold = highest value keeping validation sensitivity >= {config.min_sensitivity}",
        # the first source's task: what `mlops.evaluate` rebuilds for a single-dataset checkpoint
        "data_options": data.sources[0].options.to_dict(),
        "sources": [source.to_dict() for source in data.sources],
        "validated_populations": sorted({s.population for s in data.val_samples}),
        "undecodable_images_skipped": data.skipped,
        "mlflow_run_id": tracker.summary().get("run_id"),
    }


def _check_split_usable(
    train_samples: Sequence[datasets.Sample], val_samples: Sequence[datasets.Sample], class_names: Sequence[str]
) -> None:
    missing = sorted(set(class_names) - {s.label for s in train_samples})
    if missing:
        raise datasets.DatasetError(f"the training split has no images of class(es) {', '.join(missing)}")
    if not val_samples:
        raise datasets.DatasetError("the validation split is empty: use more images or a larger --val-fraction")


def _make_tracker(config: TrainConfig, class_names: Sequence[str], n_train: int, n_val: int, fingerprint: str):
    from mlops.tracking import NullTracker, RunTracker

    if not config.track:
        return NullTracker()
    params = {k: str(v) for k, v in asdict(config).items()} | {
        "class_names": ",".join(class_names),
        "train_images": n_train,
        "val_images": n_val,
        "data_fingerprint": fingerprint,
    }
    return RunTracker.start(
        run_name=f"train-{config.task}-{config.architecture}",
        params=params,
        register_name=config.register_name or f"cxr-{config.task}",
    )


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(prog="python -m mlops.train", description=__doc__.splitlines()[0])
    defaults = TrainConfig(data=Path("."))
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        help="dataset folder (split/CLASS/* or manifest.csv); repeat to train on several datasets jointly. "
        "Per-dataset options: DIR:key=value:..., keys population, val (a split name, auto or carve), positive, "
        "negative (labels joined by +), positive-name, negative-name, split-column, test-fraction, split-seed",
    )
    parser.add_argument("--task", default=defaults.task, help="task name stored in the checkpoint (pneumonia, nodule)")
    parser.add_argument("--architecture", default=defaults.architecture, help="any timm model name")
    parser.add_argument("--image-size", type=int, default=defaults.image_size)
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--drop-rate", type=float, default=defaults.drop_rate)
    parser.add_argument(
        "--ema-decay",
        type=float,
        default=defaults.ema_decay,
        help="weight EMA decay; lower it for small datasets (few steps): 0.995 stays near the initial weights",
    )
    parser.add_argument("--patience", type=int, default=defaults.patience, help="early-stopping patience (epochs)")
    parser.add_argument("--val-fraction", type=float, default=defaults.val_fraction)
    parser.add_argument(
        "--min-sensitivity",
        type=float,
        default=defaults.min_sensitivity,
        help="threshold rule: highest threshold with validation sensitivity >= this",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device, help="auto, cpu or cuda")
    parser.add_argument("--output", type=Path, default=defaults.output)
    parser.add_argument("--train-split", default=defaults.train_split)
    parser.add_argument("--classes", default="", help="comma-separated class names, negative first")
    parser.add_argument("--max-images", type=int, default=0, help="cap the train pool (smoke runs)")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    parser.add_argument("--register-name", default="", help="MLflow registered model name (default cxr-<task>)")
    parser.add_argument(
        "--balanced-sampling",
        action="store_true",
        help="draw each population equally often and, within it, each view x class cell equally often",
    )
    parser.add_argument("--epoch-samples", type=int, default=0, help="images drawn per epoch (0: train set size)")
    parser.add_argument("--init-from", type=Path, default=None, help="checkpoint whose weights to fine-tune from")
    task = parser.add_argument_group("task definition (stored in the checkpoint, reused by mlops.evaluate)")
    task.add_argument("--split-column", default="", help="manifest column holding the split (e.g. nih_official_split)")
    task.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="for datasets without a split: assign this fraction of patients to test (seeded)",
    )
    task.add_argument("--split-seed", type=int, default=defaults.split_seed, help="seed of --test-fraction")
    task.add_argument("--positive-labels", default="", help="comma-separated source labels forming the positive class")
    task.add_argument("--positive-name", default="", help="positive class name (default: TASK upper-cased)")
    task.add_argument("--negative-name", default="", help="negative class name (default: NO_<TASK>)")
    task.add_argument(
        "--negative-labels",
        default="",
        help="comma-separated source labels forming the negative class (default: all others)",
    )
    args = parser.parse_args(argv)
    return TrainConfig(
        data=Path(args.data[0]) if len(args.data) == 1 else list(args.data),
        task=args.task,
        architecture=args.architecture,
        image_size=args.image_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        drop_rate=args.drop_rate,
        ema_decay=args.ema_decay,
        patience=args.patience,
        val_fraction=args.val_fraction,
        min_sensitivity=args.min_sensitivity,
        seed=args.seed,
        device=args.device,
        output=args.output,
        train_split=args.train_split,
        class_names=[c for c in args.classes.split(",") if c],
        max_images=args.max_images,
        track=not args.no_track,
        register_name=args.register_name,
        balanced_sampling=args.balanced_sampling,
        epoch_samples=args.epoch_samples,
        init_from=args.init_from,
        split_column=args.split_column,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        positive_labels=_csv_list(args.positive_labels),
        positive_name=args.positive_name,
        negative_name=args.negative_name,
        negative_labels=_csv_list(args.negative_labels),
    )


def _csv_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def main(argv: Sequence[str] | None = None) -> None:
    from settings import get_settings

    torch.set_num_threads(get_settings().torch_threads)
    try:
        train(parse_args(argv))
    except (datasets.DatasetError, CheckpointError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
