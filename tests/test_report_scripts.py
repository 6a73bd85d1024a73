"""Right-to-left and complex scripts in the PDF reports (issue 13, point 4): Arabic, Hebrew and Devanagari names print
shaped and in reading order, never as empty boxes.

Two checks that do not trust the PDF's text layer: the page is rendered (poppler's pdftoppm) and compared with the
same words laid out independently by Pillow's libraqm (FriBiDi + HarfBuzz) from the same font; and the glyphs the
PDF draws are counted against a count written out by hand from the script's rules, with none of them the font's
empty box (.notdef).
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont
from pypdf import PdfReader
from pypdf.generic import ContentStream
from reportlab.platypus import SimpleDocTemplate

from reports import REPORT_KINDS, ReportContext, render_report
from reports.layout import ReportWriter
from reports.samples import sample_case
from reports.typography import FONT_DIR, visual_line
from tests.conftest import missing

# name, the bundled font that draws it, glyphs a correct rendering draws (space included), written out by hand:
# Arabic joins letters but keeps one glyph each (م ح م د, space, ع ل ي); Hebrew has no joining (ד ו ד, space, ל ו י);
# Devanagari "किशोर शर्मा" is 11 code points but 10 glyphs: the र of र्म becomes the reph mark above म, and the
# virama disappears into it (कि ि+क, शो श+ो, र, space, श, म+reph, ा).
NAMES = [
    ("محمد علي", "DejaVuSans-subset.ttf", 8),
    ("דוד לוי", "DejaVuSans-subset.ttf", 7),
    ("किशोर शर्मा", "NotoSansDevanagari-subset.ttf", 10),
]


@pytest.fixture(scope="module")
def pdftoppm() -> str:
    return shutil.which("pdftoppm") or missing("poppler-utils (pdftoppm) is not installed")


def one_paragraph_pdf(text: str) -> bytes:
    """`text` set the way every report sets a patient's name (ReportWriter.para)."""
    writer = ReportWriter(ReportContext(), 24)
    buffer = io.BytesIO()
    SimpleDocTemplate(buffer).build([writer.para(text)])
    return buffer.getvalue()


def ink(image: Image.Image) -> np.ndarray:
    dark = np.asarray(image.convert("L")) < 128
    rows, columns = np.nonzero(dark)
    return dark[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]


def rendered_ink(pdf: bytes, folder: Path, pdftoppm: str) -> np.ndarray:
    (folder / "page.pdf").write_bytes(pdf)
    subprocess.run([pdftoppm, "-r", "300", "-png", "-singlefile", folder / "page.pdf", folder / "page"], check=True)
    return ink(Image.open(folder / "page.png"))


def reference_ink(text: str, font_file: str) -> np.ndarray:
    font = ImageFont.truetype(str(FONT_DIR / font_file), 100, layout_engine=ImageFont.Layout.RAQM)
    canvas = Image.new("L", (3000, 300), 255)
    ImageDraw.Draw(canvas).text((20, 50), text, font=font, fill=0)
    return ink(canvas)


def overlap(a: np.ndarray, b: np.ndarray, size: tuple[int, int] = (400, 60)) -> float:
    """Intersection over union of two ink masks scaled to one size."""
    scaled_a = np.asarray(Image.fromarray(a).resize(size))
    scaled_b = np.asarray(Image.fromarray(b).resize(size))
    return float((scaled_a & scaled_b).sum() / (scaled_a | scaled_b).sum())


def drawn_glyphs(pdf: bytes) -> list[tuple[str, str]]:
    """(font, glyph name) of every glyph the PDF's pages draw with an embedded TrueType font, in drawing order."""
    reader = PdfReader(io.BytesIO(pdf))
    glyphs = []
    for page in reader.pages:
        fonts = {}
        for name, reference in page["/Resources"]["/Font"].items():
            descriptor = reference.get_object().get("/FontDescriptor")
            if descriptor is not None:
                embedded = TTFont(io.BytesIO(descriptor.get_object()["/FontFile2"].get_data()))
                fonts[name] = (str(reference.get_object()["/BaseFont"]), embedded["cmap"].tables[0].cmap)
        current = None
        for operands, operator in ContentStream(page.get_contents(), reader).operations:
            if operator == b"Tf":
                current = fonts.get(operands[0])
            elif operator in (b"Tj", b"TJ") and current is not None:
                for item in operands[0] if operator == b"TJ" else [operands[0]]:
                    codes = getattr(item, "original_bytes", b"")
                    glyphs += [(current[0], current[1].get(code, ".notdef")) for code in codes]
    return glyphs


@pytest.mark.parametrize(("name", "font_file", "glyph_count"), NAMES, ids=["arabic", "hebrew", "devanagari"])
def test_the_name_prints_as_the_script_is_written(
    name: str, font_file: str, glyph_count: int, tmp_path: Path, pdftoppm: str
) -> None:
    pdf = one_paragraph_pdf(name)
    glyphs = drawn_glyphs(pdf)
    assert len(glyphs) == glyph_count and all(glyph != ".notdef" for _, glyph in glyphs)
    assert {font.split("+")[-1].split("-")[0] for font, _ in glyphs} == {font_file.split("-")[0]}
    printed, reference = rendered_ink(pdf, tmp_path, pdftoppm), reference_ink(name, font_file)
    aspect = (printed.shape[1] / printed.shape[0]) / (reference.shape[1] / reference.shape[0])
    assert 0.95 < aspect < 1.05
    assert overlap(printed, reference) > 0.8  # shaped and in order: ~0.93; unshaped or boxes: below 0.5


def test_every_report_prints_such_names_without_empty_boxes() -> None:
    case = sample_case()
    for name, font_file, _ in NAMES:
        named = replace(case, patient=replace(case.patient, name=name, clinical_history=f"{name}: खांसी है।"))
        for kind in REPORT_KINDS:
            glyphs = drawn_glyphs(render_report(kind, named, ReportContext()))
            assert glyphs and [glyph for glyph in glyphs if glyph[1] == ".notdef"] == [], (name, kind)
            assert any(font_file.split("-")[0] in font for font, _ in glyphs), (name, kind)


def test_words_of_a_right_to_left_run_are_laid_out_from_the_right() -> None:
    assert visual_line("محمد علي") == "علي محمد"
    assert visual_line("Patient محمد علي (2 films)") == "Patient علي محمد (2 films)"
    assert visual_line("דוד לוי 42") == "42 לוי דוד"
    assert visual_line("Jane Doe") == "Jane Doe"
