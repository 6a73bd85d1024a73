"""Similar earlier cases: `GET /v1/cases/{case_id}/similar`, `GET /similar-cases/{case_id}` (older path) and
`GET /v1/reference/{ref_id}/thumbnail`. Only expert-confirmed cases and labelled reference images are precedent."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from api.services import Services, get_services
from case_retrieval import MAX_K, Neighbour
from imaging import decode_image

router = APIRouter(tags=["similar cases"])


class NeighbourOut(BaseModel):
    rank: int
    similarity: float = Field(description="Cosine similarity of the model embeddings (1 = identical direction)")
    label: str = Field(description="Confirmed diagnosis of the earlier case")
    source: str = Field(description="reference (labelled dataset image) or confirmed_case (expert-confirmed case)")
    ref_id: str
    case_id: str | None = None
    dataset: str | None = None
    thumbnail_url: str


class SimilarOut(BaseModel):
    case_id: str
    model_version: str
    k: int
    neighbours: list[NeighbourOut]


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
    library = services.library()
    predictor = services.predictor(record.task)
    pixels = decode_image(services.storage.images.get(record.image_sha256)).pixels
    embedding = predictor.predict(pixels, record.image_sha256).embedding  # cached right after analysis
    neighbours = library.search(embedding, k, model_version=predictor.version, exclude_case_id=record.id)
    return SimilarOut(
        case_id=record.id, model_version=predictor.version, k=k, neighbours=[neighbour_out(n) for n in neighbours]
    )


@router.get("/v1/cases/{case_id}/similar", response_model=SimilarOut, summary="The k most similar confirmed cases")
async def similar_cases(
    case_id: str, k: int = Query(5, ge=1, le=MAX_K), services: Services = Depends(get_services)
) -> SimilarOut:
    return await run_in_threadpool(find_similar, services, case_id, k)


@router.get("/similar-cases/{case_id}", response_model=SimilarOut, summary="Older path of /v1/cases/{id}/similar")
async def similar_cases_legacy(
    case_id: str, k: int = Query(5, ge=1, le=MAX_K), services: Services = Depends(get_services)
) -> SimilarOut:
    return await run_in_threadpool(find_similar, services, case_id, k)


@router.get(
    "/v1/reference/{ref_id}/thumbnail",
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}}},
    summary="Thumbnail of a library entry",
)
def reference_thumbnail(ref_id: str, services: Services = Depends(get_services)) -> FileResponse:
    path = services.library().thumbnail_path(ref_id)
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})
