"""The main path for one study (DESIGN.md): decode -> quality -> store image -> predict -> store case.

Orchestration only: every step is a call into a domain room. The image is stored before the case row, and the
case row is committed before the answer is sent, so nothing acknowledged to the client can be lost.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from api.auth import Principal
from api.permissions import Role, redact_for
from api.schemas import CaseOut, PatientIn, PatientOut
from api.services import Services
from imaging import DecodedImage, assess_quality, decode_image
from inference import Prediction
from storage import CaseRecord, CaseStatus, NewCase, PatientInfo

_DICOM_SEX = {"M": "M", "F": "F", "O": "O"}


def merge_patient(form: PatientIn, tags: dict[str, Any]) -> PatientInfo:
    """Form fields win; DICOM tags fill the gaps the form left."""
    name = form.name or (str(tags["PatientName"]).replace("^", " ").strip() if tags.get("PatientName") else None)
    return PatientInfo(
        patient_id=form.patient_id or tags.get("PatientID"),
        name=name or None,
        birth_date=form.birth_date,
        age=form.age if form.age is not None else tags.get("patient_age_years"),
        sex=form.sex or _DICOM_SEX.get(str(tags.get("PatientSex", "")).upper()),
        clinical_history=form.clinical_history,
    )


def study_metadata(decoded: DecodedImage) -> dict[str, Any]:
    return {"format": decoded.format, "width": decoded.width, "height": decoded.height, **decoded.metadata}


def uncertainty_dict(prediction: Prediction) -> dict[str, Any] | None:
    """{entropy, std, method, ...} plus the policy's reasons, as stored with the case and returned by the API."""
    if prediction.uncertainty is None:
        return None
    return {**prediction.uncertainty.to_dict(), "reasons": list(prediction.uncertain_reasons)}


def analyze_study(services: Services, data: bytes, patient: PatientIn, user: Principal) -> CaseOut:
    predictor = services.predictor()
    decoded = decode_image(data)
    warnings = [w.as_dict() for w in assess_quality(decoded)]
    sha256 = services.storage.images.put(data)
    prediction = predictor.predict(decoded.pixels, sha256)
    record = services.storage.cases.create_case(
        NewCase(
            image_sha256=sha256,
            image_format=decoded.format,
            task=predictor.checkpoint.task,
            prediction=prediction.label,
            confidence=prediction.confidence,
            probabilities=prediction.probabilities,
            positive_probability=prediction.positive_probability,
            threshold=predictor.checkpoint.threshold,
            model_version=prediction.model_version,
            patient=merge_patient(patient, decoded.metadata),
            study_metadata=study_metadata(decoded),
            quality_warnings=warnings,
            created_by=user.id,
            uncertainty=uncertainty_dict(prediction),
            uncertain=prediction.uncertain,
            ood=prediction.ood,
            ood_reason=prediction.ood_reason or None,
            # Uncertain or out-of-distribution results go straight to the expert review queue.
            status=CaseStatus.QUEUED_FOR_REVIEW if prediction.uncertain or prediction.ood else CaseStatus.ANALYZED,
        )
    )
    out = case_out(record, user.role)
    out.processing_time_ms, out.cached = prediction.processing_time_ms, prediction.cached
    return out


def case_out(record: CaseRecord, role: Role | str) -> CaseOut:
    """The case as `role` may see it (api/permissions.py `redact_for`: annotators never get patient identity)."""
    out = CaseOut(
        case_id=record.id,
        created_at=record.created_at,
        updated_at=record.updated_at,
        status=str(record.status.value if hasattr(record.status, "value") else record.status),
        task=record.task,
        prediction=record.prediction,
        confidence=record.confidence,
        probabilities=record.probabilities,
        positive_probability=record.positive_probability,
        threshold=record.threshold,
        model_version=record.model_version,
        uncertainty=record.uncertainty,
        uncertain=record.uncertain,
        ood=record.ood,
        ood_reason=record.ood_reason,
        quality_warnings=record.quality_warnings,
        patient=PatientOut(**asdict(record.patient)),
        study=record.study_metadata,
        image_sha256=record.image_sha256,
        image_format=record.image_format,
        created_by=record.created_by,
        signed_by=record.signed_by,
        signed_at=record.signed_at,
    )
    return redact_for(role, out)
