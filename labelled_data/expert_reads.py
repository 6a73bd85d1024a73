"""Expert nodule reads exported by the workstation (`python -m active_learning export --out DIR`) as nodule training
samples.

DIR/nodule_manifest.csv has one row per reviewed case (its newest review): `file` (images/<case_id>.png, the case's
kept pixels), `label` NODULE or NO_NODULE, `split`, `patient_id` (a pseudonym), `boxes` as JSON [[x, y, w, h], ...] in
the pixels of the stored image, whose size is `width` x `height`, and `located` (the boxes are complete). The kept PNG
may be smaller than the stored image (its longer side is at most 1024 px), so the boxes are scaled to the PNG's own
pixels here: a sample's boxes always lie in the pixels of the file it names, as for the NIH box sets.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from labelled_data.catalog import DatasetError
from labelled_data.nodules import Box, NoduleSample

NODULE_MANIFEST_NAME = "nodule_manifest.csv"
EXPERT_SOURCE = "expert-reads"
REQUIRED_COLUMNS = frozenset({"file", "label", "split", "patient_id", "boxes", "located", "width", "height"})
LABELS = {"NODULE": True, "NO_NODULE": False}


def read_expert_nodule_reads(folder: Path) -> list[NoduleSample]:
    """The nodule samples of an export folder; [] when it holds no nodule reads."""
    manifest = Path(folder) / NODULE_MANIFEST_NAME
    if not manifest.is_file():
        return []
    with manifest.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = REQUIRED_COLUMNS - set(reader.fieldnames or ())
        if missing:
            raise DatasetError(f"{manifest} lacks the column(s) {', '.join(sorted(missing))}.")
        return [_sample(manifest.parent, row) for row in reader]


def _sample(folder: Path, row: dict[str, str]) -> NoduleSample:
    path = folder / row["file"]
    if row["label"] not in LABELS:
        raise DatasetError(f"{path.name}: label {row['label']!r} is not NODULE or NO_NODULE.")
    return NoduleSample(
        path=path,
        split=row["split"],
        patient_id=row["patient_id"],
        positive=LABELS[row["label"]],
        boxes=_scaled_boxes(path, row),
        located=row["located"].strip().lower() == "true",
        source=EXPERT_SOURCE,
    )


def _scaled_boxes(path: Path, row: dict[str, str]) -> tuple[Box, ...]:
    """The row's boxes, from the stored image's pixels to the pixels of the exported file."""
    try:
        boxes = [tuple(float(value) for value in box) for box in json.loads(row["boxes"] or "[]")]
        width, height = float(row["width"]), float(row["height"])
    except (ValueError, TypeError) as exc:
        raise DatasetError(f"{path.name}: unreadable boxes or image size ({exc}).") from exc
    if not boxes:
        return ()
    try:
        with Image.open(path) as image:  # reads the header only
            file_width, file_height = image.size
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"{path}: the exported image cannot be read ({exc}).") from exc
    sx, sy = file_width / width, file_height / height
    return tuple((x * sx, y * sy, w * sx, h * sy) for x, y, w, h in boxes)
