"""The second finding, lung nodule or mass, in the three PDFs: the words and numbers each reader gets, the marks drawn
on the film where the model put them, the measured performance in one sentence, and the one line that says no nodule
model was served. PDFs are read back with pypdf and rasterised with pdftoppm; images are synthetic.

Over HTTP (the end of this file): a real backend serving the tiny pneumonia checkpoint and the fixture nodule
checkpoint (tests/nodule_fixtures.py, random weights): the PDFs, the DICOM SR and the FHIR Bundle of an uploaded DICOM
study say what the case JSON's `nodule` says, and the session's backend without a nodule model says it has none.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from PIL import Image
from pypdf import PdfReader

from reports import REPORT_KINDS, NoduleMark, NoduleReport, ReportCase, ReportInputError, render_report
from reports.nodules import marked_film
from reports.records import MAX_ID_CHARS, MAX_NODULE_MARKS
from reports.samples import sample_case, synthetic_radiograph, to_png
from tests import factories
from tests.conftest import LiveApi, server_env, started_api
from tests.nodule_fixtures import make_nodule_checkpoint
from tests.test_reports import JARGON, assert_pages_not_blank, page_texts, squashed

# The sample's nodule, written out by hand: probability 0.78 against a threshold of 0.42 (not 0.5: a swapped
# threshold must show), two marks in the 640 x 700 film's pixels.
PERFORMANCE = "Finds about 6 of 10 nodules or masses, at about 1 false mark per film (measured on test films)."
MODEL_VERSION = "nodule-resnet18-2026.12.1"
MARK_ONE = (408, 224, 56, 56)  # score 0.83
MARK_TWO = (150, 330, 48, 44)  # score 0.31
NO_MODEL_LINE = "No nodule model is served; this report covers pneumonia only."
AMBER = np.array([255, 196, 0])


@pytest.fixture(scope="module")
def reports() -> dict[str, bytes]:
    return {kind: render_report(kind, sample_case()) for kind in REPORT_KINDS}


def text_of(pdf: bytes) -> str:
    return " ".join(" ".join(page_texts(pdf)).split())


def amber_mask(image: np.ndarray, tolerance: int = 60) -> np.ndarray:
    return np.abs(image[..., :3].astype(int) - AMBER).sum(axis=-1) < tolerance


def embedded_films(pdf: bytes) -> list[np.ndarray]:
    """Every image the PDF embeds, as RGB arrays."""
    images = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for embedded in page.images:
            images.append(np.asarray(Image.open(io.BytesIO(embedded.data)).convert("RGB")))
    return images


def marked_films(pdf: bytes) -> list[np.ndarray]:
    return [image for image in embedded_films(pdf) if amber_mask(image).sum() > 200]


def assert_box_drawn(film: np.ndarray, box: tuple[float, float, float, float], hollow: bool = True) -> None:
    """Amber along the box's four edges and (`hollow`) none in its middle: the nodule stays visible."""
    x, y, w, h = (round(value) for value in box)
    right, bottom = min(x + w, film.shape[1] - 1), min(y + h, film.shape[0] - 1)  # a box at the border is kept in
    amber = amber_mask(film)
    for name, edge in (
        ("top", amber[max(0, y - 1) : y + 2, x + 4 : right - 4]),
        ("bottom", amber[bottom - 1 : bottom + 2, x + 4 : right - 4]),
        ("left", amber[y + 4 : bottom - 4, max(0, x - 1) : x + 2]),
        ("right", amber[y + 4 : bottom - 4, right - 1 : right + 2]),
    ):
        assert edge.any(axis=0 if name in ("top", "bottom") else 1).mean() > 0.9, f"{name} edge of {box} not drawn"
    if hollow:
        assert not amber[y + h // 2 - 3 : y + h // 2 + 3, x + w // 2 - 3 : x + w // 2 + 3].any()


# --- what each reader is told --------------------------------------------------------------------------------------


def test_radiologist_report_gives_label_probability_threshold_model_marks_and_performance(
    reports: dict[str, bytes],
) -> None:
    text = text_of(reports["radiologist"])
    assert "Second finding: lung nodule or mass" in text
    assert "Lung nodule or mass Probability 78% · Decision threshold 0.42 · Model " + MODEL_VERSION in text
    assert "2 locations marked on the film (box and score)." in text
    assert "Measured performance: " + PERFORMANCE in text
    assert "1 408, 224, 56 × 56 0.83" in text
    assert "2 150, 330, 48 × 44 0.31" in text
    assert NO_MODEL_LINE not in text


def test_radiologist_report_draws_each_mark_on_a_copy_of_the_film(reports: dict[str, bytes]) -> None:
    films = marked_films(reports["radiologist"])
    assert len(films) == 1, "one film carries the nodule marks"
    film = films[0]
    assert film.shape[:2] == (700, 640)  # the sample film at its own size: marks land on their pixels
    assert_box_drawn(film, MARK_ONE)
    assert_box_drawn(film, MARK_TWO)
    amber = amber_mask(film)
    assert not amber[500:, :].any() and not amber[:150, :].any()  # nothing drawn away from the marks and labels


def test_marks_in_the_stored_images_pixels_are_scaled_to_the_printed_film() -> None:
    """The stored film is 1280 x 1400; the report prints 640 x 700: every box lands at half its coordinates."""
    film = to_png(synthetic_radiograph((640, 700), opacity=False))
    nodule = NoduleReport(
        label="NODULE",
        probability=0.9,
        threshold=0.3,
        model_version="v",
        marks=(NoduleMark(800, 400, 120, 100, 0.7),),
        image_size=(1280, 1400),
    )
    drawn = np.asarray(marked_film(film, nodule))
    assert_box_drawn(drawn, (400, 200, 60, 50))
    assert not amber_mask(drawn)[300:, :].any()


def test_clinical_report_states_the_finding_in_clinical_words_with_the_marked_film(reports: dict[str, bytes]) -> None:
    pdf = reports["clinical"]
    text = text_of(pdf)
    assert "Findings suggestive of a lung nodule or mass." in text
    assert "AI estimate of a nodule or mass: 78% (reported as present from 42%)." in text
    assert "How well the AI finds them: " + PERFORMANCE in text
    assert "consider chest CT to characterise it" in text
    assert len(marked_films(pdf)) == 1
    first_page = " ".join(page_texts(pdf)[0].split())
    assert "Second finding" in first_page and "Recommendation" in first_page  # both answers come before the history


def test_patient_report_says_it_in_plain_words_without_numbers(reports: dict[str, bytes]) -> None:
    text = text_of(reports["patient"])
    assert "It also found a spot that can be a lung nodule (a small round spot in the lung)." in text
    assert "Many such spots are harmless" in text
    assert "CT scan" in text
    assert "How sure was it about pneumonia?" in text  # the sureness is about the first finding only
    for word in (*JARGON, "0.78", "78", "0.42", "score"):
        assert word.lower() not in text.lower(), word
    assert "NODULE" not in text  # no raw model labels
    assert marked_films(reports["patient"]) == []


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_a_case_without_a_nodule_finding_says_no_nodule_model_was_served(kind: str, tmp_path: Path) -> None:
    pdf = render_report(kind, replace(sample_case(), nodule=None))
    text = text_of(pdf)
    if kind == "patient":
        assert "Your X-ray was not checked for lung nodules; this report is about pneumonia only." in text
        assert len(PdfReader(io.BytesIO(pdf)).pages) == 1  # the usual patient report still fits one page
    else:
        assert NO_MODEL_LINE in text
    for absent in ("Lung nodule or mass", "Measured performance", "CT", MODEL_VERSION):
        assert absent not in text, absent
    assert marked_films(pdf) == []
    assert_pages_not_blank(pdf, tmp_path)


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_a_negative_nodule_finding_is_reported_without_a_marked_film(kind: str) -> None:
    nodule = replace(sample_case().nodule, label="NO_NODULE", probability=0.12, marks=())
    pdf = render_report(kind, replace(sample_case(), nodule=nodule))
    text = text_of(pdf)
    expected = {
        "radiologist": "No lung nodule or mass found Probability 12% · Decision threshold 0.42",
        "clinical": "No lung nodule or mass found by the AI. This does not rule one out",
        "patient": "It also looked for a lung nodule (a small round spot in the lung) and did not find one.",
    }
    assert expected[kind] in text
    assert "characterise it" not in text and "CT scan" not in text
    assert marked_films(pdf) == []


def test_a_model_card_without_an_operating_point_is_said_not_left_out() -> None:
    case = replace(sample_case(), nodule=replace(sample_case().nodule, performance=None))
    missing = "Not stated: the nodule model's card gives no measured sensitivity."
    assert "Measured performance: " + missing in text_of(render_report("radiologist", case))
    assert "How well the AI finds them: " + missing in text_of(render_report("clinical", case))


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_many_marks_and_a_long_model_version_still_lay_out(kind: str, tmp_path: Path) -> None:
    marks = tuple(NoduleMark(20 * i, 30 * i, 25, 25, round(0.9 - 0.04 * i, 2)) for i in range(MAX_NODULE_MARKS))
    nodule = replace(sample_case().nodule, model_version="V" * MAX_ID_CHARS, marks=marks)
    pdf = render_report(kind, replace(sample_case(), nodule=nodule))
    text = squashed("".join(page_texts(pdf)))
    if kind == "radiologist":
        assert "V" * 40 in text and "20380,570,25×250.14" in text  # the last mark's row
    assert_pages_not_blank(pdf, tmp_path)


# --- the record ----------------------------------------------------------------------------------------------------


def test_the_case_json_nodule_object_becomes_the_report_record() -> None:
    data = {
        "label": "NODULE",
        "probability": 0.66,
        "threshold": 0.37,
        "locations": [{"x": 10.0, "y": 20.0, "w": 30.0, "h": 40.0, "score": 0.5}],
        "model_version": "nodule-2",
        "performance": {"sensitivity": 0.6, "false_positives_per_film": 1.0, "summary": PERFORMANCE},
    }
    nodule = NoduleReport.from_dict(data, image_size=(512, 600))
    assert nodule == NoduleReport(
        "NODULE", 0.66, 0.37, "nodule-2", (NoduleMark(10, 20, 30, 40, 0.5),), PERFORMANCE, (512, 600)
    )
    assert nodule.is_positive
    assert NoduleReport.from_dict({**data, "performance": None, "locations": []}).performance is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"probability": 1.7}, "nodule probability must be a number between 0 and 1"),
        ({"threshold": None}, "nodule probability and threshold are required"),
        ({"label": ""}, "nodule label must be a non-empty string"),
        ({"locations": [{"x": 1, "y": 2, "w": 3, "h": 4}]}, "a nodule location lacks 'score'"),
        ({"locations": [{"x": 1, "y": 2, "w": 0, "h": 4, "score": 0.2}]}, "nodule mark w must be greater than 0"),
        ({"locations": [{"x": -5, "y": 2, "w": 3, "h": 4, "score": 0.2}]}, "nodule mark x must be at least 0"),
        ({"locations": "many"}, "nodule locations must be a list"),
    ],
)
def test_a_malformed_nodule_object_is_refused_with_the_field_name(changes: dict, message: str) -> None:
    data = {"label": "NODULE", "probability": 0.6, "threshold": 0.4, "locations": [], "model_version": "v"}
    with pytest.raises(ReportInputError, match=re.escape(message)):
        NoduleReport.from_dict({**data, **changes})


def test_the_case_refuses_a_nodule_that_is_not_a_report_record() -> None:
    with pytest.raises(ReportInputError, match="nodule must be a NoduleReport"):
        replace(sample_case(), nodule={"label": "NODULE"})
    assert isinstance(sample_case(), ReportCase)


# --- over HTTP -----------------------------------------------------------------------------------------------------

FILM_H, FILM_W = 360, 600  # non-square, smaller than the report's 768 px: the printed film keeps the stored pixels
NODULE_THRESHOLD = 0.37
IMAGE_UID = "1.2.826.0.1.3680043.8.498.23230001"
SERIES_UID = "1.2.826.0.1.3680043.8.498.23230002"


@pytest.fixture(scope="module")
def nodule_api(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> Iterator[LiveApi]:
    root = tmp_path_factory.mktemp("nodule-reports")
    make_nodule_checkpoint(root / "nodule.pt", threshold=NODULE_THRESHOLD, version="nodule-reports-1")
    env = {**server_env(root / "var", tiny_checkpoint, None), "NODULE_MODEL_PATH": str(root / "nodule.pt")}
    with started_api(env, "sqlite") as api:
        yield api


def upload_dicom(http: httpx.Client, seed: int = 7) -> dict:
    stored = factories.to_stored(factories.synthetic_radiograph(FILM_H, FILM_W, seed=seed))
    tags = {"SOPInstanceUID": IMAGE_UID, "SeriesInstanceUID": SERIES_UID}
    payload = factories.dicom_bytes(stored, extra_tags=tags)
    answer = http.post("/v1/studies", files={"file": ("film.dcm", payload)}, data={"patient": '{"age": 61}'})
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def served_case(nodule_api: LiveApi) -> Iterator[tuple[httpx.Client, dict]]:
    with nodule_api.client("radiologist") as http:
        case = upload_dicom(http)
        assert case["nodule"]["locations"], "location_threshold 0: the fixture model marks every heatmap peak"
        yield http, case


def download(http: httpx.Client, case: dict, path: str, **params: str) -> bytes:
    answer = http.get(f"/v1/cases/{case['case_id']}/{path}", params=params)
    assert answer.status_code == 200, answer.text
    return answer.content


def percent(probability: float) -> str:
    """How the reports print a probability, written out for the values the fixture model gives."""
    return "<1%" if probability < 0.005 else ">99%" if probability >= 0.995 else f"{probability * 100:.0f}%"


def test_the_pdfs_of_a_served_case_report_its_nodule_finding(served_case: tuple[httpx.Client, dict]) -> None:
    http, case = served_case
    nodule = case["nodule"]
    radiologist = download(http, case, "report", kind="radiologist")
    text = text_of(radiologist)
    positive = nodule["label"] == "NODULE"
    label = "Lung nodule or mass" if positive else "No lung nodule or mass found"
    expected = (
        f"{label} Probability {percent(nodule['probability'])} · Decision threshold 0.37 · Model nodule-reports-1"
    )
    assert expected in text
    assert "Measured performance: " + PERFORMANCE in text
    for number, mark in enumerate(nodule["locations"], start=1):
        box = f"{mark['x']:.0f}, {mark['y']:.0f}, {mark['w']:.0f} × {mark['h']:.0f}"
        assert f"{number} {box} {mark['score']:.2f}" in text
    films = marked_films(radiologist)
    assert len(films) == 1 and films[0].shape[:2] == (FILM_H, FILM_W)
    first = nodule["locations"][0]
    assert_box_drawn(films[0], (first["x"], first["y"], first["w"], first["h"]), hollow=False)
    clinical = text_of(download(http, case, "report", kind="clinical"))
    assert (
        f"AI estimate of a nodule or mass: {percent(nodule['probability'])} (reported as present from 37%)." in clinical
    )
    patient = text_of(download(http, case, "report", kind="patient"))
    assert ("It also found a spot" if positive else "It also looked for a lung nodule") in patient


def test_the_sr_and_fhir_of_a_served_case_carry_its_nodule_marks(
    served_case: tuple[httpx.Client, dict], tmp_path: Path
) -> None:
    http, case = served_case
    nodule = case["nodule"]
    sr = pydicom.dcmread(io.BytesIO(download(http, case, "dicom", kind="sr")))
    container = next(i for i in sr.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "NODULE-RESULT")
    named = {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in container.ContentSequence}
    probability = float(named["Probability of a lung nodule or mass"].MeasuredValueSequence[0].NumericValue)
    assert probability == pytest.approx(nodule["probability"], abs=1e-6)
    assert named["Algorithm Version"].TextValue == "nodule-reports-1"
    scores = [item for item in container.ContentSequence if item.ConceptNameCodeSequence[0].CodeValue == "NODULE-MARK"]
    assert [float(s.MeasuredValueSequence[0].NumericValue) for s in scores] == [m["score"] for m in nodule["locations"]]
    for score, mark in zip(scores, nodule["locations"], strict=True):
        region = score.ContentSequence[0]
        x, y, w, h = (mark[key] for key in ("x", "y", "w", "h"))
        assert list(region.GraphicData) == pytest.approx([x, y, x + w, y, x + w, y + h, x, y + h, x, y], abs=1e-3)
        assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == IMAGE_UID
    bundle = Bundle.model_validate_json(download(http, case, "fhir"))
    by_id = {f"urn:uuid:{entry.resource.id}": entry.resource for entry in bundle.entry}
    report = bundle.entry[0].resource
    observation = by_id[report.result[1].reference]
    assert float(observation.valueQuantity.value) == pytest.approx(nodule["probability"], abs=1e-6)
    marks = [c.valueString for c in observation.component if c.code.coding[0].code == "NODULE-MARK"]
    assert len(marks) == len(nodule["locations"])


def test_a_backend_without_a_nodule_model_says_so_in_every_pdf(sqlite_api: LiveApi) -> None:
    with sqlite_api.client("radiologist") as http:
        case = upload_dicom(http, seed=8)
        assert case["nodule"] is None
        texts = {kind: text_of(download(http, case, "report", kind=kind)) for kind in REPORT_KINDS}
    assert NO_MODEL_LINE in texts["radiologist"] and NO_MODEL_LINE in texts["clinical"]
    assert "Your X-ray was not checked for lung nodules; this report is about pneumonia only." in texts["patient"]
