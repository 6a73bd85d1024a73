"""The result as HL7 FHIR R4 (fhir.resources' R4B models, whose DiagnosticReport and Observation are R4's).

One `Bundle` (type collection) that a FHIR server or an interface engine takes as it is: the `DiagnosticReport`
(status `final` once a radiologist signed, `preliminary` before; the signer is its performer and results
interpreter), its `Observation` (the probability of the screened finding as valueQuantity, the model as method and
device, uncertainty, input gate and validated scope as components), the `Patient`, the model as `Device` and the
signer as `Practitioner`. Ids are derived from the case id, so a second download names the same resources.
Every resource is built through the models, so an invalid field fails here, not at the receiving end.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner

from interop.records import (
    LOCAL_SYSTEM,
    LUNG,
    MANUFACTURER,
    Concept,
    ExportContext,
    conclusion,
    finding_concept,
    gate_text,
    mark_text,
    scope_text,
)
from reports import NoduleReport, ReportCase

FHIR_MEDIA_TYPE = "application/fhir+json"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, LOCAL_SYSTEM)
_GENDER = {"M": "male", "F": "female", "O": "other"}
_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"


def fhir_report(case: ReportCase, context: ExportContext) -> str:
    """The Bundle as FHIR JSON text."""
    kinds = ("report", "observation", "patient", "device", "nodule-observation", "nodule-device")
    ids = {kind: _id(case.case_id, kind) for kind in kinds}
    resources = [_diagnostic_report(case, ids), _observation(case, context, ids)]
    if case.nodule is not None:
        resources.append(_nodule_observation(case, case.nodule, context, ids))
    resources += [
        _patient(case, ids["patient"]),
        _device(context.model_name, case.model.version, ids["device"], case.model.architecture),
    ]
    if case.nodule is not None:
        resources.append(_device(context.nodule_model_name, case.nodule.model_version, ids["nodule-device"]))
    if case.is_signed:
        resources.append(Practitioner(id=_id(str(case.signed_by), "practitioner"), name=[{"text": case.signed_by}]))
    entries = [{"fullUrl": f"urn:uuid:{r.id}", "resource": r} for r in resources]
    bundle = Bundle(id=_id(case.case_id, "bundle"), type="collection", timestamp=_now(), entry=entries)
    return bundle.model_dump_json()


def _id(seed: str, kind: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{seed}"))


def _ref(resource_id: str, display: str | None = None) -> dict[str, str]:
    return {"reference": f"urn:uuid:{resource_id}", **({"display": display} if display else {})}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _coding(concept: Concept) -> dict[str, str]:
    return {"system": concept.system, "code": concept.code, "display": concept.meaning}


def _status(case: ReportCase) -> str:
    return "final" if case.is_signed else "preliminary"


def _signer(case: ReportCase) -> list[dict[str, str]]:
    if not case.is_signed:
        return []
    return [_ref(_id(str(case.signed_by), "practitioner"), case.signed_by)]


def _diagnostic_report(case: ReportCase, ids: dict[str, str]) -> DiagnosticReport:
    findings = [finding_concept(case.finding)]
    results = [_ref(ids["observation"])]
    if case.nodule is not None:
        findings.append(finding_concept(case.nodule.label))
        results.append(_ref(ids["nodule-observation"]))
    return DiagnosticReport(
        id=ids["report"],
        identifier=[{"system": f"{LOCAL_SYSTEM}:case", "value": case.case_id}],
        status=_status(case),
        category=[{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        code={"coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}]},
        subject=_ref(ids["patient"]),
        effectiveDateTime=case.created_at.isoformat(),
        issued=(case.signed_at or case.created_at).isoformat(),
        performer=_signer(case) or None,
        resultsInterpreter=_signer(case) or None,
        result=results,
        conclusion=conclusion(case),
        conclusionCode=[{"coding": [_coding(finding)], "text": finding.meaning} for finding in findings],
    )


def _observation(case: ReportCase, context: ExportContext, ids: dict[str, str]) -> Observation:
    positive = finding_concept(case.positive_class)
    probability = case.probabilities.get(case.positive_class, 0.0)
    method = f"{context.model_name} version {case.model.version} ({case.model.architecture or 'model'})"
    return Observation(
        id=ids["observation"],
        status=_status(case),
        category=[
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}]}
        ],
        code={"coding": [_coding(positive)], "text": f"AI probability of {positive.meaning.lower()}"},
        subject=_ref(ids["patient"]),
        effectiveDateTime=case.created_at.isoformat(),
        performer=_signer(case) or None,
        valueQuantity=_quantity(probability),
        interpretation=[{"coding": [{"system": _INTERPRETATION, "code": "POS" if case.is_positive else "NEG"}]}],
        method={"coding": [{"system": LOCAL_SYSTEM, "code": context.model_name}], "text": method},
        device=_ref(ids["device"], method),
        component=_components(case, context) or None,
    )


def _nodule_observation(
    case: ReportCase, nodule: NoduleReport, context: ExportContext, ids: dict[str, str]
) -> Observation:
    """The second finding: the probability of a lung nodule or mass, the threshold, each mark (its box in the
    analysed image's pixels and its score) as a component, the measured performance as a note."""
    concept = finding_concept(nodule.positive_class)
    method = f"{context.nodule_model_name} version {nodule.model_version}"
    return Observation(
        id=ids["nodule-observation"],
        status=_status(case),
        category=[
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}]}
        ],
        code={"coding": [_coding(concept)], "text": "AI probability of a lung nodule or mass"},
        subject=_ref(ids["patient"]),
        effectiveDateTime=case.created_at.isoformat(),
        performer=_signer(case) or None,
        valueQuantity=_quantity(nodule.probability),
        interpretation=[{"coding": [{"system": _INTERPRETATION, "code": "POS" if nodule.is_positive else "NEG"}]}],
        bodySite={"coding": [_coding(LUNG)]},
        method={"coding": [{"system": LOCAL_SYSTEM, "code": context.nodule_model_name}], "text": method},
        device=_ref(ids["nodule-device"], method),
        component=_nodule_components(nodule),
        note=[{"text": nodule.performance}] if nodule.performance else None,
    )


def _nodule_components(nodule: NoduleReport) -> list[dict[str, object]]:
    threshold = _local_code("THRESHOLD", "Decision threshold on the probability of a lung nodule or mass")
    parts: list[dict[str, object]] = [{"code": threshold, "valueQuantity": _quantity(nodule.threshold)}]
    mark = _local_code("NODULE-MARK", "Nodule mark: box in the analysed image's pixels and its score")
    parts += [{"code": mark, "valueString": mark_text(each)} for each in nodule.marks]
    return parts


def _local_code(local: str, text: str) -> dict[str, object]:
    return {"coding": [{"system": LOCAL_SYSTEM, "code": local, "display": text}], "text": text}


def _quantity(value: float) -> dict[str, object]:
    return {"value": round(float(value), 6), "unit": "probability", "system": UCUM, "code": "1"}


def _components(case: ReportCase, context: ExportContext) -> list[dict[str, object]]:
    """Uncertainty, the input gate and the validated scope, each under a local code."""
    code = _local_code
    details = case.uncertainty
    parts: list[dict[str, object]] = [
        {"code": code("UNCERTAIN", "Flagged as uncertain"), "valueBoolean": case.uncertain}
    ]
    if details is not None and details.entropy is not None:
        parts.append({"code": code("ENTROPY", "Predictive entropy"), "valueQuantity": _quantity(details.entropy)})
    if details is not None and details.std is not None:
        spread = code("PROBABILITY-SD", "Standard deviation of the probability")
        parts.append({"code": spread, "valueQuantity": _quantity(details.std)})
    parts.append({"code": code("INPUT-GATE", "Input gate verdict"), "valueString": gate_text(case)})
    parts.append({"code": code("SCOPE", "Validated scope"), "valueString": scope_text(case, context)})
    return parts


def _patient(case: ReportCase, patient_id: str) -> Patient:
    details = case.patient
    sex = (details.sex or "").upper()
    return Patient(
        id=patient_id,
        identifier=[{"system": f"{LOCAL_SYSTEM}:patient-id", "value": details.patient_id}]
        if details.patient_id
        else None,
        name=[{"text": details.name}] if details.name else None,
        gender=_GENDER.get(sex, "unknown") if sex else None,
        birthDate=details.birth_date if not isinstance(details.birth_date, str) else None,
    )


def _device(model_name: str, version: str, device_id: str, architecture: str | None = None) -> Device:
    """A model as the device that made an observation: its registry name, version and architecture."""
    return Device(
        id=device_id,
        manufacturer=MANUFACTURER,
        deviceName=[{"name": model_name, "type": "model-name"}],
        modelNumber=architecture,
        version=[{"value": version}],
    )
