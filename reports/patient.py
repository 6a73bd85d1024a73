"""Patient-friendly report: large type, plain words, no numbers without meaning, and what happens next."""

from __future__ import annotations

from reportlab.platypus import Flowable, KeepTogether

from reports.content import patient_name, study_date
from reports.formatting import format_date, format_datetime, text_or_none
from reports.layout import ACCENT, NEGATIVE, PANEL, SIGNED_PANEL, ReportWriter, build_pdf
from reports.records import ReportCase, ReportContext
from reports.wording import (
    PATIENT_DISCLAIMER,
    patient_certainty_sentences,
    patient_certainty_title,
    patient_next_steps,
    patient_nodule_sentence,
    patient_result_sentence,
)

TITLE = "Your chest X-ray result"
BASE_SIZE = 13.0


def render_patient_report(case: ReportCase, context: ReportContext) -> bytes:
    """The PDF written for the patient."""
    writer = ReportWriter(context, BASE_SIZE)
    story: list[Flowable] = [writer.para(TITLE, writer.styles.title)]
    story += _who(writer, case)
    story += _what_was_done(writer)
    story += _result(writer, case)
    story += _next_steps(writer, case)
    story += _remember(writer, case)
    return build_pdf(writer, case, "Patient report", story, footer_size=9.0)


def _who(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    fields = [
        ("Name", patient_name(case)),
        ("Date of birth", format_date(case.patient.birth_date) or format_date(case.study.get("PatientBirthDate"))),
        ("Date of X-ray", study_date(case) or case.created_at.date().isoformat()),
    ]
    table = writer.fields_table(fields, columns=1)
    return [table] if table is not None else []


def _what_was_done(writer: ReportWriter) -> list[Flowable]:
    return [
        writer.section("What was done"),
        writer.para(
            "You had an X-ray picture taken of your chest. "
            "A computer program looked at the picture to help your doctor read it."
        ),
    ]


def _result(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    styles = writer.styles
    # Both findings in one panel, the second in plain words too: no numbers and no film with scores.
    findings = f"{patient_result_sentence(case)} {patient_nodule_sentence(case)}"
    result = writer.callout([writer.para(findings, styles.body)], ACCENT, PANEL)
    sureness = [writer.para(sentence) for sentence in patient_certainty_sentences(case)]
    return [
        KeepTogether([writer.section("What the computer found"), result]),
        KeepTogether([writer.section(patient_certainty_title(case)), *sureness]),
    ]


def _next_steps(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    return [KeepTogether([writer.section("What happens next"), *writer.bullets(patient_next_steps(case))])]


def _remember(writer: ReportWriter, case: ReportCase) -> list[Flowable]:
    styles = writer.styles
    content: list[Flowable] = [writer.para(PATIENT_DISCLAIMER, styles.body)]
    signer = text_or_none(case.signed_by)
    if signer is not None and case.signed_at is not None:
        content.append(
            writer.rich(f"Checked by <b>{writer.m(signer)}</b> on {format_datetime(case.signed_at)}.", styles.body)
        )
    color = NEGATIVE if signer is not None else ACCENT
    return [
        KeepTogether(
            [writer.section("Please remember"), writer.callout(content, color, SIGNED_PANEL if signer else PANEL)]
        )
    ]
