"""A stored case as the record its documents are written from (`reports.ReportCase`): the PDFs
(api/routers/reports.py) and the DICOM and FHIR exports (api/exports.py) say the same thing because they read it here.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import UTC, datetime

from api.permissions import REVIEW_NOTE_CODE
from api.services import Services
from imaging import to_display_png
from inference import OUTSIDE_VALIDATED, ModelCheckpoint, Predictor, heatmap_from_png16, overlay_png
from reports import ModelCard, NoduleReport, PatientDetails, ReportCase, SimilarCase, UncertaintyDetails
from storage import CaseRecord

REPORT_IMAGE_SIDE = 768
REPORT_SIMILAR_CASES = 5
MODEL_LIMITATIONS = (
    "Trained on pediatric (age 1-5) frontal chest radiographs from one hospital (Kermany et al. 2018); not validated "
    "on adults, lateral views or other institutions. Decision support only: a clinician reviews every result."
)


def model_card(checkpoint: ModelCheckpoint) -> ModelCard:
    test = checkpoint.metrics.get("test", {})
    values = test.get("metrics", test) if isinstance(test, dict) else {}
    return ModelCard(
        version=checkpoint.version,
        architecture=checkpoint.architecture,
        test_metrics={k: v for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)},
        limitations=str(checkpoint.extra.get("limitations") or MODEL_LIMITATIONS),
        calibration=f"temperature scaling (T = {checkpoint.temperature:.2f}), threshold {checkpoint.threshold:.3f}",
    )


def similar_for_report(services: Services, record: CaseRecord, predictor: Predictor) -> list[SimilarCase]:
    """The report's similar cases: the same search as GET /v1/cases/{id}/similar; none while the library is down."""
    library = services.libraries.get(predictor.version)
    if library is None:
        return []
    return [
        SimilarCase(
            case_id=n.entry.case_id or n.entry.entry_id,
            label=n.entry.label,
            similarity=n.similarity,
            thumbnail_png=library.thumbnail_path(n.entry.entry_id).read_bytes(),
        )
        for n in services.media.neighbours(record, predictor, library, REPORT_SIMILAR_CASES)
    ]


def image_quality_messages(record: CaseRecord) -> list[str]:
    """The image-quality warnings only (review requests share the list but are not about the image)."""
    return [
        str(w.get("message", "")) if isinstance(w, dict) else str(w)
        for w in record.quality_warnings
        if not (isinstance(w, dict) and w.get("code") == REVIEW_NOTE_CODE)
    ]


def nodule_for_report(record: CaseRecord) -> NoduleReport | None:
    """The case's nodule finding; its marks are in the stored image's pixels, whose size the study record keeps."""
    if record.nodule is None:
        return None
    study = record.study_metadata
    width, height = int(study.get("width") or 0), int(study.get("height") or 0)
    return NoduleReport.from_dict(record.nodule, image_size=(width, height) if width and height else None)


def report_case(services: Services, record: CaseRecord) -> ReportCase:
    predictor = services.predictor_for(record.task, record.model_version)  # its card names the finding's model
    pixels = services.media.pixels(record)
    raw_heatmap = services.media.heatmap(record, predictor, services.settings.heatmap_method)
    heatmap = overlay_png(
        pixels, heatmap_from_png16(raw_heatmap), services.settings.heatmap_opacity, max_side=REPORT_IMAGE_SIDE
    )
    uncertainty = record.uncertainty or {}
    return ReportCase(
        report_id=f"R-{uuid.uuid4().hex[:12].upper()}",
        case_id=record.id,
        created_at=datetime.now(UTC),
        finding=record.prediction,
        positive_class=predictor.checkpoint.positive_class,
        probabilities=record.probabilities,
        confidence=record.confidence,
        model=model_card(predictor.checkpoint),
        image_png=to_display_png(pixels, REPORT_IMAGE_SIDE),
        threshold=record.threshold,
        patient=PatientDetails(**asdict(record.patient)),
        study=record.study_metadata,
        uncertainty=UncertaintyDetails(
            entropy=uncertainty.get("entropy"), std=uncertainty.get("std"), method=uncertainty.get("method")
        )
        if uncertainty
        else None,
        uncertain=record.uncertain,
        ood=bool(record.ood),
        ood_reason=record.ood_reason,
        scope_reason=record.scope_reason if record.scope == OUTSIDE_VALIDATED else None,
        quality_warnings=image_quality_messages(record),
        similar_cases=similar_for_report(services, record, predictor),
        heatmap_png=heatmap,
        signed_by=record.signed_by,
        signed_at=record.signed_at,
        nodule=nodule_for_report(record),
    )
