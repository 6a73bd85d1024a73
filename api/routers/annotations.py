"""Expert reads: `POST /v1/annotations` (a read, or a correction that supersedes one), `GET /v1/annotations/{case_id}`
(the reads the caller may see), `POST /v1/annotations/{case_id}/adjudicate` (senior or admin: the final label when
two reads disagree), `GET /v1/annotations/stats` and `GET /v1/annotations/export` (the final labels as the training
manifest; `?task=nodule`: the nodule reads). Reading is blind: a reader sees the model's answer once their own read
is in, the other reads once the label is final."""

from __future__ import annotations

from fastapi import APIRouter, Query, status
from fastapi.responses import Response

from active_learning import Annotation
from api.auth import CurrentUser
from api.learning import audit
from api.schemas import (
    AdjudicationIn,
    AnnotationIn,
    AnnotationOut,
    CaseAnnotationsOut,
    FinalLabelOut,
    Role,
)
from api.services import Services, ServicesDep
from inference import DEFAULT_TASK, NODULE_TASK

router = APIRouter(prefix="/v1/annotations", tags=["annotations"])
SEES_EVERYONES_STATISTICS = frozenset({Role.SENIOR, Role.ADMIN})  # adjudicators, and the admin who answers for the data


@router.get("/stats", summary="Reads, agreement, kappa and time per read; the model's accuracy on final labels")
def annotation_stats(services: ServicesDep, user: CurrentUser) -> dict:
    """Seniors and admins get every annotator's row; everyone else their own ("my statistics") and the totals."""
    mine = None if user.role in SEES_EVERYONES_STATISTICS else user.username
    return services.learning.stats(annotator_id=mine).to_dict()


@router.get(
    "/export",
    summary="The expert labels as a training manifest (CSV: file,label,split,patient_id,source,annotators; "
    "task=nodule: the nodule reads, with boxes in stored pixels)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}}},
)
def export_labels(
    services: ServicesDep,
    user: CurrentUser,
    task: str = Query(DEFAULT_TASK, pattern=f"^({DEFAULT_TASK}|{NODULE_TASK})$", description="pneumonia | nodule"),
) -> Response:
    audit(services, user, "annotations.export", None, {"task": task})
    loop = services.learning
    csv_text, name = (
        (loop.nodule_export_csv(), "expert-nodule-labels.csv")
        if task == NODULE_TASK
        else (loop.export_csv(), "expert-labels.csv")
    )
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(csv_text, media_type="text/csv", headers=headers)


@router.post("", response_model=AnnotationOut, status_code=status.HTTP_201_CREATED, summary="Submit a read")
def submit_read(body: AnnotationIn, services: ServicesDep, user: CurrentUser) -> AnnotationOut:
    fields = {"label": body.label, "confidence": body.confidence, "comment": body.comment}
    boxes = tuple(box.model_dump() for box in body.boxes)
    loop = services.learning
    if body.corrects:
        read = loop.correct(body.corrects, user.username, **fields, boxes=boxes)
    else:
        read = loop.submit(user.username, body.case_id, **fields, boxes=boxes)
    audit(services, user, "annotation.submit", read.case_id, {"label": read.label, "corrects": body.corrects})
    return AnnotationOut.model_validate(read)


@router.get("/{case_id}", response_model=CaseAnnotationsOut, summary="The reads of a case the caller may see")
def case_reads(case_id: str, services: ServicesDep, user: CurrentUser) -> CaseAnnotationsOut:
    services.get_case(case_id)  # 404 for an unknown case
    loop = services.learning
    visible = [AnnotationOut.model_validate(read) for read in visible_reads(services, case_id, user)]
    final, state = loop.final_label(case_id), loop.queue_state(case_id)
    return CaseAnnotationsOut(
        case_id=case_id,
        state=state or "not_queued",
        labels=loop.labels_for(case_id) if state else [],
        annotations=visible,
        final=FinalLabelOut.model_validate(final) if final else None,
    )


@router.post("/{case_id}/adjudicate", response_model=FinalLabelOut, summary="Final label of a disputed case")
def adjudicate(case_id: str, body: AdjudicationIn, services: ServicesDep, user: CurrentUser) -> FinalLabelOut:
    final = services.learning.adjudicate(case_id, user.username, label=body.label, comment=body.comment)
    audit(services, user, "annotation.adjudicate", case_id, {"label": final.label})
    return FinalLabelOut.model_validate(final)


def visible_reads(services: Services, case_id: str, user: CurrentUser) -> list[Annotation]:
    """Blind double reading (active_learning/annotations.py): a reader sees their own reads, and the others' once
    the label is final or, not being one of the readers, to adjudicate; radiologists, who never read in the
    queue, see every read of their case."""
    viewer = None if user.role == Role.RADIOLOGIST else user.username
    return services.learning.annotations_for(case_id, viewer_id=viewer)
