"""How a pneumonia model does on each population it claims (children, adults), through the serving path:
`python -m mlops.population_report --checkpoint F --split val|test [--heatmaps] [--json OUT]`.

Per population: AUROC, AUROC within each projection (AP, PA: the adult data's shortcut), sensitivity and
specificity at the stored threshold, expected calibration error, and the share of films answered wrongly with a
calibrated confidence above 0.9 and no flag (not uncertain, not refused by the input gate, not outside the
validated scope): the failure a
radiologist cannot see coming. With `--heatmaps`, on the adult pneumonia films: how often the Grad-CAM peak lies
inside a radiologist's opacity box and the share of the heat inside the boxes, each beside its chance level (the
boxes' share of the image).

Validation is the split every candidate is selected on (Kermany: the patients carved from train with the
checkpoint's own seed and fraction; RSNA: its `val` split). A candidate meets `--split test` once, for the card.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference import ModelCheckpoint, Predictor, ScopeCheck, load_checkpoint
from labelled_data import DataOptions, Sample, load_source, parse_source, select, train_val_split
from mlops.populations import population_metrics
from mlops.serving_path import predict_samples, sample_pixels
from settings import Settings, get_settings

CONFIDENT = 0.9
DEFAULT_SOURCES = (
    "kermany-pneumonia:population=children",
    "rsna-pneumonia-adult:population=adults:positive=PNEUMONIA:negative=NORMAL+OTHER_ABNORMAL:negative-name=NORMAL",
)


@dataclass(frozen=True)
class Scored:
    samples: list[Sample]
    labels: np.ndarray  # 1 = positive class
    probs: np.ndarray  # calibrated P(positive)
    confidence: np.ndarray  # calibrated probability of the answered class
    flagged: np.ndarray  # uncertain or refused by the gate


def evaluation_set(spec: str, data_root: Path, split: str, checkpoint: ModelCheckpoint) -> list[Sample]:
    """The `split` samples of one source under the checkpoint's task definition (val: as training selected it)."""
    train_config = checkpoint.extra.get("train_config", {})
    source = parse_source(str(data_root / spec), DataOptions(negative_name="NORMAL", positive_name="PNEUMONIA"))
    samples = load_source(source)
    if split != "val":
        return select(samples, split, checkpoint.class_names)
    _, val = train_val_split(
        source,
        samples,
        checkpoint.class_names,
        "train",
        float(train_config.get("val_fraction", 0.15)),
        int(train_config.get("seed", 42)),
    )
    return val


def score(predictor: Predictor, samples: Sequence[Sample], batch_size: int = 32) -> Scored:
    """The serving path's answers; "flagged" is what the workstation would show: uncertain, refused by the input
    gate, or outside the validated scope (judged from the film: the datasets carry no age per film here)."""
    scope = ScopeCheck.from_checkpoint(predictor.checkpoint)
    predictions = predict_samples(predictor, samples, batch_size)
    positive = predictor.checkpoint.positive_class
    return Scored(
        samples=list(samples),
        labels=np.array([int(s.label == positive) for s in samples]),
        probs=np.array([p.positive_probability for p in predictions]),
        confidence=np.array([p.confidence for p in predictions]),
        flagged=np.array([p.uncertain or p.ood or scope.check(p.embedding).outside for p in predictions]),
    )


def confident_wrong_share(scored: Scored, threshold: float, mask: np.ndarray) -> float:
    """Share of the films answered wrongly with confidence > CONFIDENT and no flag."""
    wrong = (scored.probs >= threshold).astype(int) != scored.labels
    hidden = wrong & (scored.confidence > CONFIDENT) & ~scored.flagged
    return float(hidden[mask].mean()) if mask.any() else float("nan")


def report(scored: Scored, threshold: float) -> dict[str, dict[str, float]]:
    by_population = population_metrics(scored.labels, scored.probs, scored.samples, threshold)
    populations = np.array([s.population for s in scored.samples])
    for population, metrics in by_population.items():
        mask = populations == population
        metrics["confident_wrong_unflagged"] = confident_wrong_share(scored, threshold, mask)
        metrics["flagged"] = float(scored.flagged[mask].mean())
    return by_population


# --- where the model looks -------------------------------------------------------------------------------------


def opacity_boxes(manifest: Path) -> dict[str, list[tuple[float, float, float, float]]]:
    """file -> radiologist opacity boxes (x, y, w, h in stored pixels) from the RSNA manifest."""
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    with manifest.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            text = (row.get("opacity_bboxes_xywh") or "").strip()
            if text:
                boxes[row["file"]] = [tuple(float(v) for v in box.split(",")) for box in text.split(";")]  # type: ignore[misc]
    return boxes


def heatmap_agreement(predictor: Predictor, samples: Sequence[Sample], manifest: Path) -> dict[str, float]:
    """Grad-CAM of the positive class on boxed films: peak-in-box rate, heat share in boxes, and their chance."""
    boxes = opacity_boxes(manifest)
    hits, heat_shares, areas = [], [], []
    for sample in samples:
        film_boxes = boxes.get(sample.path.relative_to(manifest.parent).as_posix())
        if not film_boxes:
            continue
        pixels = sample_pixels(sample)
        values = predictor.heatmap(pixels, target_class=predictor.checkpoint.positive_class).values
        inside = np.zeros(values.shape, dtype=bool)
        for x, y, w, h in film_boxes:
            inside[int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = True
        row, col = np.unravel_index(int(np.argmax(values)), values.shape)
        hits.append(bool(inside[row, col]))
        heat_shares.append(float(values[inside].sum() / max(values.sum(), 1e-9)))
        areas.append(float(inside.mean()))
    return {
        "films": len(hits),
        "peak_in_box": float(np.mean(hits)) if hits else float("nan"),
        "heat_in_boxes": float(np.mean(heat_shares)) if hits else float("nan"),
        "chance_box_area": float(np.mean(areas)) if hits else float("nan"),
    }


# --- command line ------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    checkpoint = load_checkpoint(args.checkpoint)
    predictor = Predictor.from_settings(checkpoint, settings, cache_size=1)
    data_root = Path(args.data_root)
    samples = [s for spec in args.source for s in evaluation_set(spec, data_root, args.split, checkpoint)]
    scored = score(predictor, samples)
    result: dict[str, Any] = {
        "checkpoint": str(args.checkpoint),
        "version": checkpoint.version,
        "split": args.split,
        "threshold": checkpoint.threshold,
        "populations": report(scored, checkpoint.threshold),
    }
    if args.heatmaps:
        adults = [s for s in samples if s.population == "adults" and s.label == checkpoint.positive_class]
        manifest = data_root / "rsna-pneumonia-adult" / "manifest.csv"
        result["heatmaps_adult_pneumonia"] = heatmap_agreement(predictor, adults, manifest)
    return result


def render(result: dict[str, Any]) -> str:
    keys = ("n", "auroc", "auroc_AP", "auroc_PA", "sensitivity", "specificity", "ece", "confident_wrong_unflagged")
    lines = [
        f"{result['version']} on {result['split']} (threshold {result['threshold']:.3f})",
        "| population | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for population, metrics in result["populations"].items():
        cells = [f"{metrics[k]:.3f}" if isinstance(metrics.get(k), float) else str(metrics.get(k, "")) for k in keys]
        lines.append(f"| {population} | " + " | ".join(cells) + " |")
    if "heatmaps_adult_pneumonia" in result:
        lines.append(f"heatmaps (adult pneumonia films): {json.dumps(result['heatmaps_adult_pneumonia'])}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m mlops.population_report", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--split", default="val", help="val (selection) or test (once per candidate, for the card)")
    parser.add_argument("--data-root", type=Path, default=settings.cxr_data_dir)
    parser.add_argument("--source", action="append", default=None, help="DIR[:key=value]... under --data-root")
    parser.add_argument("--heatmaps", action="store_true", help="Grad-CAM against the adult opacity boxes")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    args.source = args.source or list(DEFAULT_SOURCES)
    torch.set_num_threads(settings.torch_threads)
    result = run(args, settings)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
