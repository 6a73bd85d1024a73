"""Clinical assessment report for the referring clinician: the finding, how sure, what to do, one key image."""

from __future__ import annotations

from reportlab.lib.units import mm
from reportlab.platypus import Flowable, KeepTogether, Table, TableStyle

from reports.content import patient_fields, study_date
from reports.formatting import clip, displayed_warnings, format_datetime, format_percent
from reports.layout import (
    CAUTION,
    CAUTION_PANEL,
    NEGATIVE,
    PANEL,
    POSITIVE,
    SIGNED_PANEL,
    ReportWriter,
    build_pdf,
    picture,
)
from reports.nodules import SECTION_TITLE, beside_film, no_nodule_model, nodule_panel, text_width
from reports.records import ReportCase, ReportContext
from reports.wording import (
    clinical_finding_sentence,
    clinical_nodule_sentence,
    clinical_recommendations,
    confidence_statement,
    nodule_marks_text,
    nodule_performance_text,
)

TITLE = "Clinical assessment report"
BASE_SIZE = 10.0
NODULE_FILM_WIDTH = 48 * mm


def render_clinical_report(case: ReportCase, context: ReportContext) -> bytes:
    """The PDF for the referring clinician."""
    writer = ReportWriter(context, BASE_SIZE)
    story: list[Flowable] = [writer.para("Chest X-ray: AI-assisted clinical assessment", writer.styles.title)]
    story += _patient(writer, case)
    story += _assessment(writer, case)
    story += _nodule(writer, case)
    story.append(_recommendation_beside_key_image(writer, case))
    story += _clinical_information(writer, case)  # the clinician's own words, so last: the answer comes first
    return build_pdf(writer, case, TITLE, story, footer_size=7.5)


def _patient(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    fields = [*patient_fields(case), ("X-ray date", study_date(case)), ("Case ID", case.case_id)]
    table = writer.fields_table(fields)
    return [writer.section("Patient"), table] if table is not None else []


def _clinical_information(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    history = case.patient.clinical_history
    blocks = writer.paragraphs(history) if history else []
    return [writer.section("Clinical information provided"), *blocks] if blocks else []


def _caution(writer: ReportWriter, label: str, text: str) -> Flowable:
    return writer.rich(f'<font color="{CAUTION.hexval()}"><b>{label}:</b></font> ' + writer.m(text), writer.styles.body)


def _assessment(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    styles = writer.styles
    statement = confidence_statement(case)
    color = CAUTION if case.uncertain or case.ood else POSITIVE if case.is_positive else NEGATIVE
    content: list[Flowable] = [
        writer.para(clinical_finding_sentence(case), styles.finding),
        writer.rich(f"<b>Confidence: {writer.m(statement.level)}.</b> {writer.m(statement.explanation)}", styles.body),
    ]
    if case.ood:
        reason = clip(case.ood_reason or "")
        text = f"it differs from the images the AI was trained on{': ' + reason if reason else ''}."
        content.append(_caution(writer, "Unusual image", text))
    if case.outside_scope:
        text = f"{clip(case.scope_reason or '')}; the AI result has not been validated for this patient."
        content.append(_caution(writer, "Outside the validated populations", text))
    if case.quality_warnings:
        joined = " ".join(f"{warning.rstrip('.')}." for warning in displayed_warnings(case.quality_warnings))
        label = f'<font color="{CAUTION.hexval()}"><b>Image quality:</b></font>'
        content.append(writer.rich(f"{label} {writer.m(joined)}", styles.body))
    background = CAUTION_PANEL if case.uncertain or case.ood else PANEL
    return [KeepTogether([writer.section("Assessment"), writer.callout(content, color, background)])]


def _nodule(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    """The second finding in clinical words, how likely, how well the model finds nodules, and the marked film."""
    nodule = case.nodule
    if nodule is None:
        return no_nodule_model(writer, case)
    styles = writer.styles
    lines: list[Flowable] = [
        writer.rich(f"<b>{writer.m(clinical_nodule_sentence(nodule))}</b>", styles.body),
        writer.rich(
            f"<b>AI estimate of a nodule or mass: {format_percent(nodule.probability)}</b> "
            f"(reported as present from {format_percent(nodule.threshold)}). {writer.m(nodule_marks_text(nodule))}",
            styles.body,
        ),
    ]
    performance = nodule_performance_text(nodule)
    lines.append(writer.rich(f"<b>How well the AI finds them:</b> {writer.m(performance)}", styles.body))
    width = text_width(writer, case, NODULE_FILM_WIDTH)
    panel = nodule_panel(writer, nodule, lines, width)
    return [KeepTogether([writer.section(SECTION_TITLE), beside_film(writer, case, [panel], NODULE_FILM_WIDTH)])]


def _recommendation_beside_key_image(writer: ReportWriter, case: ReportCase) -> Table:
    """Recommendation and review status on the left, the key image on the right: one page for the usual case."""
    gap = 7 * mm
    image_width = 68 * mm
    text_width = writer.frame_width - image_width - gap
    left = [
        writer.section("Recommendation"),
        *writer.bullets(clinical_recommendations(case)),
        *_review_status(writer, case, text_width),
    ]
    table = Table(
        [[left, _key_image(writer, case, image_width)]], colWidths=[text_width + gap, image_width], hAlign="LEFT"
    )
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (0, 0), gap),
                ("RIGHTPADDING", (1, 0), (1, 0), 0),
            ]
        )
    )
    return table


def _key_image(writer: ReportWriter, case: ReportCase, width: float) -> list[Flowable]:
    """The overlay shows where the AI looked, so it is the key image when there is one."""
    if case.heatmap_png is not None:
        image = picture(case.heatmap_png, "heatmap_png", width, 90 * mm)
        caption = "Chest X-ray; warm colours mark the regions that most influenced the AI result."
    else:
        image = picture(case.image_png, "image_png", width, 90 * mm)
        caption = "Chest X-ray analysed by the AI."
    return [writer.section("Key image"), image, writer.spacer(0.3), writer.para(caption, writer.styles.caption)]


def _review_status(writer: ReportWriter, case: ReportCase, width: float) -> list[Flowable]:
    styles = writer.styles
    if case.signed_by is not None and case.signed_at is not None:
        text = f"Reviewed and signed by <b>{writer.m(case.signed_by)}</b> on {format_datetime(case.signed_at)}."
        panel = writer.callout([writer.rich(text, styles.body)], NEGATIVE, SIGNED_PANEL, width)
    else:
        text = "Awaiting radiologist review: treat this AI result as preliminary."
        panel = writer.callout([writer.para(text, styles.body)], CAUTION, CAUTION_PANEL, width)
    model = writer.para(f"AI model version {case.model.version}.", styles.muted)
    return [writer.section("Review status"), panel, writer.spacer(0.4), model]
