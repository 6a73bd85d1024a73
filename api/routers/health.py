"""Liveness, readiness and model information: `GET /health`, `GET /ready`, `GET /model/info`."""

from __future__ import annotations

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from api.alerting import AlertingDep
from api.schemas import HealthOut, ModelInfoOut, ReadyOut
from api.services import ServicesDep
from inference import DEFAULT_TASK, NODULE_TASK
from monitoring import is_ready, system_stats

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut, summary="Liveness: is the process up and the model loaded")
def health(services: ServicesDep) -> HealthOut:
    predictor = services.predictors.get(DEFAULT_TASK)
    return HealthOut(
        status="ok" if predictor else "degraded",
        model_loaded=predictor is not None,
        model_version=predictor.version if predictor else None,
        uptime_s=services.uptime_s,
    )


@router.get("/ready", response_model=ReadyOut, summary="Readiness of each component, with the reason it fails")
def ready(services: ServicesDep, alerting: AlertingDep) -> JSONResponse:
    checks = [*services.readiness_checks(), alerting.channel_check()]
    ok = is_ready(checks)
    body = ReadyOut(ready=ok, checks={check.name: check.as_dict() for check in checks}).model_dump()
    return JSONResponse(body, status_code=200 if ok else 503)


NODULE_INFO_KEYS = ("model_kind", "location_threshold", "operating_point", "validated_populations")


@router.get(
    "/model/info",
    response_model=ModelInfoOut,
    response_model_exclude_none=True,  # the pneumonia answer keeps its fields; only the nodule model's has `extra`
    summary="The served model, read from its checkpoint (`?task=nodule`: the nodule model; 404/503 say why none)",
)
def model_info(services: ServicesDep, task: str = Query(DEFAULT_TASK, max_length=64)) -> ModelInfoOut:
    info = services.model(task).checkpoint.describe()
    extra = {k: info["extra"][k] for k in NODULE_INFO_KEYS if k in info["extra"]} if task == NODULE_TASK else None
    return ModelInfoOut(
        extra=extra,
        task=info["task"],
        architecture=info["architecture"],
        classes=info["class_names"],
        input_size=info["input_size"],
        version=info["version"],
        threshold=info["threshold"],
        temperature=info["temperature"],
        metrics=info["metrics"],
        data_fingerprint=info["data_fingerprint"],
        preprocess=info["preprocess"],
    )


@router.get("/v1/system/stats", summary="CPU, memory and disk of the machine and the API process")
def machine_stats(services: ServicesDep) -> dict:
    return system_stats(services.settings.var_dir).to_dict()
