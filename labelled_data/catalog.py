"""Labelled datasets for training and evaluation: discovery, task definition, patient-level splits, caching.

Two layouts are understood:
- folders `SPLIT/CLASS/*.{jpg,jpeg,png,tif,tiff,dcm}` (the Kermany layout), and
- a manifest CSV with columns `file, label, split` and optionally `patient_id` (paths relative to the CSV).

`DataOptions` turns a dataset into a binary task without touching the files: it can read the split from another
manifest column (e.g. NIH's `nih_official_split`), map several source labels to one positive class, and assign
train/test by patient for datasets that ship without a split. Training stores the options in the checkpoint so
evaluation rebuilds exactly the same task and test set.
"""

from __future__ import annotations

import csv
import dataclasses
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from imaging import ImagingError, decode_image, to_square_uint8

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm"}
_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),  # person123_bacteria_456
    re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-", re.IGNORECASE),  # IM-0123-0001, NORMAL2-IM-0123-0001
    re.compile(r"^(\d{8})_\d{3}$"),  # NIH ChestX-ray14: 00000013_005
)


class DatasetError(ValueError):
    """The dataset or the requested task definition cannot be used; the message says why."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    split: str
    patient_id: str
    population: str = ""  # who the film shows (e.g. children, adults): set by the source it was loaded from
    view: str = ""  # projection (AP, PA) where the manifest has `view_position`; empty when unknown


def patient_id_from_name(path: Path) -> str:
    """Patient id encoded in Kermany/NIH file names; the file stem itself when no pattern matches."""
    stem = path.stem
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem


def discover(data_dir: Path, split_column: str = "") -> list[Sample]:
    """Find samples from `manifest.csv` (if it has label and split columns) or from the folder layout.

    `split_column` names the manifest column to read the split from instead of `split`.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"Dataset folder not found: {data_dir}")
    manifest = data_dir / "manifest.csv"
    if manifest.is_file():
        samples = read_manifest(manifest, split_column or "split")
        if samples:
            return samples
    if split_column:
        raise DatasetError(f"--split-column {split_column!r} needs a manifest.csv with that column in {data_dir}")
    return list(_walk_folders(data_dir))


def read_manifest(manifest: Path, split_column: str = "split") -> list[Sample]:
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or ())
        if not {"file", "label"} <= columns:
            return []
        if split_column not in columns:
            if split_column != "split":
                raise DatasetError(f"{manifest} has no column {split_column!r}; columns: {', '.join(sorted(columns))}")
            return []
        rows = list(reader)
    samples = []
    for row in rows:
        path = manifest.parent / row["file"]
        patient = (row.get("patient_id") or "").strip() or patient_id_from_name(path)
        split = (row.get(split_column) or "").strip()
        view = (row.get("view_position") or "").strip().upper()
        samples.append(Sample(path=path, label=row["label"].strip(), split=split, patient_id=patient, view=view))
    return samples


def _walk_folders(data_dir: Path) -> Iterable[Sample]:
    for split_dir in sorted(p for p in data_dir.iterdir() if p.is_dir()):
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    yield Sample(path, class_dir.name, split_dir.name, patient_id_from_name(path))


def select(samples: Sequence[Sample], split: str, class_names: Sequence[str] | None = None) -> list[Sample]:
    chosen = [s for s in samples if s.split == split]
    if class_names is not None:
        chosen = [s for s in chosen if s.label in class_names]
    return chosen


def split_by_patient(samples: Sequence[Sample], val_fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Carve a validation set out of `samples` so that no patient is on both sides; stratified by label."""
    by_label: dict[str, dict[str, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for sample in samples:
        by_label[sample.label][sample.patient_id].append(sample)
    rng = random.Random(seed)
    train: list[Sample] = []
    val: list[Sample] = []
    val_patients: set[str] = set()
    for label in sorted(by_label):
        patients = sorted(by_label[label])
        rng.shuffle(patients)
        target = round(val_fraction * sum(len(v) for v in by_label[label].values()))
        taken = 0
        for patient in patients:
            if taken < target:
                val_patients.add(patient)
                taken += len(by_label[label][patient])
    for sample in samples:
        (val if sample.patient_id in val_patients else train).append(sample)
    return train, val


def load_square_images(samples: Sequence[Sample], size: int, workers: int = 2) -> np.ndarray:
    """Decode every sample with the serving decoder and cache it as uint8 (N, size, size)."""

    def load(sample: Sample) -> np.ndarray:
        return to_square_uint8(decode_image(sample.path.read_bytes()).pixels, size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(load, samples))
    return np.stack(images) if images else np.zeros((0, size, size), dtype=np.uint8)


def cache_images(
    samples: Sequence[Sample], size: int, workers: int = 2
) -> tuple[list[Sample], np.ndarray, list[tuple[Path, str]]]:
    """Like `load_square_images`, but a file that cannot be read or decoded is dropped instead of aborting.

    Returns the kept samples, their images (aligned with them) and (path, reason) for each dropped file.
    """

    def load(sample: Sample) -> np.ndarray | str:
        try:
            return to_square_uint8(decode_image(sample.path.read_bytes()).pixels, size)
        except (OSError, ImagingError) as exc:
            return str(exc)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(load, samples))
    kept = [(s, r) for s, r in zip(samples, results, strict=True) if isinstance(r, np.ndarray)]
    failed = [(s.path, r) for s, r in zip(samples, results, strict=True) if isinstance(r, str)]
    images = np.stack([image for _, image in kept]) if kept else np.zeros((0, size, size), dtype=np.uint8)
    return [s for s, _ in kept], images, failed


def label_indices(samples: Sequence[Sample], class_names: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index[s.label] for s in samples], dtype=np.int64)


@dataclass(frozen=True)
class DataOptions:
    """How a dataset folder becomes a binary task and its splits (stored in the checkpoint; see module doc).

    - `split_column`: manifest column holding the split (empty: `split`, or the folder layout).
    - `test_fraction`: if > 0, the stored split is ignored and every sample is assigned to `train` or `test` by
      patient (seeded, stratified by label, deterministic for the same files and options).
    - `positive_labels`: if set, these source labels become `positive_name`; the others become `negative_name`,
      or only those in `negative_labels` when that is set (the rest are left out).
    """

    split_column: str = ""
    test_fraction: float = 0.0
    split_seed: int = 42
    positive_labels: tuple[str, ...] = ()
    positive_name: str = "POSITIVE"
    negative_name: str = "NEGATIVE"
    negative_labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise DatasetError(f"test fraction must be in [0, 1), got {self.test_fraction}")
        if self.positive_labels and self.positive_name == self.negative_name:
            raise DatasetError("positive and negative class names must differ")
        if set(self.positive_labels) & set(self.negative_labels):
            raise DatasetError("a label cannot be both positive and negative")

    @property
    def relabels(self) -> bool:
        return bool(self.positive_labels)

    @property
    def class_names(self) -> list[str]:
        """Class names of a relabelled task, negative first (the positive class is last, as serving expects)."""
        return [self.negative_name, self.positive_name] if self.relabels else []

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> DataOptions:
        data = data or {}
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values)


def relabel(samples: Sequence[Sample], options: DataOptions) -> list[Sample]:
    """Map source labels to the binary task of `options` (identity when it defines no mapping)."""
    if not options.relabels:
        return list(samples)
    present = {s.label for s in samples}
    missing = [label for label in (*options.positive_labels, *options.negative_labels) if label not in present]
    if missing:
        raise DatasetError(f"no sample has label(s) {', '.join(missing)}; labels present: {', '.join(sorted(present))}")
    positive, negative = set(options.positive_labels), set(options.negative_labels)
    mapped = []
    for sample in samples:
        if sample.label in positive:
            mapped.append(dataclasses.replace(sample, label=options.positive_name))
        elif not negative or sample.label in negative:
            mapped.append(dataclasses.replace(sample, label=options.negative_name))
    return mapped


def assign_test_split(samples: Sequence[Sample], test_fraction: float, seed: int) -> list[Sample]:
    """Re-split every sample into `train`/`test` by patient (stratified by label, seeded)."""
    _, test = split_by_patient(samples, test_fraction, seed)
    test_patients = {s.patient_id for s in test}
    return [dataclasses.replace(s, split="test" if s.patient_id in test_patients else "train") for s in samples]


def load_samples(data_dir: Path, options: DataOptions | None = None) -> list[Sample]:
    """Discover a dataset and apply `options` (split column, label mapping, patient-level test assignment)."""
    options = options or DataOptions()
    samples = relabel(discover(data_dir, options.split_column), options)
    if options.test_fraction > 0:
        samples = assign_test_split(samples, options.test_fraction, options.split_seed)
    return samples
