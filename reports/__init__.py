"""reports: PDF reports of one analysed case for three readers, as pure functions of a case record and its images.

Public surface:
- `render_report(kind, case, context) -> bytes` with kind in REPORT_KINDS ("radiologist", "clinical", "patient"),
  and the three kinds directly: `render_radiologist_report`, `render_clinical_report`, `render_patient_report`
- `report_filename(kind, case) -> str`: the download name (ASCII, no patient data)
- input records: `ReportCase`, `PatientDetails`, `UncertaintyDetails`, `ModelCard`, `SimilarCase`, `ReportContext`;
  the second finding `NoduleReport` (label, probability, threshold, model version, `NoduleMark` boxes in the stored
  image's pixels, the performance sentence; `NoduleReport.from_dict(case_json_nodule, image_size)`), None when no
  nodule model is served: every report then says so in one line
- `DISCLAIMER`: the statement every page carries; `nodule_performance_sentence(sensitivity, false_positives_per_film)`:
  the nodule model's measured operating point in words (screen and PDFs say the same)
- the audit trail as a PDF (reports/audit.py): `render_audit_report(AuditExport, context) -> bytes` from plain
  `AuditRecord`s, with the chain's verification and head hash on the first page
- errors: `ReportError` (base, a ValueError), `ReportInputError` (bad case data: 422), `UnknownReportKindError` (400)

Build the context from settings: `ReportContext(institution_name=s.institution_name, logo_path=s.institution_logo_path,
page_size=s.report_page_size, extra_font_paths=s.report_extra_font_paths)`.
Fonts are bundled (reports/fonts/, see its README.md); any script in names and text renders.
`reports.samples` draws a synthetic radiograph and a complete sample case (previews, tests, benchmark);
`python -m reports sample --out DIR` writes the three reports of it.
"""

from reports.audit import AuditExport, AuditRecord, render_audit_report
from reports.clinical import render_clinical_report
from reports.errors import ReportError, ReportInputError, UnknownReportKindError
from reports.patient import render_patient_report
from reports.radiologist import render_radiologist_report
from reports.records import (
    REPORT_KINDS,
    ModelCard,
    NoduleMark,
    NoduleReport,
    PatientDetails,
    ReportCase,
    ReportContext,
    ReportKind,
    SimilarCase,
    UncertaintyDetails,
)
from reports.render import render_report, report_filename
from reports.wording import DISCLAIMER, nodule_performance_sentence

__all__ = [
    "DISCLAIMER",
    "REPORT_KINDS",
    "AuditExport",
    "AuditRecord",
    "ModelCard",
    "NoduleMark",
    "NoduleReport",
    "PatientDetails",
    "ReportCase",
    "ReportContext",
    "ReportError",
    "ReportInputError",
    "ReportKind",
    "SimilarCase",
    "UncertaintyDetails",
    "UnknownReportKindError",
    "nodule_performance_sentence",
    "render_audit_report",
    "render_clinical_report",
    "render_patient_report",
    "render_radiologist_report",
    "render_report",
    "report_filename",
]
