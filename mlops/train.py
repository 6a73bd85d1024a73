"""Train a classifier: `python -m mlops.train --data DIR [options]`.

Pipeline: discover the dataset (and define the task: label mapping, splits; see labelled_data.DataOptions) -> validate
it -> carve a patient-level validation split out of train ->
cache decoded images -> train with augmentation, class weighting, AdamW + one-cycle and a weight EMA, early stopping
on validation AUROC -> temperature-scale and pick the operating threshold on validation -> write the checkpoint
(model contract, see inference.checkpoint) -> track everything in MLflow and register the model version.
The test split is never read here: `mlops.evaluate` reports on it once.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader, Dataset

import labelled_data as datasets
from imaging import PreprocessSpec, to_model_input
from inference import DEFAULT_TASK, ModelCheckpoint, create_model, save_checkpoint
from mlops.augment import radiograph_augmentation
from mlops.calibration import choose_threshold, fit_temperature, softmax_probs
from mlops.metrics import compute_all
from mlops.validate import validate_dataset

PROGRESS_EVERY_STEPS = 20


@dataclass
class TrainConfig:
    data: Path
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
    max_images: int = 0  # 0: all; >0 caps the train set (smoke tests)
    track: bool = True
    register_name: str = ""  # empty: "cxr-<task>"
    # Task definition (labelled_data.DataOptions); the defaults use the dataset's own labels and splits.
    split_column: str = ""  # manifest column holding the split, e.g. nih_official_split
    test_fraction: float = 0.0  # >0: ignore stored splits and assign train/test by patient (seeded)
    split_seed: int = 42  # seed of that assignment, kept apart from `seed` so reruns share one test set
    positive_labels: list[str] = field(default_factory=list)  # set: binary task, these source labels are positive
    positive_name: str = ""  # empty: TASK in upper case, e.g. NODULE
    negative_name: str = ""  # empty: NO_<TASK>
    negative_labels: list[str] = field(default_factory=list)  # empty: every non-positive label is negative

    def data_options(self) -> datasets.DataOptions:
        return datasets.DataOptions(
            split_column=self.split_column,
            test_fraction=self.test_fraction,
            split_seed=self.split_seed,
            positive_labels=tuple(self.positive_labels),
            positive_name=self.positive_name or self.task.upper(),
            negative_name=self.negative_name or f"NO_{self.task.upper()}",
            negative_labels=tuple(self.negative_labels),
        )


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

    options = config.data_options()
    samples = datasets.load_samples(config.data, options)
    report = validate_dataset(samples)
    for line in report.summary_lines():
        log(f"[data] {line}")
    if report.errors:
        raise SystemExit("Dataset validation failed: " + "; ".join(report.errors))
    usable = [s for s in samples if s.path not in report.unreadable_paths]
    pool = datasets.select(usable, config.train_split)
    if not pool:
        splits = sorted({s.split for s in usable})
        raise datasets.DatasetError(f"no images in split {config.train_split!r}; splits present: {', '.join(splits)}")
    class_names = config.class_names or options.class_names or sorted({s.label for s in pool})
    pool = [s for s in pool if s.label in class_names]
    if config.max_images:
        random.Random(config.seed).shuffle(pool)
        pool = pool[: config.max_images]
    train_samples, val_samples = datasets.split_by_patient(pool, config.val_fraction, config.seed)
    log(f"[data] classes={class_names} train={len(train_samples)} val={len(val_samples)} (split by patient)")

    spec = PreprocessSpec(input_size=config.image_size)
    t0 = time.time()
    train_samples, train_images, dropped = datasets.cache_images(train_samples, spec.input_size)
    val_samples, val_images, dropped_val = datasets.cache_images(val_samples, spec.input_size)
    for path, reason in (dropped + dropped_val)[:5]:
        log(f"[data] skipped undecodable {path.name}: {reason}")
    _check_split_usable(train_samples, val_samples, class_names)
    train_labels = datasets.label_indices(train_samples, class_names)
    val_labels = datasets.label_indices(val_samples, class_names)
    log(f"[data] decoded {len(train_images) + len(val_images)} images in {time.time() - t0:.0f}s")

    pin = device.type == "cuda"
    train_loader = DataLoader(
        ArrayDataset(train_images, train_labels, spec, radiograph_augmentation(spec.input_size)),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(train_labels) > config.batch_size,
        num_workers=0 if device.type == "cpu" else 4,
        pin_memory=pin,
        generator=torch.Generator().manual_seed(config.seed),
    )
    val_loader = DataLoader(
        ArrayDataset(val_images, val_labels, spec, None), batch_size=config.batch_size * 2, pin_memory=pin
    )

    model_kwargs = {"drop_rate": config.drop_rate}
    model = create_model(config.architecture, len(class_names), **model_kwargs).to(device)
    ema = ModelEmaV3(model, decay=config.ema_decay)
    counts = np.bincount(train_labels, minlength=len(class_names)).astype(np.float64)
    class_weights = torch.tensor(counts.sum() / (len(class_names) * np.maximum(counts, 1)), dtype=torch.float32)
    criterion = nn.CrossEntropyLoss(weight=class_weights.to(device), label_smoothing=config.label_smoothing)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, len(train_loader))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch, pct_start=0.15
    )
    scaler = torch.amp.GradScaler(enabled=device.type == "cuda")

    tracker = _make_tracker(config, class_names, len(train_samples), len(val_samples), report.fingerprint)
    history: list[dict] = []
    best_auroc, best_state, best_epoch, stale = -1.0, None, 0, 0
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
                elapsed = time.time() - train_started
                eta = elapsed / done * (config.epochs * steps_per_epoch - done)
                log(
                    f"epoch {epoch}/{config.epochs} step {step}/{steps_per_epoch} loss {running / seen:.4f} "
                    f"{seen / max(1e-9, time.time() - epoch_started):.1f} img/s "
                    f"time left {_format_seconds(eta)}"
                )
        val_logits, val_true = predict_logits(ema.module, val_loader, device)
        val_probs = softmax_probs(val_logits)[:, -1]
        val_metrics = compute_all(val_true, val_probs, 0.5)
        val_loss = float(nn.functional.cross_entropy(torch.from_numpy(val_logits), torch.from_numpy(val_true)))
        record = {"epoch": epoch, "train_loss": running / max(1, seen), "val_loss": val_loss} | {
            f"val_{k}": v for k, v in val_metrics.items()
        }
        history.append(record)
        tracker.log_epoch(record)
        log(
            f"epoch {epoch} done: train_loss {record['train_loss']:.4f} val_loss {val_loss:.4f} "
            f"val_auroc {val_metrics['auroc']:.4f} val_acc@0.5 {val_metrics['accuracy']:.4f}"
        )
        # A single-class validation set has no AUROC (nan): then the first epoch's weights are kept.
        if val_metrics["auroc"] > best_auroc + 1e-4 or best_state is None:
            best_auroc, best_epoch, stale = val_metrics["auroc"], epoch, 0
            best_state = copy.deepcopy(ema.module.state_dict())
        else:
            stale += 1
            if stale >= config.patience:
                log(f"early stop: val AUROC has not improved for {stale} epochs (best {best_auroc:.4f} @ {best_epoch})")
                break

    final = create_model(config.architecture, len(class_names), **model_kwargs)
    final.load_state_dict(best_state)
    final.to(device)
    val_logits, val_true = predict_logits(final, val_loader, device)
    temperature = fit_temperature(val_logits, val_true)
    calibrated = softmax_probs(val_logits, temperature)[:, -1]
    threshold = choose_threshold(calibrated, val_true, config.min_sensitivity)
    val_at_threshold = compute_all(val_true, calibrated, threshold)
    log(
        f"calibration: temperature {temperature:.3f}; threshold {threshold:.4f} (val sensitivity >= "
        f"{config.min_sensitivity}); val metrics {json.dumps({k: round(v, 4) for k, v in val_at_threshold.items()})}"
    )

    state = {k: v.detach().cpu() for k, v in final.state_dict().items()}
    checkpoint = ModelCheckpoint(
        architecture=config.architecture,
        task=config.task,
        class_names=list(class_names),
        preprocess=spec,
        state_dict=state,
        threshold=threshold,
        temperature=temperature,
        version=f"{config.task}-{config.architecture}-{time.strftime('%Y%m%d-%H%M%S')}",
        metrics={"validation": val_at_threshold, "best_epoch": best_epoch},
        data_fingerprint=report.fingerprint,
        model_kwargs=model_kwargs,
        extra={
            "train_config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
            "train_images": len(train_samples),
            "val_images": len(val_samples),
            "training_seconds": round(time.time() - started, 1),
            "device": str(device),
            "torch": str(torch.__version__),
            "rule": f"threshold = highest value keeping validation sensitivity >= {config.min_sensitivity}",
            "data_options": options.to_dict(),
            "undecodable_images_skipped": len(dropped) + len(dropped_val),
            "mlflow_run_id": tracker.summary().get("run_id"),
        },
    )
    save_checkpoint(checkpoint, config.output)
    log(f"checkpoint written: {config.output} ({config.output.stat().st_size / 1e6:.1f} MB)")
    tracker.finish(checkpoint, config.output, history)
    return checkpoint, {"history": history, "tracking": tracker.summary()}


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
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (split/CLASS/* or manifest.csv)")
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
        data=args.data,
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
    except (datasets.DatasetError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
