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
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from active_learning import InvalidAnnotationError, NoNoduleFindingError
from imaging import decode_image, to_pixels_png16
from labelled_data import read_expert_nodule_reads
from storage import CASE_PIXELS_ARTIFACT, ArtifactStore, NewCase, PatientInfo
from tests.active_learning_support import LoopDatabase, open_loop_database
from tests.conftest import DATABASES, LiveApi, server_env, started_api
from tests.factories import png_bytes, synthetic_radiograph, to_stored
from tests.in_process import backend_settings, workstation
from tests.nodule_fixtures import make_nodule_checkpoint

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


@pytest.fixture(params=DATABASES)
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


def test_rejecting_the_candidate_marks_of_a_film_the_model_called_negative_agrees_with_it(db: LoopDatabase) -> None:
    negative = {**MODEL_FINDING, "label": "NO_NODULE", "probability": 0.2}
    case_id = nodule_case(db, negative)
    marks = [verdict(MODEL_MARKS[0], "rejected"), verdict(MODEL_MARKS[1], "rejected")]
    review = db.loop().review_nodules(case_id, "dr-lovelace", "radiologist", finding="NO_NODULE", marks=marks)
    assert review.disagreement == () and not review.queued
    assert db.loop().queue_state(case_id) is None


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


# --- through HTTP: a live backend serving the fixture nodule checkpoint, with real users -----------------------------

NODULE_THRESHOLD = 0.37  # the fixture model gives these synthetic films about 0.51: NODULE
FILM_H, FILM_W = 180, 300  # non-square, so a swapped width and height shows


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Iterator[LiveApi]:
    root = tmp_path_factory.mktemp("nodule-reads")
    make_nodule_checkpoint(root / "nodule.pt", threshold=NODULE_THRESHOLD, version="nodule-reads-1")
    env = {**server_env(root / "var", tiny_checkpoint, None), "NODULE_MODEL_PATH": str(root / "nodule.pt")}
    with started_api(env, "sqlite") as api:
        yield api


@pytest.fixture(scope="module")
def people(live: LiveApi) -> Iterator[dict[str, httpx.Client]]:
    clients = {role: live.client(role) for role in ("radiologist", "annotator", "senior", "admin")}
    yield clients
    for client in clients.values():
        client.close()


def film_case(radiologist: httpx.Client, seed: int) -> dict[str, Any]:
    film = png_bytes(to_stored(synthetic_radiograph(FILM_H, FILM_W, seed=seed)))
    patient = {"name": "Ottoline Vanderpump", "patient_id": f"MRN-NR-{seed}"}
    answer = radiologist.post("/v1/studies", files={"file": ("f.png", film)}, data={"patient": json.dumps(patient)})
    assert answer.status_code == 201, answer.text
    case = answer.json()
    assert case["nodule"]["label"] == "NODULE" and len(case["nodule"]["locations"]) >= 2, case["nodule"]
    return case


def queue_reasons(http: httpx.Client, case_id: str) -> list[tuple[str, str | None]]:
    """(code, requested_by) of each reason the case waits in the queue for; [] when it is not queued."""
    waiting = {item["case_id"]: item for item in http.get("/v1/queue", params={"limit": 500}).json()["items"]}
    return [(r["code"], r["requested_by"]) for r in waiting.get(case_id, {"reasons": []})["reasons"]]


def sent_back(mark: dict[str, Any], word: str) -> dict[str, Any]:
    """A model mark as the UI sends it back: as received (score included), with the reader's verdict."""
    return {**mark, "verdict": word}


def test_a_radiologist_rejects_a_mark_and_adds_one_and_the_case_waits_in_the_queue(
    people: dict[str, httpx.Client],
) -> None:
    radiologist, senior = people["radiologist"], people["senior"]
    case = film_case(radiologist, seed=3)
    case_id, model_marks = case["case_id"], case["nodule"]["locations"]
    before = queue_reasons(senior, case_id)  # the tiny pneumonia model may have queued it as uncertain already
    added = {"x": 200.0, "y": 100.0, "w": 40.0, "h": 30.0, "verdict": "added"}
    marks = [sent_back(model_marks[0], "confirmed"), *(sent_back(m, "rejected") for m in model_marks[1:]), added]
    body = {"marks": marks, "finding": "NODULE", "comment": "Ottoline: the right apex mark is a rib crossing."}
    answer = radiologist.post(f"/v1/cases/{case_id}/nodule-review", json=body)
    assert answer.status_code == 201, answer.text
    review = answer.json()
    assert (review["reviewer"], review["reviewer_role"], review["finding"]) == (
        "test-radiologist",
        "radiologist",
        "NODULE",
    )
    assert [m["verdict"] for m in review["marks"]] == ["confirmed", *["rejected"] * (len(model_marks) - 1), "added"]
    assert [m["score"] for m in review["marks"]] == [*(m["score"] for m in model_marks), None]
    assert review["marks"][-1] | {"score": 0} == {**added, "score": 0}
    assert (review["model_label"], review["model_version"]) == ("NODULE", "nodule-reads-1")
    assert review["model_probability"] == case["nodule"]["probability"]
    assert review["disagreement"] == ["rejected_mark", "added_box"] and review["queued"] is True
    assert review["comment"] == body["comment"]

    listed = radiologist.get(f"/v1/cases/{case_id}/nodule-review")
    assert listed.status_code == 200 and listed.json() == {"case_id": case_id, "reviews": [review]}
    assert queue_reasons(senior, case_id) == [*before, ("nodule_disagreement", "test-radiologist")]

    exported = senior.get("/v1/annotations/export", params={"task": "nodule"})
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    row = next(r for r in csv.DictReader(io.StringIO(exported.text)) if r["file"] == f"images/{case_id}.png")
    first = model_marks[0]
    assert json.loads(row["boxes"]) == [[first["x"], first["y"], first["w"], first["h"]], [200.0, 100.0, 40.0, 30.0]]
    assert (row["label"], row["located"], row["width"], row["height"]) == ("NODULE", "true", "300", "180")
    assert (row["annotators"], row["source"], row["review_id"]) == ("test-radiologist", "nodule_review", review["id"])
    assert "Ottoline" not in exported.text and "MRN-NR-3" not in exported.text
    pneumonia = senior.get("/v1/annotations/export").text
    assert case_id not in pneumonia  # the pneumonia manifest never carries a nodule label

    audit = people["admin"].get("/v1/audit", params={"action": "nodule.review"}).json()["items"]
    entry = next(e for e in audit if e["target_id"] == case_id)
    assert entry["detail"] == {"finding": "NODULE", "disagreement": ["rejected_mark", "added_box"]}


def test_a_second_read_never_overwrites_the_first_and_an_agreeing_one_queues_nothing(
    people: dict[str, httpx.Client],
) -> None:
    radiologist, admin = people["radiologist"], people["admin"]
    case = film_case(radiologist, seed=4)
    case_id, model_marks = case["case_id"], case["nodule"]["locations"]
    rejecting = {"marks": [sent_back(m, "rejected") for m in model_marks], "finding": "NO_NODULE", "comment": "Clear."}
    first = radiologist.post(f"/v1/cases/{case_id}/nodule-review", json=rejecting).json()
    assert first["disagreement"] == ["finding", "rejected_mark"]
    agreeing = {"marks": [sent_back(m, "confirmed") for m in model_marks], "finding": "NODULE"}
    second = admin.post(f"/v1/cases/{case_id}/nodule-review", json=agreeing)
    assert second.status_code == 201, second.text
    assert (second.json()["disagreement"], second.json()["queued"]) == ([], False)
    assert ("nodule_disagreement", "test-admin") not in queue_reasons(admin, case_id)

    listed = radiologist.get(f"/v1/cases/{case_id}/nodule-review").json()["reviews"]
    assert [(r["reviewer"], r["finding"]) for r in listed] == [
        ("test-admin", "NODULE"),
        ("test-radiologist", "NO_NODULE"),
    ]
    assert listed[1] == first  # unchanged, comment and all

    exported = admin.get("/v1/annotations/export", params={"task": "nodule"}).text
    row = next(r for r in csv.DictReader(io.StringIO(exported)) if r["file"] == f"images/{case_id}.png")
    assert (row["label"], row["annotators"]) == ("NODULE", "test-admin")  # the newest read is the label
    assert len(json.loads(row["boxes"])) == len(model_marks)


def test_a_senior_reviews_the_marks_of_a_queued_case_once_their_blind_read_is_in(
    people: dict[str, httpx.Client],
) -> None:
    radiologist, senior = people["radiologist"], people["senior"]
    film_case(radiologist, seed=9)  # uncertain to the tiny pneumonia model: one more case waits in the queue
    claimed = senior.post("/v1/queue/claim")
    assert claimed.status_code == 200, claimed.text
    case_id = claimed.json()["case_id"]
    model_marks = radiologist.get(f"/v1/cases/{case_id}").json()["nodule"]["locations"]
    path = f"/v1/cases/{case_id}/nodule-review"
    rejecting = {"marks": [sent_back(m, "rejected") for m in model_marks], "finding": "NO_NODULE"}
    by_radiologist = radiologist.post(path, json={**rejecting, "comment": "Ottoline: old granuloma."}).json()
    agreeing = {"marks": [sent_back(m, "confirmed") for m in model_marks], "finding": "NODULE"}
    for blind in (senior.get(path), senior.post(path, json=agreeing)):
        assert blind.status_code == 403 and "Blind double reading" in blind.json()["detail"], blind.text

    read = senior.post("/v1/annotations", json={"case_id": case_id, "label": "NORMAL", "confidence": 3})
    assert read.status_code == 201, read.text
    mine = senior.post(path, json=agreeing)
    assert mine.status_code == 201, mine.text
    assert (mine.json()["reviewer"], mine.json()["reviewer_role"]) == ("test-senior", "senior")
    listed = senior.get(path).json()["reviews"]
    assert [r["id"] for r in listed[:2]] == [mine.json()["id"], by_radiologist["id"]]
    assert listed[1]["comment"] is None  # free text may name the patient: only clinical roles read it
    assert radiologist.get(path).json()["reviews"][1]["comment"] == "Ottoline: old granuloma."


def test_annotators_may_not_review_nodule_marks_nor_list_the_reads(people: dict[str, httpx.Client]) -> None:
    case = film_case(people["radiologist"], seed=5)
    path = f"/v1/cases/{case['case_id']}/nodule-review"
    body = {"marks": [sent_back(m, "rejected") for m in case["nodule"]["locations"]], "finding": "NO_NODULE"}
    for answer in (people["annotator"].post(path, json=body), people["annotator"].get(path)):
        assert answer.status_code == 403, answer.text
        assert "Your role (annotator) may not call" in answer.json()["detail"]


def test_a_review_that_does_not_add_up_is_answered_with_what_is_wrong(people: dict[str, httpx.Client]) -> None:
    radiologist = people["radiologist"]
    case = film_case(radiologist, seed=6)
    path, model_marks = f"/v1/cases/{case['case_id']}/nodule-review", case["nodule"]["locations"]
    rejected = [sent_back(m, "rejected") for m in model_marks]
    refused = {
        "outside the image": (
            {"marks": [*rejected, {"x": 280, "y": 10, "w": 40, "h": 20, "verdict": "added"}], "finding": "NODULE"},
            422,
            f"Box {len(rejected) + 1} reaches outside the image (300 x 180 pixels)",
        ),
        "no area": (
            {"marks": [*rejected, {"x": 20, "y": 10, "w": 0, "h": 20, "verdict": "added"}], "finding": "NODULE"},
            422,
            "has no area",
        ),
        "unknown verdict": (
            {"marks": [{**rejected[0], "verdict": "unsure"}, *rejected[1:]], "finding": "NODULE"},
            422,
            "marks.0.verdict: Input should be 'confirmed', 'rejected' or 'added'",
        ),
        "mark without verdict": (
            {"marks": rejected[1:], "finding": "NO_NODULE"},
            422,
            "The model's mark(s) 1 have no verdict",
        ),
        "unknown finding": ({"marks": rejected, "finding": "MAYBE"}, 422, "finding: Input should be 'NODULE' or"),
        "unknown case": ({"marks": [], "finding": "NO_NODULE"}, 404, "No case with id"),
    }
    for what, (body, status, words) in refused.items():
        url = path if what != "unknown case" else "/v1/cases/no-such-case/nodule-review"
        answer = radiologist.post(url, json=body)
        assert (answer.status_code, words in answer.json()["detail"]) == (status, True), (what, answer.text)
    assert radiologist.get(path).json()["reviews"] == []
    assert ("nodule_disagreement", "test-radiologist") not in queue_reasons(people["senior"], case["case_id"])


def test_a_case_analysed_without_a_nodule_model_has_no_marks_to_review(tmp_path: Path, tiny_checkpoint: Path) -> None:
    settings = backend_settings(tmp_path / "var", tiny_checkpoint).model_copy(update={"nodule_model_path": None})
    film = png_bytes(to_stored(synthetic_radiograph(FILM_H, FILM_W, seed=7)))
    with workstation(settings) as admin:
        case = admin.post("/v1/studies", files={"file": ("f.png", film)}).raise_for_status().json()
        answer = admin.post(f"/v1/cases/{case['case_id']}/nodule-review", json={"marks": [], "finding": "NO_NODULE"})
        listed = admin.get(f"/v1/cases/{case['case_id']}/nodule-review")
    assert case["nodule"] is None
    assert answer.status_code == 409 and answer.json()["detail"] == (
        "This case has no nodule finding (no nodule model was served when it was analysed): there are no marks to "
        "review."
    )
    assert listed.json() == {"case_id": case["case_id"], "reviews": []}


def test_the_export_command_writes_the_reads_the_nodule_training_reads_back(
    live: LiveApi, people: dict[str, httpx.Client], tmp_path: Path
) -> None:
    case = film_case(people["radiologist"], seed=8)
    marks = [sent_back(m, "rejected") for m in case["nodule"]["locations"]]
    marks.append({"x": 30.0, "y": 40.0, "w": 50.0, "h": 36.0, "verdict": "added"})
    posted = people["radiologist"].post(
        f"/v1/cases/{case['case_id']}/nodule-review", json={"marks": marks, "finding": "NODULE"}
    )
    assert posted.status_code == 201, posted.text
    done = subprocess.run(
        [sys.executable, "-m", "active_learning", "export", "--out", str(tmp_path / "out")],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, **live.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    written = (tmp_path / "out" / "nodule_manifest.csv").read_text()
    assert written == people["senior"].get("/v1/annotations/export", params={"task": "nodule"}).text
    rows = list(csv.DictReader(io.StringIO(written)))
    assert f"Wrote {len(rows)} nodule review(s)" in done.stdout
    samples = {sample.path.stem: sample for sample in read_expert_nodule_reads(tmp_path / "out")}
    assert set(samples) == {Path(row["file"]).stem for row in rows}
    sample = samples[case["case_id"]]
    assert sample.positive and sample.located and sample.split in ("train", "val")
    assert sample.boxes == ((30.0, 40.0, 50.0, 36.0),)  # a 300 x 180 film is kept at full size: no scaling
    assert decode_image(sample.path.read_bytes()).pixels.shape == (FILM_H, FILM_W)
