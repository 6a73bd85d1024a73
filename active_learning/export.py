"""Final expert labels as a training manifest that `mlops.train` (labelled_data's `read_manifest`) reads.

Columns: file, label, split, patient_id, source, annotators. `file` is images/<case_id>.png (the case's kept pixels,
a 16-bit PNG: storage's CASE_PIXELS_ARTIFACT), `split` is train or val (the held-back share), `patient_id` the
case's pseudonym (a keyed hash of the patient id, or the case id): the identity of the patient never leaves.
Annotators are separated by ";".

Nodule reviews go to nodule_manifest.csv beside it (the same images/ folder), one row per reviewed case, its newest
review: NODULE_MANIFEST_COLUMNS. `boxes` is JSON [[x, y, w, h], ...] (the confirmed and added marks) in the stored
image's pixels, whose size is `width`, `height`; the exported PNG is the kept copy (longer side at most 1024 px), so a
reader scales the boxes by its size (labelled_data.read_expert_nodule_reads does). `located` says the boxes are
complete: a film without a nodule, or with at least one box. The pneumonia manifest stays as it was, so the
pneumonia training never meets a nodule label.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from active_learning.records import NO_NODULE, FinalLabel, NoduleReview
from storage import CASE_PIXELS_ARTIFACT, ArtifactStore, write_durably

MANIFEST_COLUMNS = ("file", "label", "split", "patient_id", "source", "annotators")
MANIFEST_NAME = "manifest.csv"
NODULE_MANIFEST_COLUMNS = (
    *MANIFEST_COLUMNS,
    "boxes",
    "located",
    "width",
    "height",
    "model_label",
    "model_version",
    "reviewed_at",
    "review_id",
)
NODULE_MANIFEST_NAME = "nodule_manifest.csv"
NODULE_REVIEW_SOURCE = "nodule_review"


@dataclass(frozen=True)
class ExportResult:
    out: Path
    written: int  # labelled images in the manifest
    missing_pixels: tuple[str, ...]  # case ids left out: no kept pixels (cases stored before pixels were kept)
    nodule_written: int = 0  # reviewed cases in the nodule manifest


def image_file(case_id: str) -> str:
    return f"images/{case_id}.png"


def manifest_csv(labels: Sequence[FinalLabel]) -> str:
    rows = ((image_file(f.case_id), f.label, f.split, f.patient_key, f.source, ";".join(f.annotators)) for f in labels)
    return _csv(MANIFEST_COLUMNS, rows)


def nodule_manifest_csv(reviews: Sequence[NoduleReview]) -> str:
    return _csv(NODULE_MANIFEST_COLUMNS, (nodule_row(review) for review in reviews))


def nodule_row(review: NoduleReview) -> tuple[str, ...]:
    boxes = [[mark.x, mark.y, mark.w, mark.h] for mark in review.boxes]
    located = review.finding == NO_NODULE or bool(boxes)
    width, height = review.image_size
    return (
        image_file(review.case_id),
        review.finding,
        review.split,
        review.patient_key,
        NODULE_REVIEW_SOURCE,
        review.reviewer,
        json.dumps(boxes),
        "true" if located else "false",
        f"{width:g}",
        f"{height:g}",
        review.model_label,
        review.model_version,
        review.created_at.isoformat(),
        review.id,
    )


def _csv(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def write_export(
    labels: Sequence[FinalLabel], reviews: Sequence[NoduleReview], artifacts: ArtifactStore, out: Path
) -> ExportResult:
    """Write out/manifest.csv, out/nodule_manifest.csv and out/images/<case_id>.png for every label and review whose
    case has kept pixels."""
    kept = _write_images(artifacts, out, {item.case_id for item in (*labels, *reviews)})
    written = [final for final in labels if final.case_id in kept]
    reviewed = [review for review in reviews if review.case_id in kept]
    out.mkdir(parents=True, exist_ok=True)
    write_durably(out / MANIFEST_NAME, manifest_csv(written).encode("utf-8"))
    write_durably(out / NODULE_MANIFEST_NAME, nodule_manifest_csv(reviewed).encode("utf-8"))
    missing = tuple(dict.fromkeys(item.case_id for item in (*labels, *reviews) if item.case_id not in kept))
    return ExportResult(out=out, written=len(written), missing_pixels=missing, nodule_written=len(reviewed))


def _write_images(artifacts: ArtifactStore, out: Path, case_ids: set[str]) -> set[str]:
    """Copy each case's kept pixels to out/images/; the ids of the cases that have them."""
    kept = set()
    for case_id in sorted(case_ids):
        pixels = artifacts.get(case_id, CASE_PIXELS_ARTIFACT)
        if pixels is None:
            continue
        target = out / image_file(case_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_durably(target, pixels)
        kept.add(case_id)
    return kept
