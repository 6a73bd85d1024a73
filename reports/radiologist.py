"""Radiologist technical report: everything the model produced, with the numbers, the evidence and a sign-off block."""

from __future__ import annotations

from reportlab.graphics.shapes import Drawing, Line, Rect
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Flowable, KeepTogether, Table, TableStyle

from reports.content import metric_fields, model_fields, patient_fields, study_fields
from reports.formatting import (
    class_text,
    clip,
    display_label,
    displayed_warnings,
    format_datetime,
    format_percent,
)
from reports.layout import (
    ACCENT,
    CAUTION,
    CAUTION_PANEL,
    INK,
    MAX_THUMBNAIL_PIXELS,
    MUTED,
    NEGATIVE,
    PANEL,
    POSITIVE,
    RULE,
    SIGNED_PANEL,
    ReportWriter,
    build_pdf,
    picture,
)
from reports.nodules import (
    SECTION_TITLE,
    beside_film,
    finding_lines,
    marks_table,
    no_nodule_model,
    nodule_panel,
    text_width,
)
from reports.records import ReportCase, ReportContext

TITLE = "Radiologist technical report"
BASE_SIZE = 9.0
BAR_WIDTH = 62 * mm
BAR_HEIGHT = 3.4 * mm
NODULE_FILM_WIDTH = 70 * mm


def render_radiologist_report(case: ReportCase, context: ReportContext) -> bytes:
    """The technical PDF for the reading radiologist."""
    writer = ReportWriter(context, BASE_SIZE)
    story: list[Flowable] = [writer.para("Chest radiograph: AI analysis, technical report", writer.styles.title)]
    story += _identity(writer, case)
    story += _result(writer, case)  # before the history, so a long history never pushes the result off page 1
    story += _nodule(writer, case)
    story += _clinical_history(writer, case)
    story += _images(writer, case)
    story += _probabilities(writer, case)
    story += _uncertainty(writer, case)
    story += _quality(writer, case)
    story += _similar_cases(writer, case)
    story += _model(writer, case)
    story.append(_sign_off(writer, case))
    return build_pdf(writer, case, TITLE, story, footer_size=7.2)


def _identity(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    flowables: list[Flowable] = []
    for title, fields in (("Patient", patient_fields(case)), ("Study", study_fields(case))):
        table = writer.fields_table(fields)
        if table is not None:
            flowables += [writer.section(title), table]
    return flowables


def _clinical_history(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    history = case.patient.clinical_history
    blocks = writer.paragraphs(history) if history else []
    return [writer.section("Clinical history"), *blocks] if blocks else []


def _result(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    styles = writer.styles
    flags = _flags(case)
    # A flagged result is shown in the caution colour: a green negative must not reassure when the AI is unsure.
    color = CAUTION if flags else POSITIVE if case.is_positive else NEGATIVE
    finding = writer.rich(
        f'AI finding: <font color="{color.hexval()}">{writer.m(class_text(case.finding, case.positive_class))}</font>',
        styles.finding,
    )
    details = [f"<b>Calibrated confidence</b> {format_percent(case.confidence)}"]
    if case.threshold is not None:
        positive = writer.m(display_label(case.positive_class))
        details.append(f"<b>Decision threshold</b> {case.threshold:.2f} on the probability of {positive}")
    content: list[Flowable] = [finding, writer.rich(" · ".join(details), styles.small)]
    if flags:
        content.append(
            writer.rich(f'<font color="{CAUTION.hexval()}"><b>{writer.m(" · ".join(flags))}</b></font>', styles.small)
        )
    return [writer.section("AI result"), writer.callout(content, color, PANEL)]


def _nodule(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    """The second finding: label, numbers, model, measured performance, the marks as a table and drawn on the film."""
    nodule = case.nodule
    if nodule is None:
        return no_nodule_model(writer, case)
    width = text_width(writer, case, NODULE_FILM_WIDTH)
    left: list[Flowable] = [nodule_panel(writer, nodule, finding_lines(writer, nodule), width)]
    table = marks_table(writer, nodule, width)
    if table is not None:
        left += [writer.spacer(0.6), table]
    return [KeepTogether([writer.section(SECTION_TITLE), beside_film(writer, case, left, NODULE_FILM_WIDTH)])]


def _flags(case: ReportCase) -> list[str]:
    flags = []
    if case.uncertain:
        flags.append("UNCERTAIN: read without relying on the AI result")
    if case.ood:
        reason = clip(case.ood_reason or "")
        flags.append(
            f"OUT OF DISTRIBUTION: {reason}" if reason else "OUT OF DISTRIBUTION: image unlike the training data"
        )
    if case.outside_scope:
        flags.append(f"OUTSIDE VALIDATED SCOPE: {clip(case.scope_reason or '')}")
    return flags


def _images(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    """The radiograph and its Grad-CAM overlay side by side (the radiograph alone, centred, without an overlay)."""
    gap = 8 * mm
    panels = [(case.image_png, "image_png", "Radiograph")]
    if case.heatmap_png is not None:
        panels.append((case.heatmap_png, "heatmap_png", "Grad-CAM overlay: regions that most influenced the AI"))
    width = (writer.frame_width - gap) / 2
    cells = [[picture(data, what, width, 80 * mm) for data, what, _ in panels]]
    caption_style = ParagraphStyle("image-caption", parent=writer.styles.caption, alignment=TA_CENTER)
    cells.append([writer.para(caption, caption_style) for _, _, caption in panels])
    table = Table(cells, colWidths=[writer.frame_width / len(panels)] * len(panels), hAlign="CENTER")
    table.setStyle(
        TableStyle(
            [
                ("ALIGN", (0, 0), (-1, -1), "CENTER"),
                ("VALIGN", (0, 0), (-1, 0), "BOTTOM"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 1), (-1, 1), 3),
            ]
        )
    )
    return [KeepTogether([writer.section("Images"), table])]


def _probability_bar(probability: float, threshold: float | None, highlight: bool) -> Drawing:
    drawing = Drawing(BAR_WIDTH, BAR_HEIGHT)
    drawing.add(Rect(0, 0, BAR_WIDTH, BAR_HEIGHT, fillColor=PANEL, strokeColor=RULE, strokeWidth=0.4))
    drawing.add(
        Rect(0, 0, BAR_WIDTH * probability, BAR_HEIGHT, fillColor=ACCENT if highlight else MUTED, strokeColor=None)
    )
    if threshold is not None:
        x = BAR_WIDTH * threshold
        drawing.add(Line(x, -1.2, x, BAR_HEIGHT + 1.2, strokeColor=INK, strokeWidth=0.9))
    return drawing


def _probabilities(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    styles = writer.styles
    rows: list[list[object]] = [[writer.para(text, styles.label) for text in ("Class", "Probability", "")]]
    for label, probability in sorted(case.probabilities.items(), key=lambda item: -item[1]):
        is_positive_class = label == case.positive_class
        marker = case.threshold if is_positive_class else None
        name = class_text(label, case.positive_class) + ("  (model output)" if label == case.finding else "")
        rows.append(
            [
                writer.para(name, styles.small),
                writer.para(format_percent(probability), styles.small),
                _probability_bar(probability, marker, label == case.finding),
            ]
        )
    table = writer.grid_table(rows, [writer.frame_width - BAR_WIDTH - 36 * mm, 28 * mm, BAR_WIDTH + 8 * mm])
    calibration = (
        f" ({case.model.calibration.strip()})" if case.model.calibration and case.model.calibration.strip() else ""
    )
    note = f"Calibrated probabilities{calibration}." + (
        " The vertical mark is the decision threshold." if case.threshold is not None else ""
    )
    return [
        KeepTogether(
            [writer.section("Per-class probabilities"), table, writer.spacer(0.3), writer.para(note, styles.caption)]
        )
    ]


def _uncertainty(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    details = case.uncertainty
    fields = [("Uncertain flag", "Yes: the result needs careful review" if case.uncertain else "No")]
    if details is not None:
        fields = [
            ("Predictive entropy", f"{details.entropy:.3f}" if details.entropy is not None else None),
            ("Std. deviation", f"{details.std:.3f}" if details.std is not None else None),
            ("Method", details.method),
            *fields,
        ]
    if details is None and not case.uncertain:
        return []
    table = writer.fields_table(fields)
    return [KeepTogether([writer.section("Uncertainty"), table])] if table is not None else []


def _quality(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    if not case.quality_warnings:
        return []
    content = writer.bullets(displayed_warnings(case.quality_warnings), writer.styles.small)
    return [KeepTogether([writer.section("Image quality warnings"), writer.callout(content, CAUTION, CAUTION_PANEL)])]


def _similar_cases(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    if not case.similar_cases:
        return []
    styles = writer.styles
    with_thumbnails = any(similar.thumbnail_png for similar in case.similar_cases)
    header = ["#", "Case", "Label", "Similarity"]
    thumb_size = 15 * mm
    rows: list[list[object]] = [
        [writer.para(text, styles.label) for text in ([""] if with_thumbnails else []) + header]
    ]
    for rank, similar in enumerate(case.similar_cases, start=1):
        row: list[object] = []
        if with_thumbnails:
            thumbnail = similar.thumbnail_png
            row.append(
                picture(thumbnail, "similar case thumbnail_png", thumb_size, thumb_size, MAX_THUMBNAIL_PIXELS)
                if thumbnail
                else ""
            )
        row += [
            writer.para(str(rank), styles.small),
            writer.para(similar.case_id, styles.small),
            writer.para(display_label(similar.label), styles.small),
            writer.para(f"{similar.similarity:.3f}", styles.small),
        ]
        rows.append(row)
    fixed = [thumb_size + 6 * mm] if with_thumbnails else []
    rest = writer.frame_width - sum(fixed) - 10 * mm - 24 * mm
    widths = [*fixed, 10 * mm, rest * 0.6, rest * 0.4, 24 * mm]
    table = writer.grid_table(rows, widths)
    note = writer.para(
        "Cosine similarity of image embeddings (1 = identical); labels are confirmed diagnoses.", styles.caption
    )
    return [writer.section("Similar reference cases"), table, writer.spacer(0.3), note]


def _model(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    flowables: list[Flowable] = [writer.section("Model")]
    table = writer.fields_table(model_fields(case))
    if table is not None:
        flowables.append(table)
    metrics = writer.fields_table(metric_fields(case), columns=3)
    if metrics is not None:
        flowables += [
            writer.spacer(0.4),
            writer.para("Performance on the held-out test set", writer.styles.label),
            metrics,
        ]
    limitations = case.model.limitations
    if limitations and limitations.strip():
        flowables += [writer.spacer(0.4), writer.para("Known limitations", writer.styles.label)]
        flowables += writer.paragraphs(limitations, writer.styles.small)
    return flowables


def _sign_off(writer: ReportWriter, case: ReportCase) -> Flowable:
    styles = writer.styles
    if case.is_signed and case.signed_at is not None and case.signed_by is not None:
        text = f"Electronically signed by <b>{writer.m(case.signed_by)}</b> on {format_datetime(case.signed_at)}."
        panel = writer.callout([writer.rich(text, styles.body)], NEGATIVE, SIGNED_PANEL)
        return KeepTogether([writer.section("Radiologist sign-off"), panel])
    status = writer.para("Not signed: preliminary AI output awaiting radiologist review.", styles.body)
    # Three write-in lines with gaps between them: label above, an empty row to sign in, a rule below.
    gap = 8 * mm
    width = (writer.frame_width - 2 * gap) / 3
    labels = [writer.para(label, styles.label) for label in ("Radiologist", "Signature", "Date and time")]
    lines = Table(
        [[labels[0], "", labels[1], "", labels[2]], [""] * 5],
        colWidths=[width, gap, width, gap, width],
        rowHeights=[None, 11 * mm],
        hAlign="LEFT",
    )
    lines.setStyle(
        TableStyle(
            [("LINEBELOW", (column, 1), (column, 1), 0.6, INK) for column in (0, 2, 4)]
            + [("LEFTPADDING", (0, 0), (-1, -1), 0), ("RIGHTPADDING", (0, 0), (-1, -1), 0)]
        )
    )
    return KeepTogether([writer.section("Radiologist sign-off"), status, lines])
