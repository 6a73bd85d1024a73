"""Expert reads of nodule marks (issue 23): a clinician confirms or rejects each of the model's marks, adds the boxes
it missed and states the finding; a read that disagrees with the model sends the case to the experts' queue, and
every read is an expert label that the export folder carries and the nodule training reads back.

The first tests drive the learning loop on its own database (a case with a known nodule finding, so every number is
written out by hand); the HTTP tests further down run a live backend with the fixture nodule checkpoint and check
what each person sees.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from active_learning import InvalidAnnotationError, NoNoduleFindingError
from imaging import to_pixels_png16
from labelled_data import read_expert_nodule_reads
from storage import CASE_PIXELS_ARTIFACT, ArtifactStore, NewCase, PatientInfo
from tests.active_learning_support import LoopDatabase, open_loop_database

WIDTH, HEIGHT = 800, 600  # the stored image the boxes are drawn on
MODEL_MARKS = [
    {"x": 100.0, "y": 120.0, "w": 60.0, "h": 40.0, "score": 0.83},
    {"x": 500.0, "y": 300.0, "w": 30.0, "h": 30.0, "score": 0.41},
]
MODEL_FINDING = {
    "label": "NODULE",
    "probability": 0.71,
    "threshold": 0.35,
    "locations": MODEL_MARKS,
    "model_version": "nodule-test-7",
    "performance": None,
}


@pytest.fixture(params=["sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoopDatabase]:
    yield from open_loop_database(request, tmp_path)


def nodule_case(db: LoopDatabase, nodule: dict[str, Any] | None = MODEL_FINDING, patient_id: str = "MRN-N-1") -> str:
    """A stored case of a WIDTH x HEIGHT film whose nodule model said `nodule` (None: no nodule model served)."""
    new = NewCase(
        image_sha256=hashlib.sha256(uuid.uuid4().bytes).hexdigest(),
        image_format="PNG",
        task="pneumonia",
        prediction="NORMAL",
        confidence=0.9,
        probabilities={"NORMAL": 0.9, "PNEUMONIA": 0.1},
        positive_probability=0.1,
        threshold=0.5,
        model_version="pneumonia-v1",
        patient=PatientInfo(patient_id=patient_id, name="Ottoline Vanderpump"),
        study_metadata={"format": "PNG", "width": WIDTH, "height": HEIGHT},
        nodule=nodule,
    )
    return db.cases.create_case(new).id


def verdict(mark: dict[str, float], word: str) -> dict[str, Any]:
    return {"x": mark["x"], "y": mark["y"], "w": mark["w"], "h": mark["h"], "verdict": word}


ADDED_BOX = {"x": 640.0, "y": 80.0, "w": 50.0, "h": 44.0, "verdict": "added"}


def test_a_review_that_rejects_a_mark_and_adds_a_box_is_kept_queued_and_exported_with_its_boxes(
    db: LoopDatabase, tmp_path: Path
) -> None:
    loop = db.loop()
    case_id = nodule_case(db)
    marks = [verdict(MODEL_MARKS[0], "confirmed"), {**verdict(MODEL_MARKS[1], "rejected"), "x": 500.4}, ADDED_BOX]
    review = loop.review_nodules(case_id, "dr-lovelace", "radiologist", finding="NODULE", marks=marks, comment="RUL")
    assert [(m.verdict, m.x, m.score) for m in review.marks] == [
        ("confirmed", 100.0, 0.83),
        ("rejected", 500.0, 0.41),  # the model's own box is kept, not the copy sent back 0.4 px off
        ("added", 640.0, None),
    ]
    assert (review.reviewer, review.reviewer_role, review.comment) == ("dr-lovelace", "radiologist", "RUL")
    assert (review.model_label, review.model_probability, review.model_version) == ("NODULE", 0.71, "nodule-test-7")
    assert review.disagreement == ("rejected_mark", "added_box") and review.queued
    item = loop.queue_item(case_id)
    assert [(r.code.value, r.requested_by) for r in item.reasons] == [("nodule_disagreement", "dr-lovelace")]

    artifacts = ArtifactStore(tmp_path / "artifacts")
    kept = np.linspace(0, 1, 300 * 400, dtype=np.float32).reshape(300, 400)  # the kept copy: half the stored size
    artifacts.put(case_id, CASE_PIXELS_ARTIFACT, to_pixels_png16(kept))
    result = loop.write_export(artifacts, tmp_path / "export")
    assert result.nodule_written == 1 and result.written == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "export" / "nodule_manifest.csv").read_text())))
    assert list(rows[0]) == [
        *("file", "label", "split", "patient_id", "source", "annotators", "boxes", "located", "width", "height"),
        *("model_label", "model_version", "reviewed_at", "review_id"),
    ]
    row = rows[0]
    assert (row["file"], row["label"], row["source"], row["annotators"]) == (
        f"images/{case_id}.png",
        "NODULE",
        "nodule_review",
        "dr-lovelace",
    )
    assert json.loads(row["boxes"]) == [[100.0, 120.0, 60.0, 40.0], [640.0, 80.0, 50.0, 44.0]]
    assert (row["located"], row["width"], row["height"], row["split"]) == ("true", "800", "600", review.split)
    assert "Vanderpump" not in rows[0].values() and "MRN-N-1" not in row["patient_id"]
    assert (tmp_path / "export" / "manifest.csv").read_text().strip() == (
        "file,label,split,patient_id,source,annotators"
    )  # the pneumonia manifest never carries a nodule label

    [sample] = read_expert_nodule_reads(tmp_path / "export")
    assert sample.path == tmp_path / "export" / "images" / f"{case_id}.png"
    assert sample.positive and sample.located and sample.source == "expert-reads"
    assert sample.boxes == ((50.0, 60.0, 30.0, 20.0), (320.0, 40.0, 25.0, 22.0))  # in the kept PNG's pixels


def test_a_review_that_agrees_with_the_model_is_an_expert_label_but_queues_nothing(db: LoopDatabase) -> None:
    loop = db.loop()
    case_id = nodule_case(db)
    marks = [verdict(MODEL_MARKS[0], "confirmed"), verdict(MODEL_MARKS[1], "confirmed")]
    review = loop.review_nodules(case_id, "dr-curie", "senior", finding="NODULE", marks=marks)
    assert review.disagreement == () and not review.queued
    assert loop.queue_state(case_id) is None
    [row] = csv.DictReader(io.StringIO(loop.nodule_export_csv()))
    assert json.loads(row["boxes"]) == [[100.0, 120.0, 60.0, 40.0], [500.0, 300.0, 30.0, 30.0]]


def test_reviews_are_never_overwritten_and_the_newest_one_is_the_label(db: LoopDatabase) -> None:
    loop = db.loop()
    case_id = nodule_case(db)
    first = loop.review_nodules(
        case_id, "dr-a", "radiologist", finding="NODULE", marks=[verdict(m, "confirmed") for m in MODEL_MARKS]
    )
    second = loop.review_nodules(
        case_id, "dr-b", "senior", finding="NO_NODULE", marks=[verdict(m, "rejected") for m in MODEL_MARKS]
    )
    assert [r.id for r in loop.nodule_reviews(case_id)] == [second.id, first.id]  # newest first, the first kept
    assert second.disagreement == ("finding", "rejected_mark") and second.split == first.split
    [row] = csv.DictReader(io.StringIO(loop.nodule_export_csv()))
    assert (row["review_id"], row["label"], row["boxes"], row["located"]) == (second.id, "NO_NODULE", "[]", "true")
    reasons = loop.queue_item(case_id).reasons
    assert [(r.code.value, r.requested_by) for r in reasons] == [("nodule_disagreement", "dr-b")]


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    (
        "a model mark left without a verdict",
        {"finding": "NODULE", "marks": [verdict(MODEL_MARKS[0], "confirmed")]},
        "The model's mark(s) 2 have no verdict",
    ),
    (
        "an unknown verdict",
        {"finding": "NODULE", "marks": [verdict(MODEL_MARKS[0], "maybe"), verdict(MODEL_MARKS[1], "rejected")]},
        "verdict 'maybe' is not one of confirmed, rejected, added",
    ),
    (
        "a box past the right edge",
        {
            "finding": "NODULE",
            "marks": [*(verdict(m, "rejected") for m in MODEL_MARKS), {**ADDED_BOX, "x": 760.0}],
        },
        "Box 3 reaches outside the image (800 x 600 pixels)",
    ),
    (
        "a box without area",
        {"finding": "NODULE", "marks": [*(verdict(m, "rejected") for m in MODEL_MARKS), {**ADDED_BOX, "h": 0}]},
        "Box 3 has no area",
    ),
    (
        "a confirmed mark the model never made",
        {"finding": "NODULE", "marks": [{**verdict(MODEL_MARKS[0], "confirmed"), "x": 300.0}]},
        "Mark 1 is not one of the model's marks",
    ),
    (
        "one model mark judged twice",
        {
            "finding": "NODULE",
            "marks": [verdict(MODEL_MARKS[0], "confirmed"), verdict(MODEL_MARKS[0], "rejected")],
        },
        "Marks 1 and 2 both answer the model's mark 1",
    ),
    (
        "no nodule, yet a confirmed mark",
        {"finding": "NO_NODULE", "marks": [verdict(MODEL_MARKS[0], "confirmed"), verdict(MODEL_MARKS[1], "rejected")]},
        "A review that finds no nodule cannot confirm or add a mark",
    ),
    (
        "an unknown finding",
        {"finding": "MASS", "marks": [verdict(m, "rejected") for m in MODEL_MARKS]},
        "Finding 'MASS' is not one of NODULE, NO_NODULE",
    ),
    (
        "too many marks",
        {"finding": "NODULE", "marks": [ADDED_BOX] * 21},
        "at most 20 marks; this one has 21",
    ),
]


@pytest.mark.parametrize(("what", "body", "message"), REFUSED, ids=[case[0] for case in REFUSED])
def test_a_review_that_does_not_add_up_is_refused_with_the_reason(
    db: LoopDatabase, what: str, body: dict[str, Any], message: str
) -> None:
    loop = db.loop()
    case_id = nodule_case(db)
    with pytest.raises(InvalidAnnotationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        loop.review_nodules(case_id, "dr-a", "radiologist", **body)
    assert loop.nodule_reviews(case_id) == [] and loop.queue_state(case_id) is None


def test_a_case_without_a_nodule_finding_has_nothing_to_review(db: LoopDatabase) -> None:
    loop = db.loop()
    case_id = nodule_case(db, nodule=None)
    with pytest.raises(NoNoduleFindingError, match="no nodule finding"):
        loop.review_nodules(case_id, "dr-a", "radiologist", finding="NO_NODULE", marks=[])
    assert loop.nodule_reviews(case_id) == []


def test_a_patient_keeps_one_split_across_their_films(db: LoopDatabase) -> None:
    loop = db.loop(expert_holdout_fraction=0.5)
    splits = set()
    for _ in range(3):
        case_id = nodule_case(db, patient_id="MRN-SAME")
        marks = [verdict(m, "confirmed") for m in MODEL_MARKS]
        splits.add(loop.review_nodules(case_id, "dr-a", "radiologist", finding="NODULE", marks=marks).split)
    assert len(splits) == 1
