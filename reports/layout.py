"""The shared look of the three reports: styles, page header and footer, "Page X of Y", and reusable blocks.

`ReportWriter` holds what one rendering needs (font chain, styles, sizes) and turns plain text into flowables; the
report modules only decide what goes where.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from reportlab import rl_config
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4, LETTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import BaseDocTemplate, Flowable, Frame, PageTemplate, Paragraph, Spacer, Table, TableStyle

from reports.errors import ReportInputError
from reports.formatting import format_datetime
from reports.records import ReportCase, ReportContext
from reports.typography import SANS, SANS_BOLD, FontChain, font_chain, needs_shaping
from reports.wording import DISCLAIMER

logger = logging.getLogger(__name__)

# Binary instead of ASCII85 streams: 20 % smaller PDFs and no encoding pass (a process-wide reportlab default; every
# PDF reader accepts binary streams).
rl_config.useA85 = 0

INK = colors.HexColor("#1F2933")
MUTED = colors.HexColor("#5F6B7A")
ACCENT = colors.HexColor("#1F4E79")
RULE = colors.HexColor("#C9D1DB")
PANEL = colors.HexColor("#F3F5F8")
POSITIVE = colors.HexColor("#B42318")
NEGATIVE = colors.HexColor("#1E7B45")
CAUTION = colors.HexColor("#B54708")
CAUTION_PANEL = colors.HexColor("#FEF6EE")
SIGNED_PANEL = colors.HexColor("#EEF6F1")

PAGE_SIZES = {"A4": A4, "letter": LETTER}
MARGIN_X = 17 * mm
HEADER_HEIGHT = 20 * mm
FOOTER_HEIGHT = 14 * mm
MAX_IMAGE_PIXELS = 1000  # longest side kept for a printed image (~300 dpi at the 80 mm used)
MAX_THUMBNAIL_PIXELS = 240
JPEG_QUALITY = 92


@dataclass(frozen=True)
class Styles:
    body: ParagraphStyle
    small: ParagraphStyle
    muted: ParagraphStyle
    label: ParagraphStyle
    title: ParagraphStyle
    section: ParagraphStyle
    finding: ParagraphStyle
    caption: ParagraphStyle
    bullet: ParagraphStyle


def make_styles(base_size: float) -> Styles:
    """Paragraph styles scaled from one body size (the patient report prints larger)."""
    leading = base_size * 1.38

    def style(name: str, **overrides: Any) -> ParagraphStyle:
        values: dict[str, Any] = {
            "fontName": SANS,
            "fontSize": base_size,
            "leading": leading,
            "textColor": INK,
            "alignment": TA_LEFT,
        }
        values.update(overrides)
        return ParagraphStyle(name, **values)

    return Styles(
        body=style("body", spaceAfter=base_size * 0.45),
        small=style("small", fontSize=base_size * 0.86, leading=base_size * 1.18),
        muted=style("muted", fontSize=base_size * 0.86, leading=base_size * 1.18, textColor=MUTED),
        label=style("label", fontSize=base_size * 0.8, leading=base_size * 1.08, textColor=MUTED),
        title=style(
            "title",
            fontName=SANS_BOLD,
            fontSize=base_size * 1.7,
            leading=base_size * 2.1,
            textColor=ACCENT,
            spaceAfter=base_size * 0.5,
        ),
        section=style(
            "section",
            fontName=SANS_BOLD,
            fontSize=base_size * 1.15,
            leading=base_size * 1.5,
            textColor=ACCENT,
            spaceBefore=base_size * 1.1,
            spaceAfter=base_size * 0.35,
            keepWithNext=1,
        ),
        finding=style("finding", fontName=SANS_BOLD, fontSize=base_size * 1.45, leading=base_size * 1.85),
        caption=style("caption", fontSize=base_size * 0.8, leading=base_size * 1.08, textColor=MUTED),
        bullet=style("bullet", leftIndent=base_size * 1.3, bulletIndent=base_size * 0.2, spaceAfter=base_size * 0.3),
    )


class ReportWriter:
    """Per-rendering helper: text to paragraphs (with font fallback), tables, callouts, pictures."""

    def __init__(self, context: ReportContext, base_size: float) -> None:
        self.context = context
        self.fonts: FontChain = font_chain(context.extra_font_paths)
        self.styles = make_styles(base_size)
        self.base_size = base_size
        self.page_width, self.page_height = PAGE_SIZES[context.page_size]
        self.frame_width = self.page_width - 2 * MARGIN_X
        self._variants: dict[str, ParagraphStyle] = {}

    # --- text -------------------------------------------------------------------------------------------------------

    def m(self, text: str) -> str:
        """Markup for plain text: escaped, line breaks kept, fonts chosen per character."""
        return self.fonts.markup(text)

    def rich(self, markup: str, style: ParagraphStyle, **kwargs: Any) -> Paragraph:
        """A paragraph of ready markup; CJK text gets a style that may break lines between any two characters, and
        Arabic, Hebrew or Devanagari text a style that shapes it."""
        if self.fonts.has_wrap_anywhere_text(markup):
            style = self.wrap_anywhere(style)
        if needs_shaping(markup):
            style = self._variant(style, "shaped", shaping=1)
        return Paragraph(markup, style, **kwargs)

    def para(self, text: str, style: ParagraphStyle | None = None) -> Paragraph:
        return self.rich(self.m(text), style or self.styles.body)

    def paragraphs(self, text: str, style: ParagraphStyle | None = None) -> list[Flowable]:
        """One paragraph per blank-line separated block, so long text can break between pages anywhere."""
        blocks = [block.strip() for block in text.replace("\r\n", "\n").split("\n\n")]
        return [self.para(block, style) for block in blocks if block]

    def bullets(self, items: Sequence[str], style: ParagraphStyle | None = None) -> list[Flowable]:
        """A bulleted list; wrapped lines hang under the text, not under the bullet."""
        chosen = self.styles.bullet
        if style is not None:
            size = style.fontSize
            chosen = ParagraphStyle(
                f"{style.name}-bullet",
                parent=style,
                leftIndent=size * 1.3,
                bulletIndent=size * 0.2,
                spaceAfter=size * 0.3,
            )
        return [self.rich(self.m(item), chosen, bulletText="•") for item in items]

    def section(self, title: str) -> Paragraph:
        return self.para(title, self.styles.section)

    def wrap_anywhere(self, style: ParagraphStyle) -> ParagraphStyle:
        """`style` breaking lines between any two characters (CJK text; ids and hashes without spaces)."""
        return self._variant(style, "cjk", wordWrap="CJK")

    def _variant(self, style: ParagraphStyle, suffix: str, **changes: Any) -> ParagraphStyle:
        """`style` with `changes`, made once per style and kind."""
        name = f"{style.name}-{suffix}"
        if name not in self._variants:
            self._variants[name] = ParagraphStyle(name, parent=style, **changes)
        return self._variants[name]

    # --- blocks -----------------------------------------------------------------------------------------------------

    def fields_table(self, fields: Sequence[tuple[str, str | None]], columns: int = 2) -> Table | None:
        """Label/value pairs in `columns` column pairs; pairs without a value are left out, no empty cells between."""
        present = [(label, value) for label, value in fields if value]
        if not present:
            return None
        rows = []
        for start in range(0, len(present), columns):
            row: list[Any] = []
            for label, value in present[start : start + columns]:
                row += [self.para(label, self.styles.label), self.para(value, self.styles.small)]
            row += [""] * (2 * columns - len(row))
            rows.append(row)
        label_width = 30 * mm if columns > 1 else 42 * mm
        value_width = self.frame_width / columns - label_width
        table = Table(rows, colWidths=[label_width, value_width] * columns, hAlign="LEFT", splitInRow=1)
        table.setStyle(
            TableStyle(
                [
                    ("VALIGN", (0, 0), (-1, -1), "TOP"),
                    ("LEFTPADDING", (0, 0), (-1, -1), 0),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 6),
                    ("TOPPADDING", (0, 0), (-1, -1), 1.5),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
                ]
            )
        )
        return table

    def callout(
        self, content: Sequence[Flowable], color: colors.Color, background: colors.Color, width: float | None = None
    ) -> Table:
        """A tinted panel with a coloured bar on the left, for the result and for warnings (full width by default)."""
        # splitInRow: a panel holding long text (many warnings, a long reason) continues on the next page
        table = Table([[list(content)]], colWidths=[width or self.frame_width], hAlign="LEFT", splitInRow=1)
        table.setStyle(
            TableStyle(
                [
                    ("BACKGROUND", (0, 0), (-1, -1), background),
                    ("LINEBEFORE", (0, 0), (0, -1), 3, color),
                    ("LEFTPADDING", (0, 0), (-1, -1), 9),
                    ("RIGHTPADDING", (0, 0), (-1, -1), 9),
                    ("TOPPADDING", (0, 0), (-1, -1), 6),
                    ("BOTTOMPADDING", (0, 0), (-1, -1), 6),
                ]
            )
        )
        return table

    def grid_table(self, rows: list[list[Any]], col_widths: Sequence[float], header: bool = True) -> Table:
        """A light data table: a header row in bold on a tinted band, thin rules between rows."""
        table = Table(rows, colWidths=list(col_widths), hAlign="LEFT", repeatRows=1 if header else 0, splitInRow=1)
        commands: list[tuple[Any, ...]] = [
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ("LINEBELOW", (0, 0), (-1, -1), 0.4, RULE),
            ("LEFTPADDING", (0, 0), (-1, -1), 4),
            ("RIGHTPADDING", (0, 0), (-1, -1), 4),
            ("TOPPADDING", (0, 0), (-1, -1), 3),
            ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
        ]
        if header:
            commands.append(("BACKGROUND", (0, 0), (-1, 0), PANEL))
        table.setStyle(TableStyle(commands))
        return table

    def spacer(self, lines: float = 1.0) -> Spacer:
        return Spacer(1, self.base_size * lines)


class Picture(Flowable):
    """A decoded image drawn at a fixed size (reportlab's Image flowable only takes files).

    The image is embedded as a high-quality JPEG, which reportlab passes through unchanged: several times faster to
    write and smaller than Flate-compressed pixels, and visually lossless at print size (reports are not for reading
    the study; the PACS image is)."""

    def __init__(self, image: PILImage.Image, width: float, height: float) -> None:
        super().__init__()
        encoded = io.BytesIO()
        image.save(encoded, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        encoded.seek(0)
        self._reader = ImageReader(encoded)
        self.width = width
        self.height = height

    def wrap(self, available_width: float, available_height: float) -> tuple[float, float]:
        return self.width, self.height

    def draw(self) -> None:
        self.canv.drawImage(self._reader, 0, 0, self.width, self.height)


def decode_picture(data: bytes, what: str, max_pixels: int) -> PILImage.Image:
    """PNG/JPEG bytes as an 8-bit grey or RGB image no larger than `max_pixels` on its longest side."""
    try:
        image = PILImage.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, PILImage.DecompressionBombError) as error:
        raise ReportInputError(f"{what} is not a readable PNG or JPEG image.") from error
    image = _to_display_mode(image)
    if max(image.size) > max_pixels:
        # Integer box reduction first, then Lanczos for the rest: twice as fast as pure Lanczos, same look in print.
        image.thumbnail((max_pixels, max_pixels), PILImage.Resampling.LANCZOS, reducing_gap=1.0)
    return image


def _to_display_mode(image: PILImage.Image) -> PILImage.Image:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit/float greys: stretch to 8 bits, do not clip
        pixels = np.asarray(image, dtype=np.float32)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low) * 255 if high > low else np.zeros_like(pixels)
        return PILImage.fromarray(scaled.astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = PILImage.new("RGB", image.size, "white")
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    if image.mode not in ("L", "RGB"):
        return image.convert("RGB")
    return image


def picture(data: bytes, what: str, max_width: float, max_height: float, max_pixels: int = MAX_IMAGE_PIXELS) -> Picture:
    """An image flowable scaled to fit the box while keeping its aspect ratio."""
    return fitted_picture(decode_picture(data, what, max_pixels), max_width, max_height)


def fitted_picture(image: PILImage.Image, max_width: float, max_height: float) -> Picture:
    """A decoded image as a flowable scaled to fit the box, aspect ratio kept."""
    scale = min(max_width / image.width, max_height / image.height)
    return Picture(image, image.width * scale, image.height * scale)


def load_logo(path: Path | None) -> ImageReader | None:
    """The institution logo, or None (with a warning) when it is unset or cannot be read: a report is never lost to a
    misconfigured logo."""
    if path is None:
        return None
    try:
        with PILImage.open(path) as image:
            image.load()
            return ImageReader(_to_display_mode(image))
    except (OSError, ValueError, UnidentifiedImageError, PILImage.DecompressionBombError) as error:
        logger.warning("Institution logo %s cannot be read (%s); reports print without it.", path, error)
        return None


# --- pages ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PageDecor:
    """What every page carries: institution, logo, report title and id, creation time, disclaimer, page numbers."""

    writer: ReportWriter
    title: str
    report_id: str
    created: str
    signed_note: str | None
    logo: ImageReader | None
    footer_size: float
    footer_text: str = DISCLAIMER  # what every page says at its foot

    def draw(self, canvas: Canvas, _doc: BaseDocTemplate) -> None:
        canvas.saveState()
        self._draw_header(canvas)
        self._draw_footer(canvas)
        canvas.restoreState()

    def _draw_header(self, canvas: Canvas) -> None:
        writer = self.writer
        top = writer.page_height - 10 * mm
        left = MARGIN_X
        if self.logo is not None:
            logo_width, logo_height = self.logo.getSize()
            height = 12 * mm
            width = min(40 * mm, height * logo_width / logo_height)
            height = width * logo_height / logo_width
            canvas.drawImage(self.logo, left, top - height, width, height, mask="auto")
            left += width + 4 * mm
        right_width = 62 * mm
        name_style = ParagraphStyle("inst", fontName=SANS_BOLD, fontSize=10.5, leading=13, textColor=INK)
        title_style = ParagraphStyle("rtitle", fontName=SANS, fontSize=8.5, leading=11, textColor=MUTED)
        left_width = writer.page_width - MARGIN_X - right_width - left
        _draw_paragraphs(
            canvas,
            [
                fitted_paragraph(writer, writer.context.institution_name, name_style, left_width, max_lines=2),
                fitted_paragraph(writer, self.title, title_style, left_width, max_lines=1),
            ],
            left,
            top,
            left_width,
        )
        meta_style = ParagraphStyle("meta", fontName=SANS, fontSize=7.8, leading=10, textColor=MUTED, alignment=2)
        meta = [(f"Report ID: {self.report_id}", 2), (f"Created: {self.created}", 1)]
        if self.signed_note:
            meta.append((self.signed_note, 1))
        _draw_paragraphs(
            canvas,
            [fitted_paragraph(writer, line, meta_style, right_width, lines) for line, lines in meta],
            writer.page_width - MARGIN_X - right_width,
            top,
            right_width,
        )
        canvas.setStrokeColor(RULE)
        canvas.setLineWidth(0.6)
        line_y = writer.page_height - 10 * mm - HEADER_HEIGHT + 4 * mm
        canvas.line(MARGIN_X, line_y, writer.page_width - MARGIN_X, line_y)

    def _draw_footer(self, canvas: Canvas) -> None:
        writer = self.writer
        canvas.setStrokeColor(RULE)
        canvas.setLineWidth(0.6)
        line_y = FOOTER_HEIGHT
        canvas.line(MARGIN_X, line_y, writer.page_width - MARGIN_X, line_y)
        style = ParagraphStyle(
            "foot", fontName=SANS, fontSize=self.footer_size, leading=self.footer_size * 1.25, textColor=MUTED
        )
        _draw_paragraphs(
            canvas,
            [writer.rich(writer.m(self.footer_text), style)],
            MARGIN_X,
            line_y - 2.5 * mm,
            writer.frame_width - 30 * mm,
        )


def fitted_paragraph(writer: ReportWriter, text: str, style: ParagraphStyle, width: float, max_lines: int) -> Paragraph:
    """`text` as a paragraph of at most `max_lines` lines, shortened with an ellipsis when it would run over (the
    page header has a fixed height; a very long institution name or id must not spill into the body)."""
    keep = len(text)
    candidate = text
    while True:
        paragraph = writer.rich(writer.m(candidate), style)
        _, height = paragraph.wrap(width, 10_000)
        if height <= style.leading * max_lines + 0.5 or keep <= 1:
            return paragraph
        keep = int(keep * 0.85)
        candidate = text[:keep].rstrip() + "…"


def _draw_paragraphs(canvas: Canvas, paragraphs: Sequence[Paragraph], x: float, top: float, width: float) -> None:
    """Paragraphs stacked downwards from `top` (header and footer text may hold any script, so it goes through
    Paragraph rather than drawString)."""
    y = top
    for paragraph in paragraphs:
        _, height = paragraph.wrap(width, 200)
        y -= height
        paragraph.drawOn(canvas, x, y)


def numbered_canvas(font_size: float, page_width: float) -> Callable[..., Canvas]:
    """A canvas class that writes "Page X of Y" on every page once the total is known (at save time)."""

    class NumberedCanvas(Canvas):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._page_states: list[dict[str, Any]] = []

        def showPage(self) -> None:  # reportlab's method name
            self._page_states.append(dict(self.__dict__))
            self._startPage()

        def save(self) -> None:
            total = len(self._page_states)
            for number, state in enumerate(self._page_states, start=1):
                self.__dict__.update(state)
                self.setFont(SANS, font_size)
                self.setFillColor(MUTED)
                self.drawRightString(
                    page_width - MARGIN_X, FOOTER_HEIGHT - 2.5 * mm - font_size, f"Page {number} of {total}"
                )
                super().showPage()
            super().save()

    return NumberedCanvas


def build_pdf(writer: ReportWriter, case: ReportCase, title: str, story: list[Flowable], footer_size: float) -> bytes:
    """Lay out a case report's `story` on numbered pages with the shared header and footer; returns the PDF bytes."""
    signed_note = f"Signed: {format_datetime(case.signed_at)}" if case.signed_at is not None else None
    decor = PageDecor(
        writer=writer,
        title=title,
        report_id=case.report_id,
        created=format_datetime(case.created_at),
        signed_note=signed_note,
        logo=load_logo(writer.context.logo_path),
        footer_size=footer_size,
    )
    return lay_out(decor, f"Case {case.case_id}", story)


def lay_out(decor: PageDecor, subject: str, story: list[Flowable]) -> bytes:
    """`story` on numbered pages, each drawn with `decor`'s header and footer; returns the PDF bytes."""
    writer = decor.writer
    buffer = io.BytesIO()
    document = BaseDocTemplate(
        buffer,
        pagesize=(writer.page_width, writer.page_height),
        leftMargin=MARGIN_X,
        rightMargin=MARGIN_X,
        topMargin=10 * mm + HEADER_HEIGHT,
        bottomMargin=FOOTER_HEIGHT + 4 * mm,
        title=decor.title,
        author=writer.context.institution_name,
        subject=subject,
        creator="CXR Workstation",
    )
    frame = Frame(
        document.leftMargin,
        document.bottomMargin,
        document.width,
        document.height,
        leftPadding=0,
        rightPadding=0,
        topPadding=0,
        bottomPadding=0,
    )
    document.addPageTemplates([PageTemplate(id="report", frames=[frame], onPage=decor.draw)])
    document.build(story, canvasmaker=numbered_canvas(decor.footer_size, writer.page_width))
    return buffer.getvalue()
