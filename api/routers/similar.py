"""Similar earlier cases: `GET /v1/cases/{case_id}/similar`, `GET /similar-cases/{case_id}` (older path) and
`GET /v1/reference/{ref_id}/thumbnail`. Only expert-confirmed cases and labelled reference images are precedent."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from api.schemas import NeighbourOut, SimilarOut
from api.services import Services, ServicesDep
from case_retrieval import MAX_K, Neighbour

router = APIRouter(tags=["similar cases"])


def neighbour_out(neighbour: Neighbour) -> NeighbourOut:
    entry = neighbour.entry
    return NeighbourOut(
        rank=neighbour.rank,
        similarity=round(neighbour.similarity, 4),
        label=entry.label,
        source=entry.source.value,
        ref_id=entry.entry_id,
        case_id=entry.case_id,
        dataset=entry.dataset,
        thumbnail_url=f"/v1/reference/{entry.entry_id}/thumbnail",
    )


def find_similar(services: Services, case_id: str, k: int) -> SimilarOut:
    record = services.get_case(case_id)
    predictor = services.predictor_for(record.task, record.model_version)
    neighbours = services.media.neighbours(record, predictor, services.library(predictor.version), k)
    return SimilarOut(
        case_id=record.id, model_version=predictor.version, k=k, neighbours=[neighbour_out(n) for n in neighbours]
    )


@router.get("/v1/cases/{case_id}/similar", response_model=SimilarOut, summary="The k most similar confirmed cases")
async def similar_cases(case_id: str, services: ServicesDep, k: int = Query(5, ge=1, le=MAX_K)) -> SimilarOut:
    return await run_in_threadpool(find_similar, services, case_id, k)


@router.get("/similar-cases/{case_id}", response_model=SimilarOut, summary="Older path of /v1/cases/{id}/similar")
async def similar_cases_legacy(case_id: str, services: ServicesDep, k: int = Query(5, ge=1, le=MAX_K)) -> SimilarOut:
    return await run_in_threadpool(find_similar, services, case_id, k)


@router.get(
    "/v1/reference/{ref_id}/thumbnail",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}},
    summary="Thumbnail of a library entry",
)
def reference_thumbnail(ref_id: str, services: ServicesDep) -> FileResponse:
    path = services.library().thumbnail_path(ref_id)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})
