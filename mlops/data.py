"""Labelled datasets for training and evaluation: discovery, patient-level splits and in-memory caching.

Two layouts are understood:
- folders `SPLIT/CLASS/*.{jpg,jpeg,png,tif,tiff,dcm}` (the Kermany layout), and
- a manifest CSV with columns `file, label, split` and optionally `patient_id` (paths relative to the CSV).
"""

from __future__ import annotations

import csv
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imaging import decode_image, to_square_uint8

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm"}
_PATIENT_PATTERNS = (
    re.compile(r"^(person\d+)_", re.IGNORECASE),  # person123_bacteria_456
    re.compile(r"^((?:NORMAL\d*-)?IM-\d+)-", re.IGNORECASE),  # IM-0123-0001, NORMAL2-IM-0123-0001
    re.compile(r"^(\d{8})_\d{3}$"),  # NIH ChestX-ray14: 00000013_005
)


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    split: str
    patient_id: str


def patient_id_from_name(path: Path) -> str:
    """Patient id encoded in Kermany/NIH file names; the file stem itself when no pattern matches."""
    stem = path.stem
    for pattern in _PATIENT_PATTERNS:
        match = pattern.match(stem)
        if match:
            return match.group(1)
    return stem


def discover(data_dir: Path) -> list[Sample]:
    """Find samples from `manifest.csv` (if it has label and split columns) or from the folder layout."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"Dataset folder not found: {data_dir}")
    manifest = data_dir / "manifest.csv"
    if manifest.is_file():
        samples = read_manifest(manifest)
        if samples:
            return samples
    return list(_walk_folders(data_dir))


def read_manifest(manifest: Path) -> list[Sample]:
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"file", "label", "split"} <= set(reader.fieldnames or ()):
            return []
        rows = list(reader)
    samples = []
    for row in rows:
        path = manifest.parent / row["file"]
        patient = (row.get("patient_id") or "").strip() or patient_id_from_name(path)
        samples.append(Sample(path=path, label=row["label"].strip(), split=row["split"].strip(), patient_id=patient))
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


def label_indices(samples: Sequence[Sample], class_names: Sequence[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index[s.label] for s in samples], dtype=np.int64)
