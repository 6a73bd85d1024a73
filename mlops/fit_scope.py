"""Fit the validated scope (inference.scope) into a checkpoint and measure it leaving each population out:
`python -m mlops.fit_scope --checkpoint F [--output G] [--percentile 99] [--json OUT]`.

For each validated population: embed its train split through the serving Predictor, fit the class-conditional
Mahalanobis reference on most patients and set its threshold at `--percentile` of the held-out patients' distances.
Then, on the test splits: fitted without one population, the share of that population's films it flags (should be
high: a new population is noticed) and of the other population's films (should stay low); fitted on all, the share
flagged of each test split (the price paid on validated films). The scope stored is the one fitted on all.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference import ModelCheckpoint, Predictor, fit_reference, load_checkpoint, save_checkpoint
from inference.scope import PopulationScope, ScopeCheck, with_scope
from labelled_data import DataOptions, label_indices, load_source, parse_source, select, split_by_patient
from mlops.serving_path import embed_samples
from settings import Settings, get_settings


@dataclass(frozen=True)
class Population:
    name: str
    source: str  # DIR[:key=value]... under the data root (labelled_data.sources)
    min_age: int
    max_age: int
    description: str


# The populations the pneumonia model is validated on (dataset READMEs: ages and sites).
POPULATIONS = (
    Population("children", "kermany-pneumonia", 1, 5, "children aged 1-5 at the Kermany hospital (Guangzhou)"),
    Population(
        "adults",
        "rsna-pneumonia-adult:positive=PNEUMONIA:negative=NORMAL+OTHER_ABNORMAL:negative-name=NORMAL",
        18,
        92,
        "adults aged 18-92 at the NIH Clinical Center",
    ),
)


@dataclass
class Embedded:
    fit: np.ndarray
    fit_labels: np.ndarray
    holdout: np.ndarray
    test: np.ndarray


def embed_population(predictor: Predictor, population: Population, data_root: Path, seed: int) -> Embedded:
    classes = predictor.checkpoint.class_names
    defaults = DataOptions(positive_name=classes[-1], negative_name=classes[0])
    samples = load_source(parse_source(str(data_root / population.source), defaults))
    fit_part, holdout_part = split_by_patient(select(samples, "train", classes), 0.15, seed)
    return Embedded(
        fit=embed_samples(predictor, fit_part),
        fit_labels=label_indices(fit_part, classes),
        holdout=embed_samples(predictor, holdout_part),
        test=embed_samples(predictor, select(samples, "test", classes)),
    )


def scope_of(
    populations: Sequence[Population], embedded: dict[str, Embedded], percentile: float, version: str
) -> ScopeCheck:
    return ScopeCheck(
        tuple(
            PopulationScope(
                p.name,
                p.description,
                p.min_age,
                p.max_age,
                fit_reference(
                    embedded[p.name].fit, embedded[p.name].fit_labels, embedded[p.name].holdout, percentile, version
                ),
            )
            for p in populations
        )
    )


def flagged_share(scope: ScopeCheck, embeddings: np.ndarray) -> float:
    return float(np.mean([scope.check(e).outside for e in embeddings]))


def leave_one_out(embedded: dict[str, Embedded], percentile: float, version: str) -> dict[str, dict[str, float]]:
    """Fitted without each population in turn: the share flagged of every population's test films."""
    result = {}
    for left_out in POPULATIONS:
        scope = scope_of([p for p in POPULATIONS if p is not left_out], embedded, percentile, version)
        result[f"without_{left_out.name}"] = {name: flagged_share(scope, data.test) for name, data in embedded.items()}
    return result


def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    checkpoint: ModelCheckpoint = load_checkpoint(args.checkpoint)
    predictor = Predictor.from_settings(checkpoint, settings, cache_size=1, gate=False)
    embedded = {p.name: embed_population(predictor, p, args.data_root, args.seed) for p in POPULATIONS}
    scope = scope_of(POPULATIONS, embedded, args.percentile, checkpoint.version)
    summary = {
        "model_version": checkpoint.version,
        "percentile": args.percentile,
        "fitted_on_all": {name: flagged_share(scope, data.test) for name, data in embedded.items()},
        "leave_one_out": leave_one_out(embedded, args.percentile, checkpoint.version),
        "images": {
            name: {"fit": len(d.fit), "holdout": len(d.holdout), "test": len(d.test)} for name, d in embedded.items()
        },
    }
    if not args.dry_run:
        save_checkpoint(with_scope(load_checkpoint(args.checkpoint), scope), args.output or args.checkpoint)
        summary["written"] = str(args.output or args.checkpoint)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m mlops.fit_scope", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=None, help="write here instead of rewriting --checkpoint")
    parser.add_argument("--data-root", type=Path, default=settings.cxr_data_dir)
    parser.add_argument("--percentile", type=float, default=99.0, help="held-out percentile used as threshold")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--dry-run", action="store_true", help="measure only; leave the checkpoint unchanged")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(settings.torch_threads)
    summary = run(args, settings)
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
