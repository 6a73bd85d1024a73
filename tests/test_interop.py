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


# --- the second finding: lung nodule or mass ------------------------------------------------------------------------

IMAGE_UIDS = {  # the uploaded DICOM image, as the case keeps it
    "SOPClassUID": "1.2.840.10008.5.1.4.1.1.1.1",
    "SOPInstanceUID": "1.2.826.0.1.3680043.8.498.555001",
    "SeriesInstanceUID": "1.2.826.0.1.3680043.8.498.555002",
}
NODULE_PERFORMANCE = "Finds about 6 of 10 nodules or masses, at about 1 false mark per film (measured on test films)."
# The sample's marks, written out: (x, y, w, h) in the film's pixels and the score.
MARKS = [((408, 224, 56, 56), 0.83), ((150, 330, 48, 44), 0.31)]


def nodule_container(sr: pydicom.Dataset) -> pydicom.Dataset:
    return content(sr)["Lung nodule or mass result"]


def children(item: pydicom.Dataset, meaning: str) -> list[pydicom.Dataset]:
    return [child for child in item.ContentSequence if child.ConceptNameCodeSequence[0].CodeMeaning == meaning]


def number(item: pydicom.Dataset) -> float:
    return float(item.MeasuredValueSequence[0].NumericValue)


def test_the_structured_report_marks_each_nodule_on_the_uploaded_image(tmp_path: Path) -> None:
    case = dataclasses.replace(sample_case(), study={**sample_case().study, **IMAGE_UIDS})
    sr = pydicom.dcmread(io.BytesIO(dicom_bytes(structured_report(case, CONTEXT))))
    assert content(sr)["Finding"].ConceptCodeSequence[0].CodeValue == "233604007"  # pneumonia stays the first finding
    nodule = nodule_container(sr)
    finding = children(nodule, "Finding")[0].ConceptCodeSequence[0]
    assert (finding.CodeValue, finding.CodingSchemeDesignator, finding.CodeMeaning) == ("27925004", "SCT", "Nodule")
    assert children(nodule, "Finding Site")[0].ConceptCodeSequence[0].CodeValue == "39607008"  # lung
    assert number(children(nodule, "Probability of a lung nodule or mass")[0]) == 0.78
    assert number(children(nodule, "Decision threshold on the nodule probability")[0]) == 0.42
    assert children(nodule, "Algorithm Version")[0].TextValue == "nodule-resnet18-2026.12.1"
    assert children(nodule, "Algorithm Name")[0].TextValue == "cxr-nodule"
    assert children(nodule, "Measured performance of the nodule model")[0].TextValue == NODULE_PERFORMANCE
    scores = children(nodule, "Nodule mark score")
    assert [number(score) for score in scores] == [score for _, score in MARKS]
    for score, ((x, y, w, h), _) in zip(scores, MARKS, strict=True):
        region, centre = children(score, "Image Region")[0], children(score, "Center")[0]
        assert (region.RelationshipType, region.ValueType, region.GraphicType) == (
            "INFERRED FROM",
            "SCOORD",
            "POLYLINE",
        )
        assert list(region.GraphicData) == [x, y, x + w, y, x + w, y + h, x, y + h, x, y]
        assert (centre.GraphicType, list(centre.GraphicData)) == ("POINT", [x + w / 2, y + h / 2])
        for scoord in (region, centre):
            image = scoord.ContentSequence[0]
            assert (image.RelationshipType, image.ValueType) == ("SELECTED FROM", "IMAGE")
            assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == IMAGE_UIDS["SOPInstanceUID"]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == IMAGE_UIDS["SeriesInstanceUID"]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == IMAGE_UIDS["SOPInstanceUID"]
    assert dciodvfy_errors(structured_report(case, CONTEXT), tmp_path) == []


def test_without_the_uploaded_images_uids_each_mark_is_written_out_as_its_box(tmp_path: Path) -> None:
    """A PNG upload (or a case analysed before the image's UIDs were kept) has no DICOM image to draw on."""
    sr = pydicom.dcmread(io.BytesIO(dicom_bytes(structured_report(sample_case(), CONTEXT))))
    scores = children(nodule_container(sr), "Nodule mark score")
    boxes = [children(score, "Nodule mark box")[0] for score in scores]
    assert [box.TextValue for box in boxes] == [
        "x 408, y 224, w 56, h 56 (image pixels); score 0.83",
        "x 150, y 330, w 48, h 44 (image pixels); score 0.31",
    ]
    assert all(box.RelationshipType == "INFERRED FROM" for box in boxes)
    assert "CurrentRequestedProcedureEvidenceSequence" not in sr
    assert dciodvfy_errors(structured_report(sample_case(), CONTEXT), tmp_path) == []


def test_the_fhir_report_carries_the_nodule_observation_with_its_marks() -> None:
    bundle = Bundle.model_validate_json(fhir_report(sample_case(), CONTEXT))
    resources = {entry.resource.id: entry.resource for entry in bundle.entry}
    report = next(r for r in resources.values() if r.__resource_type__ == "DiagnosticReport")
    pneumonia, nodule = (resources[ref.reference.removeprefix("urn:uuid:")] for ref in report.result)
    assert float(pneumonia.valueQuantity.value) == 0.913
    assert [c.coding[0].code for c in report.conclusionCode] == ["233604007", "27925004"]
    assert "Nodule (probability of a lung nodule or mass 0.78, 2 marks)" in report.conclusion
    assert (nodule.code.coding[0].system, nodule.code.coding[0].code) == ("http://snomed.info/sct", "27925004")
    assert float(nodule.valueQuantity.value) == 0.78
    assert nodule.interpretation[0].coding[0].code == "POS"
    assert nodule.bodySite.coding[0].code == "39607008"
    assert nodule.method.text == "cxr-nodule version nodule-resnet18-2026.12.1"
    assert [note.text for note in nodule.note] == [NODULE_PERFORMANCE]
    said = [(c.code.coding[0].code, c.valueString or float(c.valueQuantity.value)) for c in nodule.component]
    assert said == [
        ("THRESHOLD", 0.42),
        ("NODULE-MARK", "x 408, y 224, w 56, h 56 (image pixels); score 0.83"),
        ("NODULE-MARK", "x 150, y 330, w 48, h 44 (image pixels); score 0.31"),
    ]
    device = resources[nodule.device.reference.removeprefix("urn:uuid:")]
    assert [v.value for v in device.version] == ["nodule-resnet18-2026.12.1"]


def test_a_case_without_a_nodule_finding_says_so_and_carries_pneumonia_only() -> None:
    case = dataclasses.replace(sample_case(), nodule=None)
    sr = pydicom.dcmread(io.BytesIO(dicom_bytes(structured_report(case, CONTEXT))))
    assert "Lung nodule or mass result" not in content(sr)
    bundle = Bundle.model_validate_json(fhir_report(case, CONTEXT))
    kinds = [entry.resource.__resource_type__ for entry in bundle.entry]
    assert kinds.count("Observation") == 1 and kinds.count("Device") == 1
    report = bundle.entry[0].resource
    assert len(report.result) == 1 and len(report.conclusionCode) == 1
    assert "no nodule model was served" in report.conclusion


def dciodvfy_errors(dataset: pydicom.Dataset, folder: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is missing: apt-get install -y dicom3tools")
    path = folder / "object.dcm"
    path.write_bytes(dicom_bytes(dataset))
    checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (checked.stdout + checked.stderr).splitlines() if line.startswith("Error")]
