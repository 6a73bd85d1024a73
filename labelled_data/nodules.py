"""Nodule/mass training samples: image-level labels and, where a radiologist drew them, boxes.

Two sources (see each folder's README): `nih-nodule-boxes` (NIH films at 768 px; `NODULE_MASS` with one box,
`NODULE_MASS_NO_BOX` positive but not located, `OTHER_FINDING` negatives) and `nih-nodule` (weak text-mined labels at
384 px, split by `split_aligned` so every patient stays in one split across the NIH sets). A sample is `located` when
its boxes are complete (a boxed positive, or a negative: no nodule anywhere), so the heatmap may learn from it; a
positive without boxes teaches only the image-level probability.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from labelled_data.catalog import DatasetError

Box = tuple[float, float, float, float]  # x, y, w, h in the stored image's pixels

BOXED_POSITIVE, UNBOXED_POSITIVE, BOXED_NEGATIVE = "NODULE_MASS", "NODULE_MASS_NO_BOX", "OTHER_FINDING"
WEAK_POSITIVE = "NODULE_OR_MASS"


@dataclass(frozen=True)
class NoduleSample:
    path: Path
    split: str
    patient_id: str
    positive: bool  # a nodule or mass is on the film (image level)
    boxes: tuple[Box, ...]  # radiologist boxes, stored pixels
    located: bool  # boxes are complete: the heatmap may learn from this film
    source: str  # dataset folder name
    view: str = ""


def parse_boxes(text: str) -> tuple[Box, ...]:
    """`x,y,w,h;x,y,w,h` (the manifests' `nodule_mass_bboxes_xywh`) -> boxes; empty text -> none."""
    boxes = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        values = [float(v) for v in part.split(",")]
        if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
            raise DatasetError(f"Malformed box {part!r}: expected x,y,w,h with positive width and height.")
        boxes.append((values[0], values[1], values[2], values[3]))
    return tuple(boxes)


def load_boxed_set(data_dir: Path) -> list[NoduleSample]:
    """`nih-nodule-boxes`: every film, with its split and boxes."""
    rows = _manifest_rows(data_dir)
    samples = []
    for row in rows:
        label = row["label"]
        if label not in (BOXED_POSITIVE, UNBOXED_POSITIVE, BOXED_NEGATIVE):
            raise DatasetError(f"{data_dir.name}: unknown label {label!r} for {row['file']}.")
        boxes = parse_boxes(row.get("nodule_mass_bboxes_xywh", ""))
        samples.append(
            NoduleSample(
                path=data_dir / row["file"],
                split=row["split"],
                patient_id=row["patient_id"],
                positive=label != BOXED_NEGATIVE,
                boxes=boxes,
                located=label != UNBOXED_POSITIVE,
                source=data_dir.name,
                view=row.get("view_position", "").upper(),
            )
        )
    return samples


def load_weak_set(data_dir: Path) -> list[NoduleSample]:
    """`nih-nodule`: image-level labels, split by `split_aligned`; positives are not located."""
    samples = []
    for row in _manifest_rows(data_dir):
        split = row.get("split_aligned", "")
        if not split:
            raise DatasetError(f"{data_dir.name}/manifest.csv lacks `split_aligned`, needed to keep patients apart.")
        positive = row["label"] == WEAK_POSITIVE
        samples.append(
            NoduleSample(
                path=data_dir / row["file"],
                split=split,
                patient_id=row["patient_id"],
                positive=positive,
                boxes=(),
                located=not positive,
                source=data_dir.name,
                view=row.get("view_position", "").upper(),
            )
        )
    return samples


def _manifest_rows(data_dir: Path) -> list[dict[str, str]]:
    manifest = Path(data_dir) / "manifest.csv"
    if not manifest.is_file():
        raise DatasetError(f"No manifest.csv in {data_dir}: not a nodule dataset folder.")
    with manifest.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
