"""A case as the hospital's systems take it: DICOM objects for the PACS and a FHIR report for the record.

The same case record the PDFs are printed from (`report_case`), written by the `interop` room: the Structured
Report, the radiologist PDF as Encapsulated PDF, the heatmap overlay as Secondary Capture, and the FHIR Bundle.
"""

from __future__ import annotations

from dataclasses import dataclass

from api.analysis import report_context
from api.report_cases import report_case
from api.services import Services
from interop import (
    DicomKind,
    ExportContext,
    dicom_bytes,
    dicom_filename,
    encapsulated_pdf,
    fhir_report,
    secondary_capture,
    structured_report,
)
from reports import ReportCase, render_report
from storage import CaseRecord

RADIOLOGIST_REPORT_TITLE = "Radiologist report (AI decision support)"


@dataclass(frozen=True)
class Export:
    """One export's bytes, its download name and the model version that made the result."""

    content: bytes
    filename: str
    model_version: str


def export_context(services: Services, record: CaseRecord) -> ExportContext:
    return ExportContext(
        institution_name=services.settings.institution_name[:64],
        model_name=f"cxr-{record.task}",  # the model registry's name (mlops/registry.py)
        scope=record.scope,
    )


def dicom_export(services: Services, case_id: str, kind: DicomKind) -> Export:
    record = services.get_case(case_id)
    case, context = report_case(services, record), export_context(services, record)
    if kind == "sr":
        dataset = structured_report(case, context)
    elif kind == "pdf":
        pdf = render_report("radiologist", case, report_context(services.settings))
        dataset = encapsulated_pdf(case, context, pdf, RADIOLOGIST_REPORT_TITLE)
    else:
        dataset = secondary_capture(case, context)
    return Export(dicom_bytes(dataset), dicom_filename(kind, case), case.model.version)


def fhir_export(services: Services, case_id: str) -> Export:
    record = services.get_case(case_id)
    case: ReportCase = report_case(services, record)
    bundle = fhir_report(case, export_context(services, record))
    return Export(bundle.encode(), f"cxr-{case.case_id}-fhir.json", case.model.version)
