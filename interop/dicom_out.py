"""The AI result as DICOM objects a PACS files with the source study: a Comprehensive Structured Report (finding,
probabilities, uncertainty, the input gate's verdict, the validated scope, the model as algorithm and contributing
equipment), the radiologist PDF as Encapsulated PDF and the heatmap overlay as a Secondary Capture.

All three join the source study: the Study Instance UID of the uploaded DICOM, or, for a PNG/JPEG upload, a UID
derived from the case id (the same on every export, so a case's objects always meet in one study). Each kind has
its own series, also derived from the case id, so a re-export lands beside the earlier one; each object is a new
instance (new SOP Instance UID), because its content (report id, signature) can differ between exports.
Pure functions of the report's case record: no storage, no settings.
"""

from __future__ import annotations

import io
import re
from datetime import UTC, date, datetime
from typing import Literal, get_args

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom import Dataset, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from interop.errors import ExportInputError
from interop.records import (
    LOCAL_SCHEME,
    LUNG,
    MANUFACTURER,
    Concept,
    ExportContext,
    SourceImage,
    finding_concept,
    gate_text,
    mark_text,
    scope_text,
    source_image,
    source_study_uid,
)
from reports import NoduleMark, ReportCase

DicomKind = Literal["sr", "pdf", "sc"]
DICOM_KINDS: tuple[DicomKind, ...] = get_args(DicomKind)
SERIES_NUMBERS: dict[DicomKind, int] = {"sr": 9901, "pdf": 9902, "sc": 9903}
SERIES_DESCRIPTIONS: dict[DicomKind, str] = {
    "sr": "AI result (structured report)",
    "pdf": "AI result (radiologist report)",
    "sc": "AI heatmap overlay",
}
ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
DIAGNOSTIC_IMAGING_REPORT = hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report")
NODULE_RESULT = hd.sr.CodedConcept("NODULE-RESULT", LOCAL_SCHEME, "Lung nodule or mass result")
NODULE_PROBABILITY = hd.sr.CodedConcept("PROBABILITY-NOD", LOCAL_SCHEME, "Probability of a lung nodule or mass")
NODULE_THRESHOLD = hd.sr.CodedConcept("THRESHOLD-NODULE", LOCAL_SCHEME, "Decision threshold on the nodule probability")
NODULE_PERFORMANCE = hd.sr.CodedConcept("NODULE-PERF", LOCAL_SCHEME, "Measured performance of the nodule model")
NODULE_MARK_SCORE = hd.sr.CodedConcept("NODULE-MARK", LOCAL_SCHEME, "Nodule mark score")
NODULE_MARK_BOX = hd.sr.CodedConcept("NODULE-MARK-BOX", LOCAL_SCHEME, "Nodule mark box")
_UID_SEED = "cxr-workstation"
_DICOM_SEX = frozenset({"M", "F", "O"})
_DA = re.compile(r"^\d{8}$")


def case_study_uid(case: ReportCase) -> str:
    """The study the objects join: the uploaded DICOM's, else one derived from the case id (stable per case)."""
    return source_study_uid(case.study) or generate_uid(entropy_srcs=[_UID_SEED, "study", case.case_id])


def series_uid(case: ReportCase, kind: DicomKind) -> str:
    return generate_uid(entropy_srcs=[_UID_SEED, "series", kind, case.case_id])


def dicom_bytes(dataset: Dataset) -> bytes:
    """A DICOM Part 10 file (preamble, file meta, dataset)."""
    out = io.BytesIO()
    dcmwrite(out, dataset, enforce_file_format=True)
    return out.getvalue()


def dicom_filename(kind: DicomKind, case: ReportCase) -> str:
    return f"cxr-{case.case_id}-{kind}.dcm"


# --- the source study's patient and study modules --------------------------------------------------------------------


def source_dataset(case: ReportCase) -> Dataset:
    """Patient and General Study attributes from the case (the form's fields, then the upload's DICOM tags)."""
    patient, study = case.patient, case.study
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names in any script
    ds.PatientName = _person_name(patient.name, study.get("PatientName"))
    ds.PatientID = (patient.patient_id or "")[:64]
    ds.PatientBirthDate = _da(patient.birth_date) or _da(study.get("PatientBirthDate"))
    ds.PatientSex = (patient.sex or "").upper() if (patient.sex or "").upper() in _DICOM_SEX else ""
    ds.StudyInstanceUID = case_study_uid(case)
    ds.StudyDate = _da(study.get("StudyDate")) if source_study_uid(study) else ""
    ds.StudyTime = ""
    ds.StudyID = ""
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    return ds


def _person_name(case_name: str | None, tag_name: object) -> str:
    """The upload's own PN when the case kept that name (it shows '^' as spaces), else the name as entered."""
    tag = str(tag_name or "")
    if case_name and tag and tag.replace("^", " ").strip() == case_name:
        return tag
    return pn(case_name or "")


def pn(name: str) -> str:
    """A name typed as one text, as a DICOM person name: one component (trailing '^'), the order being unknown."""
    name = name.strip()[:63]
    return name if not name or "^" in name else f"{name}^"


def _da(value: object) -> str:
    """A DICOM date (YYYYMMDD) from a date or an ISO or DICOM date text; empty when it is none of those."""
    if isinstance(value, date):
        return value.strftime("%Y%m%d")
    text = str(value or "").strip().replace("-", "")
    return text if _DA.match(text) else ""


def _contributing_equipment(case: ReportCase, context: ExportContext) -> hd.ContributingEquipment:
    """The model as processing equipment: its registry name, architecture and version."""
    return hd.ContributingEquipment(
        manufacturer=MANUFACTURER,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=context.model_name,
        software_versions=case.model.version[:64],
        institution_name=context.institution_name,
        contribution_description=f"AI analysis by {context.model_name} ({case.model.architecture or 'model'})"[:64],
    )


def _series_fields(case: ReportCase, kind: DicomKind) -> dict[str, object]:
    return {
        "series_instance_uid": series_uid(case, kind),
        "series_number": SERIES_NUMBERS[kind],
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
    }


# --- the three objects -----------------------------------------------------------------------------------------------


def structured_report(case: ReportCase, context: ExportContext) -> Dataset:
    """The AI result as a Comprehensive SR; verified (FINAL) by the signer once the case is signed."""
    source = source_dataset(case)
    image = source_image(case.study)
    root = hd.sr.ContainerContentItem(name=DIAGNOSTIC_IMAGING_REPORT)
    root.ContentSequence = hd.sr.ContentSequence(
        [*_observer(case, context), *_result_items(case, context), *_nodule_items(case, context, image)]
    )
    signed = case.is_signed
    sr = hd.sr.ComprehensiveSR(
        evidence=[_evidence(source, image)],
        content=root,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=signed,
        is_verified=signed,
        institution_name=context.institution_name,
        verifying_observer_name=pn(str(case.signed_by)) if signed else None,
        verifying_organization=context.institution_name if signed else None,
        record_evidence=False,  # other studies' instances: none here
        contributing_equipment=[_contributing_equipment(case, context)],
        series_description=SERIES_DESCRIPTIONS["sr"],
        **_series_fields(case, "sr"),
    )
    sr.CodingSchemeIdentificationSequence = [_local_scheme()]
    if image is None:  # highdicom lists same-study evidence regardless: the stand-in instance must not be listed
        del sr.CurrentRequestedProcedureEvidenceSequence
    return sr


def _local_scheme() -> Dataset:
    """Names the private coding scheme of the local concepts, as PS3.3 C.12.1.1.5 asks of every private scheme."""
    item = Dataset()
    item.CodingSchemeDesignator = LOCAL_SCHEME
    item.CodingSchemeName = "CXR Workstation result concepts"
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    return item


def _evidence(source: Dataset, image: SourceImage | None) -> Dataset:
    """The source study as highdicom takes it: the uploaded image when its UIDs are known (the report's evidence),
    else a stand-in instance of the study, which `structured_report` takes out of the evidence again."""
    evidence = Dataset()
    evidence.update(source)
    if image is not None:
        evidence.SOPClassUID, evidence.SOPInstanceUID = image.sop_class_uid, image.sop_instance_uid
        evidence.SeriesInstanceUID = image.series_instance_uid
        return evidence
    evidence.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    evidence.SOPInstanceUID = generate_uid()
    evidence.SeriesInstanceUID = generate_uid()
    return evidence


def _observer(case: ReportCase, context: ExportContext) -> list[hd.sr.ContentItem]:
    """The observer is the algorithm (a device), with its name and version (TID 1002, TID 4019)."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=[_UID_SEED, "device", context.model_name, case.model.version]),
        name=context.model_name,
        manufacturer_name=MANUFACTURER,
        model_name=(case.model.architecture or context.model_name)[:64],
    )
    observer = hd.sr.ObserverContext(observer_type=codes.DCM.Device, observer_identifying_attributes=device)
    algorithm = hd.sr.AlgorithmIdentification(name=context.model_name, version=case.model.version[:64])
    return [*observer, *algorithm]


def _local(code: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code, LOCAL_SCHEME, meaning)


def _coded(concept: Concept) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(concept.code, concept.scheme, concept.meaning)


def _result_items(case: ReportCase, context: ExportContext) -> list[hd.sr.ContentItem]:
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(codes.DCM.Finding, _coded(finding_concept(case.finding)), contains)
    ]
    for label, probability in case.probabilities.items():
        name = _local(f"PROBABILITY-{label.upper()}"[:16], f"Probability of {finding_concept(label).meaning}")
        items.append(hd.sr.NumContentItem(name, float(probability), codes.UCUM.NoUnits, relationship_type=contains))
    if case.threshold is not None:
        name = _local("THRESHOLD", f"Decision threshold on the probability of {case.positive_class.lower()}")
        items.append(hd.sr.NumContentItem(name, float(case.threshold), codes.UCUM.NoUnits, relationship_type=contains))
    items.extend(_uncertainty_items(case))
    gate = _local("INPUT-GATE", "Input gate verdict")
    items.append(hd.sr.TextContentItem(gate, gate_text(case)[:1024], contains))
    items.append(hd.sr.TextContentItem(_local("SCOPE", "Validated scope"), scope_text(case, context)[:1024], contains))
    return items


def _uncertainty_items(case: ReportCase) -> list[hd.sr.ContentItem]:
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    flag = codes.SCT.Yes if case.uncertain else codes.SCT.No
    items: list[hd.sr.ContentItem] = [
        hd.sr.CodeContentItem(_local("UNCERTAIN", "Flagged as uncertain"), flag, contains)
    ]
    details = case.uncertainty
    if details is not None and details.entropy is not None:
        name = _local("ENTROPY", "Predictive entropy")
        items.append(hd.sr.NumContentItem(name, float(details.entropy), codes.UCUM.NoUnits, relationship_type=contains))
    if details is not None and details.std is not None:
        name = _local("PROBABILITY-SD", "Standard deviation of the probability")
        items.append(hd.sr.NumContentItem(name, float(details.std), codes.UCUM.NoUnits, relationship_type=contains))
    if details is not None and details.method:
        name = _local("UNCERTAINTY-METH", "Uncertainty method")
        items.append(hd.sr.TextContentItem(name, details.method[:1024], contains))
    return items


def _nodule_items(case: ReportCase, context: ExportContext, image: SourceImage | None) -> list[hd.sr.ContentItem]:
    """The second finding in a container of its own: finding, probability, threshold, the nodule model, its measured
    performance and one scored region per mark (a rectangle and its centre on the uploaded image, in its pixels)."""
    nodule = case.nodule
    if nodule is None:
        return []
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    container = hd.sr.ContainerContentItem(name=NODULE_RESULT, relationship_type=contains)
    items: list[hd.sr.ContentItem] = [
        *hd.sr.AlgorithmIdentification(name=context.nodule_model_name, version=nodule.model_version[:64]),
        hd.sr.CodeContentItem(codes.DCM.Finding, _coded(finding_concept(nodule.label)), contains),
        hd.sr.CodeContentItem(codes.SCT.FindingSite, _coded(LUNG), hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD),
        hd.sr.NumContentItem(
            NODULE_PROBABILITY, float(nodule.probability), codes.UCUM.NoUnits, relationship_type=contains
        ),
        hd.sr.NumContentItem(NODULE_THRESHOLD, float(nodule.threshold), codes.UCUM.NoUnits, relationship_type=contains),
    ]
    if nodule.performance:
        items.append(hd.sr.TextContentItem(NODULE_PERFORMANCE, nodule.performance[:1024], contains))
    items.extend(_mark_item(mark, image) for mark in nodule.marks)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return [container]


def _mark_item(mark: NoduleMark, image: SourceImage | None) -> hd.sr.ContentItem:
    """A mark's score, inferred from its region: a closed rectangle and its centre on the uploaded image when that
    image is known (a PACS viewer draws them on it), else the box written out (a PNG upload has no DICOM image)."""
    inferred = hd.sr.RelationshipTypeValues.INFERRED_FROM
    score = hd.sr.NumContentItem(
        NODULE_MARK_SCORE,
        float(mark.score),
        codes.UCUM.NoUnits,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    if image is None:
        regions: list[hd.sr.ContentItem] = [hd.sr.TextContentItem(NODULE_MARK_BOX, mark_text(mark), inferred)]
    else:
        left, top, right, bottom = mark.x, mark.y, mark.x + mark.w, mark.y + mark.h
        rectangle = np.array([[left, top], [right, top], [right, bottom], [left, bottom], [left, top]])
        regions = [
            _scoord(codes.DCM.ImageRegion, hd.sr.GraphicTypeValues.POLYLINE, rectangle, image),
            _scoord(codes.DCM.Center, hd.sr.GraphicTypeValues.POINT, np.array([mark.centre]), image),
        ]
    score.ContentSequence = hd.sr.ContentSequence(regions)
    return score


def _scoord(
    name: object, graphic_type: hd.sr.GraphicTypeValues, points: np.ndarray, image: SourceImage
) -> hd.sr.ScoordContentItem:
    """Image coordinates (column, row; 0, 0 is the top-left corner of the top-left pixel) selected from the image."""
    item = hd.sr.ScoordContentItem(
        name=name,
        graphic_type=graphic_type,
        graphic_data=points.astype(np.float32),
        relationship_type=hd.sr.RelationshipTypeValues.INFERRED_FROM,
    )
    item.ContentSequence = hd.sr.ContentSequence(
        [hd.sr.SourceImageForRegion(image.sop_class_uid, image.sop_instance_uid)]
    )
    return item


def encapsulated_pdf(case: ReportCase, context: ExportContext, pdf: bytes, title: str) -> Dataset:
    """The radiologist PDF as an Encapsulated PDF instance of the source study."""
    if not pdf.startswith(b"%PDF"):
        raise ExportInputError("The document to encapsulate is not a PDF.")
    fields = _series_fields(case, "pdf")
    ds = source_dataset(case)
    ds.SOPClassUID, ds.SOPInstanceUID = ENCAPSULATED_PDF_STORAGE, fields["sop_instance_uid"]
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "DOC", fields["series_instance_uid"], fields["series_number"]
    ds.SeriesDescription = SERIES_DESCRIPTIONS["pdf"]
    ds.Manufacturer, ds.InstitutionName = MANUFACTURER, context.institution_name
    ds.ConversionType = "WSD"  # workstation
    now = datetime.now(UTC)
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"  # the PDF prints the patient's name
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = [_code_item(DIAGNOSTIC_IMAGING_REPORT)]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")  # OB values have even length
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.ContributingEquipmentSequence = [_contributing_equipment(case, context)]
    ds.file_meta = _file_meta(ds)
    return ds


def _code_item(concept: hd.sr.CodedConcept) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
        concept.value,
        concept.scheme_designator,
        concept.meaning,
    )
    return item


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return meta


def secondary_capture(case: ReportCase, context: ExportContext) -> Dataset:
    """The heatmap overlay (as the report shows it) as an RGB Secondary Capture of the source study."""
    if case.heatmap_png is None:
        raise ExportInputError("The case has no heatmap overlay to export.")
    pixels = overlay_pixels(case.heatmap_png)
    source = source_dataset(case)
    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        patient_orientation=("L", "F"),  # a frontal chest film as displayed: the patient's right on the viewer's left
        study_instance_uid=source.StudyInstanceUID,
        manufacturer=MANUFACTURER,
        patient_id=source.PatientID,
        patient_name=source.PatientName,
        patient_birth_date=source.PatientBirthDate,
        patient_sex=source.PatientSex,
        accession_number=source.AccessionNumber,
        study_id=source.StudyID,
        study_date=source.StudyDate or None,
        referring_physician_name=source.ReferringPhysicianName,
        specific_character_set=source.SpecificCharacterSet,  # else a name in another script is written as '?'
        contributing_equipment=[_contributing_equipment(case, context)],
        series_description=SERIES_DESCRIPTIONS["sc"],
        **_series_fields(case, "sc"),
    )
    sc.BurnedInAnnotation = "NO"
    sc.BodyPartExamined = "CHEST"  # unpaired: no Laterality
    return sc


def overlay_pixels(png: bytes) -> np.ndarray:
    """(rows, columns, 3) uint8 RGB of the overlay image."""
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
