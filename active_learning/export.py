"""Final expert labels as a training manifest that `mlops.train` (labelled_data's `read_manifest`) reads.

Columns: file, label, split, patient_id, source, annotators. `file` is images/<case_id>.png (the case's kept pixels,
a 16-bit PNG: storage's CASE_PIXELS_ARTIFACT), `split` is train or val (the held-back share), `patient_id` the
case's pseudonym (a keyed hash of the patient id, or the case id): the identity of the patient never leaves.
Annotators are separated by ";".
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from active_learning.records import FinalLabel
from storage import CASE_PIXELS_ARTIFACT, ArtifactStore, write_durably

MANIFEST_COLUMNS = ("file", "label", "split", "patient_id", "source", "annotators")
MANIFEST_NAME = "manifest.csv"


@dataclass(frozen=True)
class ExportResult:
    out: Path
    written: int  # labelled images in the manifest
    missing_pixels: tuple[str, ...]  # case ids left out: no kept pixels (cases stored before pixels were kept)


def image_file(case_id: str) -> str:
    return f"images/{case_id}.png"


def manifest_csv(labels: Sequence[FinalLabel]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for final in labels:
        row = (image_file(final.case_id), final.label, final.split, final.patient_key, final.source)
        writer.writerow((*row, ";".join(final.annotators)))
    return buffer.getvalue()


def write_export(labels: Sequence[FinalLabel], artifacts: ArtifactStore, out: Path) -> ExportResult:
    """Write out/manifest.csv and out/images/<case_id>.png for every label whose case has kept pixels."""
    written, missing = [], []
    for final in labels:
        pixels = artifacts.get(final.case_id, CASE_PIXELS_ARTIFACT)
        if pixels is None:
            missing.append(final.case_id)
            continue
        target = out / image_file(final.case_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_durably(target, pixels)
        written.append(final)
    out.mkdir(parents=True, exist_ok=True)
    write_durably(out / MANIFEST_NAME, manifest_csv(written).encode("utf-8"))
    return ExportResult(out=out, written=len(written), missing_pixels=tuple(missing))
