"""The second finding on paper: the film with the nodule model's marks drawn (boxes and scores) and the blocks the
radiologist and clinical reports share (the finding panel, the marks table, the "no nodule model" line).

The marks arrive in the stored image's pixels; the report prints a smaller copy of the film, so every box is scaled
by the ratio of the two sizes before it is drawn.
"""

from __future__ import annotations

from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, Table, TableStyle

from reports.formatting import format_percent
from reports.layout import (
    CAUTION,
    MAX_IMAGE_PIXELS,
    NEGATIVE,
    PANEL,
    ReportWriter,
    decode_picture,
    fitted_picture,
)
from reports.records import NoduleMark, NoduleReport, ReportCase
from reports.typography import FONT_DIR
from reports.wording import (
    no_nodule_model_sentence,
    nodule_finding_text,
    nodule_marks_text,
    nodule_performance_text,
)

MARK_COLOUR = (255, 196, 0)  # amber: stands out on grey bone and on dark lung alike
MARK_SHADOW = (20, 20, 20)  # a dark rim under each line, so the amber reads on a bright background too
LABEL_FONT = FONT_DIR / "DejaVuSans-Bold-subset.ttf"
SECTION_TITLE = "Second finding: lung nodule or mass"
FILM_GAP = 6 * mm


def marked_film(image_png: bytes, nodule: NoduleReport) -> PILImage.Image:
    """The film (RGB) with each mark drawn as a box and its number and score written above it (below at the top)."""
    film = decode_picture(image_png, "image_png", MAX_IMAGE_PIXELS).convert("RGB")
    source_w, source_h = nodule.image_size or film.size
    sx, sy = film.width / source_w, film.height / source_h
    line = max(2, round(max(film.size) / 300))
    font = ImageFont.truetype(str(LABEL_FONT), max(11, round(max(film.size) / 32)))
    draw = ImageDraw.Draw(film)
    for number, mark in enumerate(nodule.marks, start=1):
        box = _scaled_box(mark, sx, sy, film.size)
        draw.rectangle(box, outline=MARK_SHADOW, width=line + 2)
        draw.rectangle(box, outline=MARK_COLOUR, width=line)
        _label(draw, font, f"{number}  {mark.score:.2f}", box, film.size)
    return film


def _scaled_box(mark: NoduleMark, sx: float, sy: float, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The mark's box in the printed film's pixels, kept inside the film."""
    left = min(max(0, round(mark.x * sx)), size[0] - 2)
    top = min(max(0, round(mark.y * sy)), size[1] - 2)
    right = min(max(left + 1, round((mark.x + mark.w) * sx)), size[0] - 1)
    bottom = min(max(top + 1, round((mark.y + mark.h) * sy)), size[1] - 1)
    return left, top, right, bottom


def _label(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont,
    text: str,
    box: tuple[int, int, int, int],
    size: tuple[int, int],
) -> None:
    _, top, _, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = draw.textlength(text, font=font), bottom - top
    pad = max(2, round(height / 5))
    x = min(max(0, box[0]), size[0] - width - 2 * pad)
    y = box[1] - height - 2 * pad - 2
    if y < 0:  # no room above the box: write under it
        y = min(box[3] + 2, size[1] - height - 2 * pad)
    draw.rectangle((x, y, x + width + 2 * pad, y + height + 2 * pad), fill=MARK_SHADOW)
    draw.text((x + pad, y + pad - top), text, font=font, fill=MARK_COLOUR)


def nodule_panel(writer: ReportWriter, nodule: NoduleReport, lines: list[Flowable], width: float) -> Flowable:
    """The finding's tinted panel: caution colour for a nodule, green when none was found."""
    return writer.callout(lines, CAUTION if nodule.is_positive else NEGATIVE, PANEL, width)


def no_nodule_model(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    return [writer.section(SECTION_TITLE), writer.para(no_nodule_model_sentence(case), writer.styles.body)]


def finding_lines(writer: ReportWriter, nodule: NoduleReport) -> list[Flowable]:
    """Label, probability, threshold, model and the marks' count, then the measured performance in one sentence."""
    styles = writer.styles
    details = [
        f"<b>Probability</b> {format_percent(nodule.probability)}",
        f"<b>Decision threshold</b> {nodule.threshold:.2f}",
        f"<b>Model</b> {writer.m(nodule.model_version)}",
    ]
    lines: list[Flowable] = [
        writer.para(nodule_finding_text(nodule), styles.finding),
        writer.rich(" · ".join(details), styles.small),
        writer.para(nodule_marks_text(nodule), styles.small),
    ]
    lines.append(writer.rich(f"<b>Measured performance:</b> {writer.m(nodule_performance_text(nodule))}", styles.small))
    return lines


def marks_table(writer: ReportWriter, nodule: NoduleReport, width: float) -> Table | None:
    """One row per mark: number, box (x, y, width, height in stored-image pixels) and score."""
    if not nodule.marks:
        return None
    styles = writer.styles
    rows: list[list[object]] = [[writer.para(text, styles.label) for text in ("#", "Box x, y, w × h (px)", "Score")]]
    for number, mark in enumerate(nodule.marks, start=1):
        box = f"{mark.x:.0f}, {mark.y:.0f}, {mark.w:.0f} × {mark.h:.0f}"
        rows.append(
            [
                writer.para(str(number), styles.small),
                writer.para(box, styles.small),
                writer.para(f"{mark.score:.2f}", styles.small),
            ]
        )
    return writer.grid_table(rows, [8 * mm, width - 8 * mm - 18 * mm, 18 * mm])


def text_width(writer: ReportWriter, case: ReportCase, film_width: float) -> float:
    """What is left beside the marked film (the whole width when there is no mark to show)."""
    has_film = case.nodule is not None and bool(case.nodule.marks)
    return writer.frame_width - (film_width + FILM_GAP if has_film else 0)


def beside_film(writer: ReportWriter, case: ReportCase, left: list[Flowable], film_width: float) -> Flowable:
    """`left` (built `text_width` wide) beside the marked film, top-aligned; `left` alone when nothing is marked."""
    nodule = case.nodule
    if nodule is None or not nodule.marks:
        return Table([[left]], colWidths=[writer.frame_width], hAlign="LEFT", style=_NO_PADDING)
    gap = FILM_GAP
    film = fitted_picture(marked_film(case.image_png, nodule), film_width, 80 * mm)
    caption = writer.para("Nodule marks: amber boxes, each with its number and score.", writer.styles.caption)
    table = Table(
        [[left, [film, writer.spacer(0.3), caption]]],
        colWidths=[writer.frame_width - film_width - gap, film_width + gap],
        hAlign="LEFT",
    )
    table.setStyle(TableStyle([*_NO_PADDING, ("LEFTPADDING", (1, 0), (1, 0), gap)]))
    return table


_NO_PADDING = [
    ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ("LEFTPADDING", (0, 0), (-1, -1), 0),
    ("RIGHTPADDING", (0, 0), (-1, -1), 0),
    ("TOPPADDING", (0, 0), (-1, -1), 0),
    ("BOTTOMPADDING", (0, 0), (-1, -1), 0),
]
