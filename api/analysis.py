"""The main path for one study (DESIGN.md): decode -> quality -> store image -> predict -> store case.

Orchestration only: every step is a call into a domain room. The image is stored before the case row, and the
case row is committed before the answer is sent, so nothing acknowledged to the client can be lost.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from api.auth import Principal
from api.learning import queue_if_doubtful
from api.observability import actor_fields, observe_predictions
from api.permissions import Role, redact_for
from api.schemas import CaseOut, PatientIn, strip_controls
from api.services import Services
from imaging import DecodedImage, assess_quality
from inference import DEFAULT_TASK, ModelCheckpoint, NodulePredictor, Prediction, Predictor, ScopeResult
from monitoring import AuditEntry
from reports import ReportContext, nodule_performance_sentence
from settings import Settings
from storage import CaseRecord, CaseStatus, NewCase, PatientInfo, new_case_id

_DICOM_SEX = {"M": "M", "F": "F", "O": "O"}


def merge_patient(form: PatientIn, tags: dict[str, Any]) -> PatientInfo:
    """Form fields win; DICOM tags fill the gaps the form left (without control or text-direction characters)."""
    tag_name = strip_controls(str(tags.get("PatientName") or "")).replace("^", " ").strip()
    tag_id = strip_controls(str(tags.get("PatientID") or "")).strip()
    return PatientInfo(
        patient_id=form.patient_id or tag_id or None,
        name=form.name or tag_name or None,
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


def reliability_fields(prediction: Prediction, verdict: ScopeResult) -> dict[str, Any]:
    """How far the result can be trusted, as stored with a case and answered by /predict: uncertainty, the input
    gate's verdict and the validated scope (field names shared by `NewCase`, `CaseOut` and `PredictionOut`)."""
    return {
        "uncertainty": uncertainty_dict(prediction),
        "uncertain": prediction.uncertain,
        "ood": prediction.ood,
        "ood_reason": prediction.ood_reason or None,
        "scope": verdict.scope,
        "scope_reason": verdict.reason or None,
    }


def scoped(prediction: Prediction, verdict: ScopeResult) -> Prediction:
    """A film outside the validated scope still gets its analysis, counted as uncertain (with the reason)."""
    if not verdict.outside:
        return prediction
    reasons = (*prediction.uncertain_reasons, f"outside the validated scope: {verdict.reason}")
    return dataclasses.replace(prediction, uncertain=True, uncertain_reasons=reasons)


def analyze_study(
    services: Services, upload: bytes | str, patient: PatientIn, user: Principal, task: str = DEFAULT_TASK
) -> CaseOut:
    """Analyse uploaded bytes, or an upload held since its inspection (its sha256), and store the case.

    One decode and one forward pass per model: the nodule finding (when a nodule model is served) is made from the
    same decoded pixels; the case keeps the pixels and the embedding for every later request.
    """
    predictor = services.predictor(task)
    if isinstance(upload, str):
        data, decoded = services.media.held_upload(upload)
    else:
        data, (_, decoded) = upload, services.media.decode_upload(upload)
    sha256 = services.storage.images.put(data)
    patient_info = merge_patient(patient, decoded.metadata)
    prediction = predictor.predict(decoded.pixels, sha256)
    verdict = services.scope(task, prediction.model_version).check(prediction.embedding, patient_info.age)
    prediction = scoped(prediction, verdict)
    observe_predictions(task, [prediction])
    nodule = nodule_finding(services.nodule, decoded.pixels, sha256)
    case_id = new_case_id()
    services.media.keep_pixels(case_id, decoded.pixels)  # before the row: an acknowledged case has its pixels
    new = new_case(predictor, prediction, verdict, decoded, sha256, patient_info, user)
    record = services.storage.cases.create_case(dataclasses.replace(new, nodule=nodule), case_id=case_id)
    queue_if_doubtful(services, record)
    services.audit.record(prediction_audit(record, user))
    out = case_out(record, user.role)
    out.processing_time_ms, out.cached = prediction.processing_time_ms, prediction.cached
    return out


def nodule_finding(model: NodulePredictor | None, pixels: np.ndarray, sha256: str) -> dict[str, Any] | None:
    """The case's `nodule` document from the decoded film: the finding (marks in the stored image's pixels), its
    model version and the model's measured performance; None while no nodule model is served."""
    if model is None:
        return None
    return {**model.predict(pixels, sha256).to_dict(), "performance": nodule_performance(model.checkpoint)}


def nodule_performance(checkpoint: ModelCheckpoint) -> dict[str, Any] | None:
    """Sensitivity and false marks per film at the checkpoint's operating point (its test figures), with the
    sentence the screen and the PDFs print; None when the checkpoint states no operating point."""
    point = checkpoint.extra.get("operating_point")
    try:
        sensitivity = float(point["sensitivity"])  # type: ignore[index]
        false_marks = float(point["false_positives_per_film"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        return None
    summary = nodule_performance_sentence(sensitivity, false_marks)
    return {"sensitivity": sensitivity, "false_positives_per_film": false_marks, "summary": summary}


def prediction_audit(record: CaseRecord, user: Principal) -> AuditEntry:
    """The audit entry of a new case: its pneumonia finding and model, and the nodule model that also read it."""
    detail: dict[str, Any] = {"what": "study", "task": record.task, "label": record.prediction}
    if record.nodule is not None:
        detail |= {"nodule_label": record.nodule["label"], "nodule_model_version": record.nodule["model_version"]}
    return AuditEntry(
        "prediction", case_id=record.id, model_version=record.model_version, detail=detail, **actor_fields(user)
    )


def new_case(
    predictor: Predictor,
    prediction: Prediction,
    verdict: ScopeResult,
    decoded: DecodedImage,
    sha256: str,
    patient: PatientInfo,
    user: Principal,
) -> NewCase:
    return NewCase(
        image_sha256=sha256,
        image_format=decoded.format,
        task=predictor.checkpoint.task,
        prediction=prediction.label,
        confidence=prediction.confidence,
        probabilities=prediction.probabilities,
        positive_probability=prediction.positive_probability,
        threshold=predictor.checkpoint.threshold,
        model_version=prediction.model_version,
        patient=patient,
        study_metadata=study_metadata(decoded),
        quality_warnings=[w.as_dict() for w in assess_quality(decoded)],
        created_by=user.id,
        **reliability_fields(prediction, verdict),
        # Uncertain (including outside the validated scope) or out-of-distribution results go to expert review.
        status=CaseStatus.QUEUED_FOR_REVIEW if prediction.uncertain or prediction.ood else CaseStatus.ANALYZED,
        embedding=prediction.embedding.astype(np.float32).tobytes(),
    )


def case_out(record: CaseRecord, role: Role | str) -> CaseOut:
    """The case as `role` may see it (api/permissions.py `redact_for`: annotators never get patient identity)."""
    return redact_for(role, CaseOut.model_validate(record, from_attributes=True))


def report_context(settings: Settings) -> ReportContext:
    """Where PDFs are printed: the institution's name and logo, the page size and extra fonts (settings)."""
    return ReportContext(
        institution_name=settings.institution_name,
        logo_path=settings.institution_logo_path,
        page_size=settings.report_page_size,
        extra_font_paths=settings.report_extra_font_paths,
    )
