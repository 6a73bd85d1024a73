"""Evaluate a checkpoint on a held-out split: `python -m mlops.evaluate --checkpoint FILE --data DIR --split test`.

Images go through the serving path (imaging.decode_image + inference.Predictor with the checkpoint's preprocessing,
temperature and stored threshold), so the numbers describe what the workstation would answer. Output (printed and
written to --out): metrics.json, report.md, predictions.csv, roc.png, reliability.png, with 95% percentile-bootstrap
intervals for every metric and confusion count. `--update-checkpoint` stores the result in the checkpoint's
`metrics[split]` (atomic rewrite) and in the MLflow registry versions made from that checkpoint.

The task definition (label mapping, split column, patient-level test assignment) is read from the checkpoint, so a
model is evaluated on exactly the test set its training left out. Kermany ships 618 of its 624 official test images
(6 byte-identical duplicates dropped, listed in duplicates_dropped.csv); when that file exists the 6 are restored
from the kept copies so metrics are on the official 624-image list (`--stored-only` to skip).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import labelled_data as datasets
from imaging import ImagingError, decode_image
from inference.checkpoint import CheckpointError, ModelCheckpoint, load_checkpoint, save_checkpoint
from inference.predictor import Predictor
from labelled_data import DataOptions, DatasetError, Sample
from mlops.metrics import bootstrap_intervals, compute_all, confusion
from mlops.validate import validate_dataset

DUPLICATES_FILE = "duplicates_dropped.csv"
BATCH_SIZE = 32
METRIC_LABELS = {
    "accuracy": "Accuracy",
    "precision": "Precision (PPV)",
    "sensitivity": "Recall / sensitivity",
    "specificity": "Specificity",
    "f1": "F1",
    "auroc": "AUROC",
    "auprc": "AUPRC (average precision)",
    "brier": "Brier score",
    "ece": "Expected calibration error (10 bins)",
}


class EvaluationError(ValueError):
    """The evaluation cannot be run as asked (no images, label mismatch, ...); the message says why."""


@dataclass
class EvaluationSet:
    samples: list[Sample]
    stored: int  # images found in the split
    restored: int = 0  # dropped duplicates re-added from their kept copies
    description: str = ""


@dataclass
class ScoredImages:
    samples: list[Sample]
    labels: np.ndarray  # 1 = positive class
    probs: np.ndarray  # calibrated probability of the positive class
    failed: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class EvaluationReport:
    checkpoint_path: str
    model: dict[str, Any]
    data: dict[str, Any]
    decision: dict[str, Any]
    metrics: dict[str, float]
    intervals: dict[str, list[float]]
    confusion: dict[str, int]
    confusion_intervals: dict[str, list[float]]
    metrics_at_half: dict[str, float]
    bootstrap: dict[str, Any]
    evaluated_at: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def checkpoint_block(self) -> dict[str, Any]:
        """What `--update-checkpoint` stores under metrics[split] (everything serving may show)."""
        return {
            "metrics": self.metrics,
            "intervals": self.intervals,
            "confusion": self.confusion,
            "confusion_intervals": self.confusion_intervals,
            "metrics_at_threshold_0.5": self.metrics_at_half,
            "threshold": self.decision["threshold"],
            "temperature": self.decision["temperature"],
            "split": self.data["split"],
            "n_images": self.data["n_images"],
            "n_positive": self.data["n_positive"],
            "n_negative": self.data["n_negative"],
            "image_list": self.data["image_list"],
            "data_fingerprint": self.data["fingerprint"],
            "dataset": self.data["dataset"],
            "bootstrap": self.bootstrap,
            "evaluated_at": self.evaluated_at,
        }


# --- which images ------------------------------------------------------------------------------------------------


def restore_dropped_duplicates(samples: Sequence[Sample], data_dir: Path, split: str) -> list[Sample]:
    """Samples for the files listed in duplicates_dropped.csv for `split`, each pointing at its kept copy."""
    listing = Path(data_dir) / DUPLICATES_FILE
    if not listing.is_file():
        return []
    by_path = {s.path.resolve(): s for s in samples}
    restored = []
    with listing.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row.get("split") != split:
                continue
            kept = by_path.get((Path(data_dir) / row["kept_file"]).resolve())
            if kept is None:
                raise EvaluationError(f"{DUPLICATES_FILE} names {row['kept_file']}, which is not in split {split!r}")
            if row.get("label", kept.label) != kept.label:
                raise EvaluationError(
                    f"{DUPLICATES_FILE}: label of {row['dropped_original_path']} differs from its copy"
                )
            patient = datasets.patient_id_from_name(Path(row["dropped_original_path"]))
            restored.append(dataclasses.replace(kept, patient_id=patient))
    return restored


def evaluation_samples(
    data_dir: Path, split: str, options: DataOptions, restore_duplicates: bool | None = None
) -> EvaluationSet:
    """The images of `split` under the task definition `options`.

    restore_duplicates: None = when the dataset lists dropped duplicates and its own split is used; True = require
    it; False = never.
    """
    samples = datasets.load_samples(data_dir, options)
    chosen = datasets.select(samples, split)
    if not chosen:
        present = ", ".join(sorted({s.split for s in samples})) or "none"
        raise EvaluationError(f"no images in split {split!r} of {data_dir}; splits present: {present}")
    own_split = not options.split_column and options.test_fraction == 0
    listing_exists = (Path(data_dir) / DUPLICATES_FILE).is_file()
    if restore_duplicates and not (own_split and listing_exists):
        why = "the split is re-defined by the checkpoint's data options" if listing_exists else "it is absent"
        raise EvaluationError(f"cannot rebuild the official list from {DUPLICATES_FILE}: {why}")
    restored = []
    if restore_duplicates is not False and own_split:
        restored = restore_dropped_duplicates(chosen, data_dir, split)
    if restore_duplicates and not restored:
        raise EvaluationError(f"{DUPLICATES_FILE} lists no dropped duplicates for split {split!r}")
    if restored:
        description = (
            f"official list: {len(chosen)} stored images + {len(restored)} byte-identical duplicates restored from "
            f"{DUPLICATES_FILE} = {len(chosen) + len(restored)}"
        )
    elif listing_exists and own_split:
        description = f"stored images only ({len(chosen)}); {DUPLICATES_FILE} not applied"
    else:
        description = f"all {len(chosen)} images of split {split!r}"
    return EvaluationSet(chosen + restored, stored=len(chosen), restored=len(restored), description=description)


# --- scoring -----------------------------------------------------------------------------------------------------


def score_samples(predictor: Predictor, samples: Sequence[Sample], batch_size: int = BATCH_SIZE) -> ScoredImages:
    """Decode and predict every sample; undecodable files are reported, not scored."""
    checkpoint = predictor.checkpoint
    unknown = sorted({s.label for s in samples} - set(checkpoint.class_names))
    if unknown:
        raise EvaluationError(
            f"labels {', '.join(unknown)} are not classes of the model ({', '.join(checkpoint.class_names)})"
        )
    started = time.perf_counter()
    kept: list[Sample] = []
    probs: list[float] = []
    failed: list[tuple[Path, str]] = []
    for start in range(0, len(samples), batch_size):
        batch, pixels = [], []
        for sample in samples[start : start + batch_size]:
            try:
                pixels.append(decode_image(sample.path.read_bytes()).pixels)
                batch.append(sample)
            except (OSError, ImagingError) as exc:
                failed.append((sample.path, str(exc)))
        if batch:
            predictions = predictor.predict_batch(pixels, [None] * len(pixels))
            kept.extend(batch)
            probs.extend(p.positive_probability for p in predictions)
    labels = np.array([int(s.label == checkpoint.positive_class) for s in kept], dtype=np.int64)
    return ScoredImages(kept, labels, np.array(probs, dtype=np.float64), failed, time.perf_counter() - started)


# --- the report --------------------------------------------------------------------------------------------------


def task_options(checkpoint: ModelCheckpoint, data_dir: Path) -> DataOptions:
    """The task definition the checkpoint was trained with on this dataset.

    A model trained on several datasets stores one definition per source (e.g. RSNA relabelled to NORMAL /
    PNEUMONIA, Kermany as it is); the source whose folder has the same name as `data_dir` is used, else the
    first source's definition (single-dataset checkpoints store only that).
    """
    for source in checkpoint.extra.get("sources") or ():
        if source.get("name") == data_dir.resolve().name:
            return DataOptions.from_dict(source.get("options"))
    return DataOptions.from_dict(checkpoint.extra.get("data_options"))


def _interval_lists(intervals: dict[str, tuple[float, float]], keys: Sequence[str]) -> dict[str, list[float]]:
    return {k: [float(intervals[k][0]), float(intervals[k][1])] for k in keys if k in intervals}


def evaluate(
    checkpoint_path: Path,
    data_dir: Path,
    split: str = "test",
    restore_duplicates: bool | None = None,
    options: DataOptions | None = None,
    bootstrap_rounds: int = 1000,
    seed: int = 0,
    threads: int = 2,
) -> tuple[EvaluationReport, ScoredImages]:
    """Score `split` of `data_dir` with the checkpoint and compute metrics with bootstrap intervals."""
    started = time.time()
    checkpoint = load_checkpoint(checkpoint_path)
    if len(checkpoint.class_names) != 2:
        raise EvaluationError(f"binary checkpoints only; this one has classes {checkpoint.class_names}")
    options = options or task_options(checkpoint, Path(data_dir))
    chosen = evaluation_samples(Path(data_dir), split, options, restore_duplicates)
    predictor = Predictor(checkpoint, threads=threads, cache_size=1)
    scored = score_samples(predictor, chosen.samples)
    if scored.labels.size == 0:
        raise EvaluationError(f"none of the {len(chosen.samples)} images of split {split!r} could be decoded")
    threshold = checkpoint.threshold
    intervals = bootstrap_intervals(
        scored.labels, scored.probs, threshold, rounds=bootstrap_rounds, seed=seed, include_confusion=True
    )
    metrics = compute_all(scored.labels, scored.probs, threshold)
    counts = confusion(scored.labels, scored.probs, threshold)
    report = EvaluationReport(
        checkpoint_path=str(checkpoint_path),
        model={
            "version": checkpoint.version,
            "task": checkpoint.task,
            "architecture": checkpoint.architecture,
            "class_names": checkpoint.class_names,
            "positive_class": checkpoint.positive_class,
            "input_size": checkpoint.preprocess.input_size,
            "training_data_fingerprint": checkpoint.data_fingerprint,
        },
        data={
            "dataset": Path(data_dir).resolve().name,
            "split": split,
            "n_images": int(scored.labels.size),
            "n_positive": int(scored.labels.sum()),
            "n_negative": int(scored.labels.size - scored.labels.sum()),
            "image_list": chosen.description,
            "stored_images": chosen.stored,
            "restored_duplicates": chosen.restored,
            "undecodable": [[str(p), reason] for p, reason in scored.failed],
            "fingerprint": validate_dataset(scored.samples).fingerprint,
            "data_options": options.to_dict(),
        },
        decision={
            "threshold": threshold,
            "temperature": checkpoint.temperature,
            "rule": checkpoint.extra.get("rule", "stored threshold"),
            "positive_when": f"calibrated P({checkpoint.positive_class}) >= threshold",
        },
        metrics=metrics,
        intervals=_interval_lists(intervals, list(metrics)),
        confusion=counts,
        confusion_intervals=_interval_lists(intervals, list(counts)),
        metrics_at_half=compute_all(scored.labels, scored.probs, 0.5),
        bootstrap={
            "rounds": bootstrap_rounds,
            "seed": seed,
            "method": "percentile bootstrap over images",
            "level": 0.95,
        },
        evaluated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        seconds=0.0,
    )
    report.seconds = round(time.time() - started, 1)
    return report, scored


def _fmt(value: float, count: bool = False) -> str:
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.0f}" if count else f"{value:.4f}"


def _ci(interval: Sequence[float] | None, count: bool = False) -> str:
    return f"[{_fmt(interval[0], count)}, {_fmt(interval[1], count)}]" if interval else "n/a"


def render_markdown(report: EvaluationReport) -> str:
    model, data, decision = report.model, report.data, report.decision
    negative, positive = model["class_names"]
    lines = [
        f"# Evaluation of {model['version']} on split `{data['split']}`",
        "",
        f"- Checkpoint: `{report.checkpoint_path}` ({model['architecture']}, {model['input_size']} px, task "
        f"{model['task']})",
        f"- Data: {data['dataset']}, split `{data['split']}`: {data['n_images']} images ({positive} "
        f"{data['n_positive']}, {negative} {data['n_negative']})",
        f"- Image list: {data['image_list']}",
        f"- Evaluated-data fingerprint: `{data['fingerprint']}`",
        f"- Decision: {decision['positive_when']} with the stored threshold {decision['threshold']:.4f} "
        f"({decision['rule']}); temperature {decision['temperature']:.3f}",
        f"- Intervals: 95% {report.bootstrap['method']}, {report.bootstrap['rounds']} resamples, seed "
        f"{report.bootstrap['seed']}",
    ]
    if data["undecodable"]:
        lines.append(f"- {len(data['undecodable'])} undecodable images were left out, e.g. {data['undecodable'][0][0]}")
    lines += ["", "| metric | value | 95% CI | at threshold 0.5 |", "| --- | --- | --- | --- |"]
    for key, label in METRIC_LABELS.items():
        value, half = report.metrics[key], report.metrics_at_half[key]
        lines.append(f"| {label} | {_fmt(value)} | {_ci(report.intervals.get(key))} | {_fmt(half)} |")
    c, ci = report.confusion, report.confusion_intervals
    lines += [
        "",
        f"Confusion matrix at threshold {decision['threshold']:.4f} (count [95% CI]):",
        "",
        f"| actual \\ predicted | {negative} | {positive} |",
        "| --- | --- | --- |",
        f"| {negative} | TN {c['tn']} {_ci(ci.get('tn'), True)} | FP {c['fp']} {_ci(ci.get('fp'), True)} |",
        f"| {positive} | FN {c['fn']} {_ci(ci.get('fn'), True)} | TP {c['tp']} {_ci(ci.get('tp'), True)} |",
        "",
        "Brier score and ECE are on calibrated probabilities (lower is better); AUROC/AUPRC do not depend on the "
        "threshold. Plots: roc.png, reliability.png.",
    ]
    return "\n".join(lines) + "\n"


# --- files -------------------------------------------------------------------------------------------------------


def plot_roc(labels: np.ndarray, probs: np.ndarray, threshold: float, path: Path) -> None:
    from matplotlib.figure import Figure
    from sklearn.metrics import roc_auc_score, roc_curve

    figure = Figure(figsize=(5, 5), dpi=120)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, probs)
        axes.plot(fpr, tpr, linewidth=2, label=f"ROC (AUROC {roc_auc_score(labels, probs):.3f})")
        for point, marker, name in ((threshold, "o", f"stored threshold {threshold:.4f}"), (0.5, "s", "threshold 0.5")):
            c = confusion(labels, probs, point)
            sens, fpr_at = c["tp"] / max(1, c["tp"] + c["fn"]), c["fp"] / max(1, c["fp"] + c["tn"])
            axes.plot([fpr_at], [sens], marker=marker, markersize=8, linestyle="none", label=name)
    else:
        axes.text(0.5, 0.5, "ROC undefined: one class only", ha="center")
    axes.set(xlabel="1 - specificity (false positive rate)", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01))
    axes.set_title("ROC curve")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)


def plot_reliability(labels: np.ndarray, probs: np.ndarray, path: Path, bins: int = 10) -> None:
    from matplotlib.figure import Figure

    from mlops.metrics import expected_calibration_error

    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)  # the same binning as the ECE metric
    counts = np.bincount(which, minlength=bins)
    filled = counts > 0
    mean_prob = np.array([probs[which == b].mean() if counts[b] else np.nan for b in range(bins)])
    frequency = np.array([labels[which == b].mean() if counts[b] else np.nan for b in range(bins)])
    figure = Figure(figsize=(5, 6), dpi=120)
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    top.plot(mean_prob[filled], frequency[filled], marker="o", linewidth=2, label="model")
    top.set(ylabel="observed frequency of positive", ylim=(0, 1.01))
    top.set_title(f"Reliability (ECE {expected_calibration_error(labels, probs, bins=bins):.3f})")
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(edges[:-1], counts, width=1.0 / bins, align="edge", edgecolor="black")
    bottom.set(xlabel="predicted probability of positive", ylabel="images", xlim=(0, 1))
    figure.tight_layout()
    figure.savefig(path)


def write_outputs(report: EvaluationReport, scored: ScoredImages, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {
        name: out_dir / name for name in ("metrics.json", "report.md", "predictions.csv", "roc.png", "reliability.png")
    }
    payload = json.dumps(_json_safe(report.to_dict()), indent=2, allow_nan=False)
    files["metrics.json"].write_text(payload + "\n", encoding="utf-8")
    files["report.md"].write_text(render_markdown(report), encoding="utf-8")
    threshold = report.decision["threshold"]
    with files["predictions.csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "patient_id", "positive_probability", "predicted_positive"])
        for sample, prob in zip(scored.samples, scored.probs, strict=True):
            writer.writerow([str(sample.path), sample.label, sample.patient_id, f"{prob:.6f}", int(prob >= threshold)])
    plot_roc(scored.labels, scored.probs, threshold, files["roc.png"])
    plot_reliability(scored.labels, scored.probs, files["reliability.png"])
    return files


def _json_safe(value: Any) -> Any:
    """Strict JSON: undefined metrics (NaN) become null."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def store_in_checkpoint(checkpoint_path: Path, report: EvaluationReport) -> ModelCheckpoint:
    """Write the report into metrics[split] of the checkpoint file (atomic rewrite; weights untouched)."""
    checkpoint = load_checkpoint(checkpoint_path)
    if checkpoint.version != report.model["version"]:
        raise EvaluationError(f"{checkpoint_path} changed during evaluation (now {checkpoint.version})")
    checkpoint.metrics[report.data["split"]] = report.checkpoint_block()
    save_checkpoint(checkpoint, checkpoint_path)
    return checkpoint


def record_in_mlflow(
    checkpoint_path: Path, checkpoint: ModelCheckpoint, files: dict[str, Path], split: str
) -> list[str]:
    """Update registry versions made from this checkpoint and log the evaluation to their training runs."""
    from mlops import registry

    client = registry.mlflow_client()
    notes = []
    versions = registry.sync_checkpoint(checkpoint_path, checkpoint)
    run_ids = {v.run_id for v in versions if v.run_id} | {checkpoint.extra.get("mlflow_run_id") or ""}
    metrics = checkpoint.metrics[split]["metrics"]
    for run_id in sorted(r for r in run_ids if r):
        for key, value in metrics.items():
            if np.isfinite(value):
                client.log_metric(run_id, f"{split}_{key}", float(value))
        for name in ("metrics.json", "report.md", "roc.png", "reliability.png"):
            client.log_artifact(run_id, str(files[name]), artifact_path=f"evaluation/{split}")
        notes.append(f"logged to MLflow run {run_id}")
    notes += [f"registry: updated {v.name} v{v.version}" for v in versions]
    return notes or ["registry: no registered version of this checkpoint (register it with mlops.registry register)"]


# --- CLI ---------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlops.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or models:/NAME@ALIAS reference")
    parser.add_argument("--data", type=Path, required=True, help="dataset folder (split/CLASS/* or manifest.csv)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default var/evaluations/VERSION-SPLIT)")
    parser.add_argument(
        "--update-checkpoint",
        action="store_true",
        help="store the metrics in the checkpoint (metrics[SPLIT]) and in its registry versions",
    )
    parser.add_argument("--no-mlflow", action="store_true", help="with --update-checkpoint: leave MLflow untouched")
    listing = parser.add_mutually_exclusive_group()
    listing.add_argument(
        "--official-624",
        dest="restore",
        action="store_const",
        const=True,
        default=None,
        help=f"require restoring the duplicates listed in {DUPLICATES_FILE} (Kermany: 624 images)",
    )
    listing.add_argument(
        "--stored-only",
        dest="restore",
        action="store_const",
        const=False,
        help=f"evaluate the stored images only, ignoring {DUPLICATES_FILE}",
    )
    parser.add_argument("--bootstrap-rounds", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: settings.torch_threads)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from settings import get_settings

    args = build_parser().parse_args(argv)
    settings = get_settings()
    try:
        checkpoint_path = _resolve_checkpoint_argument(args.checkpoint)
        report, scored = evaluate(
            checkpoint_path,
            args.data,
            args.split,
            restore_duplicates=args.restore,
            bootstrap_rounds=args.bootstrap_rounds,
            seed=args.seed,
            threads=args.threads or settings.torch_threads,
        )
    except (EvaluationError, DatasetError, CheckpointError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir = args.out or settings.var_dir / "evaluations" / f"{report.model['version']}-{args.split}"
    files = write_outputs(report, scored, out_dir)
    print(render_markdown(report))
    print(f"written: {', '.join(str(p) for p in files.values())}")
    if args.update_checkpoint:
        checkpoint = store_in_checkpoint(checkpoint_path, report)
        print(f"stored metrics['{args.split}'] in {checkpoint_path}")
        if not args.no_mlflow:
            for note in record_in_mlflow(checkpoint_path, checkpoint, files, args.split):
                print(note)
    return 0


def _resolve_checkpoint_argument(value: str) -> Path:
    if value.startswith(("models:/", "runs:/")):
        from mlops.registry import RegistryError, resolve_model_reference

        try:
            return resolve_model_reference(value)
        except RegistryError as exc:
            raise EvaluationError(str(exc)) from exc
    return Path(value)


if __name__ == "__main__":
    sys.exit(main())
