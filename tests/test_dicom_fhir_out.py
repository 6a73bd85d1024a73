"""DICOM and FHIR out, over HTTP on the session's live server, with a real Kermany film.

A radiologist uploads the film as a DICOM study (patient and study tags of a real modality), signs it, and fetches
the Structured Report, the radiologist PDF as Encapsulated PDF and the heatmap overlay as Secondary Capture: each is
read back with pydicom/highdicom and checked for what a PACS user sees (same study as the upload, a new series each,
the patient, the finding and its probability, the signer), and each passes dicom3tools' `dciodvfy` without errors.
The FHIR Bundle is parsed back with the fhir.resources models themselves. A PNG upload gets a study of its own.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from PIL import Image
from pypdf import PdfReader

from tests.conftest import LiveApi
from tests.factories import dicom_bytes
from ui.client import BackendClient, BackendError

PNEUMONIA_FILM = "PNEUMONIA/person21_virus_53.jpg"  # the shipped model: PNEUMONIA at P = 0.34 (threshold 0.189)
NORMAL_FILM = "NORMAL/IM-0001-0001.jpg"  # P(PNEUMONIA) 0.003
STUDY_UID = "1.2.826.0.1.3680043.8.498.19191919191919"
SERIES_UID = "1.2.826.0.1.3680043.8.498.19191919191920"
PATIENT_TAGS = {
    "PatientName": "Okonkwo^Adaeze",
    "PatientID": "MRN-AO-5521",
    "PatientBirthDate": "20210412",
    "PatientSex": "F",
    "StudyDate": "20260301",
    "StudyInstanceUID": STUDY_UID,
    "SeriesInstanceUID": SERIES_UID,
}
FORM = '{"birth_date": "2021-04-12", "age": 4, "sex": "F"}'
SNOMED_PNEUMONIA = "233604007"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
ENCAPSULATED_PDF = "1.2.840.10008.5.1.4.1.1.104.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SCOPE_TEXTS = {  # the case's validated-scope verdict as the report states it
    "validated": "within the validated populations",
    "unchecked": "not checked (the model states no validated populations)",
}
REPORT_OVERLAY_SIDE, REPORT_OVERLAY_OPACITY = 768, 0.4  # the overlay the radiologist PDF prints


@pytest.fixture(scope="module")
def radiologist(sqlite_api: LiveApi) -> Iterator[httpx.Client]:
    with sqlite_api.client("radiologist") as http:
        yield http


def film_pixels(kermany_dir: Path, name: str) -> np.ndarray:
    with Image.open(kermany_dir / "test" / name) as image:
        return np.asarray(image.convert("L"), dtype=np.uint8)


def upload(http: httpx.Client, name: str, payload: bytes, patient: str) -> dict:
    answer = http.post("/v1/studies", files={"file": (name, payload)}, data={"patient": patient})
    assert answer.status_code == 201, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def signed_case(radiologist: httpx.Client, kermany_dir: Path, sqlite_api: LiveApi) -> dict:
    """A DICOM study of a pneumonia film, analysed and signed by the radiologist."""
    payload = dicom_bytes(film_pixels(kermany_dir, PNEUMONIA_FILM), extra_tags=PATIENT_TAGS)
    case = upload(radiologist, "film.dcm", payload, FORM)
    assert case["prediction"] == "PNEUMONIA", case["probabilities"]
    signed = radiologist.post(f"/v1/cases/{case['case_id']}/sign")
    assert signed.status_code == 200, signed.text
    return {**signed.json(), "signer": sqlite_api.accounts["radiologist"].username}


@pytest.fixture(scope="module")
def objects(radiologist: httpx.Client, signed_case: dict) -> dict[str, bytes]:
    """The three DICOM objects of the signed case, as downloaded."""
    found = {}
    for kind in ("sr", "pdf", "sc"):
        answer = radiologist.get(f"/v1/cases/{signed_case['case_id']}/dicom", params={"kind": kind})
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"] == "application/dicom"
        assert answer.content[128:132] == b"DICM"
        found[kind] = answer.content
    return found


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def sr_items(sr: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    """The report's content items by concept name (the whole tree, depth first)."""
    items: dict[str, pydicom.Dataset] = {}
    stack = list(sr.ContentSequence)
    while stack:
        item = stack.pop()
        items[item.ConceptNameCodeSequence[0].CodeMeaning] = item
        stack.extend(item.get("ContentSequence", []))
    return items


def test_every_object_joins_the_uploaded_study_in_a_new_series_of_its_own(objects: dict[str, bytes]) -> None:
    datasets = {kind: read(data) for kind, data in objects.items()}
    assert {kind: ds.SOPClassUID for kind, ds in datasets.items()} == {
        "sr": COMPREHENSIVE_SR,
        "pdf": ENCAPSULATED_PDF,
        "sc": SECONDARY_CAPTURE,
    }
    assert {ds.StudyInstanceUID for ds in datasets.values()} == {STUDY_UID}
    series = [ds.SeriesInstanceUID for ds in datasets.values()]
    assert len(set(series)) == 3 and SERIES_UID not in series
    for kind, ds in datasets.items():
        assert (ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex) == (
            "Okonkwo^Adaeze",
            "MRN-AO-5521",
            "20210412",
            "F",
        ), kind
        assert ds.StudyDate == "20260301", kind


def test_structured_report_states_the_signed_finding_probability_and_model(
    objects: dict[str, bytes], signed_case: dict
) -> None:
    sr = read(objects["sr"])
    assert hd.sr.srread(io.BytesIO(objects["sr"])).SOPInstanceUID == sr.SOPInstanceUID  # highdicom reads it back
    items = sr_items(sr)
    finding = items["Finding"].ConceptCodeSequence[0]
    assert (finding.CodeValue, finding.CodingSchemeDesignator, finding.CodeMeaning) == (
        SNOMED_PNEUMONIA,
        "SCT",
        "Pneumonia",
    )
    probability = float(items["Probability of Pneumonia"].MeasuredValueSequence[0].NumericValue)
    assert probability == pytest.approx(signed_case["probabilities"]["PNEUMONIA"], abs=1e-6)
    assert 0.189 < probability < 0.5  # the threshold's call, not a coin at 0.5
    assert float(items["Probability of No pneumonia-like opacity"].MeasuredValueSequence[0].NumericValue) == (
        pytest.approx(signed_case["probabilities"]["NORMAL"], abs=1e-6)
    )
    assert items["Input gate verdict"].TextValue == "passed"
    assert items["Validated scope"].TextValue == SCOPE_TEXTS[signed_case["scope"]]
    assert "Flagged as uncertain" in items and "Predictive entropy" in items
    assert items["Algorithm Name"].TextValue == "cxr-pneumonia"
    assert items["Algorithm Version"].TextValue == signed_case["model_version"]
    equipment = sr.ContributingEquipmentSequence[0]
    assert (equipment.ManufacturerModelName, equipment.SoftwareVersions) == (
        "cxr-pneumonia",
        signed_case["model_version"],
    )
    assert (sr.VerificationFlag, sr.PreliminaryFlag, sr.CompletionFlag) == ("VERIFIED", "FINAL", "COMPLETE")
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]  # the uploaded image itself, by its own UIDs
    assert (evidence.StudyInstanceUID, evidence.ReferencedSeriesSequence[0].SeriesInstanceUID) == (
        STUDY_UID,
        SERIES_UID,
    )
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == f"{signed_case['signer']}^"


def test_encapsulated_pdf_is_the_signed_radiologist_report(objects: dict[str, bytes], signed_case: dict) -> None:
    ds = read(objects["pdf"])
    assert ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    pdf = bytes(ds.EncapsulatedDocument)[: int(ds.EncapsulatedDocumentLength)]
    text = "".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(pdf)).pages)
    assert "Radiologist technical report" in text and "Okonkwo" in text
    assert f"Electronically signed by {signed_case['signer']}" in text
    assert ds.DocumentTitle == "Radiologist report (AI decision support)"


def test_secondary_capture_is_the_heatmap_overlay_of_the_report(
    objects: dict[str, bytes], signed_case: dict, radiologist: httpx.Client
) -> None:
    ds = read(objects["sc"])
    overlay = radiologist.get(
        f"/v1/cases/{signed_case['case_id']}/heatmap",
        params={"max_side": REPORT_OVERLAY_SIDE, "alpha": REPORT_OVERLAY_OPACITY},
    )
    assert overlay.status_code == 200, overlay.text
    with Image.open(io.BytesIO(overlay.content)) as image:
        expected = np.asarray(image.convert("RGB"))
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation) == (
        *expected.shape[:2],
        3,
        "RGB",
    )
    assert np.array_equal(ds.pixel_array, expected)


def test_every_object_passes_dciodvfy_without_errors(objects: dict[str, bytes], tmp_path: Path) -> None:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is missing: apt-get install -y dicom3tools (scripts/ensure_system_packages.sh)")
    errors = {}
    for kind, data in objects.items():
        path = tmp_path / f"{kind}.dcm"
        path.write_bytes(data)
        checked = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        lines = (checked.stdout + checked.stderr).splitlines()
        assert any(line.strip() for line in lines), f"dciodvfy said nothing about {kind}"
        errors[kind] = [line for line in lines if line.startswith("Error")]
    assert errors == {"sr": [], "pdf": [], "sc": []}


def test_fhir_report_is_final_names_the_signer_and_the_probability(
    radiologist: httpx.Client, signed_case: dict
) -> None:
    answer = radiologist.get(f"/v1/cases/{signed_case['case_id']}/fhir")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/fhir+json"
    bundle = Bundle.model_validate_json(answer.content)  # the models' own parser
    resources = {entry.resource.__resource_type__: entry.resource for entry in bundle.entry}
    report = resources["DiagnosticReport"]
    # the pneumonia Observation is the report's first result (a served nodule model adds a second)
    observation = next(e.resource for e in bundle.entry if f"urn:uuid:{e.resource.id}" == report.result[0].reference)
    assert (report.status, observation.status) == ("final", "final")
    assert [p.display for p in report.performer] == [signed_case["signer"]]
    assert report.conclusionCode[0].coding[0].code == SNOMED_PNEUMONIA
    assert "Pneumonia" in report.conclusion and signed_case["signer"] in report.conclusion
    assert float(observation.valueQuantity.value) == pytest.approx(signed_case["probabilities"]["PNEUMONIA"], abs=1e-6)
    assert signed_case["model_version"] in observation.method.text
    device = next(e.resource for e in bundle.entry if f"urn:uuid:{e.resource.id}" == observation.device.reference)
    assert [v.value for v in device.version] == [signed_case["model_version"]]
    patient = resources["Patient"]
    assert (patient.name[0].text, str(patient.birthDate), patient.gender) == ("Okonkwo Adaeze", "2021-04-12", "female")
    assert resources["Practitioner"].name[0].text == signed_case["signer"]


def test_a_png_upload_gets_a_study_of_its_own_and_stays_preliminary_until_signed(
    radiologist: httpx.Client, kermany_dir: Path
) -> None:
    with Image.fromarray(film_pixels(kermany_dir, NORMAL_FILM)) as image:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    case = upload(radiologist, "film.png", buffer.getvalue(), '{"name": "Png Only", "patient_id": "MRN-PNG-1"}')
    assert case["prediction"] == "NORMAL"
    url = f"/v1/cases/{case['case_id']}/dicom"
    first, again = (read(radiologist.get(url, params={"kind": "sr"}).content) for _ in range(2))
    sc = read(radiologist.get(url, params={"kind": "sc"}).content)
    assert first.StudyInstanceUID == again.StudyInstanceUID == sc.StudyInstanceUID != STUDY_UID
    assert pydicom.uid.UID(first.StudyInstanceUID).is_valid
    assert first.SeriesInstanceUID == again.SeriesInstanceUID and first.SOPInstanceUID != again.SOPInstanceUID
    assert (first.VerificationFlag, first.PreliminaryFlag) == ("UNVERIFIED", "PRELIMINARY")
    assert sr_items(first)["Finding"].ConceptCodeSequence[0].CodeMeaning == "No pneumonia-like opacity"
    assert (str(first.PatientName), first.PatientID) == ("Png Only^", "MRN-PNG-1")
    bundle = Bundle.model_validate_json(radiologist.get(f"/v1/cases/{case['case_id']}/fhir").content)
    report = next(e.resource for e in bundle.entry if e.resource.__resource_type__ == "DiagnosticReport")
    assert (report.status, report.performer) == ("preliminary", None)


def test_an_unknown_kind_is_refused_with_the_kinds_there_are(radiologist: httpx.Client, signed_case: dict) -> None:
    answer = radiologist.get(f"/v1/cases/{signed_case['case_id']}/dicom", params={"kind": "seg"})
    assert answer.status_code == 422
    assert answer.json()["detail"] == "kind: Input should be 'sr', 'pdf' or 'sc'"


def test_annotators_get_neither_dicom_nor_fhir(sqlite_api: LiveApi, signed_case: dict) -> None:
    with sqlite_api.client("annotator") as annotator:
        for path in ("dicom", "fhir"):
            answer = annotator.get(f"/v1/cases/{signed_case['case_id']}/{path}")
            assert answer.status_code == 403
            assert answer.json()["detail"] == f"Your role (annotator) may not call GET /v1/cases/{{case_id}}/{path}."


def test_the_workstation_client_downloads_what_its_buttons_offer(sqlite_api: LiveApi, signed_case: dict) -> None:
    client = BackendClient(sqlite_api.url, sqlite_api.accounts["radiologist"].token)
    for kind, sop_class in (("sr", COMPREHENSIVE_SR), ("pdf", ENCAPSULATED_PDF), ("sc", SECONDARY_CAPTURE)):
        assert read(client.dicom(signed_case["case_id"], kind)).SOPClassUID == sop_class
    bundle = Bundle.model_validate_json(client.fhir(signed_case["case_id"]))
    assert bundle.entry[0].resource.__resource_type__ == "DiagnosticReport"
    with pytest.raises(BackendError, match="choose one of sr, pdf, sc"):
        client.dicom(signed_case["case_id"], "seg")


def test_each_download_is_in_the_audit_trail_with_its_kind(
    sqlite_api: LiveApi, signed_case: dict, objects: dict[str, bytes], radiologist: httpx.Client
) -> None:
    case_id = signed_case["case_id"]
    assert radiologist.get(f"/v1/cases/{case_id}/fhir").status_code == 200
    with sqlite_api.client("admin") as admin:
        deadline = time.monotonic() + 10  # the middleware records just after the answer went out
        while True:
            events = admin.get("/v1/audit", params={"action": "report.download", "limit": 200}).json()["items"]
            mine = {(e["detail"]["what"], e["detail"].get("kind", "")) for e in events if e["target_id"] == case_id}
            if len(mine) >= 4 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert mine == {("DICOM", "pdf"), ("DICOM", "sc"), ("DICOM", "sr"), ("FHIR", "")}
