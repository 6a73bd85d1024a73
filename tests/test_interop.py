"""The exports as pure functions of a report's case record (no server): what they say of a film the input gate
refused and the validated scope does not cover, a patient named in another script, and the inputs they refuse.
The HTTP path with a real film is tests/test_dicom_fhir_out.py."""

from __future__ import annotations

import dataclasses
import io
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle

from interop import (
    ExportContext,
    ExportInputError,
    dicom_bytes,
    encapsulated_pdf,
    fhir_report,
    secondary_capture,
    structured_report,
)
from reports import PatientDetails, ReportCase
from reports.samples import sample_case

CONTEXT = ExportContext("St. Example Hospital", "cxr-pneumonia", "outside_validated")
OOD_REASON = "the image does not look like a chest radiograph"
SCOPE_REASON = "age 54 years is outside the validated ages (1-5)"


@pytest.fixture(scope="module")
def refused_case() -> ReportCase:
    """The sample case as an adult film the gate flagged, for a patient named in Cyrillic."""
    patient = dataclasses.replace(sample_case().patient, name="Ольга Петрова")
    return dataclasses.replace(
        sample_case(), ood=True, ood_reason=OOD_REASON, scope_reason=SCOPE_REASON, uncertain=True, patient=patient
    )


def content(sr: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    return {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}


def test_the_report_says_the_gate_refused_the_film_and_it_is_outside_the_validated_scope(
    refused_case: ReportCase,
) -> None:
    sr = pydicom.dcmread(io.BytesIO(dicom_bytes(structured_report(refused_case, CONTEXT))))
    items = content(sr)
    assert items["Input gate verdict"].TextValue == f"out of distribution: {OOD_REASON}"
    assert items["Validated scope"].TextValue == f"outside the validated populations: {SCOPE_REASON}"
    assert items["Flagged as uncertain"].ConceptCodeSequence[0].CodeMeaning == "Yes"
    assert (sr.VerificationFlag, sr.PreliminaryFlag) == ("UNVERIFIED", "PRELIMINARY")
    bundle = Bundle.model_validate_json(fhir_report(refused_case, CONTEXT))
    observation = next(e.resource for e in bundle.entry if e.resource.__resource_type__ == "Observation")
    said = {c.code.text: c.valueString or c.valueBoolean for c in observation.component}
    assert said["Input gate verdict"] == f"out of distribution: {OOD_REASON}"
    assert said["Validated scope"] == f"outside the validated populations: {SCOPE_REASON}"
    assert said["Flagged as uncertain"] is True


def test_a_name_in_another_script_survives_and_every_object_stays_valid(
    refused_case: ReportCase, tmp_path: Path
) -> None:
    objects = {
        "sr": structured_report(refused_case, CONTEXT),
        "pdf": encapsulated_pdf(refused_case, CONTEXT, b"%PDF-1.4 tiny", "Radiologist report"),
        "sc": secondary_capture(refused_case, CONTEXT),
    }
    for kind, dataset in objects.items():
        read = pydicom.dcmread(io.BytesIO(dicom_bytes(dataset)))
        assert str(read.PatientName) == "Ольга Петрова^", kind
        assert read.StudyInstanceUID == refused_case.study["StudyInstanceUID"], kind
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is missing: apt-get install -y dicom3tools")
    for kind, dataset in objects.items():
        path = tmp_path / f"{kind}.dcm"
        path.write_bytes(dicom_bytes(dataset))
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], kind


def test_what_cannot_be_exported_is_refused_with_a_reason() -> None:
    case = sample_case()
    with pytest.raises(ExportInputError, match="not a PDF"):
        encapsulated_pdf(case, CONTEXT, b"<html>", "Radiologist report")
    with pytest.raises(ExportInputError, match="no heatmap overlay"):
        secondary_capture(dataclasses.replace(case, heatmap_png=None), CONTEXT)
    with pytest.raises(ExportInputError, match="model_name must be a non-empty text"):
        ExportContext("St. Example Hospital", " ")


def test_a_case_without_patient_details_still_makes_valid_objects() -> None:
    case = dataclasses.replace(sample_case(), patient=PatientDetails(), study={})
    sr = pydicom.dcmread(io.BytesIO(dicom_bytes(structured_report(case, CONTEXT))))
    assert (str(sr.PatientName), sr.PatientID, sr.PatientSex) == ("", "", "")
    assert pydicom.uid.UID(sr.StudyInstanceUID).is_valid
    bundle = Bundle.model_validate_json(fhir_report(case, CONTEXT))
    patient = next(e.resource for e in bundle.entry if e.resource.__resource_type__ == "Patient")
    assert (patient.name, patient.gender, patient.birthDate) == (None, None, None)
