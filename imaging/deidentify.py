"""De-identification of DICOM for exports and training sets: DICOM PS3.15 Annex E, Basic Application Level
Confidentiality Profile, with the Retain Longitudinal Temporal Information with Modified Dates option and
(by default) the Retain Patient Characteristics option.

What happens to each attribute, recursively through sequences:
- Patient name and patient id -> one pseudonym per patient ("ANON-" + 16 hex digits of a keyed hash);
- every other person name (PN) -> emptied; identifying ids, addresses, institutions, devices, free-text
  descriptions and comments (`REMOVED_KEYWORDS`) -> removed; accession number and study id -> emptied;
- dates (DA) and the date part of date-times (DT) -> shifted back by a per-patient number of days (1..3650), so
  intervals between a patient's studies survive; times of day are kept;
- instance UIDs (UI) -> remapped to 2.25.<128-bit keyed hash>: the same input UID always gives the same output UID
  under one key (across files and runs), so series, studies and references stay linked; well-known UIDs (SOP
  classes, transfer syntaxes, coding schemes) are kept;
- private tags, overlays (60xx), curves (50xx) and tags no DICOM dictionary defines -> removed;
- PatientIdentityRemoved=YES, DeidentificationMethod and its code sequence record what was done.

Pixel data is not altered: a dataset that declares burned-in annotation is refused (`DeidentificationError`)
because text in the pixels cannot be removed by editing tags.

Everything is keyed by one secret (`Deidentifier(secret)`): keep it to link later exports to earlier ones; without
it, pseudonyms, date shifts and UIDs cannot be traced back.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydicom.datadict import dictionary_has_tag, repeater_has_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID_dictionary

from imaging.dicom import looks_like_dicom, read_dataset
from imaging.errors import CorruptImageError, ImagingError, UnsupportedFormatError, UnusableImageError

# DeidentificationMethod is LO (at most 64 characters per value), so the description takes one value per part.
METHOD: tuple[str, ...] = (
    "DICOM PS3.15 Basic Application Confidentiality Profile",
    "Retain Longitudinal Temporal Information Modified Dates",
)
MAX_DATE_SHIFT_DAYS = 3650
OLDEST_REPORTED_AGE = "090Y"  # ages above 89 years are reported as 90 (they identify few people)

# Attributes removed (action X, or D/Z where an empty or dummy value carries no use here). PN and UI attributes are
# handled by value representation, so they need not be listed.
REMOVED_KEYWORDS: frozenset[str] = frozenset(
    {
        # patient
        "OtherPatientIDs",
        "OtherPatientIDsSequence",
        "OtherPatientNames",
        "PatientBirthName",
        "PatientMotherBirthName",
        "PatientBirthTime",
        "PatientAddress",
        "PatientTelephoneNumbers",
        "PatientTelecomInformation",
        "MilitaryRank",
        "BranchOfService",
        "MedicalRecordLocator",
        "EthnicGroup",
        "Occupation",
        "AdditionalPatientHistory",
        "PatientComments",
        "PatientReligiousPreference",
        "RegionOfResidence",
        "CountryOfResidence",
        "PatientInsurancePlanCodeSequence",
        "PatientPrimaryLanguageCodeSequence",
        "MedicalAlerts",
        "Allergies",
        "PregnancyStatus",
        "SmokingStatus",
        "LastMenstrualDate",
        "PatientState",
        "SpecialNeeds",
        "InsurancePlanIdentification",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "ResponsibleOrganization",
        "ResponsiblePerson",
        "ReferencedPatientSequence",
        "ReferencedPatientAliasSequence",
        "PersonIdentificationCodeSequence",
        "PatientInstitutionResidence",
        "CurrentPatientLocation",
        # people and places
        "InstitutionName",
        "InstitutionAddress",
        "InstitutionalDepartmentName",
        "InstitutionCodeSequence",
        "StationName",
        "ReferringPhysicianAddress",
        "ReferringPhysicianTelephoneNumbers",
        "ReferringPhysicianIdentificationSequence",
        "PhysiciansOfRecordIdentificationSequence",
        "PerformingPhysicianIdentificationSequence",
        "PhysiciansReadingStudyIdentificationSequence",
        "OperatorIdentificationSequence",
        # devices
        "DeviceSerialNumber",
        "DetectorID",
        "GantryID",
        "PlateID",
        "CassetteID",
        # orders, visits, free text
        "StudyDescription",
        "SeriesDescription",
        "ProtocolName",
        "ImageComments",
        "StudyComments",
        "AcquisitionComments",
        "DerivationDescription",
        "FrameComments",
        "TextComments",
        "VisitComments",
        "RequestAttributesSequence",
        "RequestedProcedureDescription",
        "RequestedProcedureID",
        "ScheduledProcedureStepDescription",
        "ScheduledProcedureStepID",
        "PerformedProcedureStepDescription",
        "PerformedProcedureStepID",
        "ReasonForStudy",
        "RequestingService",
        "AdmittingDiagnosesDescription",
        "AdmittingDiagnosesCodeSequence",
        "AdmissionID",
        "IssuerOfAdmissionIDSequence",
        "ServiceEpisodeID",
        "ServiceEpisodeDescription",
        "PlacerOrderNumberImagingServiceRequest",
        "FillerOrderNumberImagingServiceRequest",
        # nested copies of original values, signatures
        "OriginalAttributesSequence",
        "ModifiedAttributesSequence",
        "DigitalSignaturesSequence",
        "MACParametersSequence",
        "EncryptedAttributesSequence",
        "ContentSequence",
    }
)
EMPTIED_KEYWORDS: frozenset[str] = frozenset({"AccessionNumber", "StudyID"})
PATIENT_CHARACTERISTICS: frozenset[str] = frozenset({"PatientAge", "PatientSex", "PatientSize", "PatientWeight"})
# UIDs that name a kind of thing, not an instance: kept even when pydicom does not know their value.
KEPT_UID_KEYWORDS: frozenset[str] = frozenset(
    {
        "SOPClassUID",
        "ReferencedSOPClassUID",
        "MediaStorageSOPClassUID",
        "TransferSyntaxUID",
        "ImplementationClassUID",
        "CodingSchemeUID",
        "ContextGroupExtensionCreatorUID",
        "MappingResourceUID",
        "ReferencedSOPClassUIDInFile",
    }
)


def _tags(keywords: frozenset[str]) -> frozenset[int]:
    tags = {keyword: tag_for_keyword(keyword) for keyword in keywords}
    unknown = sorted(keyword for keyword, tag in tags.items() if tag is None)
    if unknown:  # a typo here would silently keep an identifying attribute
        raise RuntimeError(f"Unknown DICOM keywords in the de-identification tables: {unknown}")
    return frozenset(int(tag) for tag in tags.values() if tag is not None)


_REMOVED_TAGS = _tags(REMOVED_KEYWORDS)
_EMPTIED_TAGS = _tags(EMPTIED_KEYWORDS)
_CHARACTERISTIC_TAGS = _tags(PATIENT_CHARACTERISTICS)
_KEPT_UID_TAGS = _tags(KEPT_UID_KEYWORDS)
_PATIENT_NAME, _PATIENT_ID = int(tag_for_keyword("PatientName") or 0), int(tag_for_keyword("PatientID") or 0)
_PATIENT_AGE = int(tag_for_keyword("PatientAge") or 0)


class DeidentificationError(UnusableImageError):
    """The dataset cannot be de-identified by editing tags (e.g. it declares burned-in annotation)."""

    code = "not_deidentifiable"


@dataclass(frozen=True)
class Deidentifier:
    """Keyed, deterministic de-identification: the same secret maps the same inputs to the same outputs.

    `retain_patient_characteristics`: keep age (capped at 90 years), sex, size and weight (useful for training).
    """

    secret: bytes
    retain_patient_characteristics: bool = True

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("The de-identification secret must have at least 16 bytes.")

    def _digest(self, purpose: str, value: str) -> bytes:
        return hmac.new(self.secret, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()

    def pseudonym(self, patient_id: str) -> str:
        return "ANON-" + self._digest("patient", patient_id).hex()[:16].upper()

    def date_shift_days(self, patient_id: str) -> int:
        return 1 + int.from_bytes(self._digest("date-shift", patient_id)[:4], "big") % MAX_DATE_SHIFT_DAYS

    def uid(self, uid: str) -> str:
        """A new UID in the 2.25 (UUID-derived) arc: at most 44 characters, well under the 64 allowed."""
        return "2.25." + str(int.from_bytes(self._digest("uid", uid)[:16], "big"))

    def dataset(self, ds: Dataset) -> Dataset:
        """A de-identified copy of `ds` (the original is not modified)."""
        return deidentify_dataset(ds, self)

    def dicom_bytes(self, data: bytes) -> bytes:
        """De-identify a DICOM file given as bytes (ImagingError when it is not a readable DICOM file)."""
        return deidentify_dicom(data, self)


def _shift_date(text: str, days: int) -> str:
    """YYYYMMDD shifted back by `days`; '' for anything that is not a full valid date (cannot be shifted)."""
    try:
        return (datetime.strptime(text[:8], "%Y%m%d").date() - timedelta(days=days)).strftime("%Y%m%d")
    except (ValueError, OverflowError):  # not a date, or one so early that the shift leaves the calendar
        return ""


def _shift_datetime(text: str, days: int) -> str:
    shifted = _shift_date(text, days)
    return shifted + text[8:] if shifted else ""


def _map_values(value: Any, function: Callable[[str], str]) -> Any:
    if isinstance(value, MultiValue | list):
        return [function(str(item)) for item in value]
    return function(str(value))


def _cap_age(age: str) -> str:
    text = age.strip().upper()
    if len(text) == 4 and text[:3].isdigit() and text.endswith("Y") and int(text[:3]) > 89:
        return OLDEST_REPORTED_AGE
    return age


class _Walker:
    """Applies the profile to every element of one dataset (callback of `Dataset.walk`)."""

    def __init__(self, key: Deidentifier, patient_id: str) -> None:
        self.key = key
        self.pseudonym = key.pseudonym(patient_id)
        self.shift_days = key.date_shift_days(patient_id)

    def __call__(self, dataset: Dataset, element: DataElement) -> None:
        tag = int(element.tag)
        if self._removed(tag, element):
            del dataset[element.tag]
        elif tag in (_PATIENT_NAME, _PATIENT_ID):
            element.value = self.pseudonym
        elif tag in _EMPTIED_TAGS or element.VR == "PN":
            element.value = ""  # emptied rather than removed: several are type 2 (must be present)
        elif element.VR == "UI":
            element.value = self._uids(tag, element.value)
        elif element.VR in ("DA", "DT") and element.value:
            shift = _shift_date if element.VR == "DA" else _shift_datetime
            element.value = _map_values(element.value, lambda text: shift(text, self.shift_days))
        elif tag == _PATIENT_AGE and element.value:
            element.value = _cap_age(str(element.value))

    def _removed(self, tag: int, element: DataElement) -> bool:
        group = tag >> 16
        if element.tag.is_private or 0x5000 <= group <= 0x50FF or (0x6000 <= group <= 0x60FF and group % 2 == 0):
            return True
        if not (dictionary_has_tag(tag) or repeater_has_tag(tag)):
            return True  # not a standard attribute (or a group length): its content cannot be vetted
        if tag in _CHARACTERISTIC_TAGS:
            return not self.key.retain_patient_characteristics
        return tag in _REMOVED_TAGS

    def _uids(self, tag: int, value: Any) -> Any:
        if not value or tag in _KEPT_UID_TAGS:
            return value
        return _map_values(value, lambda uid: uid if uid in UID_dictionary else self.key.uid(uid))


def _method_codes(key: Deidentifier) -> list[Dataset]:
    codes = [
        ("113100", "Basic Application Confidentiality Profile"),
        ("113107", "Retain Longitudinal With Modified Dates Option"),
    ]
    if key.retain_patient_characteristics:
        codes.append(("113108", "Retain Patient Characteristics Option"))
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    return items


def deidentify_dataset(ds: Dataset, key: Deidentifier) -> Dataset:
    """A de-identified copy of `ds` under `key` (see the module docstring); `DeidentificationError` when the pixels
    declare burned-in annotation, `CorruptImageError` when an element cannot be read."""
    try:
        if str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
            raise DeidentificationError(
                "The image declares burned-in annotation (text in the pixels), which tag editing cannot remove."
            )
        out = copy.deepcopy(ds)
        patient_id = str(out.get("PatientID", "") or "")
        out.walk(_Walker(key, patient_id))
    except ImagingError:
        raise
    except Exception as exc:  # pydicom raises many types on a damaged element value
        raise CorruptImageError(f"The DICOM dataset could not be de-identified ({type(exc).__name__}).") from None
    file_meta = getattr(out, "file_meta", None)
    if file_meta is not None and "MediaStorageSOPInstanceUID" in file_meta:
        file_meta.MediaStorageSOPInstanceUID = key.uid(str(file_meta.MediaStorageSOPInstanceUID))
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = list(METHOD)
    out.DeidentificationMethodCodeSequence = _method_codes(key)
    out.LongitudinalTemporalInformationModified = "MODIFIED"
    return out


def deidentify_dicom(data: bytes, key: Deidentifier) -> bytes:
    """Read DICOM bytes, de-identify, write them back (same transfer syntax, pixel data untouched)."""
    if not looks_like_dicom(data):
        raise UnsupportedFormatError("Only DICOM files can be de-identified; this is not one.")
    cleaned = deidentify_dataset(read_dataset(data), key)  # CorruptImageError for damaged input
    buffer = io.BytesIO()
    try:
        cleaned.save_as(buffer, enforce_file_format=False)
    except Exception as exc:  # a value pydicom read leniently but cannot write back
        raise CorruptImageError(f"The de-identified DICOM file could not be written ({type(exc).__name__}).") from None
    return buffer.getvalue()
