"""The second finding, lung nodule or mass, in the three PDFs: the words and numbers each reader gets, the marks drawn
on the film where the model put them, the measured performance in one sentence, and the one line that says no nodule
model was served. PDFs are read back with pypdf and rasterised with pdftoppm; images are synthetic."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from reports import REPORT_KINDS, NoduleMark, NoduleReport, ReportCase, ReportInputError, render_report
from reports.nodules import marked_film
from reports.records import MAX_ID_CHARS, MAX_NODULE_MARKS
from reports.samples import sample_case, synthetic_radiograph, to_png
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


def assert_box_drawn(film: np.ndarray, box: tuple[float, float, float, float]) -> None:
    """Amber along the box's four edges, none in its middle (the nodule stays visible)."""
    x, y, w, h = (round(value) for value in box)
    amber = amber_mask(film)
    for name, edge in (
        ("top", amber[y - 1 : y + 2, x + 4 : x + w - 4]),
        ("bottom", amber[y + h - 1 : y + h + 2, x + 4 : x + w - 4]),
        ("left", amber[y + 4 : y + h - 4, x - 1 : x + 2]),
        ("right", amber[y + 4 : y + h - 4, x + w - 1 : x + w + 2]),
    ):
        assert edge.any(axis=0 if name in ("top", "bottom") else 1).mean() > 0.9, f"{name} edge of {box} not drawn"
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
