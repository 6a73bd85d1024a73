"""reports/: the three PDFs for full, minimal, multilingual, very long and signed cases, read back with pypdf and
rasterised with pdftoppm (poppler-utils) to check that no page is blank. Images are synthetic, never dataset files."""

from __future__ import annotations

import io
import logging
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from reports import (
    DISCLAIMER,
    REPORT_KINDS,
    ModelCard,
    PatientDetails,
    ReportCase,
    ReportContext,
    ReportInputError,
    SimilarCase,
    UnknownReportKindError,
    render_clinical_report,
    render_patient_report,
    render_radiologist_report,
    render_report,
    report_filename,
)
from reports.layout import decode_picture
from reports.records import MAX_ID_CHARS, MAX_NAME_CHARS, MAX_NOTE_CHARS, MAX_QUALITY_WARNINGS
from reports.samples import sample_case, synthetic_radiograph, to_png
from reports.typography import CJK, font_chain
from tests.conftest import missing

SIGNED_AT = datetime(2026, 3, 15, 9, 0, tzinfo=UTC)
MULTILINGUAL_NAME = "Zoë Müller-Straße Ελληνικά Кириллица 中文 日本語 한국어"
# Words a patient should not have to decode.
JARGON = ("Grad-CAM", "probabilit", "entropy", "calibrat", "threshold", "AUROC", "distribution", "confidence", "%")


# --- helpers ------------------------------------------------------------------------------------------------------


def page_texts(pdf: bytes) -> list[str]:
    assert pdf.startswith(b"%PDF-")
    return [page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages]


def squashed(text: str) -> str:
    """Text without any whitespace: extraction may break lines or insert spaces where the font changes."""
    return re.sub(r"\s+", "", text)


def require_pdftoppm() -> str:
    path = shutil.which("pdftoppm")
    if path is None:
        missing("pdftoppm is absent (apt-get install poppler-utils; scripts/ensure_system_packages.sh does it)")
    return path


def rasterise(pdf: bytes, folder: Path, dpi: int = 40) -> list[np.ndarray]:
    """Every page as a greyscale array, rendered by poppler (an independent PDF reader)."""
    source = folder / "report.pdf"
    source.write_bytes(pdf)
    subprocess.run([require_pdftoppm(), "-r", str(dpi), "-gray", "-png", str(source), str(folder / "page")], check=True)
    pages = sorted(folder.glob("page-*.png"), key=lambda path: int(path.stem.split("-")[-1]))
    return [np.asarray(Image.open(path).convert("L")) for path in pages]


def assert_pages_not_blank(pdf: bytes, folder: Path) -> None:
    """Each page has ink in its body (between header and footer), not only in the running header and footer."""
    pages = rasterise(pdf, folder)
    assert len(pages) == len(PdfReader(io.BytesIO(pdf)).pages)
    for number, page in enumerate(pages, start=1):
        height = page.shape[0]
        body = page[int(height * 0.11) : int(height * 0.9)]
        assert (body < 200).sum() > 5, f"page {number} has an empty body"


def minimal_case() -> ReportCase:
    """Only what a report cannot do without: no patient, study, uncertainty, heatmap, similar cases or signature."""
    return ReportCase(
        report_id="RPT-MIN-1",
        case_id="c-min",
        created_at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
        finding="NORMAL",
        positive_class="PNEUMONIA",
        probabilities={"NORMAL": 0.8, "PNEUMONIA": 0.2},
        confidence=0.8,
        model=ModelCard(version="v-min"),
        image_png=to_png(synthetic_radiograph((320, 350), seed=3, opacity=False)),
    )


def multilingual_case() -> ReportCase:
    case = sample_case()
    history = (
        "Fièvre depuis 3 jours, toux. Βήχας και πυρετός. Кашель, температура 39 °C. "
        "发热三天，咳嗽，右下肺湿性音。" * 8 + "三日前から発熱、咳嗽あり。 사흘 전부터 발열과 기침이 있음."
    )
    patient = PatientDetails(
        patient_id="ID-ß-01", name=MULTILINGUAL_NAME, age="6 months", sex="M", clinical_history=history
    )
    return replace(case, patient=patient, signed_by="Δρ. Νίκος Παπαδόπουλος 金城武", signed_at=SIGNED_AT)


@pytest.fixture(scope="module")
def full_reports() -> dict[str, bytes]:
    case = sample_case()
    return {
        kind: render_report(kind, case, ReportContext(institution_name="St. Example Hospital")) for kind in REPORT_KINDS
    }


# --- content ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_full_case_carries_the_required_content(kind: str, full_reports: dict[str, bytes], tmp_path: Path) -> None:
    pdf = full_reports[kind]
    pages = page_texts(pdf)
    text = "\n".join(pages)
    assert "Jane Doe" in text
    assert "St. Example Hospital" in text
    assert "RPT-2026-000123" in text and "2026-03-14 10:32 UTC" in text
    assert not re.search(r"\bNone\b", text)
    for number, page in enumerate(pages, start=1):
        assert DISCLAIMER in page, f"page {number} lacks the disclaimer"
        assert f"Page {number} of {len(pages)}" in page
    assert_pages_not_blank(pdf, tmp_path)


def test_radiologist_report_has_the_technical_sections(full_reports: dict[str, bytes]) -> None:
    text = "\n".join(page_texts(full_reports["radiologist"]))
    for expected in (
        "AI finding: Pneumonia",
        "Calibrated confidence 91%",
        "Decision threshold 0.50",
        "MRN-0042-17",
        "1971-11-02",
        "Study instance UID",
        "MONOCHROME2",
        "Grad-CAM overlay",
        "Per-class probabilities",
        "Predictive entropy",
        "MC dropout, 20 passes",
        "Image slightly rotated",
        "ref-0001",
        "0.910",
        "pneumonia-resnet18-2026.03.1",
        "AUROC",
        "0.955",
        "Known limitations",
        "Not signed",
    ):
        assert expected in text, expected
    # the radiograph, its overlay, the film with the nodule marks and five thumbnails are embedded
    images = sum(len(page.images) for page in PdfReader(io.BytesIO(full_reports["radiologist"])).pages)
    assert images == 8


def test_clinical_report_states_finding_confidence_and_recommendation(full_reports: dict[str, bytes]) -> None:
    text = " ".join(page_texts(full_reports["clinical"]))
    assert "Findings suggestive of pneumonia" in text
    assert "Confidence: High" in text
    assert "Correlate with the clinical picture" in text
    assert "follow-up imaging" in text
    assert "Key image" in text
    assert "Awaiting radiologist review" in text


def test_patient_report_is_plain_language(full_reports: dict[str, bytes]) -> None:
    text = " ".join(page_texts(full_reports["patient"]))
    assert "pneumonia (an infection of the lungs)" in text
    assert "9 times out of 10" in text
    assert "What happens next" in text
    for word in JARGON:
        assert word.lower() not in text.lower(), word
    assert "PNEUMONIA" not in text  # no raw model labels either
    # larger type than the clinical report: compare the body font size set in the content streams
    patient_sizes = _font_sizes(full_reports["patient"])
    clinical_sizes = _font_sizes(full_reports["clinical"])
    assert max(patient_sizes, key=patient_sizes.count) > max(clinical_sizes, key=clinical_sizes.count)


def _font_sizes(pdf: bytes) -> list[float]:
    content = PdfReader(io.BytesIO(pdf)).pages[0].get_contents().get_data().decode("latin-1")
    return [float(size) for size in re.findall(r"/F\d+\+?\d* ([\d.]+) Tf", content)]


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_minimal_case_leaves_out_what_is_missing(kind: str, tmp_path: Path) -> None:
    pdf = render_report(kind, minimal_case())
    text = "\n".join(page_texts(pdf))
    assert not re.search(r"\bNone\b", text)
    for absent in (
        "Patient name",
        "Patient ID",
        "Clinical history",
        "Clinical information",
        "Similar reference",
        "Grad-CAM",
        "Uncertainty",
        "Image quality",
        "Date of birth",
    ):
        assert absent not in text, absent
    assert "Page 1 of 1" in text or "Page 1 of 2" in text
    assert DISCLAIMER in text
    assert_pages_not_blank(pdf, tmp_path)


def test_minimal_case_results_are_negative_and_unsigned() -> None:
    case = minimal_case()
    radiologist = "\n".join(page_texts(render_radiologist_report(case, ReportContext())))
    assert "AI finding: No pneumonia-like opacity found" in radiologist
    assert "Normal" not in radiologist  # the model does not rule out other disease (issue 22)
    clinical = " ".join(page_texts(render_clinical_report(case, ReportContext())))
    assert "No pneumonia-like opacity found by the AI. This does not rule out other disease." in " ".join(
        clinical.split()
    )
    assert "does not exclude disease" in clinical
    patient = " ".join(page_texts(render_patient_report(case, ReportContext())))
    patient = " ".join(patient.split())
    assert "did not find the kind of shadow on your X-ray that pneumonia" in patient
    assert "It does not look for other illnesses." in patient


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_multilingual_names_and_text_render(kind: str, tmp_path: Path) -> None:
    context = ReportContext(institution_name="Hôpital de Genève · 北京协和医院 · Σισμανόγλειο")
    pdf = render_report(kind, multilingual_case(), context)
    text = squashed("".join(page_texts(pdf)))
    assert squashed(MULTILINGUAL_NAME) in text
    assert squashed("北京协和医院") in text and "Σισμανόγλειο" in text
    assert squashed("Νίκος Παπαδόπουλος 金城武") in text
    if kind != "patient":
        assert squashed("사흘 전부터 발열과 기침이 있음.") in text
    fonts = {str(font["/BaseFont"]) for page in PdfReader(io.BytesIO(pdf)).pages for font in _page_fonts(page)}
    assert any("DroidSansFallback" in font for font in fonts), fonts  # CJK glyphs come from the embedded CJK font
    assert_pages_not_blank(pdf, tmp_path)


def _page_fonts(page: object) -> list[dict]:
    resources = page["/Resources"]  # type: ignore[index]
    return [font.get_object() for font in resources["/Font"].values()]


def test_font_chain_picks_a_font_per_script() -> None:
    chain = font_chain()
    markup = chain.markup("Zoë Ελληνικά Кириллица 中文 日本語 한국어 <b>&")
    assert markup.startswith("Zoë Ελληνικά Кириллица ")
    assert re.search(f'<font name="{CJK}">中文 日本語 한국어 ?</font>', markup)
    assert "&lt;b&gt;&amp;" in markup  # user text is escaped, never parsed as markup
    assert chain.markup("line one\nline two") == "line one<br/>line two"
    # Chinese/Japanese prose breaks between characters; mostly-Latin text with a CJK name breaks at spaces
    assert chain.has_wrap_anywhere_text("患者三天前开始发热，伴有咳嗽。")
    assert not chain.has_wrap_anywhere_text("Patient Zoë Müller 中文 was admitted")
    assert not chain.has_wrap_anywhere_text("Plain English")


def test_characters_no_font_covers_still_produce_a_pdf(caplog: pytest.LogCaptureFixture) -> None:
    case = replace(minimal_case(), patient=PatientDetails(name="ሰላም Name \U0001f600"))
    with caplog.at_level(logging.WARNING, logger="reports.typography"):
        pdf = render_report("patient", case)
    assert "Name" in "".join(page_texts(pdf))


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_very_long_history_flows_onto_further_pages(kind: str, tmp_path: Path) -> None:
    paragraph = (
        "Intermittent dyspnoea on exertion with productive cough, treated with amoxicillin without improvement. "
    )
    history = "\n\n".join(f"Entry {index}: " + paragraph * 6 for index in range(25)) + "\n\nEND-OF-HISTORY"
    case = replace(sample_case(), patient=replace(sample_case().patient, clinical_history=history))
    pdf = render_report(kind, case)
    pages = page_texts(pdf)
    text = "\n".join(pages)
    if kind == "patient":  # the patient report does not reprint the clinician's history
        assert "END-OF-HISTORY" not in text
        return
    assert len(pages) >= 4
    assert "END-OF-HISTORY" in text and "Entry 0:" in text and "Entry 24:" in text
    assert f"Page {len(pages)} of {len(pages)}" in pages[-1]
    assert "Findings suggestive of pneumonia" in pages[0] or "AI finding: Pneumonia" in pages[0]
    assert_pages_not_blank(pdf, tmp_path)


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_every_field_at_its_maximum_length_still_lays_out(kind: str, tmp_path: Path) -> None:
    """Tables and panels holding long text split across pages instead of failing; the fixed-height header shortens
    what does not fit."""

    def text(length: int, end: str = "") -> str:
        words = "Überlänge 中文字 Ωμέγα Длинный "
        return (words * (length // len(words) + 1))[: length - len(end)] + end

    warnings = [f"WARNING-{index}-START " + text(MAX_NOTE_CHARS - 20) for index in range(MAX_QUALITY_WARNINGS)]
    case = replace(
        sample_case(),
        report_id="R" * MAX_ID_CHARS,
        case_id="C" * MAX_ID_CHARS,
        patient=PatientDetails(patient_id="P" * MAX_ID_CHARS, name=text(MAX_NAME_CHARS), clinical_history=text(3000)),
        ood=True,
        ood_reason=text(MAX_NOTE_CHARS),
        quality_warnings=warnings,
        similar_cases=[SimilarCase("S" * MAX_ID_CHARS, "L" * MAX_ID_CHARS, 0.5)],
        signed_by=text(MAX_NAME_CHARS),
        signed_at=SIGNED_AT,
    )
    context = ReportContext(institution_name=text(MAX_NAME_CHARS))
    pdf = render_report(kind, case, context)
    pages = page_texts(pdf)
    assert "…" in pages[0]  # the institution name and report id were shortened in the header
    assert f"Page {len(pages)} of {len(pages)}" in pages[-1]
    if kind != "patient":  # the first 20 warnings print, clipped, and the rest are counted
        joined = squashed("".join(pages))
        assert "WARNING-19-START" in joined and "WARNING-20-START" not in joined
        assert f"and{MAX_QUALITY_WARNINGS - 20}moreinthecaserecord" in joined
    assert_pages_not_blank(pdf, tmp_path)


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_signed_and_unsigned_reports_differ_in_the_sign_off(kind: str) -> None:
    unsigned = sample_case()
    signed = replace(unsigned, signed_by="Dr. Ana Radiologist", signed_at=SIGNED_AT)
    signed_text = " ".join(page_texts(render_report(kind, signed)))
    unsigned_text = " ".join(page_texts(render_report(kind, unsigned)))
    assert "Dr. Ana Radiologist" in signed_text and "2026-03-15 09:00 UTC" in signed_text
    assert "Dr. Ana Radiologist" not in unsigned_text
    expected_unsigned = {
        "radiologist": "Not signed",
        "clinical": "Awaiting radiologist review",
        "patient": "A doctor will check",
    }
    assert expected_unsigned[kind] in unsigned_text
    assert expected_unsigned[kind] not in signed_text


def test_logo_is_drawn_on_every_page_and_a_broken_logo_does_not_stop_the_report(tmp_path: Path) -> None:
    logo = tmp_path / "logo.png"
    Image.new("RGB", (300, 100), (31, 78, 121)).save(logo)
    case = minimal_case()
    with_logo = PdfReader(io.BytesIO(render_report("clinical", case, ReportContext(logo_path=logo))))
    without_logo = PdfReader(io.BytesIO(render_report("clinical", case, ReportContext())))
    assert len(with_logo.pages[0].images) == len(without_logo.pages[0].images) + 1
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    pdf = render_report("clinical", case, ReportContext(logo_path=broken))
    assert DISCLAIMER in page_texts(pdf)[0]


def test_letter_page_size() -> None:
    page = PdfReader(io.BytesIO(render_report("patient", minimal_case(), ReportContext(page_size="letter")))).pages[0]
    assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (612, 792)


# --- names and errors ---------------------------------------------------------------------------------------------


def test_report_filename_is_safe_and_free_of_patient_data() -> None:
    case = replace(multilingual_case(), case_id="../c 42/ü")
    for kind in REPORT_KINDS:
        name = report_filename(kind, case)
        assert re.fullmatch(r"[A-Za-z0-9._-]+\.pdf", name), name
        assert kind in name and "20260314" in name and ".." not in name
        assert "Zo" not in name


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(UnknownReportKindError, match="radiologist, clinical, patient"):
        render_report("surgeon", minimal_case())  # type: ignore[arg-type]
    with pytest.raises(UnknownReportKindError):
        report_filename("surgeon", minimal_case())  # type: ignore[arg-type]


def test_unreadable_images_are_input_errors() -> None:
    with pytest.raises(ReportInputError, match="image_png is not a readable"):
        render_report("radiologist", replace(minimal_case(), image_png=b"\x89PNG broken"))
    with pytest.raises(ReportInputError, match="heatmap_png"):
        render_report("clinical", replace(minimal_case(), heatmap_png=b"junk"))
    similar = SimilarCase("ref-1", "NORMAL", 0.9, thumbnail_png=b"junk")
    with pytest.raises(ReportInputError, match="thumbnail"):
        render_report("radiologist", replace(minimal_case(), similar_cases=[similar]))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"confidence": 1.5}, "confidence"),
        ({"confidence": float("nan")}, "confidence"),
        ({"probabilities": {}}, "probabilities"),
        ({"probabilities": {"NORMAL": -0.1}}, "probability of NORMAL"),
        ({"threshold": 2}, "threshold"),
        ({"report_id": " "}, "report_id"),
        ({"image_png": b""}, "image_png"),
        ({"signed_by": "Dr. X"}, "signed_by and signed_at"),
        ({"signed_at": SIGNED_AT}, "signed_by and signed_at"),
        ({"quality_warnings": "blurry"}, "quality_warnings"),
        ({"created_at": "2026-01-01"}, "created_at"),
    ],
)
def test_invalid_case_data_is_rejected_with_the_field_name(changes: dict, message: str) -> None:
    with pytest.raises(ReportInputError, match=message):
        replace(minimal_case(), **changes)


def test_invalid_nested_records_are_rejected() -> None:
    with pytest.raises(ReportInputError, match="age"):
        PatientDetails(age=-3)
    with pytest.raises(ReportInputError, match="clinical_history is longer than 20000"):
        PatientDetails(clinical_history="x" * 20_001)
    with pytest.raises(ReportInputError, match="model version"):
        ModelCard(version="")
    with pytest.raises(ReportInputError, match="similarity"):
        SimilarCase("ref-1", "NORMAL", float("inf"))
    with pytest.raises(ReportInputError, match="page_size"):
        ReportContext(page_size="A3")  # type: ignore[arg-type]


def test_sixteen_bit_images_are_stretched_not_clipped() -> None:
    ramp = (np.linspace(0, 4095, 64 * 64).reshape(64, 64)).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    decoded = np.asarray(decode_picture(buffer.getvalue(), "image_png", 1000))
    assert decoded.min() == 0 and decoded.max() == 255
    assert len(np.unique(decoded)) > 200  # a 12-bit ramp keeps its gradation instead of saturating at 255
