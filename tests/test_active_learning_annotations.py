"""Expert reads on real SQLite files and PostgreSQL schemas: double reading blind, agreement and adjudication,
corrections that keep history, the held-back split, statistics (kappa against a hand-computed example), the
model's accuracy per version, and the export that labelled_data reads."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text

from active_learning import (
    MANIFEST_COLUMNS,
    AlreadyReadError,
    AnnotationSupersededError,
    CaseAlreadyFinalError,
    InvalidAnnotationError,
    LearningLoop,
    NotReadyForAdjudicationError,
    NotYourAnnotationError,
    ReviewReason,
    cohen_kappa,
)
from active_learning.annotations import holdout_split
from imaging import decode_image, encode_pixels_png16, from_pixels_png16
from labelled_data import load_samples
from settings import PROJECT_ROOT
from storage import CASE_PIXELS_ARTIFACT, ArtifactStore
from tests.active_learning_support import (
    PATIENT_NAME,
    Clock,
    LoopDatabase,
    make_case,
    open_loop_database,
    queued_cases,
)
from tests.conftest import DATABASES
from tests.factories import synthetic_radiograph

P, N = "PNEUMONIA", "NORMAL"


@pytest.fixture(params=DATABASES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LoopDatabase]:
    yield from open_loop_database(request, tmp_path)


def read(loop: LearningLoop, annotator: str, label: str, *, clock: Clock | None = None, seconds: float = 0) -> str:
    """Claim the next case as `annotator`, spend `seconds` on it, and read it as `label`; the case id."""
    claim = loop.claim_next(annotator)
    assert claim is not None, f"nothing left for {annotator}"
    if clock is not None:
        clock.advance(seconds)
    loop.submit(annotator, claim.case_id, label=label, confidence=4)
    return claim.case_id


def patient_key(db: LoopDatabase, case_id: str) -> str:
    with db.database.engine.connect() as connection:
        query = text("SELECT patient_id_hash FROM cases WHERE id = :id")
        return str(connection.execute(query, {"id": case_id}).scalar_one())


# --- double reading ---------------------------------------------------------------------------------------------------


def test_two_agreeing_reads_make_the_final_label(db: LoopDatabase) -> None:
    loop = db.loop()
    (case_id,) = queued_cases(db, loop, 1)
    read(loop, "ann", P)
    assert loop.queue_state(case_id) == "open" and loop.final_label(case_id) is None
    assert loop.claim_next("ann") is None  # never the same case twice for one annotator
    read(loop, "bea", P)

    final = loop.final_label(case_id)
    assert final is not None
    assert (final.label, final.source, final.annotators, final.adjudicator) == (P, "agreement", ("ann", "bea"), None)
    assert final.patient_key == patient_key(db, case_id)  # the keyed hash of the patient id, never the id
    assert final.split in ("train", "val") and (final.model_version, final.prediction) == ("pneumonia-v1", P)
    assert loop.queue_state(case_id) == "final"
    assert loop.claim_next("cid") is None  # a final case is not read again
    with pytest.raises(CaseAlreadyFinalError):
        loop.adjudicate(case_id, "sen", label=N)


def test_reading_is_blind_until_the_reads_are_in(db: LoopDatabase) -> None:
    loop = db.loop()
    (case_id,) = queued_cases(db, loop, 1)
    read(loop, "ann", P)
    assert [r.annotator for r in loop.annotations_for(case_id, viewer_id="ann")] == ["ann"]
    assert loop.annotations_for(case_id, viewer_id="bea") == []  # bea is about to read it: she sees nothing
    assert loop.annotations_for(case_id, viewer_id="sen") == []  # nor anyone else who might claim it

    read(loop, "bea", N)  # disagreement: the case awaits adjudication
    assert loop.queue_state(case_id) == "adjudication"
    assert [r.annotator for r in loop.annotations_for(case_id, viewer_id="ann")] == ["ann"]  # readers: until final
    assert [(r.annotator, r.label) for r in loop.annotations_for(case_id, viewer_id="sen")] == [("ann", P), ("bea", N)]

    loop.adjudicate(case_id, "sen", label=P, comment="Retrocardiac opacity on the lateral view.")
    seen = [(r.annotator, r.kind, r.label) for r in loop.annotations_for(case_id, viewer_id="bea")]
    assert seen == [("ann", "read", P), ("bea", "read", N), ("sen", "adjudication", P)]
    assert len(loop.annotations_for(case_id, viewer_id=None)) == 3


def test_disagreement_is_settled_by_a_third_expert(db: LoopDatabase) -> None:
    loop = db.loop()
    (case_id,) = queued_cases(db, loop, 1)
    read(loop, "ann", P)
    with pytest.raises(NotReadyForAdjudicationError, match="1 of 2 reads"):
        loop.adjudicate(case_id, "sen", label=P)
    read(loop, "bea", N)
    with pytest.raises(AlreadyReadError, match="a third expert"):
        loop.adjudicate(case_id, "bea", label=N)
    with pytest.raises(InvalidAnnotationError, match="not one of this case's labels"):
        loop.adjudicate(case_id, "sen", label="FRACTURE")

    final = loop.adjudicate(case_id, "sen", label=N)
    assert (final.label, final.source, final.annotators, final.adjudicator) == (
        N,
        "adjudication",
        ("ann", "bea", "sen"),
        "sen",
    )
    with pytest.raises(CaseAlreadyFinalError, match="final label already"):
        loop.adjudicate(case_id, "boss", label=P)
    assert loop.claim_next("cid") is None


def test_a_correction_supersedes_and_keeps_the_old_read(db: LoopDatabase) -> None:
    loop = db.loop()
    (case_id,) = queued_cases(db, loop, 1)
    read(loop, "ann", N)
    (first,) = loop.annotations_for(case_id, viewer_id="ann")
    with pytest.raises(NotYourAnnotationError):
        loop.correct(first.id, "bea", label=P, confidence=3)
    second = loop.correct(first.id, "ann", label=P, confidence=5, comment="Missed the left lower lobe.")
    assert second.supersedes == first.id
    with pytest.raises(AnnotationSupersededError, match="latest version"):
        loop.correct(first.id, "ann", label=N, confidence=2)

    history = loop.annotations_for(case_id, viewer_id="ann")
    assert [(r.label, r.superseded, r.supersedes) for r in history] == [(N, True, None), (P, False, first.id)]
    assert history[0].seconds is not None and history[1].seconds is None  # time is counted on the read itself
    assert loop.queue_item(case_id).reads == 1  # a corrected read is still one read
    read(loop, "bea", P)  # agrees with the corrected read, not with the old one
    final = loop.final_label(case_id)
    assert final is not None and (final.label, final.source) == (P, "agreement")
    overall = loop.stats().overall  # statistics count the corrected read, once
    assert (overall.reads, overall.agreement_rate) == (2, 1.0)
    with db.database.engine.connect() as connection:
        rows = connection.execute(text("SELECT label, comment FROM annotations ORDER BY created_at")).all()
    assert len(rows) == 3  # nothing was overwritten
    assert all(row.comment is None or "left lower lobe" not in row.comment for row in rows)  # encrypted at rest
    with pytest.raises(CaseAlreadyFinalError):
        loop.correct(second.id, "ann", label=N, confidence=4)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"label": "FRACTURE"},
            "Label 'FRACTURE' is not one of this case's labels: NORMAL, PNEUMONIA, OTHER, UNGRADABLE",
        ),
        ({"label": "pneumonia"}, "is not one of this case's labels"),
        ({"confidence": 0}, "Confidence must be a whole number from 1"),
        ({"confidence": 6}, "Confidence must be a whole number from 1"),
        ({"confidence": 3.5}, "Confidence must be a whole number from 1"),
        ({"confidence": True}, "Confidence must be a whole number from 1"),
        ({"comment": "x" * 2001}, "The comment is longer than 2000 characters"),
        ({"boxes": [{"x": -1, "y": 0, "w": 5, "h": 5}]}, "Box 1 starts outside the image"),
        ({"boxes": [{"x": 1, "y": 1, "w": 5, "h": 5}, {"x": 1, "y": 1, "w": 0, "h": 5}]}, "Box 2 has no area"),
        ({"boxes": [{"x": 1, "y": 1, "w": 5}]}, "Box 1 must have exactly the fields x, y, w and h"),
        ({"boxes": [{"x": float("nan"), "y": 1, "w": 5, "h": 5}]}, "must be finite numbers"),
        ({"boxes": [{"x": 1, "y": 1, "w": 5, "h": 5}] * 21}, "at most 20 boxes; this one has 21"),
        ({"boxes": "everywhere"}, "Boxes must be a list"),
    ],
)
def test_bad_reads_are_refused_with_a_clear_message(db: LoopDatabase, fields: dict, message: str) -> None:
    loop = db.loop()
    (case_id,) = queued_cases(db, loop, 1)
    assert loop.claim_next("ann") is not None
    with pytest.raises(InvalidAnnotationError, match=message.replace("(", r"\(")):
        loop.submit("ann", case_id, **{"label": P, "confidence": 4, **fields})
    boxes = [{"x": 10, "y": 20.5, "w": 30, "h": 40}]  # the claim is still good for a valid read
    done = loop.submit("ann", case_id, label="UNGRADABLE", confidence=1, boxes=boxes)
    assert done.boxes == ({"x": 10.0, "y": 20.5, "w": 30.0, "h": 40.0},) and done.label == "UNGRADABLE"


# --- the held-back split ----------------------------------------------------------------------------------------------


def test_the_held_back_split_goes_by_patient_and_never_changes(db: LoopDatabase) -> None:
    clock = Clock(tick=0.001)
    loop = db.loop(clock, expert_holdout_fraction=0.5)
    first = make_case(db.cases, patient_id="MRN-SAME").id
    loop.enqueue(first, ReviewReason.UNCERTAIN)
    read(loop, "ann", P), read(loop, "bea", P)
    final = loop.final_label(first)
    assert final is not None and final.split == holdout_split(final.patient_key, 0.5)

    # A fraction under which this patient would fall on the other side: earlier labels keep their split anyway,
    # and the patient's next case joins them.
    other = next(f / 100 for f in range(1, 100) if holdout_split(final.patient_key, f / 100) != final.split)
    later = db.loop(clock, expert_holdout_fraction=other)
    second = make_case(db.cases, patient_id="MRN-SAME").id
    later.enqueue(second, ReviewReason.MANUAL)
    read(later, "ann", N), read(later, "bea", N)
    assert [f.split for f in later.final_labels()] == [final.split, final.split]
    assert {f.patient_key for f in later.final_labels()} == {final.patient_key}
    assert later.final_labels(split=final.split)[1].case_id == second


def test_the_split_holds_back_about_the_configured_share_of_patients() -> None:
    held = sum(holdout_split(f"patient-{n}", 0.3) == "val" for n in range(2000))
    assert 540 <= held <= 660  # 30 % of 2000, within about 3 standard deviations
    assert holdout_split("patient-7", 0.3) == holdout_split("patient-7", 0.3)


# --- statistics -------------------------------------------------------------------------------------------------------


def test_cohen_kappa_matches_a_hand_computed_example() -> None:
    # Reader A against reader B on 10 cases:      B: P   B: N
    #                                     A: P      4      1
    #                                     A: N      2      3
    # p_o = (4 + 3) / 10 = 0.7; A says P 5 times, B 6 times: p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5;
    # kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
    pairs = [(P, P)] * 4 + [(P, N)] + [(N, P)] * 2 + [(N, N)] * 3
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    assert cohen_kappa([(P, P), (P, P)]) is None  # one label for everything: chance explains it all
    assert cohen_kappa([]) is None
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert cohen_kappa(pairs) == pytest.approx(sklearn_metrics.cohen_kappa_score(*zip(*pairs, strict=True)))


# The 10 cases of the example above, read by A then B; the three disagreements adjudicated; and the model's answer.
#        A  B  adjudicated  model  version
PLAN = [
    (P, P, None, P, "v1"),
    (P, P, None, P, "v1"),
    (P, P, None, N, "v1"),
    (P, P, None, P, "v2"),
    (P, N, P, P, "v2"),
    (N, P, P, N, "v2"),
    (N, P, N, N, "v1"),
    (N, N, None, N, "v1"),
    (N, N, None, P, "v1"),
    (N, N, None, N, "v2"),
]


def test_statistics_per_annotator_overall_and_per_model_version(db: LoopDatabase) -> None:
    clock = Clock()
    loop = db.loop(clock)
    plan = {}
    for a, b, adjudicated, model, version in PLAN:
        case = make_case(db.cases, pneumonia=0.8 if model == P else 0.3, model_version=version)
        loop.enqueue(case.id, ReviewReason.UNCERTAIN)
        plan[case.id] = (a, b, adjudicated)
    for _ in PLAN:  # A takes 30 s per read
        claim = loop.claim_next("A")
        assert claim is not None
        clock.advance(30)
        loop.submit("A", claim.case_id, label=plan[claim.case_id][0], confidence=4)
    for number in range(len(PLAN)):  # B takes 50 s, and 150 s once
        claim = loop.claim_next("B")
        assert claim is not None
        clock.advance(150 if number == 0 else 50)
        loop.submit("B", claim.case_id, label=plan[claim.case_id][1], confidence=3)
    for case_id, (_, _, adjudicated) in plan.items():
        if adjudicated:
            loop.adjudicate(case_id, "S", label=adjudicated)

    stats = loop.stats()
    overall = stats.overall
    assert (overall.reads, overall.final_labels, overall.double_read_cases) == (20, 10, 10)
    assert overall.agreement_rate == pytest.approx(0.7)
    assert overall.kappa_between_readers == pytest.approx(0.4)  # the hand-computed example
    a, b = stats.annotators
    assert (a.annotator, a.reads, a.mean_seconds, a.median_seconds) == ("A", 10, 30.0, 30.0)
    assert (b.annotator, b.reads, b.mean_seconds, b.median_seconds) == ("B", 10, 60.0, 50.0)
    assert a.agreement_rate == pytest.approx(0.7) and b.agreement_rate == pytest.approx(0.7)
    # A against the final labels: 9 of 10 agree, A says P 5 times, the finals 6 times:
    # p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5, kappa = (0.9 - 0.5) / 0.5 = 0.8.
    assert a.kappa_vs_final == pytest.approx(0.8)
    # B: 8 of 10 agree, B says P 6 times: p_e = 0.6 * 0.6 + 0.4 * 0.4 = 0.52, kappa = (0.8 - 0.52) / 0.48.
    assert b.kappa_vs_final == pytest.approx(0.28 / 0.48)

    v1, v2 = stats.models
    # v1: finals P P P N N N against the model's P P N N P N: TP 2, FN 1, TN 2, FP 1.
    assert (v1.model_version, v1.positive_class, v1.n, v1.excluded) == ("v1", P, 6, 0)
    assert (v1.accuracy, v1.sensitivity, v1.specificity) == pytest.approx((4 / 6, 2 / 3, 2 / 3))
    # v2: finals P P P N against the model's P P N N: TP 2, FN 1, TN 1, FP 0.
    assert (v2.model_version, v2.n, v2.accuracy, v2.sensitivity, v2.specificity) == pytest.approx(
        ("v2", 4, 0.75, 2 / 3, 1.0)
    )
    mine = loop.stats(annotator_id="B")
    assert [row.annotator for row in mine.annotators] == ["B"] and mine.overall == overall
    assert stats.to_dict()["overall"]["kappa_between_readers"] == pytest.approx(0.4)


def test_ungradable_finals_are_left_out_of_the_model_figures(db: LoopDatabase) -> None:
    loop = db.loop()
    queued_cases(db, loop, 1, pneumonia=0.9)
    read(loop, "ann", "UNGRADABLE"), read(loop, "bea", "UNGRADABLE")
    queued_cases(db, loop, 1, pneumonia=0.9)
    read(loop, "ann", N), read(loop, "bea", N)
    (version,) = loop.stats().models
    assert (version.n, version.excluded, version.accuracy, version.sensitivity, version.specificity) == (
        1,
        1,
        0.0,
        None,
        0.0,
    )
    assert loop.expert_feedback(10) == [(P, N)]  # (the model's answer, the experts'), OTHER/UNGRADABLE left out
    assert loop.count_final_labels() == 2


# --- export -----------------------------------------------------------------------------------------------------------


def labelled_cases(db: LoopDatabase, artifacts: ArtifactStore) -> tuple[LearningLoop, dict[str, np.ndarray]]:
    """Three final labels, ann reading before bea; the first two cases have kept pixels, the third was stored before
    pixels were kept."""
    clock = Clock()
    loop = db.loop(clock)
    pixels = {}
    for number, label in enumerate((P, N, P)):
        case_id = queued_cases(db, loop, 1)[0]
        if number < 2:
            png, kept = encode_pixels_png16(synthetic_radiograph(seed=number), 1024)
            artifacts.put(case_id, CASE_PIXELS_ARTIFACT, png)
            pixels[case_id] = kept
        read(loop, "ann", label, clock=clock, seconds=20), read(loop, "bea", label, clock=clock, seconds=20)
    return loop, pixels


def test_export_writes_a_manifest_that_labelled_data_reads(db: LoopDatabase, tmp_path: Path) -> None:
    artifacts = ArtifactStore(tmp_path / "artifacts")
    loop, pixels = labelled_cases(db, artifacts)
    finals = {final.case_id: final for final in loop.final_labels()}

    manifest = list(csv.DictReader(io.StringIO(loop.export_csv())))
    assert tuple(manifest[0]) == MANIFEST_COLUMNS == ("file", "label", "split", "patient_id", "source", "annotators")
    assert [row["file"] for row in manifest] == [f"images/{case_id}.png" for case_id in finals]
    assert {row["annotators"] for row in manifest} == {"ann;bea"}

    out = tmp_path / "export"
    result = loop.write_export(artifacts, out)
    assert result.written == 2 and result.missing_pixels == tuple(set(finals) - set(pixels))
    samples = load_samples(out)
    assert sorted((s.path.name, s.label, s.split, s.patient_id) for s in samples) == sorted(
        (f"{case_id}.png", finals[case_id].label, finals[case_id].split, finals[case_id].patient_key)
        for case_id in pixels
    )
    for sample in samples:  # the kept pixels themselves, in a file the training's decoder opens
        data = sample.path.read_bytes()
        assert np.array_equal(from_pixels_png16(data), pixels[sample.path.stem])
        assert decode_image(data).pixels.shape == pixels[sample.path.stem].shape
    written = (out / "manifest.csv").read_text()
    for case_id in finals:
        patient = db.cases.get_case(case_id).patient
        assert patient.patient_id not in written and PATIENT_NAME not in written  # pseudonyms only


def test_export_command_line(db: LoopDatabase, tmp_path: Path) -> None:
    var = tmp_path / "var"
    labelled_cases(db, ArtifactStore(var / "artifacts"))
    env = {**os.environ, "DATABASE_URL": db.url, "VAR_DIR": str(var), "PHI_ENCRYPTION_KEY": db.key}
    done = subprocess.run(
        [sys.executable, "-m", "active_learning", "export", "--out", str(tmp_path / "out")],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Wrote 2 expert-labelled image(s)" in done.stdout
    assert "Left out 1 case(s) whose pixels were never kept" in done.stderr
    assert len(load_samples(tmp_path / "out")) == 2
