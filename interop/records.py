"""What the exports need besides the report's case record, and the codes they share.

The case itself is `reports.ReportCase` (the same record the PDFs are printed from), so a DICOM or FHIR object says
what the PDF says. `ExportContext` adds what only the receiving systems need: who sends, which model (by the name
the registry knows it under) and the validated-scope verdict, which the report record keeps only when it is outside.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from interop.errors import ExportInputError
from reports import NoduleMark, ReportCase

MANUFACTURER = "CXR Workstation"
LOCAL_SCHEME = "99CXRWS"  # DICOM private coding scheme ("99" prefix) for concepts no standard terminology names
LOCAL_SYSTEM = "urn:cxr-workstation:codes"  # the same concepts as a FHIR code system
SNOMED_SYSTEM = "http://snomed.info/sct"
SCOPE_TEXTS = {
    "validated": "within the validated populations",
    "unchecked": "not checked (the model states no validated populations)",
}
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass(frozen=True)
class Concept:
    """A coded concept, written once and spelled for DICOM (scheme designator) and FHIR (system URI)."""

    code: str
    scheme: str  # "SCT" or LOCAL_SCHEME
    meaning: str

    @property
    def system(self) -> str:
        return SNOMED_SYSTEM if self.scheme == "SCT" else LOCAL_SYSTEM


# The model's classes as findings. SNOMED CT where it has the concept; the negative class means "no pneumonia-like
# opacity", not "normal chest", so it keeps a local code rather than borrowing SNOMED's "chest X-ray normal".
# The nodule model's positive class is "nodule or mass"; SNOMED CT's Nodule (27925004, in DICOM's CID 6104 "Abnormal
# Opacity Finding or Feature", the chest CAD findings) names it, the report's wording adds "or mass".
FINDING_CONCEPTS: Mapping[str, Concept] = {
    "PNEUMONIA": Concept("233604007", "SCT", "Pneumonia"),
    "NORMAL": Concept("NO-PNEUMONIA-OPACITY", LOCAL_SCHEME, "No pneumonia-like opacity"),
    "NODULE": Concept("27925004", "SCT", "Nodule"),
    "NO_NODULE": Concept("NO-NODULE", LOCAL_SCHEME, "No nodule or mass found"),
}
LUNG = Concept("39607008", "SCT", "Lung")


def finding_concept(label: str) -> Concept:
    """The coded finding for one of the model's class labels; a class without an entry gets a local code."""
    return FINDING_CONCEPTS.get(label) or Concept(label.upper(), LOCAL_SCHEME, label.replace("_", " ").capitalize())


@dataclass(frozen=True)
class ExportContext:
    """Who sends the objects and about which model. `scope` is the validated-scope verdict stored with the case
    ("validated", "outside_validated" or "unchecked"; None for cases analysed before the scope check)."""

    institution_name: str
    model_name: str  # the registry's name, e.g. "cxr-pneumonia"
    scope: str | None = None
    nodule_model_name: str = "cxr-nodule"  # the registry's name of the nodule model, when the case has its finding

    def __post_init__(self) -> None:
        for name in ("institution_name", "model_name", "nodule_model_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or len(value) > 64:
                raise ExportInputError(f"{name} must be a non-empty text of at most 64 characters.")


def source_study_uid(study: Mapping[str, Any]) -> str | None:
    """The Study Instance UID of the uploaded DICOM, when the case came from one and it is a valid UID."""
    uid = str(study.get("StudyInstanceUID") or "").strip()
    return uid if _UID.match(uid) and len(uid) <= 64 else None


@dataclass(frozen=True)
class SourceImage:
    """The uploaded DICOM image itself (its UIDs), which coordinates in the structured report point at."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


def source_image(study: Mapping[str, Any]) -> SourceImage | None:
    """The uploaded DICOM image, when the case came from one that named itself with valid UIDs."""
    uids = [str(study.get(key) or "").strip() for key in ("SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID")]
    if source_study_uid(study) is None or not all(_UID.match(uid) and len(uid) <= 64 for uid in uids):
        return None
    return SourceImage(*uids)


def conclusion(case: ReportCase) -> str:
    """The result in one line, as a receiving system shows it: the finding and the AI's probability of it."""
    finding = finding_concept(case.finding).meaning
    state = "signed by " + str(case.signed_by) if case.is_signed else "not yet signed by a radiologist"
    return (
        f"AI result: {finding} (probability of {case.positive_class.lower()} "
        f"{case.probabilities.get(case.positive_class, 0.0):.2f}); {nodule_conclusion(case)}; {state}."
    )


def nodule_conclusion(case: ReportCase) -> str:
    """The second finding in the one-line result."""
    nodule = case.nodule
    if nodule is None:
        return "no nodule model was served"
    marks = len(nodule.marks)
    return (
        f"{finding_concept(nodule.label).meaning} (probability of a lung nodule or mass {nodule.probability:.2f}, "
        f"{marks} mark{'' if marks == 1 else 's'})"
    )


def mark_text(mark: NoduleMark) -> str:
    """One mark as text: its box in the analysed image's pixels and its score."""
    return f"x {mark.x:g}, y {mark.y:g}, w {mark.w:g}, h {mark.h:g} (image pixels); score {mark.score:.2f}"


def scope_text(case: ReportCase, context: ExportContext) -> str:
    """The validated-scope verdict in words."""
    if case.scope_reason:
        return f"outside the validated populations: {case.scope_reason}"
    return SCOPE_TEXTS.get(context.scope or "", "not checked")


def gate_text(case: ReportCase) -> str:
    """The input gate's verdict in words."""
    return f"out of distribution: {case.ood_reason or 'unlike the training films'}" if case.ood else "passed"
