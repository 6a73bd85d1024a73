"""Interop: the workstation's results as the hospital's systems take them.

Public surface:
- DICOM out (interop/dicom_out.py), pure functions of a `reports.ReportCase` and an `ExportContext`:
  `structured_report(case, context)` (Comprehensive SR), `encapsulated_pdf(case, context, pdf, title)`,
  `secondary_capture(case, context)` (the heatmap overlay), `dicom_bytes(dataset)`, `dicom_filename(kind, case)`,
  `case_study_uid(case)`, `DicomKind`, `DICOM_KINDS`
- FHIR out (interop/fhir_out.py): `fhir_report(case, context) -> dict` (an R4 Bundle: DiagnosticReport, Observation,
  Patient, Device and the signer as Practitioner), `FHIR_MEDIA_TYPE`
- both findings: once the case has the nodule finding (`ReportCase.nodule`), the SR holds it in a container of its
  own (SNOMED CT Nodule, probability, threshold, the nodule model, its measured performance, each mark's score
  inferred from its rectangle and centre as SCOORDs on the uploaded image, or from its box written out when the
  upload was no DICOM image) and the FHIR Bundle a second Observation (and Device) that the DiagnosticReport lists
- records and codes: `ExportContext`, `Concept`, `FINDING_CONCEPTS`, `finding_concept(label)`
- errors: `ExportError` (base, a ValueError), `ExportInputError` (the case cannot be written: 422)

A room of its own rather than part of `reports/`: it carries the hospital formats' libraries (highdicom, pydicom,
fhir.resources) and will hold the PACS side too, while `reports/` stays reportlab and nothing else. It reads the
same case record as the PDFs (`reports.ReportCase`), so every format says the same thing.
"""

from interop.dicom_out import (
    DICOM_KINDS,
    DicomKind,
    case_study_uid,
    dicom_bytes,
    dicom_filename,
    encapsulated_pdf,
    secondary_capture,
    structured_report,
)
from interop.errors import ExportError, ExportInputError
from interop.fhir_out import FHIR_MEDIA_TYPE, fhir_report
from interop.records import FINDING_CONCEPTS, Concept, ExportContext, finding_concept

__all__ = [
    "DICOM_KINDS",
    "FHIR_MEDIA_TYPE",
    "FINDING_CONCEPTS",
    "Concept",
    "DicomKind",
    "ExportContext",
    "ExportError",
    "ExportInputError",
    "case_study_uid",
    "dicom_bytes",
    "dicom_filename",
    "encapsulated_pdf",
    "fhir_report",
    "finding_concept",
    "secondary_capture",
    "structured_report",
]
