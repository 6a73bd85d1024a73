"""Model operations, for admins: `GET /v1/models` (every registered model and version: metrics, data fingerprint,
aliases, who promoted it, when and why), `GET /v1/models/{name}/versions/{version}`, `POST /v1/models/{name}/promote`
and `POST /v1/models/{name}/rollback`. A promote or rollback answers once this backend serves the new version (loaded
and warmed first; the previous champion stays warm, so a rollback takes no load); other backend processes follow
within MODEL_ALIAS_POLL_S. Both are audited (api/model_operations.py)."""

from __future__ import annotations

from fastapi import APIRouter, Path

from api.auth import CurrentUser
from api.model_operations import models_overview, promote_version, rollback_model, version_details
from api.schemas import ModelsOut, ModelSwitchOut, ModelVersionOut, PromoteIn, RollbackIn
from api.services import ServicesDep

router = APIRouter(prefix="/v1/models", tags=["models"])
ModelName = Path(min_length=1, max_length=200, description="Registered model name, e.g. cxr-pneumonia")
_ERRORS = {
    404: {"description": "No such registered model or version"},
    409: {"description": "Nothing to roll back to"},
    422: {"description": "No usable reason"},
}


@router.get("", response_model=ModelsOut, summary="Registered models and their versions")
def list_models(services: ServicesDep) -> ModelsOut:
    return models_overview(services)


@router.get(
    "/{name}/versions/{version}", response_model=ModelVersionOut, summary="One version's facts", responses=_ERRORS
)
def show_version(services: ServicesDep, version: int, name: str = ModelName) -> ModelVersionOut:
    return version_details(services, name, version)


@router.post("/{name}/promote", response_model=ModelSwitchOut, summary="Make a version the champion", responses=_ERRORS)
def promote(body: PromoteIn, services: ServicesDep, user: CurrentUser, name: str = ModelName) -> ModelSwitchOut:
    return promote_version(services, name, body.version, body.reason, user)


@router.post(
    "/{name}/rollback", response_model=ModelSwitchOut, summary="Back to the previous champion", responses=_ERRORS
)
def rollback(body: RollbackIn, services: ServicesDep, user: CurrentUser, name: str = ModelName) -> ModelSwitchOut:
    return rollback_model(services, name, body.reason, user)
