"""Fit the input gate's embedding reference into a checkpoint: `python -m mlops.fit_gate --checkpoint F --data SRC`.

`--data` may be repeated (a model trained on several datasets is gated against all of them); each is a folder or a
source spec `DIR[:key=value]...` as `mlops.train` takes it (labelled_data.sources).

Embeds the training split through the serving Predictor (same decoder, preprocessing and model), fits the
class-conditional Mahalanobis reference (inference.ood) on part of the patients and sets its threshold on the
patients held out, then writes the reference into the checkpoint, because serving reads everything from there.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import labelled_data
from inference import (
    CheckpointError,
    ImageChecks,
    OODError,
    Predictor,
    fit_reference,
    load_checkpoint,
    save_checkpoint,
    with_reference,
)
from mlops.serving_path import embed_samples, sample_pixels
from settings import Settings, get_settings


def fit_command(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """Embed the training split with the serving path, fit the reference and write it into the checkpoint."""
    checkpoint = load_checkpoint(args.checkpoint)
    samples = training_samples(args.data, args.split, checkpoint.class_names)
    if args.max_images:
        samples = random.Random(args.seed).sample(samples, min(args.max_images, len(samples)))
    fit_part, holdout_part = labelled_data.split_by_patient(samples, args.holdout_fraction, args.seed)
    started = time.time()
    # The gate being fitted stays off while it embeds its own reference.
    predictor = Predictor.from_settings(checkpoint, settings, cache_size=1, cache_ttl=1, gate=False)
    fit_embeddings = embed_samples(predictor, fit_part, args.batch_size)
    holdout_embeddings = embed_samples(predictor, holdout_part, args.batch_size)
    labels = labelled_data.label_indices(fit_part, checkpoint.class_names)
    reference = fit_reference(fit_embeddings, labels, holdout_embeddings, args.percentile, checkpoint.version)
    checks = ImageChecks.from_settings(settings)
    refused_by_checks = sum(checks.reason(sample_pixels(s)) is not None for s in holdout_part)
    # Re-read just before writing: another command (e.g. mlops.evaluate) may have rewritten the file meanwhile.
    latest = load_checkpoint(args.checkpoint)
    if latest.version != checkpoint.version:
        raise OODError(f"{args.checkpoint} changed to model {latest.version} during the fit; run the fit again.")
    output = args.output or args.checkpoint
    sha256 = save_checkpoint(with_reference(latest, reference), output)
    return {
        "checkpoint": str(output),
        "sha256": sha256,
        "model_version": checkpoint.version,
        "fit_images": len(fit_part),
        "holdout_images": len(holdout_part),
        "threshold": round(reference.threshold, 4),
        "percentile": args.percentile,
        "holdout_quantiles": {k: round(v, 3) for k, v in reference.holdout_quantiles.items()},
        "holdout_refused_by_image_checks": refused_by_checks,
        "seconds": round(time.time() - started, 1),
    }


def training_samples(sources: Sequence[str], split: str, class_names: Sequence[str]) -> list[labelled_data.Sample]:
    """The `split` samples of every source, labelled with the checkpoint's classes (negative first)."""
    defaults = labelled_data.DataOptions(positive_name=class_names[-1], negative_name=class_names[0])
    samples = []
    for spec in sources:
        source = labelled_data.parse_source(spec, defaults)
        samples += labelled_data.select(labelled_data.load_source(source), split, class_names)
    return samples


def parse_args(argv: Sequence[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mlops.fit_gate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument(
        "--data", action="append", required=True, help="dataset folder or source spec DIR[:key=value]...; repeatable"
    )
    parser.add_argument("--split", default="train", help="split to fit on (never the test split)")
    parser.add_argument("--holdout-fraction", type=float, default=0.15, help="patients held out to set the threshold")
    parser.add_argument(
        "--percentile", type=float, default=settings.ood_percentile, help="held-out percentile (OOD_PERCENTILE)"
    )
    parser.add_argument("--max-images", type=int, default=0, help="cap the images used (0: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, default=None, help="write here instead of rewriting --checkpoint")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    settings = get_settings()
    torch.set_num_threads(settings.torch_threads)
    args = parse_args(argv, settings)
    try:
        summary = fit_command(args, settings)
    except (CheckpointError, OODError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
