"""Several datasets in one training run: each is a `DataSource` with its own task definition and population.

A source is written on the command line as `DIR[:key=value]...`, for example

    ../shared/datasets/rsna-pneumonia-adult:population=adults:positive=PNEUMONIA:negative=NORMAL+OTHER_ABNORMAL

Keys (`SPEC_KEYS`) override, for this dataset only, the task options given for the whole run, so a plain `DIR`
behaves exactly as a single-dataset run always did. Every sample is tagged with the source's population, because
one pooled validation AUROC hides a model that is good on children and poor on adults (or the reverse).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labelled_data.catalog import DataOptions, DatasetError, Sample, load_samples, select, split_by_patient

AUTO_VAL = "auto"  # the dataset's own `val` split when it has one, else carved from train by patient
CARVE_VAL = "carve"  # always carve validation patients out of the train split
OWN_VAL_SPLIT = "val"


def _labels(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split("+") if item.strip())


# spec key -> (DataOptions field, parser of the text value); `population` and `val` are the source's own fields.
SPEC_KEYS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "positive": ("positive_labels", _labels),
    "negative": ("negative_labels", _labels),
    "positive-name": ("positive_name", str),
    "negative-name": ("negative_name", str),
    "split-column": ("split_column", str),
    "test-fraction": ("test_fraction", float),
    "split-seed": ("split_seed", int),
}


@dataclass(frozen=True)
class DataSource:
    """One dataset folder of a (possibly joint) training run, with its task, population and validation rule."""

    path: Path
    options: DataOptions
    population: str
    val_split: str = AUTO_VAL  # AUTO_VAL, CARVE_VAL, or the name of a split to validate on

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.path.name,
            "population": self.population,
            "val_split": self.val_split,
            "options": self.options.to_dict(),
        }


def parse_source(spec: str, defaults: DataOptions) -> DataSource:
    """`DIR[:key=value]...` -> DataSource; keys not given keep the run-wide `defaults`."""
    folder, *pairs = str(spec).split(":")
    path = Path(folder)
    overrides: dict[str, Any] = {}
    population, val_split = path.name, AUTO_VAL
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not value:
            raise DatasetError(f"data source option {pair!r} in {spec!r} is not key=value")
        if key == "population":
            population = value
        elif key == "val":
            val_split = value
        elif key in SPEC_KEYS:
            name, parse = SPEC_KEYS[key]
            overrides[name] = parse(value)
        else:
            known = ", ".join(["population", "val", *SPEC_KEYS])
            raise DatasetError(f"unknown data source option {key!r} in {spec!r}; known: {known}")
    return DataSource(path, dataclasses.replace(defaults, **overrides), population, val_split)


def load_source(source: DataSource) -> list[Sample]:
    """The source's samples under its task definition, each tagged with the source's population."""
    samples = load_samples(source.path, source.options)
    return [dataclasses.replace(s, population=source.population) for s in samples]


def train_val_split(
    source: DataSource,
    samples: Sequence[Sample],
    class_names: Sequence[str],
    train_split: str,
    val_fraction: float,
    seed: int,
) -> tuple[list[Sample], list[Sample]]:
    """Training and validation samples of one source, restricted to `class_names`.

    A dataset that ships a validation split is validated on it (its patients were kept apart by its curators);
    otherwise validation patients are carved out of the train split, as single-dataset runs always did.
    """
    if not select(samples, train_split):
        splits = ", ".join(sorted({s.split for s in samples}))
        raise DatasetError(f"{source.path.name}: no images in split {train_split!r}; splits present: {splits}")
    pool = select(samples, train_split, class_names)
    val_name = source.val_split
    if val_name == AUTO_VAL:
        val_name = OWN_VAL_SPLIT if select(samples, OWN_VAL_SPLIT) else CARVE_VAL
    if val_name == CARVE_VAL:
        return split_by_patient(pool, val_fraction, seed)
    val = select(samples, val_name, class_names)
    if not val:
        raise DatasetError(f"{source.path.name}: validation split {val_name!r} has no images")
    return pool, val
