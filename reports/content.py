"""Label/value lists drawn from a case: patient, study, model. Values are formatted text or None (then left out)."""

from __future__ import annotations

from reports.formatting import (
    clip,
    format_age,
    format_date,
    format_metric,
    format_person_name,
    format_sex,
    format_tag_value,
    metric_label,
    tag_label,
    text_or_none,
)
from reports.records import ReportCase

Fields = list[tuple[str, str | None]]

# Study tags shown first, in this order; the rest follow alphabetically. Patient* tags feed the patient block instead.
STUDY_TAG_ORDER = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "Modality",
    "ViewPosition",
    "BodyPartExamined",
    "StudyDescription",
    "InstitutionName",
    "ReferringPhysicianName",
    "Manufacturer",
    "ManufacturerModelName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "PhotometricInterpretation",
    "TransferSyntaxUID",
    "format",
    "width",
    "height",
)


def patient_name(case: ReportCase) -> str | None:
    return text_or_none(case.patient.name) or format_person_name(case.study.get("PatientName"))


def patient_fields(case: ReportCase) -> Fields:
    """Patient identity; the workstation's fields win, DICOM Patient* tags fill the gaps."""
    patient, study = case.patient, case.study
    return [
        ("Patient name", patient_name(case)),
        ("Patient ID", text_or_none(patient.patient_id) or text_or_none(study.get("PatientID"))),
        ("Date of birth", format_date(patient.birth_date) or format_date(study.get("PatientBirthDate"))),
        ("Age", format_age(patient.age) or format_age(study.get("PatientAge"))),
        ("Sex", format_sex(patient.sex) or format_sex(study.get("PatientSex"))),
    ]


def study_date(case: ReportCase) -> str | None:
    return format_date(case.study.get("StudyDate"))


def study_fields(case: ReportCase, include_technical: bool = True) -> Fields:
    """Case id and DICOM study tags (all of them for the radiologist, the descriptive ones otherwise)."""
    fields: Fields = [("Case ID", case.case_id)]
    ordered = [key for key in STUDY_TAG_ORDER if key in case.study]
    others = sorted(key for key in case.study if key not in STUDY_TAG_ORDER and not key.startswith("Patient"))
    for key in ordered + (others if include_technical else []):
        if not include_technical and key.endswith("UID"):
            continue
        value = format_tag_value(key, case.study[key])
        fields.append((tag_label(key), clip(value) if value else None))
    return fields


def model_fields(case: ReportCase) -> Fields:
    model = case.model
    return [
        ("Model version", text_or_none(model.version)),
        ("Architecture", text_or_none(model.architecture)),
        ("Calibration", text_or_none(model.calibration)),
    ]


def metric_fields(case: ReportCase) -> Fields:
    return [(metric_label(str(name)), format_metric(value)) for name, value in case.model.test_metrics.items()]
